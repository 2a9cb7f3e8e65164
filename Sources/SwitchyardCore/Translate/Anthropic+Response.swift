import NIOCore

extension AnthropicMessages {
    // MARK: Finish reasons and usage

    static func finish(_ raw: String?, stopSequence: String?) -> FinishReason {
        switch raw {
        case "end_turn", nil: return .stop
        case "max_tokens", "model_context_window_exceeded": return .length
        case "stop_sequence": return .stopSequence(stopSequence)
        case "tool_use": return .toolCalls
        case "refusal": return .refusal
        case "pause_turn": return .pauseTurn
        case let other?: return .other(other)
        }
    }

    static func finishString(_ f: FinishReason) -> (reason: String, sequence: String?) {
        switch f {
        case .stop, .other: return ("end_turn", nil)
        case .length: return ("max_tokens", nil)
        case .stopSequence(let s): return (s == nil ? "end_turn" : "stop_sequence", s)
        case .toolCalls: return ("tool_use", nil)
        case .contentFilter, .refusal: return ("refusal", nil)
        case .pauseTurn: return ("pause_turn", nil)
        }
    }

    /// Reads Anthropic usage. Anthropic's `input_tokens` excludes cache reads and writes; canonical input
    /// counts them all, so they are added (and subtracted again on the way out) — never double counted.
    public static func usage(_ u: JSONValue?, base: TokenUsage? = nil) -> TokenUsage? {
        guard let u = u?.objectValue else { return base }
        var out = base ?? TokenUsage()
        let uncached = u["input_tokens"]?.intValue
        let read = u["cache_read_input_tokens"]?.intValue
        let created = u["cache_creation_input_tokens"]?.intValue
        if uncached != nil || read != nil || created != nil {
            let r = read ?? out.cachedInputTokens
            let c = created ?? out.cacheCreationTokens
            let baseUncached = out.inputTokens - out.cachedInputTokens - out.cacheCreationTokens
            out.inputTokens = (uncached ?? baseUncached) + r + c
            out.cachedInputTokens = r
            out.cacheCreationTokens = c
        }
        if let o = u["output_tokens"]?.intValue { out.outputTokens = o }
        if let t = u["output_tokens_details"]?["thinking_tokens"]?.intValue { out.reasoningTokens = t }
        return out
    }

    static func usageJSON(_ u: TokenUsage?) -> JSONValue {
        let u = u ?? TokenUsage()
        return [
            "input_tokens": .int(max(0, u.inputTokens - u.cachedInputTokens - u.cacheCreationTokens)),
            "cache_creation_input_tokens": .int(u.cacheCreationTokens),
            "cache_read_input_tokens": .int(u.cachedInputTokens),
            "output_tokens": .int(u.outputTokens),
        ]
    }

    // MARK: Responses

    /// Decodes an upstream Messages response. `structuredOutput` names the tool whose input is the answer
    /// text (when the client asked for a JSON schema).
    public static func decodeResponse(_ body: JSONObject, structuredOutput: Bool = false) throws(GatewayError) -> ChatResponse {
        guard let blocks = body["content"]?.arrayValue else {
            throw GatewayError(status: 502, category: .upstream, code: "upstream_invalid_response", message: "the provider's response has no content")
        }
        var content: [ContentPart] = []
        for b in blocks {
            switch b["type"]?.stringValue {
            case "text": content.append(.text(b["text"]?.stringValue ?? ""))
            case "thinking": content.append(.thinking(b["thinking"]?.stringValue ?? "", signature: b["signature"]?.stringValue))
            case "redacted_thinking": content.append(.redactedThinking(data: b["data"]?.stringValue ?? ""))
            case "tool_use":
                let name = b["name"]?.stringValue ?? ""
                let input = (b["input"] ?? .object([:])).jsonString
                if structuredOutput && name == structuredOutputTool {
                    content.append(.text(input))
                } else {
                    content.append(.toolCall(id: b["id"]?.stringValue ?? TranslateSupport.randomID("toolu_"), name: name, arguments: input))
                }
            default: continue  // server tool blocks mean nothing to other formats
            }
        }
        var reason = finish(body["stop_reason"]?.stringValue, stopSequence: body["stop_sequence"]?.stringValue)
        if structuredOutput, reason == .toolCalls, !content.contains(where: { if case .toolCall = $0 { return true } else { return false } }) {
            reason = .stop
        }
        return ChatResponse(id: body["id"]?.stringValue ?? TranslateSupport.randomID("msg_"), model: body["model"]?.stringValue ?? "",
                            content: content, finish: reason, usage: usage(body["usage"]))
    }

