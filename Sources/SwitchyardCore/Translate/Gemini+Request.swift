/// Gemini `generateContent` ↔ canonical, requests.
public enum Gemini {
    /// Canonical tool-call ids that Gemini issued carry this prefix, so they (and only they) are sent back
    /// to Gemini as `functionCall.id` / `functionResponse.id`; older Gemini models reject foreign ids.
    public static let issuedIDPrefix = "gmcall_"
    /// Gemini 3 requires a signature on the first function call of each model turn; this value tells it
    /// to skip validation for calls that did not come from Gemini (as gemini-cli does).
    public static let skipSignature = "skip_thought_signature_validator"
}

extension JSONValue {
    /// Member lookup accepting both spellings Gemini clients send (`inlineData` / `inline_data`).
    subscript(camel camel: String, snake snake: String) -> JSONValue? {
        self[camel] ?? self[snake]
    }
}

extension Gemini {
    // MARK: Client requests

    /// Decodes a client's `generateContent` body; `model` and streaming come from the URL.
    public static func decodeRequest(_ body: JSONObject, model: String, stream: Bool) throws(GatewayError) -> ChatRequest {
        let b = JSONValue.object(body)
        var r = ChatRequest(model: model)
        r.stream = stream
        r.includeUsage = true
        if let si = b[camel: "systemInstruction", snake: "system_instruction"] {
            r.system = (si["parts"]?.arrayValue ?? []).compactMap { $0["text"]?.stringValue }.filter { !$0.isEmpty }.map { .text($0) }
        }
        guard let contents = b["contents"]?.arrayValue else { throw GatewayError.missingField("contents") }
        // Calls awaiting a response, by name, so responses without ids find theirs.
        var pending: [(name: String, id: String)] = []
        for (i, c) in contents.enumerated() {
            let role = c["role"]?.stringValue ?? "user"
            var parts: [ContentPart] = []
            for (j, p) in (c["parts"]?.arrayValue ?? []).enumerated() {
                let at = "contents[\(i)].parts[\(j)]"
                let isThought = p["thought"]?.boolValue == true
                if let sig = p[camel: "thoughtSignature", snake: "thought_signature"]?.stringValue {
                    switch ThinkingSignature.unwrapFromGemini(sig) {
                    case .signature(let s): appendThinking(&parts, isThought ? (p["text"]?.stringValue ?? "") : "", signature: s)
                    case .redacted(let data): parts.append(.redactedThinking(data: data))
                    case .gemini(let tagged): appendThinking(&parts, isThought ? (p["text"]?.stringValue ?? "") : "", signature: tagged)
                    }
                    if isThought { continue }
                }
                if let text = p["text"]?.stringValue {
                    if isThought {
                        appendThinking(&parts, text, signature: nil)
                    } else if !text.isEmpty {
                        parts.append(.text(text))
                    }
                } else if let inline = p[camel: "inlineData", snake: "inline_data"] {
                    let mt = inline[camel: "mimeType", snake: "mime_type"]?.stringValue ?? "application/octet-stream"
                    guard let data = inline["data"]?.stringValue else { throw TranslateSupport.invalid("\(at).inlineData.data is required", param: at) }
                    parts.append(media(.base64(mediaType: mt, data: data), mediaType: mt))
                } else if let file = p[camel: "fileData", snake: "file_data"] {
                    let mt = file[camel: "mimeType", snake: "mime_type"]?.stringValue
                    guard let uri = file[camel: "fileUri", snake: "file_uri"]?.stringValue else { throw TranslateSupport.invalid("\(at).fileData.fileUri is required", param: at) }
                    let source: MediaSource = uri.hasPrefix("http://") || uri.hasPrefix("https://") ? .url(uri) : .file(id: uri, mediaType: mt)
                    parts.append(media(source, mediaType: mt ?? ""))
                } else if let call = p[camel: "functionCall", snake: "function_call"] {
                    guard let name = call["name"]?.stringValue else { throw TranslateSupport.invalid("\(at).functionCall.name is required", param: at) }
                    let id = call["id"]?.stringValue ?? "call_\(i)_\(j)_\(name)"
                    pending.append((name, id))
                    parts.append(.toolCall(id: id, name: name, arguments: (call["args"] ?? .object([:])).jsonString))
                } else if let resp = p[camel: "functionResponse", snake: "function_response"] {
                    guard let name = resp["name"]?.stringValue else { throw TranslateSupport.invalid("\(at).functionResponse.name is required", param: at) }
                    var id = resp["id"]?.stringValue
                    if let k = pending.firstIndex(where: { id != nil ? $0.id == id : $0.name == name }) {
                        id = pending[k].id
                        pending.remove(at: k)
                    }
                    let payload = resp["response"] ?? .object([:])
                    let isError = payload["error"] != nil && payload["output"] == nil
                    let text: String
                    if let out = (payload["output"] ?? payload["result"] ?? payload["content"] ?? payload["error"]), payload.objectValue?.count == 1 {
                        text = out.stringValue ?? out.jsonString
                    } else {
                        text = payload.jsonString
                    }
                    parts.append(.toolResult(ToolResult(callID: id ?? "call_\(name)", name: name, content: [.text(text)], isError: isError)))
                } else {
                    continue  // executableCode and friends: Gemini-only
                }
            }
            r.messages.append(ChatMessage(role: role == "model" ? .assistant : .user, content: parts))
        }
        for tool in b["tools"]?.arrayValue ?? [] {
            if let decls = tool[camel: "functionDeclarations", snake: "function_declarations"]?.arrayValue {
                for d in decls {
                    guard let name = d["name"]?.stringValue else { continue }
                    let params = d[camel: "parametersJsonSchema", snake: "parameters_json_schema"]
                        ?? d["parameters"].map(openAPIToJSONSchema) ?? ["type": "object", "properties": .object([:])]
                    r.tools.append(ToolDefinition(name: name, description: d["description"]?.stringValue, parameters: params))
                }
            } else {
                r.extras["gemini_tools"] = .array((r.extras["gemini_tools"]?.arrayValue ?? []) + [tool])
            }
        }
        if let fc = b[camel: "toolConfig", snake: "tool_config"]?[camel: "functionCallingConfig", snake: "function_calling_config"] {
            let allowed = (fc[camel: "allowedFunctionNames", snake: "allowed_function_names"]?.arrayValue ?? []).compactMap(\.stringValue)
            switch fc["mode"]?.stringValue?.uppercased() {
            case "NONE": r.toolChoice = ToolChoice.none
            case "ANY": r.toolChoice = allowed.count == 1 ? .tool(allowed[0]) : .required
            case "AUTO", "VALIDATED": r.toolChoice = .auto
            default: break
            }
        }
        if let g = b[camel: "generationConfig", snake: "generation_config"] {
            r.temperature = g["temperature"]?.doubleValue
            r.topP = g[camel: "topP", snake: "top_p"]?.doubleValue
            r.topK = g[camel: "topK", snake: "top_k"]?.intValue
            r.maxTokens = g[camel: "maxOutputTokens", snake: "max_output_tokens"]?.intValue
            r.stop = (g[camel: "stopSequences", snake: "stop_sequences"]?.arrayValue ?? []).compactMap(\.stringValue)
            r.n = g[camel: "candidateCount", snake: "candidate_count"]?.intValue
            r.seed = g["seed"]?.intValue
            r.presencePenalty = g[camel: "presencePenalty", snake: "presence_penalty"]?.doubleValue
            r.frequencyPenalty = g[camel: "frequencyPenalty", snake: "frequency_penalty"]?.doubleValue
            if g[camel: "responseMimeType", snake: "response_mime_type"]?.stringValue == "application/json" {
                if let schema = g[camel: "responseJsonSchema", snake: "response_json_schema"] ?? g[camel: "responseSchema", snake: "response_schema"].map(openAPIToJSONSchema) {
                    r.responseFormat = .jsonSchema(name: "response", schema: schema, strict: nil, description: nil)
                } else {
                    r.responseFormat = .jsonObject
                }
            }
            if let t = g[camel: "thinkingConfig", snake: "thinking_config"] {
                if let budget = t[camel: "thinkingBudget", snake: "thinking_budget"]?.intValue {
                    r.reasoning = budget == 0 ? .disabled : budget < 0 ? .effort("medium") : .budget(budget)
                } else if let level = t[camel: "thinkingLevel", snake: "thinking_level"]?.stringValue {
                    r.reasoning = .effort(level.lowercased())
                } else if t[camel: "includeThoughts", snake: "include_thoughts"]?.boolValue == true {
                    r.reasoning = .effort("medium")
                }
            }
        }
        for key in ["safetySettings", "safety_settings", "cachedContent", "cached_content"] {
            if let v = body[key] { r.extras[key] = v }
        }
        return r
    }

