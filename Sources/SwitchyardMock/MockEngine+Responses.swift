import NIOCore
import SwitchyardCore

/// The OpenAI Responses wire format: `POST /v1/responses` (stream and not) and `/v1/responses/compact`,
/// with the checks the real API makes that a translating gateway can get wrong: every
/// `function_call_output` answers an earlier `function_call`, reasoning items come back with the
/// `encrypted_content` they were issued with, byte for byte, and item types are known.
extension MockConversation {
    /// Reads a Responses request.
    init(responses request: JSONObject) {
        self.init()
        model = request["model"]?.stringValue ?? ""
        var chars = (request["instructions"]?.stringValue ?? "").utf8.count
        var items: [JSONValue] = []
        switch request["input"] {
        case .string(let s)?: items = [["role": "user", "content": .string(s)]]
        case .array(let a)?: items = a
        default: break
        }
        for item in items {
            let type = item["type"]?.stringValue ?? "message"
            promptTokens += 4
            switch type {
            case "message":
                let text = Self.text(of: item["content"])
                chars += text.utf8.count
                if item["role"]?.stringValue == "user" {
                    lastUserText = text
                    endsWithToolResult = false
                }
            case "function_call":
                chars += (item["arguments"]?.stringValue ?? "").utf8.count
            case "function_call_output":
                let output = item["output"]?.stringValue ?? Self.text(of: item["output"])
                chars += output.utf8.count
                endsWithToolResult = true
                lastToolResult = output
            default: break
            }
        }
        for tool in request["tools"]?.arrayValue ?? [] where tool["type"]?.stringValue == "function" {
            guard let name = tool["name"]?.stringValue else { continue }
            tools.append((name, tool["parameters"] ?? .object([:])))
            chars += tool.jsonString.utf8.count
        }
        switch request["tool_choice"] {
        case .string(let s)?: toolChoice = s
        case .object(let o)?: toolChoice = o["name"]?.stringValue ?? "required"
        default: break
        }
        maxTokens = request["max_output_tokens"]?.intValue
        wantsThinking = request["reasoning"]?["effort"]?.stringValue.map { $0 != "none" } ?? false
        promptTokens += (chars + 3) / 4
    }
}

extension MockSignature {
    /// The `encrypted_content` of a reasoning item: a function of its id and summary.
    static func openAIReasoning(id: String, summary: String) -> String {
        base64("openai-reasoning:" + MockReply.stableID(ByteBuffer(string: id + "\u{0}" + summary)))
    }
}

