import NIOCore

extension OpenAIChat {
    // MARK: Finish reasons

    static func finish(_ raw: String?) -> FinishReason {
        switch raw {
        case "stop", nil: return .stop
        case "length": return .length
        case "tool_calls", "function_call": return .toolCalls
        case "content_filter": return .contentFilter
        case let other?: return .other(other)
        }
    }

    static func finishString(_ f: FinishReason) -> String {
        switch f {
        case .stop, .stopSequence, .pauseTurn, .other: return "stop"
        case .length: return "length"
        case .toolCalls: return "tool_calls"
        case .contentFilter, .refusal: return "content_filter"
        }
    }

    // MARK: Responses

    /// Decodes an upstream Chat Completions response (first choice).
    public static func decodeResponse(_ body: JSONObject) throws(GatewayError) -> ChatResponse {
        guard let choice = body["choices"]?.arrayValue?.first, let message = choice["message"] else {
            throw GatewayError(status: 502, category: .upstream, code: "upstream_invalid_response",
                               message: "the provider's response has no choices[0].message")
        }
        var content: [ContentPart] = []
        if let reasoning = (message["reasoning_content"] ?? message["reasoning"])?.stringValue, !reasoning.isEmpty {
            content.append(.thinking(reasoning, signature: nil))
        }
        if let text = message["content"]?.flattenedText, !text.isEmpty { content.append(.text(text)) }
        if let refusal = message["refusal"]?.stringValue, !refusal.isEmpty { content.append(.text(refusal)) }
        for call in message["tool_calls"]?.arrayValue ?? [] {
            guard let fn = call["function"], let name = fn["name"]?.stringValue else { continue }
            content.append(.toolCall(id: call["id"]?.stringValue ?? TranslateSupport.randomID("call_"), name: name,
                                     arguments: fn["arguments"]?.stringValue ?? "{}"))
        }
        var reason = finish(choice["finish_reason"]?.stringValue)
        if message["refusal"]?.stringValue.map({ !$0.isEmpty }) == true { reason = .refusal }
        return ChatResponse(
            id: body["id"]?.stringValue ?? TranslateSupport.randomID("chatcmpl-"), model: body["model"]?.stringValue ?? "",
            content: content, finish: reason, usage: TokenUsage(openAI: body["usage"]), created: body["created"]?.intValue)
    }

    /// Encodes a canonical response for an OpenAI-format client.
    public static func encodeResponse(_ r: ChatResponse, model: String, created: Int) -> JSONObject {
        var message: JSONObject = ["role": "assistant"]
        let text = r.content.compactMap(\.textValue).joined()
        message["content"] = text.isEmpty && r.content.contains(where: { if case .toolCall = $0 { return true } else { return false } }) ? .null : .string(text)
        message["refusal"] = r.finish == .refusal ? .string(text) : .null
        let reasoning = r.content.compactMap { part -> String? in
            if case .thinking(let t, _) = part { return t } else { return nil }
        }.joined()
        if !reasoning.isEmpty { message["reasoning_content"] = .string(reasoning) }
        let blocks = thinkingBlocks(r.content)
        if !blocks.isEmpty { message["thinking_blocks"] = .array(blocks) }
        let calls: [JSONValue] = r.content.compactMap { part in
            guard case .toolCall(let id, let name, let args) = part else { return nil }
            return ["id": .string(id), "type": "function", "function": ["name": .string(name), "arguments": .string(args)]]
        }
        if !calls.isEmpty { message["tool_calls"] = .array(calls) }
        var body: JSONObject = [
            "id": .string(r.id), "object": "chat.completion", "created": .int(r.created ?? created), "model": .string(model),
        ]
        body["choices"] = .array([["index": 0, "message": .object(message), "logprobs": .null, "finish_reason": .string(finishString(r.finish))]])
        if let usage = r.usage { body["usage"] = usage.openAIJSON }
        return body
    }

