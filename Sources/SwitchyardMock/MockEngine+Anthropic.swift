import NIOCore
import SwitchyardCore

/// The Anthropic Messages wire format: `POST /v1/messages` and `/v1/messages/count_tokens`, with the
/// request checks the real API makes that a translating gateway can get wrong (tool results right after
/// their calls, thinking blocks and signatures returned byte-exact, non-empty text, sampling rules).
extension MockEngine {
    public static func anthropicError(status: Int, message: String, retryAfter: Int? = nil, delayMs: Int = 0) -> MockPlan {
        let type: String
        switch status {
        case 400: type = "invalid_request_error"
        case 401: type = "authentication_error"
        case 402: type = "billing_error"
        case 403: type = "permission_error"
        case 404: type = "not_found_error"
        case 413: type = "request_too_large"
        case 429: type = "rate_limit_error"
        case 504: type = "timeout_error"
        case 529: type = "overloaded_error"
        default: type = "api_error"
        }
        let body: JSONValue = ["type": "error", "error": ["type": .string(type), "message": .string(message)], "request_id": "req_mock"]
        var headers: [(String, String)] = [("content-type", "application/json"), ("request-id", "req_mock")]
        if let retryAfter { headers.append(("retry-after", String(retryAfter))) }
        return MockPlan(status: status, headers: headers, firstByteDelayMs: delayMs, body: .full(body.jsonBuffer))
    }

