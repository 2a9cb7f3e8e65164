/// OpenAI Responses (`POST /v1/responses`) ↔ canonical, requests.
///
/// Reasoning items carry their provider's proof of authenticity in `encrypted_content`. OpenAI's own
/// become thinking whose signature is tagged `openai:<item id>:<encrypted_content>` (sent back to
/// OpenAI byte-exact, dropped for everyone else); thinking from other providers reaches Responses
/// clients with `encrypted_content` = `switchyard:sig:<signature>` (or `switchyard:redacted:<data>`),
/// so a Responses client that returns its reasoning items returns Claude's or Gemini's signatures intact.
public enum OpenAIResponses {}

extension OpenAIResponses {
    static let wrappedSignature = "switchyard:sig:"
    static let wrappedRedacted = "switchyard:redacted:"

    /// Decodes a client's Responses request (after `previous_response_id` has been expanded).
    public static func decodeRequest(_ body: JSONObject) throws(GatewayError) -> ChatRequest {
        guard let model = body["model"]?.stringValue else { throw GatewayError.missingField("model") }
        var r = ChatRequest(model: model)
        if let instructions = body["instructions"]?.stringValue, !instructions.isEmpty { r.system.append(.text(instructions)) }
        var toolNames: [String: String] = [:]

        func appendAssistant(_ parts: [ContentPart]) {
            if let last = r.messages.last, last.role == .assistant {
                r.messages[r.messages.count - 1].content += parts
            } else {
                r.messages.append(ChatMessage(role: .assistant, content: parts))
            }
        }

        switch body["input"] {
        case .string(let s)?:
            r.messages.append(ChatMessage(role: .user, content: [.text(s)]))
        case .array(let items)?:
            for (i, item) in items.enumerated() {
                let path = "input[\(i)]"
                guard let obj = item.objectValue else { throw TranslateSupport.invalid("\(path) must be an object", param: path) }
                let type = obj["type"]?.stringValue ?? (obj["role"] != nil ? "message" : "")
                switch type {
                case "message":
                    let role = obj["role"]?.stringValue ?? ""
                    let parts = try contentParts(obj["content"], at: "\(path).content")
                    switch role {
                    case "system", "developer":
                        if r.messages.isEmpty { r.system += parts } else { r.messages.append(ChatMessage(role: .system, content: parts)) }
                    case "user":
                        r.messages.append(ChatMessage(role: .user, content: parts))
                    case "assistant":
                        appendAssistant(parts.filter { if case .text(let t, _) = $0 { return !t.isEmpty } else { return true } })
                    default:
                        throw TranslateSupport.invalid("\(path) has unknown role `\(role)`", param: "\(path).role")
                    }
                case "function_call":
                    guard let callID = obj["call_id"]?.stringValue, let name = obj["name"]?.stringValue else {
                        throw TranslateSupport.invalid("\(path) (function_call) needs `call_id` and `name`", param: path)
                    }
                    toolNames[callID] = name
                    appendAssistant([.toolCall(id: callID, name: name, arguments: obj["arguments"]?.stringValue ?? "{}")])
                case "function_call_output":
                    guard let callID = obj["call_id"]?.stringValue else {
                        throw TranslateSupport.invalid("\(path) (function_call_output) needs `call_id`", param: path)
                    }
                    let content: [ContentPart]
                    switch obj["output"] {
                    case .string(let s)?: content = [.text(s)]
                    case .array?: content = try contentParts(obj["output"], at: "\(path).output")
                    default: content = [.text(obj["output"]?.jsonString ?? "")]
                    }
                    let result = ToolResult(callID: callID, name: toolNames[callID], content: content)
                    if let last = r.messages.last, last.role == .user,
                        last.content.allSatisfy({ if case .toolResult = $0 { return true } else { return false } })
                    {
                        r.messages[r.messages.count - 1].content.append(.toolResult(result))
                    } else {
                        r.messages.append(ChatMessage(role: .user, content: [.toolResult(result)]))
                    }
                case "reasoning":
                    appendAssistant([reasoningPart(obj)])
                case "item_reference":
                    throw TranslateSupport.invalid(
                        "\(path): `item_reference` items cannot be resolved for this model; send the items themselves, or continue with `previous_response_id`",
                        param: path)
                default:
                    throw TranslateSupport.invalid("\(path) has unsupported item type `\(type)` for this model", param: "\(path).type")
                }
            }
        case nil, .null?:
            break
        default:
            throw TranslateSupport.invalid("`input` must be a string or an array of items", param: "input")
        }
        guard !r.messages.isEmpty else { throw GatewayError.missingField("input") }

        for (i, t) in (body["tools"]?.arrayValue ?? []).enumerated() {
            let type = t["type"]?.stringValue ?? "function"
            guard type == "function" else {
                throw TranslateSupport.invalid(
                    "tools[\(i)] has type `\(type)`, which only models served through the Responses API offer; use function tools", param: "tools[\(i)].type")
            }
            guard let name = t["name"]?.stringValue, !name.isEmpty else { throw TranslateSupport.invalid("tools[\(i)] needs `name`", param: "tools[\(i)]") }
            r.tools.append(ToolDefinition(
                name: name, description: t["description"]?.stringValue,
                parameters: t["parameters"] ?? ["type": "object", "properties": .object([:])], strict: t["strict"]?.boolValue))
        }
        switch body["tool_choice"] {
        case .string("none")?: r.toolChoice = ToolChoice.none
        case .string("auto")?: r.toolChoice = .auto
        case .string("required")?: r.toolChoice = .required
        case .object(let o)?:
            if o["type"]?.stringValue == "function", let name = o["name"]?.stringValue { r.toolChoice = .tool(name) } else { r.toolChoice = .auto }
        case nil, .null?: break
        default: throw TranslateSupport.invalid("`tool_choice` must be none, auto, required or {\"type\":\"function\",\"name\":…}", param: "tool_choice")
        }
        r.parallelToolCalls = body["parallel_tool_calls"]?.boolValue
        r.maxTokens = body["max_output_tokens"]?.intValue
        r.temperature = body["temperature"]?.doubleValue
        r.topP = body["top_p"]?.doubleValue
        r.user = body["user"]?.stringValue ?? body["safety_identifier"]?.stringValue
        if let effort = body["reasoning"]?["effort"]?.stringValue {
            r.reasoning = effort == "none" ? .disabled : .effort(effort)
        }
        if let format = body["text"]?["format"]?.objectValue {
            switch format["type"]?.stringValue {
            case "json_object": r.responseFormat = .jsonObject
            case "json_schema":
                guard let schema = format["schema"] else { throw TranslateSupport.invalid("`text.format.schema` is required", param: "text.format") }
                r.responseFormat = .jsonSchema(
                    name: format["name"]?.stringValue ?? "response", schema: schema, strict: format["strict"]?.boolValue,
                    description: format["description"]?.stringValue)
            default: r.responseFormat = .text
            }
        }
        r.stream = body["stream"]?.boolValue ?? false
        r.includeUsage = true
        if let m = body["metadata"] { r.extras["metadata"] = m }
        return r
    }