    /// Thinking blocks with signatures, in the shape OpenAI-format clients (LiteLLM convention) send back.
    static func thinkingBlocks(_ content: [ContentPart]) -> [JSONValue] {
        content.compactMap { part in
            switch part {
            case .thinking(let t, let sig?): return ["type": "thinking", "thinking": .string(t), "signature": .string(sig)]
            case .redactedThinking(let data): return ["type": "redacted_thinking", "data": .string(data)]
            default: return nil
            }
        }
    }
}

/// Turns an OpenAI Chat Completions SSE stream (from an upstream) into canonical events.
public struct OpenAIStreamDecoder: SSEEventDecoder, Sendable {
    var scanner = SSEScanner()
    private var started = false
    private var nextBlock = 0
    private enum Open: Equatable { case none, text(Int), thinking(Int), tool(openAIIndex: Int, block: Int) }
    private var open: Open = .none
    private var toolBlocks: [Int: Int] = [:]
    private var finished = false
    public private(set) var sawDone = false

    public init() {}

    /// Feeds upstream bytes; returns the events they complete.
    public mutating func feed(_ chunk: ByteBuffer) throws -> [StreamEvent] {
        try decode(chunk)
    }

    /// The upstream ended: closes any open block.
    public mutating func finish() -> [StreamEvent] {
        decodeEnd()
    }

    mutating func endOfStream(_ out: inout [StreamEvent]) { closeOpen(&out) }

    private mutating func closeOpen(_ out: inout [StreamEvent]) {
        switch open {
        case .none: break
        case .text(let i), .thinking(let i), .tool(_, let i): out.append(.blockStop(index: i))
        }
        open = .none
    }

    mutating func handle(_ event: SSEEvent, into out: inout [StreamEvent]) {
        guard let data = event.data else { return }
        if event.isDoneSentinel {
            sawDone = true
            return
        }
        guard let obj = (try? JSONValue.parse(data))?.objectValue else { return }
        if let error = obj["error"], !error.isNull {
            closeOpen(&out)
            out.append(.error(GatewayError(
                status: 502, category: .upstream, code: error["code"]?.stringValue ?? "upstream_stream_error",
                message: error["message"]?.stringValue ?? "the provider reported an error mid-stream")))
            return
        }
        if !started {
            started = true
            out.append(.start(id: obj["id"]?.stringValue ?? TranslateSupport.randomID("chatcmpl-"), model: obj["model"]?.stringValue ?? ""))
        }
        if let choice = obj["choices"]?.arrayValue?.first {
            let delta = choice["delta"]
            if let r = (delta?["reasoning_content"] ?? delta?["reasoning"])?.stringValue, !r.isEmpty {
                if case .thinking(let i) = open {
                    out.append(.thinkingDelta(index: i, r))
                } else {
                    closeOpen(&out)
                    let i = nextBlock
                    nextBlock += 1
                    open = .thinking(i)
                    out.append(.thinkingStart(index: i))
                    out.append(.thinkingDelta(index: i, r))
                }
            }
            if let t = delta?["content"]?.stringValue, !t.isEmpty {
                if case .text(let i) = open {
                    out.append(.textDelta(index: i, t))
                } else {
                    closeOpen(&out)
                    let i = nextBlock
                    nextBlock += 1
                    open = .text(i)
                    out.append(.textStart(index: i))
                    out.append(.textDelta(index: i, t))
                }
            }
            for call in delta?["tool_calls"]?.arrayValue ?? [] {
                let openAIIndex = call["index"]?.intValue ?? 0
                let block: Int
                if let known = toolBlocks[openAIIndex] {
                    block = known
                    if open != .tool(openAIIndex: openAIIndex, block: known) {
                        // A fragment for a call that is no longer the open block: providers interleave rarely,
                        // but the arguments still belong to that call.
                    }
                } else {
                    closeOpen(&out)
                    block = nextBlock
                    nextBlock += 1
                    toolBlocks[openAIIndex] = block
                    open = .tool(openAIIndex: openAIIndex, block: block)
                    out.append(.toolCallStart(
                        index: block, id: call["id"]?.stringValue ?? TranslateSupport.randomID("call_"),
                        name: call["function"]?["name"]?.stringValue ?? ""))
                }
                if let args = call["function"]?["arguments"]?.stringValue, !args.isEmpty {
                    out.append(.toolCallDelta(index: block, args))
                }
            }
            if let reason = choice["finish_reason"]?.stringValue, !finished {
                finished = true
                closeOpen(&out)
                out.append(.finish(OpenAIChat.finish(reason)))
            }
        }
        if let usage = TokenUsage(openAI: obj["usage"]) { out.append(.usage(usage)) }
    }
}

