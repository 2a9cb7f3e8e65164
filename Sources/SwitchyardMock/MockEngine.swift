import Foundation
import NIOCore
import Synchronization
import SwitchyardCore

/// Defaults of the fake provider, overridable per request with ``MockDirectives``.
public struct MockSettings: Sendable {
    /// Delay before the response head, in milliseconds.
    public var latencyMs: Int
    /// Delay between stream chunks, in milliseconds.
    public var chunkDelayMs: Int
    /// Content chunks per stream.
    public var chunks: Int
    /// When set, requests must carry this key (`Authorization: Bearer` / `x-api-key` / `x-goog-api-key`).
    public var requiredKey: String?

    public init(latencyMs: Int = 0, chunkDelayMs: Int = 0, chunks: Int = 8, requiredKey: String? = nil) {
        self.latencyMs = latencyMs
        self.chunkDelayMs = chunkDelayMs
        self.chunks = max(1, chunks)
        self.requiredKey = requiredKey
    }
}

/// What the fake provider answers to one request: a status, headers, and a body sent whole or as timed events.
public struct MockPlan: Sendable {
    public enum Body: Sendable {
        case full(ByteBuffer)
        /// Stream events (each one complete SSE event), `chunkDelayMs` apart; the connection drops
        /// after `dropAfter` events when set.
        case events(MockEventScript, chunkDelayMs: Int, dropAfter: Int?)
    }

    public var status: Int
    public var headers: [(String, String)]
    public var firstByteDelayMs: Int
    public var body: Body
    /// Splice `"mock_sent_us":<now>,` into each `data: {` event as it is written.
    public var stampEvents = false

    public var isStream: Bool { if case .events = body { return true } else { return false } }
}

/// The fake provider's brain: turns a request in a provider's wire format into a deterministic reply in
/// the same format. Pure apart from a small cache of plans (identical requests get identical replies, so
/// load tests measure the gateway, not the mock).
public final class MockEngine: Sendable {
    public let settings: MockSettings
    private let cache = Mutex<[ByteBuffer: MockPlan]>([:])
    private static let cacheLimit = 4096
    /// Fixed `created` timestamp base, so replies are reproducible within a process.
    let created: Int

    public init(settings: MockSettings = .init(), now: Int = Int(Date().timeIntervalSince1970)) {
        self.settings = settings
        self.created = now
    }

    /// The reply to an OpenAI Chat Completions request body.
    public func chatCompletion(body: ByteBuffer, headerDirectives: [String: String] = [:]) -> MockPlan {
        if headerDirectives.isEmpty, let cached = cache.withLock({ $0[body] }) { return cached }
        let plan = makeChatCompletionPlan(body: body, headerDirectives: headerDirectives)
        if headerDirectives.isEmpty {
            cache.withLock { c in
                if c.count >= Self.cacheLimit { c.removeAll(keepingCapacity: true) }
                c[body] = plan
            }
        }
        return plan
    }

    /// An OpenAI-format error plan.
    public static func openAIError(status: Int, message: String, type: String? = nil, code: String? = nil, retryAfter: Int? = nil, delayMs: Int = 0) -> MockPlan {
        let defaultType: String
        switch status {
        case 400, 404, 413, 422: defaultType = "invalid_request_error"
        case 401: defaultType = "authentication_error"
        case 403: defaultType = "permission_error"
        case 429: defaultType = "rate_limit_error"
        default: defaultType = "server_error"
        }
        let body: JSONValue = .object(["error": .object([
            "message": .string(message), "type": .string(type ?? defaultType), "param": .null,
            "code": code.map { .string($0) } ?? .null,
        ])])
        var headers: [(String, String)] = [("content-type", "application/json")]
        if let retryAfter { headers.append(("retry-after", String(retryAfter))) }
        return MockPlan(status: status, headers: headers, firstByteDelayMs: delayMs, body: .full(body.jsonBuffer))
    }

