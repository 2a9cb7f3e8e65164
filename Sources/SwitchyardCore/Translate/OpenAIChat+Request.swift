/// OpenAI Chat Completions ↔ canonical, requests.
public enum OpenAIChat {}

extension OpenAIChat {
    /// Decodes a client's Chat Completions request.
    public static func decodeRequest(_ body: JSONObject) throws(GatewayError) -> ChatRequest {
        guard let model = body["model"]?.stringValue else { throw GatewayError.missingField("model") }
        var r = ChatRequest(model: model)
        if let system = body["system"]?.flattenedText, !system.isEmpty {
            // A top-level `system` string, as one of the seed products accepts.
            r.system.append(.text(system))
        }
        guard let messages = body["messages"]?.arrayValue else { throw GatewayError.missingField("messages") }
        var toolNames: [String: String] = [:]
        for (i, m) in messages.enumerated() {
            guard let obj = m.objectValue, let role = obj["role"]?.stringValue else {
                throw TranslateSupport.invalid("messages[\(i)] must be an object with a `role`", param: "messages[\(i)]")
            }
            switch role {
            case "system", "developer":
                let parts = try contentParts(obj["content"], at: "messages[\(i)].content")
                if r.messages.isEmpty {
                    r.system += parts  // the leading system prompt
                } else {
                    r.messages.append(ChatMessage(role: .system, content: parts))  // mid-conversation: keeps its place
                }
            case "user":
                r.messages.append(ChatMessage(role: .user, content: try contentParts(obj["content"], at: "messages[\(i)].content")))
            case "assistant":
                var parts: [ContentPart] = []
                if let blocks = obj["thinking_blocks"]?.arrayValue {
                    for b in blocks {
                        if b["type"]?.stringValue == "redacted_thinking", let data = b["data"]?.stringValue {
                            parts.append(.redactedThinking(data: data))
                        } else if let t = b["thinking"]?.stringValue {
                            parts.append(.thinking(t, signature: b["signature"]?.stringValue))
                        }
                    }
                } else if let details = obj["reasoning_details"]?.arrayValue, !details.isEmpty {
                    for d in details {  // OpenRouter: reasoning.text {text, signature} / reasoning.encrypted {data}
                        if d["type"]?.stringValue == "reasoning.encrypted", let data = d["data"]?.stringValue {
                            parts.append(.redactedThinking(data: data))
                        } else if let t = d["text"]?.stringValue ?? d["summary"]?.stringValue {
                            parts.append(.thinking(t, signature: d["signature"]?.stringValue))
                        }
                    }
                } else if let reasoning = (obj["reasoning_content"] ?? obj["reasoning"])?.stringValue, !reasoning.isEmpty {
                    parts.append(.thinking(reasoning, signature: nil))
                }
                if let content = obj["content"], !content.isNull {
                    parts += try contentParts(content, at: "messages[\(i)].content").filter { if case .text(let t, _) = $0 { return !t.isEmpty } else { return true } }
                }
                for call in obj["tool_calls"]?.arrayValue ?? [] {
                    guard let id = call["id"]?.stringValue, let fn = call["function"], let name = fn["name"]?.stringValue else {
                        throw TranslateSupport.invalid("messages[\(i)].tool_calls entries need `id` and `function.name`", param: "messages[\(i)].tool_calls")
                    }
                    toolNames[id] = name
                    parts.append(.toolCall(id: id, name: name, arguments: fn["arguments"]?.stringValue ?? "{}"))
                }
                if let fc = obj["function_call"], let name = fc["name"]?.stringValue {  // legacy single function call
                    let id = "call_\(name)_\(i)"
                    toolNames[id] = name
                    parts.append(.toolCall(id: id, name: name, arguments: fc["arguments"]?.stringValue ?? "{}"))
                }
                r.messages.append(ChatMessage(role: .assistant, content: parts))
            case "tool", "function":
                let id = obj["tool_call_id"]?.stringValue ?? (role == "function" ? obj["name"]?.stringValue.map { "call_\($0)_\(i - 1)" } : nil)
                guard let id else {
                    throw TranslateSupport.invalid("messages[\(i)] has role `tool` but no `tool_call_id`", param: "messages[\(i)].tool_call_id")
                }
                let content = try contentParts(obj["content"], at: "messages[\(i)].content")
                let result = ToolResult(callID: id, name: toolNames[id] ?? obj["name"]?.stringValue, content: content)
                // Consecutive tool results form one user turn.
                if let last = r.messages.last, last.role == .user, last.content.allSatisfy({ if case .toolResult = $0 { return true } else { return false } }) {
                    r.messages[r.messages.count - 1].content.append(.toolResult(result))
                } else {
                    r.messages.append(ChatMessage(role: .user, content: [.toolResult(result)]))
                }
            default:
                throw TranslateSupport.invalid("messages[\(i)] has unknown role `\(role)`", param: "messages[\(i)].role")
            }
        }

        for (i, t) in ((body["tools"]?.arrayValue ?? []) + (body["functions"]?.arrayValue ?? [])).enumerated() {
            let fn = t["function"] ?? t
            guard let name = fn["name"]?.stringValue, !name.isEmpty else {
                throw TranslateSupport.invalid("tools[\(i)] needs `function.name`", param: "tools[\(i)]")
            }
            let params = fn["parameters"] ?? ["type": "object", "properties": .object([:])]
            r.tools.append(ToolDefinition(
                name: name, description: fn["description"]?.stringValue, parameters: params,
                strict: fn["strict"]?.boolValue, cacheControl: t["cache_control"]))
        }
        switch body["tool_choice"] ?? body["function_call"] {
        case .string("none")?: r.toolChoice = ToolChoice.none
        case .string("auto")?: r.toolChoice = .auto
        case .string("required")?, .string("any")?: r.toolChoice = .required
        case .object(let o)?:
            if let name = o["function"]?["name"]?.stringValue ?? o["name"]?.stringValue { r.toolChoice = .tool(name) }
        case nil, .null?: break
        default: throw TranslateSupport.invalid("`tool_choice` must be none, auto, required or {\"type\":\"function\",\"function\":{\"name\":…}}", param: "tool_choice")
        }
        r.parallelToolCalls = body["parallel_tool_calls"]?.boolValue
        r.maxTokens = body["max_completion_tokens"]?.intValue ?? body["max_tokens"]?.intValue
        r.temperature = body["temperature"]?.doubleValue
        r.topP = body["top_p"]?.doubleValue
        r.topK = body["top_k"]?.intValue
        switch body["stop"] {
        case .string(let s)?: r.stop = [s]
        case .array(let a)?: r.stop = a.compactMap(\.stringValue)
        default: break
        }
        r.n = body["n"]?.intValue
        r.seed = body["seed"]?.intValue
        r.presencePenalty = body["presence_penalty"]?.doubleValue
        r.frequencyPenalty = body["frequency_penalty"]?.doubleValue
        r.user = body["user"]?.stringValue ?? body["safety_identifier"]?.stringValue
        r.logprobs = body["logprobs"]?.boolValue
        if let rf = body["response_format"]?.objectValue {
            switch rf["type"]?.stringValue {
            case "json_object": r.responseFormat = .jsonObject
            case "json_schema":
                let js = rf["json_schema"]
                guard let schema = js?["schema"] else {
                    throw TranslateSupport.invalid("`response_format.json_schema.schema` is required", param: "response_format")
                }
                r.responseFormat = .jsonSchema(
                    name: js?["name"]?.stringValue ?? "response", schema: schema, strict: js?["strict"]?.boolValue,
                    description: js?["description"]?.stringValue)
            default: r.responseFormat = .text
            }
        }
        if let effort = body["reasoning_effort"]?.stringValue ?? body["reasoning"]?["effort"]?.stringValue {
            r.reasoning = effort == "none" ? .disabled : .effort(effort)
        }
        if let thinking = body["thinking"]?.objectValue {  // Anthropic-style, as some OpenAI-format clients send
            if thinking["type"]?.stringValue == "disabled" {
                r.reasoning = .disabled
            } else if let budget = thinking["budget_tokens"]?.intValue {
                r.reasoning = .budget(budget)
            }
        }
        r.stream = body["stream"]?.boolValue ?? false
        r.includeUsage = body["stream_options"]?["include_usage"]?.boolValue ?? false
        for key in ["metadata", "service_tier", "store", "modalities", "prediction", "top_logprobs", "logit_bias", "web_search_options"] {
            if let v = body[key] { r.extras[key] = v }
        }
        return r
    }

