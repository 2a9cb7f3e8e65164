import NIOCore
import SwitchyardCore

/// What the mock understood of a conversation, independent of the wire format it came in.
struct MockConversation {
    /// Text of the last user message (markers included, so directives can be read from it).
    var lastUserText = ""
    /// Whether the conversation ends with a tool result (the mock then answers in text).
    var endsWithToolResult = false
    /// Text of that tool result.
    var lastToolResult = ""
    /// Tools offered: name and JSON schema of the parameters.
    var tools: [(name: String, schema: JSONValue)] = []
    /// `none` forbids tool calls; a name forces that tool; `required` forces some tool.
    var toolChoice: String = "auto"
    /// Output cap in tokens (words, for the mock), if the request set one.
    var maxTokens: Int?
    /// Deterministic prompt size estimate.
    var promptTokens = 0
    var model = ""
    /// The client asked the model to think (Anthropic `thinking`, Gemini `includeThoughts`, OpenAI
    /// `reasoning_effort`); replies then open with reasoning.
    var wantsThinking = false

    init() {}

    /// Reads an OpenAI Chat Completions request.
    init(openAI request: JSONObject) {
        model = request["model"]?.stringValue ?? ""
        let messages = request["messages"]?.arrayValue ?? []
        var chars = 0
        for message in messages {
            let role = message["role"]?.stringValue ?? ""
            let text = Self.text(of: message["content"])
            chars += text.utf8.count
            promptTokens += 4
            if role == "user" { lastUserText = text }
            if let calls = message["tool_calls"]?.arrayValue { chars += calls.reduce(0) { $0 + $1.jsonString.utf8.count } }
        }
        // The model answers the latest user or tool turn; system messages injected after it do not count.
        if let last = messages.last(where: { $0["role"]?.stringValue != "system" && $0["role"]?.stringValue != "developer" }),
            last["role"]?.stringValue == "tool"
        {
            endsWithToolResult = true
            lastToolResult = Self.text(of: last["content"])
        }
        if let system = request["system"]?.stringValue { chars += system.utf8.count }
        for tool in request["tools"]?.arrayValue ?? [] {
            guard let fn = tool["function"], let name = fn["name"]?.stringValue else { continue }
            tools.append((name, fn["parameters"] ?? .object([:])))
            chars += tool.jsonString.utf8.count
        }
        switch request["tool_choice"] {
        case .string(let s)?: toolChoice = s
        case .object(let o)?: toolChoice = o["function"]?["name"]?.stringValue ?? "required"
        default: break
        }
        maxTokens = request["max_completion_tokens"]?.intValue ?? request["max_tokens"]?.intValue
        wantsThinking = request["reasoning_effort"]?.stringValue.map { $0 != "none" } ?? false
        promptTokens += (chars + 3) / 4
    }

    /// Reads an Anthropic Messages request.
    init(anthropic request: JSONObject) {
        model = request["model"]?.stringValue ?? ""
        var chars = (request["system"]?.flattenedText ?? "").utf8.count
        let messages = request["messages"]?.arrayValue ?? []
        for message in messages {
            promptTokens += 4
            let role = message["role"]?.stringValue ?? ""
            let blocks: [JSONValue] = message["content"]?.stringValue.map { [["type": "text", "text": .string($0)]] } ?? message["content"]?.arrayValue ?? []
            var texts: [String] = []
            for b in blocks {
                switch b["type"]?.stringValue {
                case "text": texts.append(b["text"]?.stringValue ?? "")
                case "tool_use": chars += (b["input"] ?? .null).jsonString.utf8.count
                case "tool_result": chars += (b["content"]?.flattenedText ?? "").utf8.count
                case "image": promptTokens += 1500
                default: break
                }
            }
            let text = texts.joined(separator: "\n")
            chars += text.utf8.count
            if role == "user", !texts.isEmpty { lastUserText = text }
        }
        if let last = messages.last(where: { $0["role"]?.stringValue != "system" }), last["role"]?.stringValue == "user",
            let results = last["content"]?.arrayValue?.filter({ $0["type"]?.stringValue == "tool_result" }), let r = results.last
        {
            endsWithToolResult = true
            lastToolResult = r["content"]?.flattenedText ?? ""
        }
        for tool in request["tools"]?.arrayValue ?? [] {
            guard let name = tool["name"]?.stringValue else { continue }
            tools.append((name, tool["input_schema"] ?? .object([:])))
            chars += tool.jsonString.utf8.count
        }
        switch request["tool_choice"]?["type"]?.stringValue {
        case "none": toolChoice = "none"
        case "any": toolChoice = "required"
        case "tool": toolChoice = request["tool_choice"]?["name"]?.stringValue ?? "required"
        default: break
        }
        maxTokens = request["max_tokens"]?.intValue
        let thinkingType = request["thinking"]?["type"]?.stringValue
        wantsThinking = thinkingType == "enabled" || thinkingType == "adaptive"
        promptTokens += (chars + 3) / 4
    }