    /// Adds reasoning, merging it into the thinking part just before (Gemini clients split one thought
    /// into several parts when it was streamed, with the signature on the last).
    static func appendThinking(_ parts: inout [ContentPart], _ text: String, signature: String?) {
        if case .thinking(let prevText, let prevSig)? = parts.last, prevSig == nil || signature == nil {
            parts[parts.count - 1] = .thinking(prevText + text, signature: signature ?? prevSig)
        } else {
            parts.append(.thinking(text, signature: signature))
        }
    }

    static func media(_ source: MediaSource, mediaType: String) -> ContentPart {
        if mediaType.hasPrefix("image/") { return .image(source) }
        if mediaType.hasPrefix("audio/"), case .base64(_, let data) = source {
            return .audio(data: data, format: String(mediaType.dropFirst("audio/".count)))
        }
        return .document(source)
    }

    /// Gemini's OpenAPI-style schema (`"type": "OBJECT"`, `nullable`) as JSON Schema.
    public static func openAPIToJSONSchema(_ s: JSONValue) -> JSONValue {
        switch s {
        case .object(let o):
            var out = JSONObject()
            var nullable = false
            for (k, v) in o {
                switch k {
                case "type": out["type"] = v.stringValue.map { .string($0.lowercased()) } ?? v
                case "nullable": nullable = v.boolValue ?? false
                case "properties":
                    var props = JSONObject()
                    for (name, sub) in v.objectValue ?? [:] { props[name] = openAPIToJSONSchema(sub) }
                    out["properties"] = .object(props)
                case "items": out["items"] = openAPIToJSONSchema(v)
                case "anyOf", "any_of": out["anyOf"] = .array((v.arrayValue ?? []).map(openAPIToJSONSchema))
                case "propertyOrdering", "property_ordering": continue
                default: out[k] = v
                }
            }
            if nullable, let t = out["type"]?.stringValue { out["type"] = [.string(t), "null"] }
            return .object(out)
        default: return s
        }
    }