extension MockEngine {
    public func responses(body: ByteBuffer, headerDirectives: [String: String] = [:]) -> MockPlan {
        let request: JSONObject
        do {
            guard let obj = try JSONValue.parse(body).objectValue else { return Self.openAIError(status: 400, message: "the request body must be a JSON object") }
            request = obj
        } catch {
            return Self.openAIError(status: 400, message: "could not parse the JSON body: \(error)")
        }
        let conversation = MockConversation(responses: request)
        var directives = MockDirectives()
        directives.apply(headerDirectives)
        directives.apply(MockDirectives.pairs(fromText: conversation.lastUserText))
        let delay = directives.delayMs ?? settings.latencyMs
        if let status = directives.status, status >= 400 {
            return Self.openAIError(status: status, message: directives.message ?? "mock upstream error (status \(status))", retryAfter: directives.retryAfter, delayMs: delay)
        }
        if let problem = Self.validateResponses(request) { return Self.openAIError(status: 400, message: problem, type: "invalid_request_error") }

        let reply = MockReply.make(conversation: conversation, directives: directives)
        let model = request["model"]?.stringValue ?? ""
        let id = "resp_mock" + MockReply.stableID(body)
        let cached = min(directives.cachedTokens ?? 0, conversation.promptTokens)
        let reasoningTokens = reply.thinking.map { ($0.utf8.count + 3) / 4 } ?? 0
        let usage: JSONValue = [
            "input_tokens": .int(conversation.promptTokens), "input_tokens_details": ["cached_tokens": .int(cached)],
            "output_tokens": .int(reply.outputTokens + reasoningTokens), "output_tokens_details": ["reasoning_tokens": .int(reasoningTokens)],
            "total_tokens": .int(conversation.promptTokens + reply.outputTokens + reasoningTokens),
        ]
        let status = reply.finishReason == "length" ? "incomplete" : "completed"
        let suffix = MockReply.stableID(body)
        let reasoningID = "rs_mock" + suffix
        let messageID = "msg_mock" + suffix
        let text = reply.text?.full

        var output: [JSONValue] = []
        if let t = reply.thinking {
            output.append([
                "id": .string(reasoningID), "type": "reasoning", "summary": [["type": "summary_text", "text": .string(t)]],
                "encrypted_content": .string(MockSignature.openAIReasoning(id: reasoningID, summary: t)),
            ])
        }
        if let text {
            output.append(["id": .string(messageID), "type": "message", "status": "completed", "role": "assistant",
                           "content": [["type": "output_text", "text": .string(text), "annotations": [], "logprobs": []]]])
        }
        for call in reply.toolCalls {
            output.append(["id": .string("fc_" + call.id.dropFirst(5)), "type": "function_call", "status": "completed",
                           "arguments": .string(call.arguments), "call_id": .string(call.id), "name": .string(call.name)])
        }
        func response(_ status: String, _ output: [JSONValue], usage: JSONValue) -> JSONValue {
            var r: JSONObject = ["id": .string(id), "object": "response", "created_at": .int(created), "status": .string(status)]
            r["error"] = .null
            r["incomplete_details"] = status == "incomplete" ? ["reason": "max_output_tokens"] : .null
            r["instructions"] = request["instructions"] ?? .null
            r["max_output_tokens"] = request["max_output_tokens"] ?? .null
            r["model"] = .string(model)
            r["output"] = .array(output)
            r["parallel_tool_calls"] = request["parallel_tool_calls"] ?? true
            r["previous_response_id"] = .null
            r["reasoning"] = ["effort": request["reasoning"]?["effort"] ?? .null, "summary": request["reasoning"]?["summary"] ?? .null]
            r["store"] = request["store"] ?? true
            r["temperature"] = request["temperature"] ?? 1
            r["text"] = request["text"] ?? ["format": ["type": "text"]]
            r["tool_choice"] = request["tool_choice"] ?? "auto"
            r["tools"] = request["tools"] ?? []
            r["top_p"] = request["top_p"] ?? 1
            r["truncation"] = "disabled"
            r["usage"] = usage
            r["user"] = .null
            r["metadata"] = request["metadata"] ?? .object([:])
            return .object(r)
        }
        let finalUsage: JSONValue = directives.omitUsage ? .null : usage
        guard request["stream"]?.boolValue == true else {
            return MockPlan(status: 200, headers: [("content-type", "application/json")], firstByteDelayMs: delay,
                            body: .full(response(status, output, usage: finalUsage).jsonBuffer))
        }

        var head: [ByteBuffer] = []
        var sequence = 0
        func event(_ type: String, _ fields: JSONObject) -> ByteBuffer {
            var data: JSONObject = ["type": .string(type), "sequence_number": .int(sequence)]
            for (k, v) in fields { data[k] = v }
            sequence += 1
            return Self.sse(.object(data), event: type)
        }
        head.append(event("response.created", ["response": response("in_progress", [], usage: .null)]))
        head.append(event("response.in_progress", ["response": response("in_progress", [], usage: .null)]))
        var index = 0
        if let t = reply.thinking {
            let ids: JSONObject = ["item_id": .string(reasoningID), "output_index": .int(index)]
            head.append(event("response.output_item.added", ["output_index": .int(index), "item": ["id": .string(reasoningID), "type": "reasoning", "summary": []]]))
            var part = ids
            part["summary_index"] = 0
            var added = part
            added["part"] = ["type": "summary_text", "text": ""]
            head.append(event("response.reasoning_summary_part.added", added))
            for piece in MockReply.split(t, into: 3) {
                var d = part
                d["delta"] = .string(piece)
                head.append(event("response.reasoning_summary_text.delta", d))
            }
            var done = part
            done["text"] = .string(t)
            head.append(event("response.reasoning_summary_text.done", done))
            var partDone = part
            partDone["part"] = ["type": "summary_text", "text": .string(t)]
            head.append(event("response.reasoning_summary_part.done", partDone))
            head.append(event("response.output_item.done", ["output_index": .int(index), "item": output[0]]))
            index += 1
        }
        var tail: [ByteBuffer] = []
        var pieces = MockPieces(count: 0) { _ in "" }
        var render: (@Sendable (Int) -> ByteBuffer)?
        if let text {
            let ids: JSONObject = ["item_id": .string(messageID), "output_index": .int(index)]
            head.append(event("response.output_item.added", ["output_index": .int(index), "item": [
                "id": .string(messageID), "type": "message", "status": "in_progress", "role": "assistant", "content": [],
            ]]))
            var added = ids
            added["content_index"] = 0
            added["part"] = ["type": "output_text", "text": "", "annotations": []]
            head.append(event("response.content_part.added", added))
            pieces = reply.text!.pieces(directives.chunks ?? settings.chunks)
            let first = sequence
            sequence += pieces.count
            let contentPieces = pieces
            let itemID = messageID
            let outputIndex = index
            render = { i in
                Self.sse(["type": "response.output_text.delta", "sequence_number": .int(first + i), "item_id": .string(itemID),
                          "output_index": .int(outputIndex), "content_index": 0, "delta": .string(contentPieces.piece(i)), "logprobs": []],
                         event: "response.output_text.delta")
            }
            var done = ids
            done["content_index"] = 0
            done["text"] = .string(text)
            done["logprobs"] = []
            tail.append(event("response.output_text.done", done))
            var partDone = ids
            partDone["content_index"] = 0
            partDone["part"] = ["type": "output_text", "text": .string(text), "annotations": []]
            tail.append(event("response.content_part.done", partDone))
            tail.append(event("response.output_item.done", ["output_index": .int(index), "item": output[reply.thinking == nil ? 0 : 1]]))
            index += 1
        }
        var callEvents: [ByteBuffer] = []
        for (k, call) in reply.toolCalls.enumerated() {
            let itemID = "fc_" + call.id.dropFirst(5)
            let item = output[output.count - reply.toolCalls.count + k]
            callEvents.append(event("response.output_item.added", ["output_index": .int(index), "item": [
                "id": .string(itemID), "type": "function_call", "status": "in_progress", "arguments": "", "call_id": .string(call.id), "name": .string(call.name),
            ]]))
            for fragment in MockReply.split(call.arguments, into: 3) {
                callEvents.append(event("response.function_call_arguments.delta", ["item_id": .string(itemID), "output_index": .int(index), "delta": .string(fragment)]))
            }
            callEvents.append(event("response.function_call_arguments.done", [
                "item_id": .string(itemID), "output_index": .int(index), "name": .string(call.name), "arguments": .string(call.arguments),
            ]))
            callEvents.append(event("response.output_item.done", ["output_index": .int(index), "item": item]))
            index += 1
        }
        if render == nil { head += callEvents } else { tail += callEvents }
        tail.append(event(status == "incomplete" ? "response.incomplete" : "response.completed", ["response": response(status, output, usage: finalUsage)]))
        let draw = render
        let script = MockEventScript(head: head, pieceCount: pieces.count, tail: tail) { i in draw?(i) ?? ByteBuffer() }
        return MockPlan(status: 200, headers: [("content-type", "text/event-stream")], firstByteDelayMs: delay,
                        body: .events(script, chunkDelayMs: directives.chunkDelayMs ?? settings.chunkDelayMs, dropAfter: directives.dropAfter))
    }

