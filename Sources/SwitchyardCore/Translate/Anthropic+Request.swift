/// Anthropic Messages ↔ canonical, requests.
public enum AnthropicMessages {
    /// The API version the gateway sends when the client did not choose one (translated requests).
    public static let defaultVersion = "2023-06-01"
    /// Name of the tool used to obtain structured output (JSON schema) from Anthropic models.
    public static let structuredOutputTool = "structured_output"
}

extension AnthropicMessages {
    /// Decodes a client's Messages request. Claude Code's `role: "system"` entries inside `messages` keep
    /// their place (as canonical `system` messages); encoders for formats without them convert them.
    public static func decodeRequest(_ body: JSONObject) throws(GatewayError) -> ChatRequest {
        guard let model = body["model"]?.stringValue else { throw GatewayError.missingField("model") }
        var r = ChatRequest(model: model)
        r.system = try systemParts(body["system"])
        guard let messages = body["messages"]?.arrayValue else { throw GatewayError.missingField("messages") }
        for (i, m) in messages.enumerated() {
            guard let role = m["role"]?.stringValue else {
                throw TranslateSupport.invalid("messages.\(i).role: Field required", param: "messages.\(i).role")
            }
            let parts = try blocks(m["content"], at: "messages.\(i).content")
            switch role {
            case "user": r.messages.append(ChatMessage(role: .user, content: parts))
            case "assistant": r.messages.append(ChatMessage(role: .assistant, content: parts))
            case "system":
                if r.messages.isEmpty { r.system += parts } else { r.messages.append(ChatMessage(role: .system, content: parts)) }
            default:
                throw TranslateSupport.invalid("messages.\(i).role: Input should be 'user' or 'assistant'", param: "messages.\(i).role")
            }
        }
        r.maxTokens = body["max_tokens"]?.intValue
        r.temperature = body["temperature"]?.doubleValue
        r.topP = body["top_p"]?.doubleValue
        r.topK = body["top_k"]?.intValue
        r.stop = (body["stop_sequences"]?.arrayValue ?? []).compactMap(\.stringValue)
        r.stream = body["stream"]?.boolValue ?? false
        r.includeUsage = true
        r.user = body["metadata"]?["user_id"]?.stringValue
        for (i, t) in (body["tools"]?.arrayValue ?? []).enumerated() {
            if let type = t["type"]?.stringValue, type != "custom" {
                // Server tools (web search, code execution, …) run at Anthropic; kept for same-format use.
                r.extras["server_tools"] = .array((r.extras["server_tools"]?.arrayValue ?? []) + [t])
                continue
            }
            guard let name = t["name"]?.stringValue else { throw TranslateSupport.invalid("tools.\(i).name: Field required", param: "tools.\(i).name") }
            r.tools.append(ToolDefinition(
                name: name, description: t["description"]?.stringValue,
                parameters: t["input_schema"] ?? ["type": "object", "properties": .object([:])],
                strict: t["strict"]?.boolValue, cacheControl: t["cache_control"]))
        }
        if let tc = body["tool_choice"]?.objectValue {
            switch tc["type"]?.stringValue {
            case "auto": r.toolChoice = .auto
            case "any": r.toolChoice = .required
            case "none": r.toolChoice = ToolChoice.none
            case "tool":
                guard let name = tc["name"]?.stringValue else { throw TranslateSupport.invalid("tool_choice.name: Field required", param: "tool_choice.name") }
                r.toolChoice = .tool(name)
            default: throw TranslateSupport.invalid("tool_choice.type must be auto, any, tool or none", param: "tool_choice.type")
            }
            if tc["disable_parallel_tool_use"]?.boolValue == true { r.parallelToolCalls = false }
        }
        if let thinking = body["thinking"]?.objectValue {
            switch thinking["type"]?.stringValue {
            case "enabled": r.reasoning = thinking["budget_tokens"]?.intValue.map { .budget($0) } ?? .effort("medium")
            case "adaptive": r.reasoning = .effort(body["output_config"]?["effort"]?.stringValue ?? "medium")
            case "disabled": r.reasoning = .disabled
            default: break
            }
        } else if let effort = body["output_config"]?["effort"]?.stringValue {
            r.reasoning = .effort(effort)
        }
        if let format = body["output_config"]?["format"], format["type"]?.stringValue == "json_schema", let schema = format["schema"] {
            r.responseFormat = .jsonSchema(name: "response", schema: schema, strict: true, description: nil)
        }
        return r
    }