    // MARK: Upstream requests

    /// Encodes a canonical request for a Gemini upstream (`generateContent` body).
    public static func encodeRequest(_ r: ChatRequest) throws(GatewayError) -> JSONObject {
        if r.logprobs == true { throw TranslateSupport.invalid("`logprobs` is not supported when the model is served by Gemini", param: "logprobs") }
        if let n = r.n, n > 1, r.stream { throw TranslateSupport.invalid("`n` > 1 cannot be streamed from Gemini", param: "n") }
        if r.stop.count > 5 { throw TranslateSupport.invalid("Gemini accepts at most 5 stop sequences", param: "stop") }
        var body = JSONObject()
        let systemText = r.system.compactMap { p -> String? in
            if case .text(let t, _) = p { return t }
            if case .textDocument(let t, _, _) = p { return t }
            return nil
        }.joined(separator: "\n\n")
        if !systemText.isEmpty { body["systemInstruction"] = ["parts": [["text": .string(systemText)]]] }

        // Names of calls, to label responses (OpenAI tool messages carry only the id).
        var callNames: [String: String] = [:]
        for m in r.messages { for case .toolCall(let id, let name, _) in m.content { callNames[id] = name } }
        var contents: [JSONValue] = []
        var lastRole = ""
        for m in r.messages {
            let role = m.role == .assistant ? "model" : "user"
            var parts: [JSONValue] = []
            var results: [JSONValue] = []
            var pendingSignature: String?
            var firstCallInTurn = true
            for part in m.content {
                var encoded: JSONObject?
                switch part {
                case .text(let t, _):
                    if !t.isEmpty { encoded = ["text": .string(m.role == .system ? "System note: \(t)" : t)] }
                case .textDocument(let t, let title, _):
                    encoded = ["text": .string(title.map { "\($0)\n\n\(t)" } ?? t)]
                case .image(let source, _, _), .document(let source, _, _):
                    encoded = try mediaPart(source)
                case .audio(let data, let format):
                    encoded = ["inlineData": ["mimeType": .string("audio/\(format)"), "data": .string(data)]]
                case .thinking(_, let sig):
                    // Thought text is not sent back; Gemini's own signatures ride on the next part.
                    if let sig, let g = ThinkingSignature.gemini(sig) { pendingSignature = g }
                case .redactedThinking:
                    break
                case .toolCall(let id, let name, let args):
                    var call: JSONObject = ["name": .string(name), "args": TranslateSupport.argumentsObject(args)]
                    if id.hasPrefix(issuedIDPrefix) { call["id"] = .string(String(id.dropFirst(issuedIDPrefix.count))) }
                    var p: JSONObject = ["functionCall": .object(call)]
                    if pendingSignature == nil, firstCallInTurn { pendingSignature = skipSignature }
                    firstCallInTurn = false
                    encoded = nil
                    if let sig = pendingSignature { p["thoughtSignature"] = .string(sig) }
                    pendingSignature = nil
                    parts.append(.object(p))
                case .toolResult(let result):
                    var response: JSONObject = [result.isError ? "error" : "output": .string(result.text)]
                    if result.text.isEmpty { response = ["output": ""] }
                    var fr: JSONObject = ["name": .string(result.name ?? callNames[result.callID] ?? "tool"), "response": .object(response)]
                    if result.callID.hasPrefix(issuedIDPrefix) { fr["id"] = .string(String(result.callID.dropFirst(issuedIDPrefix.count))) }
                    results.append(["functionResponse": .object(fr)])
                    for inner in result.content {
                        switch inner {
                        case .image(let s, _, _), .document(let s, _, _): results.append(.object(try mediaPart(s)))
                        default: break
                        }
                    }
                }
                if var e = encoded {
                    if let sig = pendingSignature {
                        e["thoughtSignature"] = .string(sig)
                        pendingSignature = nil
                    }
                    parts.append(.object(e))
                }
            }
            let all = results + parts  // function responses open the user turn that answers the calls
            guard !all.isEmpty else { continue }
            if role == lastRole, case .object(var prev) = contents.removeLast() {
                prev["parts"] = .array((prev["parts"]?.arrayValue ?? []) + all)
                contents.append(.object(prev))
            } else {
                contents.append(["role": .string(role), "parts": .array(all)])
            }
            lastRole = role
        }
        body["contents"] = .array(contents)

        var tools: [JSONValue] = []
        if !r.tools.isEmpty {
            tools.append(["functionDeclarations": .array(r.tools.map { t in
                var d: JSONObject = ["name": .string(t.name)]
                if let desc = t.description { d["description"] = .string(desc) }
                d["parametersJsonSchema"] = cleanJSONSchema(t.parameters)
                return .object(d)
            })])
        }
        tools += r.extras["gemini_tools"]?.arrayValue ?? []
        if !tools.isEmpty { body["tools"] = .array(tools) }
        switch r.toolChoice {
        case .auto?: body["toolConfig"] = ["functionCallingConfig": ["mode": "AUTO"]]
        case .none?: body["toolConfig"] = ["functionCallingConfig": ["mode": "NONE"]]
        case .required?: body["toolConfig"] = ["functionCallingConfig": ["mode": "ANY"]]
        case .tool(let name)?: body["toolConfig"] = ["functionCallingConfig": ["mode": "ANY", "allowedFunctionNames": [.string(name)]]]
        case nil: break
        }

        var g = JSONObject()
        if let t = r.temperature { g["temperature"] = TranslateSupport.number(min(2, max(0, t))) }
        if let p = r.topP { g["topP"] = TranslateSupport.number(p) }
        if let k = r.topK { g["topK"] = .int(k) }
        if let m = r.maxTokens { g["maxOutputTokens"] = .int(m) }
        if !r.stop.isEmpty { g["stopSequences"] = .array(r.stop.map { .string($0) }) }
        if let n = r.n, n > 1 { g["candidateCount"] = .int(n) }
        if let s = r.seed { g["seed"] = .int(s) }
        if let p = r.presencePenalty { g["presencePenalty"] = TranslateSupport.number(p) }
        if let f = r.frequencyPenalty { g["frequencyPenalty"] = TranslateSupport.number(f) }
        switch r.responseFormat {
        case .jsonObject?: g["responseMimeType"] = "application/json"
        case .jsonSchema(_, let schema, _, _)?:
            g["responseMimeType"] = "application/json"
            g["responseJsonSchema"] = cleanJSONSchema(schema)
        default: break
        }
        switch r.reasoning {
        case .disabled?: g["thinkingConfig"] = ["thinkingBudget": 0]
        case let reasoning?:
            if let budget = reasoning.budgetTokens { g["thinkingConfig"] = ["thinkingBudget": .int(budget), "includeThoughts": true] }
        case nil: break
        }
        if !g.isEmpty { body["generationConfig"] = .object(g) }
        for key in ["safetySettings", "safety_settings", "cachedContent", "cached_content"] {
            if let v = r.extras[key] { body[key] = v }
        }
        return body
    }

    static func mediaPart(_ source: MediaSource) throws(GatewayError) -> JSONObject {
        switch source {
        case .base64(let mt, let data): return ["inlineData": ["mimeType": .string(mt), "data": .string(data)]]
        case .file(let id, let mt):
            var f: JSONObject = ["fileUri": .string(id)]
            if let mt { f["mimeType"] = .string(mt) }
            return ["fileData": .object(f)]
        case .url(let url):
            // The gateway inlines URL media before encoding for Gemini; one left here could not be fetched.
            throw TranslateSupport.invalid("the media at \(url) could not be fetched for a Gemini model, which needs inline data")
        }
    }

    /// A tool schema as Gemini's `parametersJsonSchema` takes it: full JSON Schema minus the keywords
    /// that name the dialect rather than constrain values (`$schema`, `$id`, `$comment`).
    public static func cleanJSONSchema(_ s: JSONValue) -> JSONValue {
        switch s {
        case .object(let o):
            var out = JSONObject()
            for (k, v) in o where !["$schema", "$id", "$comment"].contains(k) { out[k] = cleanJSONSchema(v) }
            return .object(out)
        case .array(let a): return .array(a.map(cleanJSONSchema))
        default: return s
        }
    }
}