    /// A reasoning input item as canonical thinking (see the type's note on signatures).
    static func reasoningPart(_ item: JSONObject) -> ContentPart {
        let summary = (item["summary"]?.arrayValue ?? []).compactMap { $0["text"]?.stringValue }.joined(separator: "\n\n")
        let encrypted = item["encrypted_content"]?.stringValue
        if let encrypted, encrypted.hasPrefix(wrappedSignature) { return .thinking(summary, signature: String(encrypted.dropFirst(wrappedSignature.count))) }
        if let encrypted, encrypted.hasPrefix(wrappedRedacted) { return .redactedThinking(data: String(encrypted.dropFirst(wrappedRedacted.count))) }
        let id = item["id"]?.stringValue
        if id == nil, encrypted == nil { return .thinking(summary, signature: nil) }
        return .thinking(summary, signature: ThinkingSignature.openAIPrefix + (id ?? "") + ":" + (encrypted ?? ""))
    }

    /// The OpenAI item id and encrypted content in a tagged signature, if it is one.
    static func openAIReasoning(_ signature: String?) -> (id: String, encrypted: String)? {
        guard let signature, signature.hasPrefix(ThinkingSignature.openAIPrefix) else { return nil }
        let rest = signature.dropFirst(ThinkingSignature.openAIPrefix.count)
        guard let colon = rest.firstIndex(of: ":") else { return (String(rest), "") }
        return (String(rest[..<colon]), String(rest[rest.index(after: colon)...]))
    }