    static func systemParts(_ system: JSONValue?) throws(GatewayError) -> [ContentPart] {
        switch system {
        case nil, .null?: return []
        case .string(let s)?: return s.isEmpty ? [] : [.text(s)]
        case .array(let items)?:
            return items.compactMap { b in
                guard let t = b["text"]?.stringValue else { return nil }
                return .text(t, cacheControl: b["cache_control"])
            }
        default: throw TranslateSupport.invalid("system: Input should be a valid string or list of text blocks", param: "system")
        }
    }

    static func source(_ s: JSONValue?, at path: String) throws(GatewayError) -> MediaSource {
        switch s?["type"]?.stringValue {
        case "base64":
            guard let data = s?["data"]?.stringValue else { throw TranslateSupport.invalid("\(path).source.data: Field required", param: path) }
            return .base64(mediaType: s?["media_type"]?.stringValue ?? "application/octet-stream", data: data)
        case "url":
            guard let url = s?["url"]?.stringValue else { throw TranslateSupport.invalid("\(path).source.url: Field required", param: path) }
            return .url(url)
        case "file":
            guard let id = s?["file_id"]?.stringValue else { throw TranslateSupport.invalid("\(path).source.file_id: Field required", param: path) }
            return .file(id: id, mediaType: nil)
        default:
            throw TranslateSupport.invalid("\(path).source.type must be base64, url or file", param: path)
        }
    }

    /// Content blocks of a message (a string is one text block).
    static func blocks(_ content: JSONValue?, at path: String) throws(GatewayError) -> [ContentPart] {
        switch content {
        case .string(let s)?: return [.text(s)]
        case .array(let items)?:
            var out: [ContentPart] = []
            for (i, b) in items.enumerated() {
                let at = "\(path).\(i)"
                let cache = b["cache_control"]
                switch b["type"]?.stringValue {
                case "text": out.append(.text(b["text"]?.stringValue ?? "", cacheControl: cache))
                case "image": out.append(.image(try source(b["source"], at: at), cacheControl: cache))
                case "document":
                    let src = b["source"]
                    switch src?["type"]?.stringValue {
                    case "text":
                        out.append(.textDocument(src?["data"]?.stringValue ?? "", title: b["title"]?.stringValue, cacheControl: cache))
                    case "content":
                        out.append(.textDocument(src?["content"]?.flattenedText ?? "", title: b["title"]?.stringValue, cacheControl: cache))
                    default:
                        out.append(.document(try source(src, at: at), title: b["title"]?.stringValue, cacheControl: cache))
                    }
                case "tool_use", "server_tool_use":
                    guard let id = b["id"]?.stringValue, let name = b["name"]?.stringValue else {
                        throw TranslateSupport.invalid("\(at): tool_use needs id and name", param: at)
                    }
                    out.append(.toolCall(id: id, name: name, arguments: (b["input"] ?? .object([:])).jsonString))
                case "tool_result":
                    guard let id = b["tool_use_id"]?.stringValue else {
                        throw TranslateSupport.invalid("\(at).tool_use_id: Field required", param: at)
                    }
                    let inner: [ContentPart]
                    switch b["content"] {
                    case nil, .null?: inner = []
                    case .string(let s)?: inner = [.text(s)]
                    default: inner = try blocks(b["content"], at: "\(at).content")
                    }
                    out.append(.toolResult(ToolResult(callID: id, content: inner, isError: b["is_error"]?.boolValue ?? false, cacheControl: cache)))
                case "thinking":
                    out.append(.thinking(b["thinking"]?.stringValue ?? "", signature: b["signature"]?.stringValue))
                case "redacted_thinking":
                    out.append(.redactedThinking(data: b["data"]?.stringValue ?? ""))
                case "search_result", "web_search_tool_result", "web_fetch_tool_result", "code_execution_tool_result",
                    "container_upload", "mcp_tool_use", "mcp_tool_result":
                    continue  // results of Anthropic-hosted tools: meaningful only to Anthropic models
                default:
                    throw TranslateSupport.invalid("\(at).type: unsupported content block type `\(b["type"]?.stringValue ?? "?")`", param: at)
                }
            }
            return out
        case nil, .null?: return []
        default: throw TranslateSupport.invalid("\(path): Input should be a valid string or list of content blocks", param: path)
        }
    }