    /// Content of a Chat Completions message: a string or an array of parts.
    static func contentParts(_ content: JSONValue?, at path: String) throws(GatewayError) -> [ContentPart] {
        switch content {
        case nil, .null?: return []
        case .string(let s)?: return s.isEmpty ? [] : [.text(s)]
        case .array(let parts)?:
            var out: [ContentPart] = []
            for (i, p) in parts.enumerated() {
                let cache = p["cache_control"]
                switch p["type"]?.stringValue {
                case "text", "input_text", "output_text":
                    out.append(.text(p["text"]?.stringValue ?? "", cacheControl: cache))
                case "refusal":
                    out.append(.text(p["refusal"]?.stringValue ?? ""))
                case "image_url", "input_image":
                    let urlValue = p["image_url"]
                    guard let url = urlValue?.stringValue ?? urlValue?["url"]?.stringValue else {
                        throw TranslateSupport.invalid("\(path)[\(i)].image_url.url is required", param: "\(path)[\(i)]")
                    }
                    let source: MediaSource = TranslateSupport.parseDataURL(url).map { .base64(mediaType: $0.mediaType, data: $0.data) } ?? .url(url)
                    out.append(.image(source, detail: urlValue?["detail"]?.stringValue, cacheControl: cache))
                case "input_audio":
                    guard let data = p["input_audio"]?["data"]?.stringValue else {
                        throw TranslateSupport.invalid("\(path)[\(i)].input_audio.data is required", param: "\(path)[\(i)]")
                    }
                    out.append(.audio(data: data, format: p["input_audio"]?["format"]?.stringValue ?? "wav"))
                case "file":
                    let f = p["file"]
                    if let data = f?["file_data"]?.stringValue {
                        let parsed = TranslateSupport.parseDataURL(data)
                        out.append(.document(.base64(mediaType: parsed?.mediaType ?? "application/pdf", data: parsed?.data ?? data),
                                             title: f?["filename"]?.stringValue, cacheControl: cache))
                    } else if let id = f?["file_id"]?.stringValue {
                        out.append(.document(.file(id: id, mediaType: nil), title: f?["filename"]?.stringValue, cacheControl: cache))
                    } else {
                        throw TranslateSupport.invalid("\(path)[\(i)].file needs `file_data` or `file_id`", param: "\(path)[\(i)]")
                    }
                default:
                    throw TranslateSupport.invalid("\(path)[\(i)] has unsupported content part type `\(p["type"]?.stringValue ?? "?")`", param: "\(path)[\(i)].type")
                }
            }
            return out
        default:
            throw TranslateSupport.invalid("\(path) must be a string or an array of content parts", param: path)
        }
    }