    /// Content parts of a Responses message (`input_text`, `output_text`, `input_image`, `input_file`, `refusal`).
    static func contentParts(_ content: JSONValue?, at path: String) throws(GatewayError) -> [ContentPart] {
        guard case .array(let parts)? = content else { return try OpenAIChat.contentParts(content, at: path) }
        var out: [ContentPart] = []
        for (i, p) in parts.enumerated() {
            switch p["type"]?.stringValue {
            case "input_image":
                let detail = p["detail"]?.stringValue
                if let url = p["image_url"]?.stringValue {
                    let source: MediaSource = TranslateSupport.parseDataURL(url).map { .base64(mediaType: $0.mediaType, data: $0.data) } ?? .url(url)
                    out.append(.image(source, detail: detail))
                } else if let id = p["file_id"]?.stringValue {
                    out.append(.image(.file(id: id, mediaType: nil), detail: detail))
                } else {
                    throw TranslateSupport.invalid("\(path)[\(i)] (input_image) needs `image_url` or `file_id`", param: "\(path)[\(i)]")
                }
            case "input_file":
                let title = p["filename"]?.stringValue
                if let data = p["file_data"]?.stringValue {
                    let parsed = TranslateSupport.parseDataURL(data)
                    out.append(.document(.base64(mediaType: parsed?.mediaType ?? "application/pdf", data: parsed?.data ?? data), title: title))
                } else if let id = p["file_id"]?.stringValue {
                    out.append(.document(.file(id: id, mediaType: nil), title: title))
                } else if let url = p["file_url"]?.stringValue {
                    out.append(.document(.url(url), title: title))
                } else {
                    throw TranslateSupport.invalid("\(path)[\(i)] (input_file) needs `file_data`, `file_id` or `file_url`", param: "\(path)[\(i)]")
                }
            default:
                out += try OpenAIChat.contentParts(.array([p]), at: path)
            }
        }
        return out
    }