/// Writes canonical events as an OpenAI Chat Completions SSE stream for the client.
public struct OpenAIStreamEncoder: Sendable {
    private let model: String
    private let created: Int
    private let includeUsage: Bool
    private var id = TranslateSupport.randomID("chatcmpl-")
    private var toolIndex: [Int: Int] = [:]
    private var usage: TokenUsage?
    private var finishSent = false
    private var started = false

    public init(model: String, created: Int, includeUsage: Bool) {
        self.model = model
        self.created = created
        self.includeUsage = includeUsage
    }

    /// Appends the SSE bytes for `event`.
    public mutating func encode(_ event: StreamEvent, into out: inout ByteBuffer) {
        switch event {
        case .start(let upstreamID, _):
            if upstreamID.hasPrefix("chatcmpl") { id = upstreamID }
            started = true
            chunk(["role": "assistant", "content": ""], finish: nil, into: &out)
        case .textStart, .thinkingStart, .blockStop, .signatureDelta, .redactedThinking:
            break
        case .textDelta(_, let t):
            chunk(["content": .string(t)], finish: nil, into: &out)
        case .thinkingDelta(_, let t):
            chunk(["reasoning_content": .string(t)], finish: nil, into: &out)
        case .toolCallStart(let block, let callID, let name):
            let k = toolIndex.count
            toolIndex[block] = k
            chunk(["tool_calls": [["index": .int(k), "id": .string(callID), "type": "function",
                                    "function": ["name": .string(name), "arguments": ""]]]], finish: nil, into: &out)
        case .toolCallDelta(let block, let args):
            let k = toolIndex[block] ?? 0
            chunk(["tool_calls": [["index": .int(k), "function": ["arguments": .string(args)]]]], finish: nil, into: &out)
        case .usage(let u):
            usage = u
        case .finish(let reason):
            guard !finishSent else { return }
            finishSent = true
            chunk([:], finish: OpenAIChat.finishString(reason), into: &out)
        case .error(let e):
            out.writeStaticString("data: ")
            out.writeImmutableBuffer(e.openAIBody())
            out.writeStaticString("\n\n")
        }
    }

    /// Ends a stream that completed: the usage chunk (if the client asked for it) and `[DONE]`.
    public mutating func finish(into out: inout ByteBuffer) {
        if !finishSent { encode(.finish(.stop), into: &out) }
        if includeUsage, let usage {
            var obj: JSONObject = ["id": .string(id), "object": "chat.completion.chunk", "created": .int(created), "model": .string(model)]
            obj["choices"] = .array([])
            obj["usage"] = usage.openAIJSON
            SSEEvent.write(event: nil, data: JSONValue.object(obj).jsonBuffer, into: &out)
        }
        out.writeStaticString("data: [DONE]\n\n")
    }

    private func chunk(_ delta: JSONObject, finish: String?, into out: inout ByteBuffer) {
        var obj: JSONObject = ["id": .string(id), "object": "chat.completion.chunk", "created": .int(created), "model": .string(model)]
        obj["choices"] = .array([["index": 0, "delta": .object(delta), "logprobs": .null, "finish_reason": finish.map { .string($0) } ?? .null]])
        SSEEvent.write(event: nil, data: JSONValue.object(obj).jsonBuffer, into: &out)
    }
}