    /// How an upstream names the output cap: OpenAI's newer models take only `max_completion_tokens`,
    /// many compatible servers only `max_tokens`.
    public enum MaxTokensField: String, Sendable { case maxTokens = "max_tokens", maxCompletionTokens = "max_completion_tokens" }

    /// Encodes a canonical request for an OpenAI-compatible upstream.
    public static func encodeRequest(_ r: ChatRequest, model: String, maxTokensField: MaxTokensField) -> JSONObject {
        var body: JSONObject = ["model": .string(model)]
        var messages: [JSONValue] = []
        let systemText = r.system.compactMap { part -> String? in
            switch part {
            case .text(let t, _): return t
            case .textDocument(let t, _, _): return t
            default: return nil
            }
        }.joined(separator: "\n\n")
        if !systemText.isEmpty { messages.append(["role": "system", "content": .string(systemText)]) }
        for m in r.messages {
            switch m.role {
            case .system:
                let text = m.content.compactMap(\.textValue).joined(separator: "\n")
                if !text.isEmpty { messages.append(["role": "system", "content": .string(text)]) }
            case .assistant:
                var msg: JSONObject = ["role": "assistant"]
                let text = m.content.compactMap(\.textValue).joined()
                msg["content"] = text.isEmpty ? .null : .string(text)
                let calls: [JSONValue] = m.content.compactMap { part in
                    guard case .toolCall(let id, let name, let args) = part else { return nil }
                    return ["id": .string(id), "type": "function", "function": ["name": .string(name), "arguments": .string(args)]]
                }
                if !calls.isEmpty { msg["tool_calls"] = .array(calls) }
                messages.append(.object(msg))
            case .user:
                // Tool results become `tool` messages, which must directly follow the assistant's calls.
                var rest: [ContentPart] = []
                for part in m.content {
                    if case .toolResult(let result) = part {
                        let content: JSONValue
                        if result.content.allSatisfy({ $0.textValue != nil }) {
                            content = .string((result.isError ? "Error: " : "") + result.text)
                        } else {
                            content = .array(encodeParts(result.content))
                        }
                        messages.append(["role": "tool", "tool_call_id": .string(result.callID), "content": content])
                    } else {
                        rest.append(part)
                    }
                }
                if !rest.isEmpty {
                    if rest.allSatisfy({ $0.textValue != nil }) {
                        messages.append(["role": "user", "content": .string(rest.compactMap(\.textValue).joined(separator: "\n"))])
                    } else {
                        messages.append(["role": "user", "content": .array(encodeParts(rest))])
                    }
                }
            }
        }
        body["messages"] = .array(messages)
        if !r.tools.isEmpty {
            body["tools"] = .array(r.tools.map { t in
                var fn: JSONObject = ["name": .string(t.name)]
                if let d = t.description { fn["description"] = .string(d) }
                fn["parameters"] = t.parameters
                if let s = t.strict { fn["strict"] = .bool(s) }
                return ["type": "function", "function": .object(fn)]
            })
        }
        switch r.toolChoice {
        case .auto?: body["tool_choice"] = "auto"
        case .none?: body["tool_choice"] = "none"
        case .required?: body["tool_choice"] = "required"
        case .tool(let name)?: body["tool_choice"] = ["type": "function", "function": ["name": .string(name)]]
        case nil: break
        }
        if let p = r.parallelToolCalls, !r.tools.isEmpty { body["parallel_tool_calls"] = .bool(p) }
        if let m = r.maxTokens { body[maxTokensField.rawValue] = .int(m) }
        if let t = r.temperature { body["temperature"] = TranslateSupport.number(min(2, max(0, t))) }
        if let p = r.topP { body["top_p"] = TranslateSupport.number(p) }
        if !r.stop.isEmpty { body["stop"] = .array(r.stop.map { .string($0) }) }
        if let n = r.n { body["n"] = .int(n) }
        if let s = r.seed { body["seed"] = .int(s) }
        if let p = r.presencePenalty { body["presence_penalty"] = TranslateSupport.number(p) }
        if let f = r.frequencyPenalty { body["frequency_penalty"] = TranslateSupport.number(f) }
        if let u = r.user { body["user"] = .string(u) }
        if let l = r.logprobs { body["logprobs"] = .bool(l) }
        switch r.responseFormat {
        case .jsonObject?: body["response_format"] = ["type": "json_object"]
        case .jsonSchema(let name, let schema, let strict, let description)?:
            var js: JSONObject = ["name": .string(name), "schema": schema]
            if let strict { js["strict"] = .bool(strict) }
            if let description { js["description"] = .string(description) }
            body["response_format"] = ["type": "json_schema", "json_schema": .object(js)]
        case .text?, nil: break
        }
        if let reasoning = r.reasoning, let effort = reasoning.effort { body["reasoning_effort"] = .string(effort) }
        if r.stream {
            body["stream"] = true
            body["stream_options"] = ["include_usage": true]  // always: the gateway needs usage
        }
        return body
    }