    /// `POST /v1/responses/compact`: the user messages, then one compaction item.
    public func compact(body: ByteBuffer) -> MockPlan {
        guard let request = (try? JSONValue.parse(body))?.objectValue else { return Self.openAIError(status: 400, message: "the request body must be a JSON object") }
        if let problem = Self.validateResponses(request) { return Self.openAIError(status: 400, message: problem, type: "invalid_request_error") }
        let conversation = MockConversation(responses: request)
        var items: [JSONValue] = []
        if case .array(let input)? = request["input"] {
            items = input.filter { ($0["type"]?.stringValue ?? "message") == "message" && $0["role"]?.stringValue == "user" }
        } else if let s = request["input"]?.stringValue {
            items = [["type": "message", "role": "user", "content": [["type": "input_text", "text": .string(s)]]]]
        }
        let id = "cmp_mock" + MockReply.stableID(body)
        items.append(["id": .string(id), "type": "compaction", "encrypted_content": .string(MockSignature.base64("compaction:" + id))])
        let result: JSONValue = [
            "id": .string("resp_cmp" + MockReply.stableID(body)), "object": "response.compaction", "created_at": .int(created), "output": .array(items),
            "usage": [
                "input_tokens": .int(conversation.promptTokens), "input_tokens_details": ["cached_tokens": 0],
                "output_tokens": 32, "output_tokens_details": ["reasoning_tokens": 0], "total_tokens": .int(conversation.promptTokens + 32),
            ],
        ]
        return MockPlan(status: 200, headers: [("content-type", "application/json")], firstByteDelayMs: 0, body: .full(result.jsonBuffer))
    }