    private func makeChatCompletionPlan(body: ByteBuffer, headerDirectives: [String: String]) -> MockPlan {
        let request: JSONObject
        do {
            guard let obj = try JSONValue.parse(body).objectValue else {
                return Self.openAIError(status: 400, message: "the request body must be a JSON object")
            }
            request = obj
        } catch {
            return Self.openAIError(status: 400, message: "could not parse the JSON body: \(error)")
        }
        let conversation = MockConversation(openAI: request)
        var directives = MockDirectives()
        directives.apply(headerDirectives)
        directives.apply(MockDirectives.pairs(fromJSON: request["mock"]))
        directives.apply(MockDirectives.pairs(fromText: conversation.lastUserText))
        let delay = directives.delayMs ?? settings.latencyMs

        if let status = directives.status, status >= 400 {
            return Self.openAIError(
                status: status, message: directives.message ?? "mock upstream error (status \(status))",
                retryAfter: directives.retryAfter, delayMs: delay)
        }
        guard let model = request["model"]?.stringValue, !model.isEmpty else {
            return Self.openAIError(status: 400, message: "you must provide a model parameter", code: "missing_required_parameter")
        }
        guard let messages = request["messages"]?.arrayValue, !messages.isEmpty else {
            return Self.openAIError(status: 400, message: "`messages` must be a non-empty array", code: "invalid_type")
        }

        let reply = MockReply.make(conversation: conversation, directives: directives)
        var usage = TokenUsage(inputTokens: conversation.promptTokens, outputTokens: reply.outputTokens)
        usage.cachedInputTokens = min(directives.cachedTokens ?? 0, usage.inputTokens)
        let id = "chatcmpl-mock" + MockReply.stableID(body)
        let stream = request["stream"]?.boolValue ?? false

        if !stream {
            var message: JSONObject = ["role": "assistant"]
            message["content"] = reply.text.map { .string($0.full) } ?? .null
            message["refusal"] = .null
            if let thinking = reply.thinking { message["reasoning_content"] = .string(thinking) }
            if !reply.toolCalls.isEmpty {
                message["tool_calls"] = .array(reply.toolCalls.map { call in
                    .object(["id": .string(call.id), "type": "function",
                             "function": .object(["name": .string(call.name), "arguments": .string(call.arguments)])])
                })
            }
            var obj: JSONObject = [
                "id": .string(id), "object": "chat.completion", "created": .int(created), "model": .string(model),
            ]
            obj["choices"] = .array([.object([
                "index": .int(0), "message": .object(message), "logprobs": .null, "finish_reason": .string(reply.finishReason),
            ])])
            if !directives.omitUsage { obj["usage"] = usage.openAIJSON }
            obj["system_fingerprint"] = "fp_mock"
            return MockPlan(status: 200, headers: [("content-type", "application/json")], firstByteDelayMs: delay, body: .full(JSONValue.object(obj).jsonBuffer))
        }

        let includeUsage = request["stream_options"]?["include_usage"]?.boolValue ?? false
        var head: [ByteBuffer] = []
        var tail: [ByteBuffer] = []
        func chunk(delta: JSONObject, finish: String?) -> ByteBuffer {
            var obj: JSONObject = [
                "id": .string(id), "object": "chat.completion.chunk", "created": .int(created), "model": .string(model),
                "system_fingerprint": "fp_mock",
            ]
            obj["choices"] = .array([.object([
                "index": .int(0), "delta": .object(delta), "logprobs": .null, "finish_reason": finish.map { .string($0) } ?? .null,
            ])])
            if includeUsage { obj["usage"] = .null }
            return Self.sse(.object(obj))
        }
        var pieces = MockPieces(count: 0) { _ in "" }
        head.append(chunk(delta: ["role": "assistant", "content": reply.toolCalls.isEmpty ? "" : .null, "refusal": .null], finish: nil))
        if let thinking = reply.thinking {
            // DeepSeek-style reasoning deltas, as OpenAI-compatible reasoning servers send them.
            for piece in MockReply.split(thinking, into: 3) { head.append(chunk(delta: ["reasoning_content": .string(piece)], finish: nil)) }
        }
        if reply.toolCalls.isEmpty {
            pieces = (reply.text ?? .literal("")).pieces(directives.chunks ?? settings.chunks)
        } else {
            for (index, call) in reply.toolCalls.enumerated() {
                head.append(chunk(delta: ["tool_calls": .array([.object([
                    "index": .int(index), "id": .string(call.id), "type": "function",
                    "function": .object(["name": .string(call.name), "arguments": ""]),
                ])])], finish: nil))
                for fragment in MockReply.split(call.arguments, into: 3) {
                    head.append(chunk(delta: ["tool_calls": .array([.object([
                        "index": .int(index), "function": .object(["arguments": .string(fragment)]),
                    ])])], finish: nil))
                }
            }
        }
        tail.append(chunk(delta: [:], finish: reply.finishReason))
        if includeUsage && !directives.omitUsage {
            let obj: JSONObject = [
                "id": .string(id), "object": "chat.completion.chunk", "created": .int(created), "model": .string(model),
                "system_fingerprint": "fp_mock", "choices": .array([]), "usage": usage.openAIJSON,
            ]
            tail.append(Self.sse(.object(obj)))
        }
        tail.append(ByteBuffer(string: "data: [DONE]\n\n"))
        // Content chunks are rendered on demand from a template: `prefix + JSON string + suffix`.
        let template = String(buffer: chunk(delta: ["content": "\u{0}"], finish: nil))
        let marker = template.firstRange(of: "\"\\u0000\"")!
        let prefix = String(template[..<marker.lowerBound])
        let suffix = String(template[marker.upperBound...])
        let contentPieces = pieces
        let script = MockEventScript(head: head, pieceCount: pieces.count, tail: tail) { i in
            var out = ByteBuffer()
            out.writeString(prefix)
            JSONString.write(contentPieces.piece(i), into: &out)
            out.writeString(suffix)
            return out
        }
        return MockPlan(
            status: 200,
            headers: [("content-type", "text/event-stream"), ("cache-control", "no-cache")],
            firstByteDelayMs: delay,
            body: .events(script, chunkDelayMs: directives.chunkDelayMs ?? settings.chunkDelayMs, dropAfter: directives.dropAfter),
            stampEvents: directives.stampEvents)
    }