    /// The reply to a Messages request; `headers` are the request's (lower-cased names).
    public func messages(body: ByteBuffer, headers: [String: String], headerDirectives: [String: String] = [:]) -> MockPlan {
        let request: JSONObject
        do {
            guard let obj = try JSONValue.parse(body).objectValue else { return Self.anthropicError(status: 400, message: "request body must be a JSON object") }
            request = obj
        } catch {
            return Self.anthropicError(status: 400, message: "invalid JSON: \(error)")
        }
        let conversation = MockConversation(anthropic: request)
        var directives = MockDirectives()
        directives.apply(headerDirectives)
        directives.apply(MockDirectives.pairs(fromText: conversation.lastUserText))
        let delay = directives.delayMs ?? settings.latencyMs
        if let status = directives.status, status >= 400 {
            return Self.anthropicError(status: status, message: directives.message ?? "mock upstream error (status \(status))", retryAfter: directives.retryAfter, delayMs: delay)
        }
        if let problem = Self.validateMessages(request, headers: headers) { return Self.anthropicError(status: 400, message: problem) }

        let reply = MockReply.make(conversation: conversation, directives: directives)
        let model = request["model"]?.stringValue ?? ""
        let cached = min(directives.cachedTokens ?? 0, conversation.promptTokens)
        let usage: JSONObject = [
            "input_tokens": .int(conversation.promptTokens - cached), "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": .int(cached), "output_tokens": .int(reply.outputTokens),
        ]
        let stopReason: String
        switch reply.finishReason {
        case "tool_calls": stopReason = "tool_use"
        case "length": stopReason = "max_tokens"
        default: stopReason = "end_turn"
        }
        let id = "msg_mock" + MockReply.stableID(body)
        var blocks: [JSONValue] = []
        if let t = reply.thinking { blocks.append(["type": "thinking", "thinking": .string(t), "signature": .string(MockSignature.anthropic(t))]) }
        if let text = reply.text { blocks.append(["type": "text", "text": .string(text.full)]) }
        for call in reply.toolCalls {
            blocks.append(["type": "tool_use", "id": .string("toolu_" + call.id.dropFirst(5)), "name": .string(call.name),
                           "input": (try? JSONValue.parse(call.arguments)) ?? .object([:])])
        }

        guard request["stream"]?.boolValue == true else {
            var message: JSONObject = ["id": .string(id), "type": "message", "role": "assistant", "model": .string(model), "content": .array(blocks)]
            message["stop_reason"] = .string(stopReason)
            message["stop_sequence"] = .null
            if !directives.omitUsage { message["usage"] = .object(usage) }
            return MockPlan(status: 200, headers: [("content-type", "application/json"), ("request-id", "req_mock")],
                            firstByteDelayMs: delay, body: .full(JSONValue.object(message).jsonBuffer))
        }

        func event(_ name: String, _ data: JSONValue) -> ByteBuffer { Self.sse(data, event: name) }
        var head: [ByteBuffer] = []
        var startUsage = usage
        startUsage["output_tokens"] = 1
        var message: JSONObject = ["id": .string(id), "type": "message", "role": "assistant", "model": .string(model), "content": .array([])]
        message["stop_reason"] = .null
        message["stop_sequence"] = .null
        message["usage"] = .object(startUsage)
        head.append(event("message_start", ["type": "message_start", "message": .object(message)]))
        head.append(event("ping", ["type": "ping"]))
        var index = 0
        if let t = reply.thinking {
            head.append(event("content_block_start", ["type": "content_block_start", "index": .int(index), "content_block": ["type": "thinking", "thinking": "", "signature": ""]]))
            for piece in MockReply.split(t, into: 3) {
                head.append(event("content_block_delta", ["type": "content_block_delta", "index": .int(index), "delta": ["type": "thinking_delta", "thinking": .string(piece)]]))
            }
            head.append(event("content_block_delta", ["type": "content_block_delta", "index": .int(index), "delta": ["type": "signature_delta", "signature": .string(MockSignature.anthropic(t))]]))
            head.append(event("content_block_stop", ["type": "content_block_stop", "index": .int(index)]))
            index += 1
        }
        var tail: [ByteBuffer] = []
        var pieces = MockPieces(count: 0) { _ in "" }
        let textIndex = index
        if let text = reply.text {
            head.append(event("content_block_start", ["type": "content_block_start", "index": .int(index), "content_block": ["type": "text", "text": ""]]))
            pieces = text.pieces(directives.chunks ?? settings.chunks)
            tail.append(event("content_block_stop", ["type": "content_block_stop", "index": .int(index)]))
            index += 1
        }
        for call in reply.toolCalls {
            head.append(event("content_block_start", ["type": "content_block_start", "index": .int(index), "content_block": [
                "type": "tool_use", "id": .string("toolu_" + call.id.dropFirst(5)), "name": .string(call.name), "input": .object([:]),
            ]]))
            for fragment in [""] + MockReply.split(call.arguments, into: 3) {
                head.append(event("content_block_delta", ["type": "content_block_delta", "index": .int(index), "delta": ["type": "input_json_delta", "partial_json": .string(fragment)]]))
            }
            head.append(event("content_block_stop", ["type": "content_block_stop", "index": .int(index)]))
            index += 1
        }
        var delta: JSONObject = ["stop_reason": .string(stopReason)]
        delta["stop_sequence"] = .null
        var final: JSONObject = ["type": "message_delta", "delta": .object(delta)]
        final["usage"] = directives.omitUsage ? ["output_tokens": .int(reply.outputTokens)] : .object(usage)
        tail.append(event("message_delta", .object(final)))
        tail.append(event("message_stop", ["type": "message_stop"]))
        let contentPieces = pieces
        let script = MockEventScript(head: head, pieceCount: pieces.count, tail: tail) { i in
            Self.sse(["type": "content_block_delta", "index": .int(textIndex), "delta": ["type": "text_delta", "text": .string(contentPieces.piece(i))]], event: "content_block_delta")
        }
        return MockPlan(status: 200, headers: [("content-type", "text/event-stream"), ("request-id", "req_mock")], firstByteDelayMs: delay,
                        body: .events(script, chunkDelayMs: directives.chunkDelayMs ?? settings.chunkDelayMs, dropAfter: directives.dropAfter))
    }

    /// `POST /v1/messages/count_tokens`.
    public func countTokens(anthropic body: ByteBuffer) -> MockPlan {
        guard let request = (try? JSONValue.parse(body))?.objectValue else { return Self.anthropicError(status: 400, message: "invalid JSON") }
        guard request["model"]?.stringValue != nil else { return Self.anthropicError(status: 400, message: "model: Field required") }
        let n = MockConversation(anthropic: request).promptTokens
        return MockPlan(status: 200, headers: [("content-type", "application/json")], firstByteDelayMs: 0, body: .full(JSONValue.object(["input_tokens": .int(n)]).jsonBuffer))
    }