    /// Encodes a canonical response for an Anthropic-format client.
    public static func encodeResponse(_ r: ChatResponse, model: String) -> JSONObject {
        var blocks: [JSONValue] = []
        for part in r.content {
            switch part {
            case .text(let t, _): if !t.isEmpty { blocks.append(["type": "text", "text": .string(t)]) }
            case .thinking(let t, let sig): blocks.append(["type": "thinking", "thinking": .string(t), "signature": .string(sig ?? "")])
            case .redactedThinking(let data): blocks.append(["type": "redacted_thinking", "data": .string(data)])
            case .toolCall(let id, let name, let args):
                blocks.append(["type": "tool_use", "id": .string(id), "name": .string(name), "input": TranslateSupport.argumentsObject(args)])
            default: continue
            }
        }
        let (reason, sequence) = finishString(r.finish)
        var body: JSONObject = [
            "id": .string(r.id.hasPrefix("msg_") ? r.id : "msg_" + r.id), "type": "message", "role": "assistant",
            "model": .string(model), "content": .array(blocks), "stop_reason": .string(reason),
        ]
        body["stop_sequence"] = sequence.map { .string($0) } ?? .null
        body["usage"] = usageJSON(r.usage)
        return body
    }

    /// The error body of an Anthropic-format response.
    public static func errorBody(_ e: GatewayError, requestID: String? = nil) -> ByteBuffer {
        var obj: JSONObject = ["type": "error", "error": ["type": .string(errorType(e)), "message": .string(e.message)]]
        if let requestID { obj["request_id"] = .string(requestID) }
        return JSONValue.object(obj).jsonBuffer
    }

    /// Anthropic's error type names.
    public static func errorType(_ e: GatewayError) -> String {
        switch e.status {
        case 401: return "authentication_error"
        case 402: return "billing_error"
        case 403: return "permission_error"
        case 404: return "not_found_error"
        case 413: return "request_too_large"
        case 429: return "rate_limit_error"
        case 504: return "timeout_error"
        case 529: return "overloaded_error"
        case 400..<500: return "invalid_request_error"
        default: return e.category == .overloaded ? "overloaded_error" : "api_error"
        }
    }
}

/// Turns an Anthropic Messages SSE stream (from an upstream) into canonical events.
public struct AnthropicStreamDecoder: SSEEventDecoder, Sendable {
    var scanner = SSEScanner()
    private let structuredOutput: Bool
    /// Anthropic block index → canonical block index (nil: a block other formats cannot carry).
    private var blocks: [Int: Int] = [:]
    private var structuredBlocks: Set<Int> = []
    private var nextBlock = 0
    private var usage: TokenUsage?
    public private(set) var sawStop = false

    public init(structuredOutput: Bool = false) {
        self.structuredOutput = structuredOutput
    }

    public mutating func feed(_ chunk: ByteBuffer) throws -> [StreamEvent] {
        try decode(chunk)
    }

    public mutating func finish() -> [StreamEvent] {
        decodeEnd()
    }