    /// What an Anthropic-bound request needs besides the canonical request.
    public struct EncodeOptions: Sendable {
        /// `max_tokens` when the client gave none (Anthropic requires it).
        public var defaultMaxTokens: Int
        public init(defaultMaxTokens: Int = 8192) { self.defaultMaxTokens = defaultMaxTokens }
    }

    /// Encodes a canonical request for an Anthropic upstream. Throws 400 for what Anthropic cannot honour
    /// without changing the meaning (several choices, log probabilities, audio).
    public static func encodeRequest(_ r: ChatRequest, model: String, options: EncodeOptions) throws(GatewayError) -> JSONObject {
        if let n = r.n, n > 1 {
            throw TranslateSupport.invalid("`n` > 1 is not supported by Anthropic models: request one choice at a time", param: "n")
        }
        if r.logprobs == true {
            throw TranslateSupport.invalid("`logprobs` is not supported by Anthropic models", param: "logprobs")
        }
        var body: JSONObject = ["model": .string(model)]
        var thinkingBudget = r.reasoning?.budgetTokens
        var tools = r.tools
        var toolChoice = r.toolChoice
        var system = r.system
        switch r.responseFormat {
        case .jsonSchema(_, let schema, _, let description)?:
            // Structured output through a forced tool call; its input comes back as the message text.
            tools.append(ToolDefinition(
                name: structuredOutputTool,
                description: description ?? "Respond by calling this tool with the answer as its input, which must match the schema.",
                parameters: schema))
            toolChoice = .tool(structuredOutputTool)
        case .jsonObject?:
            system.append(.text("Respond with a single valid JSON object and nothing else."))
        default: break
        }
        switch toolChoice {
        case .required?, .tool?: thinkingBudget = nil  // Anthropic rejects forced tool use with thinking
        default: break
        }
        let systemBlocks: [JSONValue] = system.compactMap { part in
            switch part {
            case .text(let t, let cache) where !t.isEmpty:
                var b: JSONObject = ["type": "text", "text": .string(t)]
                if let cache { b["cache_control"] = cache }
                return .object(b)
            case .textDocument(let t, _, _): return ["type": "text", "text": .string(t)]
            default: return nil
            }
        }
        if !systemBlocks.isEmpty { body["system"] = .array(systemBlocks) }

        var messages: [JSONValue] = []
        var lastRole: ChatRole?
        for m in r.messages {
            var role = m.role
            var blocks = try encodeBlocks(m.content)
            if role == .system {
                // Mid-conversation system text becomes a user turn (only the newest Claude models accept
                // system turns in place); its position, and so the cached prefix, is kept.
                role = .user
                blocks = blocks.map { b in
                    guard case .object(var o) = b, let t = o["text"]?.stringValue else { return b }
                    o["text"] = .string("<system-reminder>\n\(t)\n</system-reminder>")
                    return .object(o)
                }
            }
            if role == .user {
                // Tool results must open the user turn that follows the calls.
                let results = blocks.filter { $0["type"]?.stringValue == "tool_result" }
                if !results.isEmpty { blocks = results + blocks.filter { $0["type"]?.stringValue != "tool_result" } }
            }
            if blocks.isEmpty { continue }
            if lastRole == role, case .object(var prev) = messages.removeLast() {
                // Consecutive same-role turns are merged.
                prev["content"] = .array((prev["content"]?.arrayValue ?? []) + blocks)
                messages.append(.object(prev))
            } else {
                messages.append(["role": .string(role.rawValue), "content": .array(blocks)])
            }
            lastRole = role
        }
        body["messages"] = .array(messages)

        var maxTokens = r.maxTokens ?? options.defaultMaxTokens
        if let budget = thinkingBudget {
            let b = max(1024, budget)
            if maxTokens <= b { maxTokens = b + min(options.defaultMaxTokens, 8192) }
            body["thinking"] = ["type": "enabled", "budget_tokens": .int(b)]
        }
        body["max_tokens"] = .int(maxTokens)
        if !r.stop.isEmpty { body["stop_sequences"] = .array(r.stop.map { .string($0) }) }
        if thinkingBudget == nil {
            if let t = r.temperature { body["temperature"] = TranslateSupport.number(min(1, max(0, t))) }
            if let k = r.topK { body["top_k"] = .int(k) }
            if let p = r.topP { body["top_p"] = TranslateSupport.number(p) }
        } else if let p = r.topP, p >= 0.95 {
            body["top_p"] = TranslateSupport.number(p)  // with thinking, only top_p in [0.95, 1] is accepted
        }
        if !tools.isEmpty {
            body["tools"] = .array(tools.map { t in
                var o: JSONObject = ["name": .string(t.name)]
                if let d = t.description { o["description"] = .string(d) }
                var schema = t.parameters
                if case .object(var s) = schema, s["type"] == nil {
                    s["type"] = "object"
                    schema = .object(s)
                }
                o["input_schema"] = schema
                if let c = t.cacheControl { o["cache_control"] = c }
                return .object(o)
            } + (r.extras["server_tools"]?.arrayValue ?? []))
        }
        var choice: JSONObject?
        switch toolChoice {
        case .auto?: choice = ["type": "auto"]
        case .none?: choice = ["type": "none"]
        case .required?: choice = ["type": "any"]
        case .tool(let name)?: choice = ["type": "tool", "name": .string(name)]
        case nil: break
        }
        if r.parallelToolCalls == false, !tools.isEmpty {
            var c = choice ?? ["type": "auto"]
            if c["type"] != "none" { c["disable_parallel_tool_use"] = true }
            choice = c
        }
        if let choice, !tools.isEmpty || choice["type"] == "none" { body["tool_choice"] = .object(choice) }
        if let user = r.user, !user.isEmpty { body["metadata"] = ["user_id": .string(String(user.prefix(256)))] }
        if r.stream { body["stream"] = true }
        return body
    }