    static func sse(_ value: JSONValue, event: String? = nil) -> ByteBuffer {
        var out = ByteBuffer()
        if let event {
            out.writeStaticString("event: ")
            out.writeString(event)
            out.writeStaticString("\n")
        }
        out.writeStaticString("data: ")
        value.write(into: &out)
        out.writeStaticString("\n\n")
        return out
    }
}

/// The events of a streamed reply: fixed head and tail events around content chunks rendered on demand.
public struct MockEventScript: Sendable {
    let head: [ByteBuffer]
    let pieceCount: Int
    let tail: [ByteBuffer]
    let render: @Sendable (Int) -> ByteBuffer

    init(head: [ByteBuffer], pieceCount: Int, tail: [ByteBuffer], render: @escaping @Sendable (Int) -> ByteBuffer) {
        self.head = head
        self.pieceCount = pieceCount
        self.tail = tail
        self.render = render
    }

    /// Number of events.
    public var count: Int { head.count + pieceCount + tail.count }

    /// Event `i` as SSE bytes.
    public subscript(i: Int) -> ByteBuffer {
        if i < head.count { return head[i] }
        if i < head.count + pieceCount { return render(i - head.count) }
        return tail[i - head.count - pieceCount]
    }

    /// All events (for tests and small streams).
    public var all: [ByteBuffer] { (0..<count).map { self[$0] } }
}