    mutating func handle(_ event: SSEEvent, into out: inout [StreamEvent]) {
        guard let data = event.data, let obj = (try? JSONValue.parse(data))?.objectValue else { return }
        switch obj["type"]?.stringValue ?? event.event {
        case "message_start":
            let m = obj["message"]
            usage = AnthropicMessages.usage(m?["usage"])
            if let usage { out.append(.usage(usage)) }  // before `start`, so a message_start re-encoded carries it
            out.append(.start(id: m?["id"]?.stringValue ?? TranslateSupport.randomID("msg_"), model: m?["model"]?.stringValue ?? ""))
        case "content_block_start":
            guard let index = obj["index"]?.intValue, let block = obj["content_block"] else { return }
            let i = nextBlock
            switch block["type"]?.stringValue {
            case "text":
                blocks[index] = i
                out.append(.textStart(index: i))
                if let t = block["text"]?.stringValue, !t.isEmpty { out.append(.textDelta(index: i, t)) }
            case "thinking":
                blocks[index] = i
                out.append(.thinkingStart(index: i))
                if let t = block["thinking"]?.stringValue, !t.isEmpty { out.append(.thinkingDelta(index: i, t)) }
            case "redacted_thinking":
                blocks[index] = i
                out.append(.redactedThinking(index: i, data: block["data"]?.stringValue ?? ""))
            case "tool_use":
                blocks[index] = i
                let name = block["name"]?.stringValue ?? ""
                if structuredOutput && name == AnthropicMessages.structuredOutputTool {
                    structuredBlocks.insert(index)
                    out.append(.textStart(index: i))
                } else {
                    out.append(.toolCallStart(index: i, id: block["id"]?.stringValue ?? TranslateSupport.randomID("toolu_"), name: name))
                }
            default:
                return  // server tool blocks are skipped, and so are their deltas
            }
            nextBlock += 1
        case "content_block_delta":
            guard let index = obj["index"]?.intValue, let i = blocks[index], let delta = obj["delta"] else { return }
            switch delta["type"]?.stringValue {
            case "text_delta": if let t = delta["text"]?.stringValue, !t.isEmpty { out.append(.textDelta(index: i, t)) }
            case "thinking_delta": if let t = delta["thinking"]?.stringValue, !t.isEmpty { out.append(.thinkingDelta(index: i, t)) }
            case "signature_delta": if let s = delta["signature"]?.stringValue { out.append(.signatureDelta(index: i, s)) }
            case "input_json_delta":
                guard let j = delta["partial_json"]?.stringValue, !j.isEmpty else { return }
                out.append(structuredBlocks.contains(index) ? .textDelta(index: i, j) : .toolCallDelta(index: i, j))
            default: return
            }
        case "content_block_stop":
            guard let index = obj["index"]?.intValue, let i = blocks[index] else { return }
            out.append(.blockStop(index: i))
        case "message_delta":
            usage = AnthropicMessages.usage(obj["usage"], base: usage)
            if let usage { out.append(.usage(usage)) }
            if let reason = obj["delta"]?["stop_reason"]?.stringValue {
                var f = AnthropicMessages.finish(reason, stopSequence: obj["delta"]?["stop_sequence"]?.stringValue)
                if structuredOutput, f == .toolCalls, !structuredBlocks.isEmpty, blocks.count == structuredBlocks.count { f = .stop }
                out.append(.finish(f))
            }
        case "message_stop":
            sawStop = true
        case "error":
            let e = obj["error"]
            let type = e?["type"]?.stringValue ?? "api_error"
            out.append(.error(GatewayError(
                status: type == "overloaded_error" ? 529 : 502, category: type == "overloaded_error" ? .overloaded : .upstream,
                code: type, message: e?["message"]?.stringValue ?? "the provider reported an error mid-stream")))
        default:
            return  // ping and future event types
        }
    }
}

/// Writes canonical events as an Anthropic Messages SSE stream for the client: every event has its
/// `event:` line, blocks are 0-based in start order, each opened and closed once.
public struct AnthropicStreamEncoder: Sendable {
    private let model: String
    private var id = TranslateSupport.randomID("msg_")
    private var usage: TokenUsage?
    private var finish: FinishReason?
    private var started = false
    private var open: Set<Int> = []
    private var stopped: Set<Int> = []

    public init(model: String) {
        self.model = model
    }

    private func emit(_ name: String, _ data: JSONObject, into out: inout ByteBuffer) {
        SSEEvent.write(event: name, data: JSONValue.object(data).jsonBuffer, into: &out)
    }