    static func mediaSource(_ s: MediaSource) -> JSONValue {
        switch s {
        case .base64(let mt, let data): return ["type": "base64", "media_type": .string(mt), "data": .string(data)]
        case .url(let url): return ["type": "url", "url": .string(url)]
        case .file(let id, _): return ["type": "file", "file_id": .string(id)]
        }
    }

    static func encodeBlocks(_ parts: [ContentPart]) throws(GatewayError) -> [JSONValue] {
        var out: [JSONValue] = []
        for part in parts {
            var block: JSONObject
            var cache: JSONValue?
            switch part {
            case .text(let t, let c):
                guard !t.isEmpty else { continue }  // Anthropic rejects empty text blocks
                block = ["type": "text", "text": .string(t)]
                cache = c
            case .image(let s, _, let c):
                if case .base64(let mt, _) = s, !["image/jpeg", "image/png", "image/gif", "image/webp"].contains(mt) {
                    throw TranslateSupport.invalid("image media type `\(mt)` is not supported by Anthropic models (jpeg, png, gif, webp)")
                }
                block = ["type": "image", "source": mediaSource(s)]
                cache = c
            case .document(let s, let title, let c):
                block = ["type": "document", "source": mediaSource(s)]
                if let title { block["title"] = .string(title) }
                cache = c
            case .textDocument(let t, let title, let c):
                block = ["type": "document", "source": ["type": "text", "media_type": "text/plain", "data": .string(t)]]
                if let title { block["title"] = .string(title) }
                cache = c
            case .toolCall(let id, let name, let args):
                block = ["type": "tool_use", "id": .string(id), "name": .string(name), "input": TranslateSupport.argumentsObject(args)]
            case .toolResult(let result):
                block = ["type": "tool_result", "tool_use_id": .string(result.callID)]
                if result.content.allSatisfy({ $0.textValue != nil }) {
                    block["content"] = .string(result.text)
                } else {
                    block["content"] = .array(try encodeBlocks(result.content))
                }
                if result.isError { block["is_error"] = true }
                cache = result.cacheControl
            case .thinking(let t, let signature):
                // Only signatures Anthropic issued can go back; others (none, or another provider's) are dropped.
                guard let signature, !signature.isEmpty, !ThinkingSignature.isForeign(signature) else { continue }
                block = ["type": "thinking", "thinking": .string(t), "signature": .string(signature)]
            case .redactedThinking(let data):
                guard !ThinkingSignature.isForeign(data) else { continue }
                block = ["type": "redacted_thinking", "data": .string(data)]
            case .audio:
                throw TranslateSupport.invalid("audio input is not supported by Anthropic models")
            }
            if let cache { block["cache_control"] = cache }
            out.append(.object(block))
        }
        return out
    }
}