    static func validateResponses(_ r: JSONObject) -> String? {
        guard let model = r["model"]?.stringValue, !model.isEmpty else { return "Missing required parameter: 'model'." }
        if r["previous_response_id"] != nil, r["previous_response_id"]?.isNull == false {
            return "Previous response with id '\(r["previous_response_id"]?.stringValue ?? "")' not found."
        }
        guard case .array(let items)? = r["input"] else {
            return r["input"]?.stringValue != nil ? nil : "Missing required parameter: 'input'."
        }
        var calls = Set<String>()
        for (i, item) in items.enumerated() {
            let type = item["type"]?.stringValue ?? "message"
            switch type {
            case "message":
                guard let role = item["role"]?.stringValue, ["user", "assistant", "system", "developer"].contains(role) else {
                    return "Invalid value for 'input[\(i)].role'."
                }
            case "function_call":
                guard let id = item["call_id"]?.stringValue, item["name"]?.stringValue != nil else { return "Missing required parameter: 'input[\(i)].call_id'." }
                calls.insert(id)
            case "function_call_output":
                guard let id = item["call_id"]?.stringValue, calls.contains(id) else {
                    return "No tool call found for function call output with call_id \(item["call_id"]?.stringValue ?? "")."
                }
            case "reasoning":
                guard let id = item["id"]?.stringValue else { return "Missing required parameter: 'input[\(i)].id'." }
                let summary = (item["summary"]?.arrayValue ?? []).compactMap { $0["text"]?.stringValue }.joined(separator: "\n\n")
                guard let encrypted = item["encrypted_content"]?.stringValue else {
                    return "Item with id '\(id)' not found. Items are not persisted when `store` is set to false; send encrypted_content instead."
                }
                guard encrypted == MockSignature.openAIReasoning(id: id, summary: summary) else {
                    return "The encrypted content for item \(id) could not be verified."
                }
            case "compaction", "item_reference":
                continue
            default:
                return "Invalid value: '\(type)'. Supported values are: 'message', 'function_call', 'function_call_output', 'reasoning', 'compaction' and 'item_reference'."
            }
        }
        for (i, tool) in (r["tools"]?.arrayValue ?? []).enumerated() {
            if tool["type"]?.stringValue == "function", tool["name"]?.stringValue == nil {
                return "Missing required parameter: 'tools[\(i)].name'."
            }
            if tool["function"] != nil { return "Unknown parameter: 'tools[\(i)].function'." }
        }
        return nil
    }
}