    private mutating func ensureStarted(_ out: inout ByteBuffer) {
        guard !started else { return }
        started = true
        var message: JSONObject = ["id": .string(id), "type": "message", "role": "assistant", "content": .array([]), "model": .string(model)]
        message["stop_reason"] = .null
        message["stop_sequence"] = .null
        message["usage"] = AnthropicMessages.usageJSON(usage)
        emit("message_start", ["type": "message_start", "message": .object(message)], into: &out)
        emit("ping", ["type": "ping"], into: &out)
    }

    private mutating func startBlock(_ index: Int, _ block: JSONObject, into out: inout ByteBuffer) {
        ensureStarted(&out)
        open.insert(index)
        emit("content_block_start", ["type": "content_block_start", "index": .int(index), "content_block": .object(block)], into: &out)
    }

    private mutating func delta(_ index: Int, _ delta: JSONObject, into out: inout ByteBuffer) {
        guard open.contains(index) else { return }  // never a delta outside its block
        emit("content_block_delta", ["type": "content_block_delta", "index": .int(index), "delta": .object(delta)], into: &out)
    }

    private mutating func stopBlock(_ index: Int, into out: inout ByteBuffer) {
        guard open.remove(index) != nil else { return }
        stopped.insert(index)
        emit("content_block_stop", ["type": "content_block_stop", "index": .int(index)], into: &out)
    }

    public mutating func encode(_ event: StreamEvent, into out: inout ByteBuffer) {
        switch event {
        case .start(let upstreamID, _):
            if upstreamID.hasPrefix("msg_") { id = upstreamID }
        case .usage(let u):
            usage = u
            return
        default: break
        }
        switch event {
        case .start: ensureStarted(&out)
        case .textStart(let i): startBlock(i, ["type": "text", "text": ""], into: &out)
        case .textDelta(let i, let t): delta(i, ["type": "text_delta", "text": .string(t)], into: &out)
        case .thinkingStart(let i): startBlock(i, ["type": "thinking", "thinking": "", "signature": ""], into: &out)
        case .thinkingDelta(let i, let t): delta(i, ["type": "thinking_delta", "thinking": .string(t)], into: &out)
        case .signatureDelta(let i, let s): delta(i, ["type": "signature_delta", "signature": .string(s)], into: &out)
        case .redactedThinking(let i, let data):
            startBlock(i, ["type": "redacted_thinking", "data": .string(data)], into: &out)
            stopBlock(i, into: &out)
        case .toolCallStart(let i, let callID, let name):
            startBlock(i, ["type": "tool_use", "id": .string(callID), "name": .string(name), "input": .object([:])], into: &out)
        case .toolCallDelta(let i, let j): delta(i, ["type": "input_json_delta", "partial_json": .string(j)], into: &out)
        case .blockStop(let i): stopBlock(i, into: &out)
        case .finish(let f): finish = f
        case .error(let e):
            ensureStarted(&out)
            for i in open.sorted() { stopBlock(i, into: &out) }
            emit("error", ["type": "error", "error": ["type": .string(AnthropicMessages.errorType(e)), "message": .string(e.message)]], into: &out)
        case .usage: break
        }
    }

    /// Ends a completed stream: closes open blocks, then `message_delta` (stop reason and cumulative
    /// usage) and `message_stop`.
    public mutating func finish(into out: inout ByteBuffer) {
        ensureStarted(&out)
        for i in open.sorted() { stopBlock(i, into: &out) }
        let (reason, sequence) = AnthropicMessages.finishString(finish ?? .stop)
        var delta: JSONObject = ["stop_reason": .string(reason)]
        delta["stop_sequence"] = sequence.map { .string($0) } ?? .null
        emit("message_delta", ["type": "message_delta", "delta": .object(delta), "usage": AnthropicMessages.usageJSON(usage)], into: &out)
        emit("message_stop", ["type": "message_stop"], into: &out)
    }

    /// A keep-alive event for silent gaps.
    public static func ping(into out: inout ByteBuffer) {
        SSEEvent.write(event: "ping", data: "{\"type\":\"ping\"}", into: &out)
    }
}