    /// Reads a Gemini `generateContent` request (both spellings of field names).
    init(gemini request: JSONObject, model: String) {
        self.model = model
        let r = JSONValue.object(request)
        var chars = 0
        for p in r["systemInstruction"]?["parts"]?.arrayValue ?? r["system_instruction"]?["parts"]?.arrayValue ?? [] {
            chars += (p["text"]?.stringValue ?? "").utf8.count
        }
        let contents = r["contents"]?.arrayValue ?? []
        for c in contents {
            promptTokens += 4
            var texts: [String] = []
            for p in c["parts"]?.arrayValue ?? [] {
                if let t = p["text"]?.stringValue, p["thought"]?.boolValue != true { texts.append(t) }
                if let call = p["functionCall"] ?? p["function_call"] { chars += call.jsonString.utf8.count }
                if let resp = p["functionResponse"] ?? p["function_response"] { chars += resp.jsonString.utf8.count }
                if p["inlineData"] != nil || p["inline_data"] != nil { promptTokens += 258 }
            }
            let text = texts.joined(separator: "\n")
            chars += text.utf8.count
            if c["role"]?.stringValue != "model", !texts.isEmpty { lastUserText = text }
        }
        if let last = contents.last, let resp = last["parts"]?.arrayValue?.compactMap({ $0["functionResponse"] ?? $0["function_response"] }).last {
            endsWithToolResult = true
            let payload = resp["response"] ?? .null
            lastToolResult = payload["output"]?.stringValue ?? payload["result"]?.stringValue ?? payload["content"]?.stringValue ?? payload.jsonString
        }
        for tool in r["tools"]?.arrayValue ?? [] {
            for d in tool["functionDeclarations"]?.arrayValue ?? tool["function_declarations"]?.arrayValue ?? [] {
                guard let name = d["name"]?.stringValue else { continue }
                tools.append((name, d["parametersJsonSchema"] ?? d["parameters_json_schema"] ?? d["parameters"] ?? .object([:])))
                chars += d.jsonString.utf8.count
            }
        }
        let fc = r["toolConfig"]?["functionCallingConfig"] ?? r["tool_config"]?["function_calling_config"]
        switch fc?["mode"]?.stringValue {
        case "NONE": toolChoice = "none"
        case "ANY":
            let allowed = (fc?["allowedFunctionNames"] ?? fc?["allowed_function_names"])?.arrayValue?.compactMap(\.stringValue) ?? []
            toolChoice = allowed.count == 1 ? allowed[0] : "required"
        default: break
        }
        let g = r["generationConfig"] ?? r["generation_config"]
        maxTokens = (g?["maxOutputTokens"] ?? g?["max_output_tokens"])?.intValue
        let t = g?["thinkingConfig"] ?? g?["thinking_config"]
        wantsThinking = (t?["includeThoughts"] ?? t?["include_thoughts"])?.boolValue ?? false
        promptTokens += (chars + 3) / 4
    }

    /// Concatenated text of a message content (a string, or an array of parts with `text`).
    static func text(of content: JSONValue?) -> String {
        switch content {
        case .string(let s)?: return s
        case .array(let parts)?:
            return parts.compactMap { $0["text"]?.stringValue }.joined(separator: "\n")
        default: return ""
        }
    }
}