/// Thinking signatures are opaque and only valid for the provider family that issued them. Gemini's are
/// tagged with a prefix that cannot occur in Anthropic's base64 signatures, so each encoder can tell
/// which ones to send back and which to drop.
public enum ThinkingSignature {
    public static let geminiPrefix = "gemini:"
    /// OpenAI Responses reasoning items: `openai:<item id>:<encrypted_content>`.
    public static let openAIPrefix = "openai:"

    /// Whether the signature was issued by a provider other than Anthropic.
    public static func isForeign(_ signature: String) -> Bool { signature.hasPrefix(geminiPrefix) || signature.hasPrefix(openAIPrefix) }

    /// The Gemini `thoughtSignature` carried in a tagged signature, if it is one.
    public static func gemini(_ signature: String) -> String? {
        signature.hasPrefix(geminiPrefix) ? String(signature.dropFirst(geminiPrefix.count)) : nil
    }

    // Gemini clients keep `thoughtSignature` as bytes (their SDKs base64-decode and re-encode it), so
    // another provider's signature travels through them as base64 of a tagged payload.
    static let wrappedSignature = Array("switchyard:signature:".utf8)
    static let wrappedRedacted = Array("switchyard:redacted:".utf8)

    /// A non-Gemini signature (or redacted data) as a `thoughtSignature` value for a Gemini client.
    public static func wrapForGemini(signature: String) -> String { Base64.encode(wrappedSignature + Array(signature.utf8)) }
    public static func wrapForGemini(redacted: String) -> String { Base64.encode(wrappedRedacted + Array(redacted.utf8)) }

    /// What a Gemini client's `thoughtSignature` stands for: a wrapped foreign signature, wrapped
    /// redacted thinking, or Gemini's own signature.
    public enum Unwrapped: Equatable { case signature(String), redacted(String), gemini(String) }

    public static func unwrapFromGemini(_ value: String) -> Unwrapped {
        if let bytes = Base64.decode(value) {
            if bytes.starts(with: wrappedSignature) { return .signature(String(decoding: bytes.dropFirst(wrappedSignature.count), as: UTF8.self)) }
            if bytes.starts(with: wrappedRedacted) { return .redacted(String(decoding: bytes.dropFirst(wrappedRedacted.count), as: UTF8.self)) }
        }
        return .gemini(geminiPrefix + value)
    }
}