    /// The checks Anthropic makes that translation can break; nil when the request is acceptable.
    static func validateMessages(_ r: JSONObject, headers: [String: String]) -> String? {
        guard r["model"]?.stringValue != nil else { return "model: Field required" }
        guard let maxTokens = r["max_tokens"]?.intValue else { return "max_tokens: Field required" }
        guard let messages = r["messages"]?.arrayValue, !messages.isEmpty else { return "messages: at least one message is required" }
        if headers["anthropic-version"] == "2026-10-21" {
            for key in ["temperature", "top_p", "top_k"] where r[key] != nil { return "\(key): Extra inputs are not permitted" }
        }
        if let t = r["temperature"]?.doubleValue, !(0...1).contains(t) { return "temperature: Input should be less than or equal to 1" }
        let thinking = r["thinking"]?["type"]?.stringValue == "enabled"
        if thinking {
            guard let budget = r["thinking"]?["budget_tokens"]?.intValue, budget >= 1024 else { return "thinking.budget_tokens: Input should be greater than or equal to 1024" }
            if budget >= maxTokens { return "`max_tokens` must be greater than `thinking.budget_tokens`" }
            if let t = r["temperature"]?.doubleValue, t != 1 { return "`temperature` may only be set to 1 when thinking is enabled" }
            if r["top_k"] != nil { return "`top_k` is not supported when thinking is enabled" }
            if let c = r["tool_choice"]?["type"]?.stringValue, c == "any" || c == "tool" { return "Thinking may not be enabled when tool_choice forces tool use." }
        }
        for (i, tool) in (r["tools"]?.arrayValue ?? []).enumerated() where tool["type"] == nil || tool["type"]?.stringValue == "custom" {
            guard tool["name"]?.stringValue != nil else { return "tools.\(i).name: Field required" }
            guard tool["input_schema"]?["type"]?.stringValue == "object" else { return "tools.\(i).input_schema.type: Input should be 'object'" }
        }
        let midSystem = headers["anthropic-beta"]?.contains("mid-conversation-system") ?? false
        var lastAssistantWithTools: Int?
        for (i, m) in messages.enumerated() {
            let role = m["role"]?.stringValue ?? ""
            guard role == "user" || role == "assistant" || (role == "system" && midSystem) else {
                return "messages.\(i).role: Input should be 'user' or 'assistant'"
            }
            let blocks = m["content"]?.arrayValue ?? []
            if let s = m["content"]?.stringValue, s.isEmpty, i < messages.count - 1 { return "messages.\(i): all messages must have non-empty content" }
            for (k, b) in blocks.enumerated() {
                if b["type"]?.stringValue == "text", (b["text"]?.stringValue ?? "").isEmpty { return "messages.\(i).content.\(k).text: text content blocks must be non-empty" }
                if b["type"]?.stringValue == "thinking", role == "assistant" {
                    let text = b["thinking"]?.stringValue ?? ""
                    if b["signature"]?.stringValue != MockSignature.anthropic(text) { return "messages.\(i).content.\(k): Invalid `signature` in `thinking` block" }
                }
            }
            let toolUses = blocks.filter { $0["type"]?.stringValue == "tool_use" }.compactMap { $0["id"]?.stringValue }
            if role == "assistant", !toolUses.isEmpty {
                lastAssistantWithTools = i
                let next = i + 1 < messages.count ? messages[i + 1] : nil
                let leading = (next?["content"]?.arrayValue ?? []).prefix { $0["type"]?.stringValue == "tool_result" }.compactMap { $0["tool_use_id"]?.stringValue }
                if next != nil, next?["role"]?.stringValue != "user" || !Set(toolUses).isSubset(of: Set(leading)) {
                    return "messages.\(i + 1): `tool_use` ids were found without `tool_result` blocks immediately after: \(toolUses.joined(separator: ", ")). Each `tool_use` block must have a corresponding `tool_result` block in the next message."
                }
            }
            if role == "user", blocks.contains(where: { $0["type"]?.stringValue == "tool_result" }) {
                let previous = i > 0 ? messages[i - 1] : nil
                let calls = Set((previous?["content"]?.arrayValue ?? []).filter { $0["type"]?.stringValue == "tool_use" }.compactMap { $0["id"]?.stringValue })
                for b in blocks where b["type"]?.stringValue == "tool_result" {
                    if let id = b["tool_use_id"]?.stringValue, !calls.contains(id) {
                        return "messages.\(i).content: unexpected `tool_use_id` found in `tool_result` blocks: \(id). Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                    }
                }
            }
        }
        if thinking, let i = lastAssistantWithTools, i == messages.count - 2 {
            let first = messages[i]["content"]?.arrayValue?.first?["type"]?.stringValue
            if first != "thinking" && first != "redacted_thinking" {
                return "messages.\(i).content.0.type: Expected `thinking` or `redacted_thinking`, but found `\(first ?? "text")`. When `thinking` is enabled, a final `assistant` message must start with a thinking block."
            }
        }
        return nil
    }
}