/// A generated reply: text or tool calls, with its token count and finish reason (OpenAI names).
struct MockReply {
    struct ToolCall {
        var id: String
        var name: String
        var arguments: String
    }

    var text: MockText?
    var toolCalls: [ToolCall] = []
    /// Reasoning that precedes the answer, when the client asked for thinking.
    var thinking: String?
    var outputTokens: Int
    /// `stop`, `length` or `tool_calls`.
    var finishReason: String

    static let vocabulary = [
        "switchyard", "routes", "every", "model", "through", "one", "key", "and", "streams", "tokens", "as", "they",
        "arrive", "from", "the", "mock", "upstream", "with", "exact", "usage", "numbers",
    ]

    static func make(conversation c: MockConversation, directives: MockDirectives) -> MockReply {
        var reply = makeAnswer(conversation: c, directives: directives)
        if c.wantsThinking {
            reply.thinking = "Considering the request: " + String(stripMarkers(c.lastUserText).prefix(60))
            reply.outputTokens += 8
        }
        return reply
    }

    static func makeAnswer(conversation c: MockConversation, directives: MockDirectives) -> MockReply {
        let wantTools = !c.tools.isEmpty && c.toolChoice != "none" && !c.endsWithToolResult && directives.toolCalls != 0
        if wantTools {
            var chosen = c.tools
            if let named = c.tools.first(where: { $0.name == c.toolChoice }) { chosen = [named] }
            let count = max(1, directives.toolCalls ?? 1)
            var calls: [ToolCall] = []
            for i in 0..<count {
                let tool = chosen[i % chosen.count]
                let args = sampleArguments(for: tool.schema).jsonString
                calls.append(ToolCall(id: "call_mock\(i)_" + stableID(ByteBuffer(string: c.lastUserText + tool.name)), name: tool.name, arguments: args))
            }
            let tokens = calls.reduce(0) { $0 + ($1.arguments.utf8.count + 3) / 4 + 5 }
            return MockReply(toolCalls: calls, outputTokens: tokens, finishReason: "tool_calls")
        }
        if let n = directives.words {
            var count = n
            var finish = "stop"
            if let cap = c.maxTokens, cap >= 0, count > cap {
                count = cap
                finish = "length"
            }
            return MockReply(text: .vocabulary(count: count), outputTokens: count, finishReason: finish)
        }
        var words: [String]
        if c.endsWithToolResult {
            words = ("The tool returned: " + stripMarkers(c.lastToolResult).prefix(200)).split(separator: " ").map(String.init)
        } else {
            let echo = stripMarkers(c.lastUserText).prefix(200)
            words = ("Hello from the Switchyard mock upstream. You said: " + echo).split(separator: " ").map(String.init)
        }
        var finish = "stop"
        if let cap = c.maxTokens, cap >= 0, words.count > cap {
            words = Array(words.prefix(cap))
            finish = "length"
        }
        return MockReply(text: .literal(words.joined(separator: " ")), outputTokens: words.count, finishReason: finish)
    }

    static func stripMarkers(_ text: String) -> String {
        var out = text
        while let start = out.firstRange(of: "[[mock"), let end = out[start.upperBound...].firstRange(of: "]]") {
            out.removeSubrange(start.lowerBound..<end.upperBound)
        }
        return out.trimmingCharacters(in: " \n\t")
    }

    /// Arguments that satisfy a JSON schema's shape: the required properties (or all, if none are marked).
    static func sampleArguments(for schema: JSONValue, depth: Int = 0) -> JSONValue {
        if let values = schema["enum"]?.arrayValue, let first = values.first { return first }
        let type = schema["type"]?.stringValue ?? (schema["properties"] != nil ? "object" : "string")
        switch type {
        case "object":
            guard depth < 6 else { return .object([:]) }
            var out = JSONObject()
            let props = schema["properties"]?.objectValue ?? JSONObject()
            let required = Set((schema["required"]?.arrayValue ?? []).compactMap(\.stringValue))
            for (name, sub) in props where required.isEmpty || required.contains(name) {
                out[name] = sampleArguments(for: sub, depth: depth + 1)
            }
            return .object(out)
        case "array": return .array([])
        case "integer", "number": return .int(1)
        case "boolean": return .bool(true)
        case "null": return .null
        default: return .string("mock")
        }
    }