    /// Encodes a canonical request for a Responses upstream. Reasoning is requested back encrypted and
    /// nothing is stored upstream: the gateway keeps conversations itself.
    public static func encodeRequest(_ r: ChatRequest, model: String) -> JSONObject {
        var body: JSONObject = ["model": .string(model)]
        let instructions = r.system.compactMap { part -> String? in
            switch part {
            case .text(let t, _): return t
            case .textDocument(let t, _, _): return t
            default: return nil
            }
        }.joined(separator: "\n\n")
        if !instructions.isEmpty { body["instructions"] = .string(instructions) }
        var input: [JSONValue] = []
        for m in r.messages {
            switch m.role {
            case .system:
                let text = m.content.compactMap(\.textValue).joined(separator: "\n")
                if !text.isEmpty { input.append(["role": "developer", "content": .string(text)]) }
            case .user:
                var rest: [ContentPart] = []
                func flush() {
                    if !rest.isEmpty { input.append(["role": "user", "content": .array(encodeParts(rest))]) }
                    rest = []
                }
                for part in m.content {
                    if case .toolResult(let result) = part {
                        flush()
                        let output: JSONValue = result.content.allSatisfy({ $0.textValue != nil })
                            ? .string((result.isError ? "Error: " : "") + result.text) : .array(encodeParts(result.content))
                        input.append(["type": "function_call_output", "call_id": .string(result.callID), "output": output])
                    } else {
                        rest.append(part)
                    }
                }
                flush()
            case .assistant:
                var text = ""
                func flushText() {
                    if !text.isEmpty {
                        input.append(["type": "message", "role": "assistant", "content": [["type": "output_text", "text": .string(text)]]])
                    }
                    text = ""
                }
                for part in m.content {
                    switch part {
                    case .text(let t, _): text += t
                    case .toolCall(let id, let name, let arguments):
                        flushText()
                        input.append(["type": "function_call", "call_id": .string(id), "name": .string(name), "arguments": .string(arguments)])
                    case .thinking(let t, let signature):
                        // Only OpenAI's own reasoning goes back to OpenAI; other vendors' is never sent.
                        guard let (id, encrypted) = openAIReasoning(signature) else { continue }
                        flushText()
                        var item: JSONObject = ["type": "reasoning", "id": .string(id)]
                        item["summary"] = t.isEmpty ? .array([]) : [["type": "summary_text", "text": .string(t)]]
                        if !encrypted.isEmpty { item["encrypted_content"] = .string(encrypted) }
                        input.append(.object(item))
                    default: continue
                    }
                }
                flushText()
            }
        }
        body["input"] = .array(input)
        if !r.tools.isEmpty {
            body["tools"] = .array(r.tools.map { t in
                var fn: JSONObject = ["type": "function", "name": .string(t.name)]
                if let d = t.description { fn["description"] = .string(d) }
                fn["parameters"] = t.parameters
                fn["strict"] = .bool(t.strict ?? false)
                return .object(fn)
            })
        }
        switch r.toolChoice {
        case .auto?: body["tool_choice"] = "auto"
        case .none?: body["tool_choice"] = "none"
        case .required?: body["tool_choice"] = "required"
        case .tool(let name)?: body["tool_choice"] = ["type": "function", "name": .string(name)]
        case nil: break
        }
        if let p = r.parallelToolCalls, !r.tools.isEmpty { body["parallel_tool_calls"] = .bool(p) }
        if let m = r.maxTokens { body["max_output_tokens"] = .int(max(16, m)) }
        if let t = r.temperature { body["temperature"] = TranslateSupport.number(min(2, max(0, t))) }
        if let p = r.topP { body["top_p"] = TranslateSupport.number(p) }
        if let u = r.user { body["user"] = .string(u) }
        switch r.responseFormat {
        case .jsonObject?: body["text"] = ["format": ["type": "json_object"]]
        case .jsonSchema(let name, let schema, let strict, let description)?:
            var f: JSONObject = ["type": "json_schema", "name": .string(name), "schema": schema]
            if let strict { f["strict"] = .bool(strict) }
            if let description { f["description"] = .string(description) }
            body["text"] = ["format": .object(f)]
        case .text?, nil: break
        }
        switch r.reasoning {
        case .disabled?: body["reasoning"] = ["effort": "none"]
        case let reasoning?:
            if let effort = reasoning.effort { body["reasoning"] = ["effort": .string(effort), "summary": "auto"] }
        case nil: break
        }
        body["store"] = false
        body["include"] = ["reasoning.encrypted_content"]
        if r.stream { body["stream"] = true }
        return body
    }

    /// Canonical parts as Responses input content.
    static func encodeParts(_ parts: [ContentPart]) -> [JSONValue] {
        parts.compactMap { part in
            switch part {
            case .text(let t, _): return ["type": "input_text", "text": .string(t)]
            case .textDocument(let t, let title, _): return ["type": "input_text", "text": .string(title.map { "\($0)\n\n\(t)" } ?? t)]
            case .image(let source, let detail, _):
                var image: JSONObject = ["type": "input_image", "detail": .string(detail ?? "auto")]
                switch source {
                case .base64(let mt, let data): image["image_url"] = .string(TranslateSupport.dataURL(mediaType: mt, data: data))
                case .url(let url): image["image_url"] = .string(url)
                case .file(let id, _): image["file_id"] = .string(id)
                }
                return .object(image)
            case .document(let source, let title, _):
                var file: JSONObject = ["type": "input_file"]
                switch source {
                case .base64(let mt, let data): file["file_data"] = .string(TranslateSupport.dataURL(mediaType: mt, data: data))
                case .url(let url): file["file_url"] = .string(url)
                case .file(let id, _): file["file_id"] = .string(id)
                }
                if case .file = source {} else { file["filename"] = .string(title ?? "document.pdf") }
                return .object(file)
            case .toolResult(let r): return ["type": "input_text", "text": .string(r.text)]
            case .audio, .toolCall, .thinking, .redactedThinking: return nil
            }
        }
    }
}