    /// Canonical parts as Chat Completions content parts.
    static func encodeParts(_ parts: [ContentPart]) -> [JSONValue] {
        parts.compactMap { part in
            switch part {
            case .text(let t, _): return ["type": "text", "text": .string(t)]
            case .textDocument(let t, let title, _):
                return ["type": "text", "text": .string(title.map { "\($0)\n\n\(t)" } ?? t)]
            case .image(let source, let detail, _):
                var image: JSONObject = [:]
                switch source {
                case .base64(let mt, let data): image["url"] = .string(TranslateSupport.dataURL(mediaType: mt, data: data))
                case .url(let url): image["url"] = .string(url)
                case .file(let id, _): image["url"] = .string(id)
                }
                if let detail { image["detail"] = .string(detail) }
                return ["type": "image_url", "image_url": .object(image)]
            case .document(let source, let title, _):
                var file: JSONObject = [:]
                switch source {
                case .base64(let mt, let data): file["file_data"] = .string(TranslateSupport.dataURL(mediaType: mt, data: data))
                case .url(let url): return ["type": "text", "text": .string("[document: \(url)]")]
                case .file(let id, _): file["file_id"] = .string(id)
                }
                file["filename"] = .string(title ?? "document.pdf")
                return ["type": "file", "file": .object(file)]
            case .audio(let data, let format):
                return ["type": "input_audio", "input_audio": ["data": .string(data), "format": .string(format)]]
            case .toolResult(let r): return ["type": "text", "text": .string(r.text)]
            case .toolCall, .thinking, .redactedThinking: return nil
            }
        }
    }
}