    /// Splits text into `count` pieces of about equal UTF-8 length, never inside a character's bytes
    /// (fewer pieces if the text is shorter).
    static func split(_ text: String, into count: Int) -> [String] {
        let bytes = Array(text.utf8)
        guard count > 1, bytes.count > 1 else { return [text] }
        let n = min(count, bytes.count)
        var pieces: [String] = []
        pieces.reserveCapacity(n)
        var lo = 0
        for i in 1...n {
            var hi = i == n ? bytes.count : bytes.count * i / n
            while hi < bytes.count, bytes[hi] & 0xC0 == 0x80 { hi += 1 }  // continuation byte: move to the next boundary
            if hi > lo {
                pieces.append(String(decoding: bytes[lo..<hi], as: UTF8.self))
                lo = hi
            }
        }
        return pieces
    }

    /// A short id derived from the request bytes (FNV-1a), so identical requests get identical ids.
    static func stableID(_ bytes: ByteBuffer) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes.readableBytesView {
            hash ^= UInt64(b)
            hash &*= 0x100_0000_01b3
        }
        let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz")
        var out = ""
        for _ in 0..<16 {
            out.append(alphabet[Int(hash % 36)])
            hash /= 36
            if hash == 0 { hash = 0x9e37_79b9_7f4a_7c15 }
        }
        return out
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}

/// Reply text, either literal or generated on demand (so a 100 MB stream costs no 100 MB up front).
enum MockText: Sendable {
    case literal(String)
    /// `count` words cycling through ``MockReply/vocabulary``, separated by single spaces.
    case vocabulary(count: Int)

    /// The whole text (for non-streaming replies).
    var full: String {
        switch self {
        case .literal(let s): return s
        case .vocabulary(let count): return Self.words(0..<count)
        }
    }

    /// The text cut into at most `n` pieces whose concatenation is ``full``.
    func pieces(_ n: Int) -> MockPieces {
        switch self {
        case .literal(let s):
            let parts = MockReply.split(s, into: n)
            return MockPieces(count: parts.count) { parts[$0] }
        case .vocabulary(let count):
            let k = max(1, min(n, count))
            return MockPieces(count: count == 0 ? 0 : k) { i in
                let lo = count * i / k
                let hi = count * (i + 1) / k
                return (i > 0 ? " " : "") + Self.words(lo..<hi)
            }
        }
    }

    static func words(_ range: Range<Int>) -> String {
        var out = ""
        for j in range {
            if j > range.lowerBound { out += " " }
            out += MockReply.vocabulary[j % MockReply.vocabulary.count]
        }
        return out
    }
}

/// Pieces of a reply, produced on demand.
struct MockPieces: Sendable {
    let count: Int
    let piece: @Sendable (Int) -> String
}

extension JSONValue {
    /// Text of a string, or of an array of `{"type":"text","text":…}` parts joined by newlines.
    var flattenedText: String? {
        switch self {
        case .string(let s): return s
        case .array(let parts): return parts.compactMap { $0["text"]?.stringValue ?? $0.stringValue }.joined(separator: "\n")
        default: return nil
        }
    }
}

/// Signatures the mock issues for its reasoning and checks when they come back, like the real
/// providers: any change to the thinking text or the signature is detected.
enum MockSignature {
    static func anthropic(_ thinking: String) -> String {
        base64("anthropic-signature:" + MockReply.stableID(ByteBuffer(string: thinking)))
    }

    static func gemini(_ anchor: String) -> String {
        base64("gemini-signature:" + MockReply.stableID(ByteBuffer(string: anchor)))
    }

    static func base64(_ s: String) -> String { Base64.encode(s) }
}
