import NIOCore
import SwitchyardCore

/// The Gemini `generateContent` wire format, with the checks the real API makes that a translating
/// gateway can get wrong: function responses right after the calls, Gemini 3's thought signature on the
/// first call of a model turn, and the schema keywords function declarations may use.
extension MockEngine {
    public static func geminiError(status: Int, message: String, retryAfter: Int? = nil, delayMs: Int = 0) -> MockPlan {
        let name: String
        switch status {
        case 400: name = "INVALID_ARGUMENT"
        case 401: name = "UNAUTHENTICATED"
        case 403: name = "PERMISSION_DENIED"
        case 404: name = "NOT_FOUND"
        case 429: name = "RESOURCE_EXHAUSTED"
        case 503: name = "UNAVAILABLE"
        case 504: name = "DEADLINE_EXCEEDED"
        default: name = "INTERNAL"
        }
        let body: JSONValue = ["error": ["code": .int(status), "message": .string(message), "status": .string(name)]]
        var headers: [(String, String)] = [("content-type", "application/json; charset=UTF-8")]
        if let retryAfter { headers.append(("retry-after", String(retryAfter))) }
        return MockPlan(status: status, headers: headers, firstByteDelayMs: delayMs, body: .full(body.jsonBuffer))
    }

    /// The reply to `models/{model}:generateContent` (or `:streamGenerateContent?alt=sse`).
    public func generateContent(body: ByteBuffer, model: String, stream: Bool, headerDirectives: [String: String] = [:]) -> MockPlan {
        let request: JSONObject
        do {
            guard let obj = try JSONValue.parse(body).objectValue else { return Self.geminiError(status: 400, message: "Invalid JSON payload received.") }
            request = obj
        } catch {
            return Self.geminiError(status: 400, message: "Invalid JSON payload received. \(error)")
        }
        let conversation = MockConversation(gemini: request, model: model)
        var directives = MockDirectives()
        directives.apply(headerDirectives)
        directives.apply(MockDirectives.pairs(fromText: conversation.lastUserText))
        let delay = directives.delayMs ?? settings.latencyMs
        if let status = directives.status, status >= 400 {
            return Self.geminiError(status: status, message: directives.message ?? "mock upstream error (status \(status))", retryAfter: directives.retryAfter, delayMs: delay)
        }
        if let problem = Self.validateGemini(request) { return Self.geminiError(status: 400, message: problem) }

        let reply = MockReply.make(conversation: conversation, directives: directives)
        let cached = min(directives.cachedTokens ?? 0, conversation.promptTokens)
        let thoughts = reply.thinking == nil ? 0 : 8
        var usage: JSONObject = [
            "promptTokenCount": .int(conversation.promptTokens),
            "candidatesTokenCount": .int(reply.outputTokens - thoughts),
            "totalTokenCount": .int(conversation.promptTokens + reply.outputTokens),
        ]
        if cached > 0 { usage["cachedContentTokenCount"] = .int(cached) }
        if thoughts > 0 { usage["thoughtsTokenCount"] = .int(thoughts) }
        let finish = reply.finishReason == "length" ? "MAX_TOKENS" : "STOP"
        let responseID = "mock" + MockReply.stableID(body)
        let version = model + "-mock-001"

        // The answer's parts: a thought summary when asked, then text or calls. The first call (or the
        // text, when thinking) carries the signature Gemini 3 wants back.
        var answer: [JSONObject] = []
        for (i, call) in reply.toolCalls.enumerated() {
            var p: JSONObject = ["functionCall": ["name": .string(call.name), "args": (try? JSONValue.parse(call.arguments)) ?? .object([:]),
                                                   "id": .string(String(call.id.suffix(8)))]]
            if i == 0 { p["thoughtSignature"] = .string(MockSignature.gemini(call.name + call.arguments)) }
            answer.append(p)
        }
        func candidate(_ parts: [JSONObject], finish: String?) -> JSONValue {
            var c: JSONObject = ["content": ["role": "model", "parts": .array(parts.map { .object($0) })], "index": 0]
            if let finish {
                c["finishReason"] = .string(finish)
                if !reply.toolCalls.isEmpty { c["finishMessage"] = "Model generated function call(s)." }
            }
            return .object(c)
        }
        func response(_ parts: [JSONObject], finish: String?, usage u: JSONObject?) -> JSONValue {
            var r: JSONObject = ["candidates": .array([candidate(parts, finish: finish)])]
            if let u, !directives.omitUsage { r["usageMetadata"] = .object(u) }
            r["modelVersion"] = .string(version)
            r["responseId"] = .string(responseID)
            return .object(r)
        }
        let textSignature = reply.thinking != nil && reply.toolCalls.isEmpty ? MockSignature.gemini(reply.thinking!) : nil

        guard stream else {
            var parts: [JSONObject] = []
            if let t = reply.thinking { parts.append(["text": .string(t), "thought": true]) }
            if let text = reply.text {
                var p: JSONObject = ["text": .string(text.full)]
                if let textSignature { p["thoughtSignature"] = .string(textSignature) }
                parts.append(p)
            }
            parts += answer
            return MockPlan(status: 200, headers: [("content-type", "application/json; charset=UTF-8")], firstByteDelayMs: delay,
                            body: .full(response(parts, finish: finish, usage: usage).jsonBuffer))
        }
        // Gemini frames events with CRLF and ends without a sentinel; usage is a running total in every chunk.
        func event(_ v: JSONValue) -> ByteBuffer {
            var out = ByteBuffer()
            out.writeStaticString("data: ")
            v.write(into: &out)
            out.writeStaticString("\r\n\r\n")
            return out
        }
        var running = usage
        running["candidatesTokenCount"] = nil
        var head: [ByteBuffer] = []
        if let t = reply.thinking { head.append(event(response([["text": .string(t), "thought": true]], finish: nil, usage: running))) }
        var tail: [ByteBuffer] = []
        var pieces = MockPieces(count: 0) { _ in "" }
        if let text = reply.text {
            pieces = text.pieces(directives.chunks ?? settings.chunks)
            var last: JSONObject = ["text": ""]
            if let textSignature { last["thoughtSignature"] = .string(textSignature) }
            tail.append(event(response([last], finish: finish, usage: usage)))
        } else {
            for (i, p) in answer.enumerated() {
                let isLast = i == answer.count - 1
                tail.append(event(response([p], finish: isLast ? finish : nil, usage: isLast ? usage : running)))
            }
        }
        // Text chunks are rendered on demand from a template: `prefix + JSON string + suffix`.
        let template = String(buffer: event(response([["text": "\u{0}"]], finish: nil, usage: running)))
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
        return MockPlan(status: 200, headers: [("content-type", "text/event-stream")], firstByteDelayMs: delay,
                        body: .events(script, chunkDelayMs: directives.chunkDelayMs ?? settings.chunkDelayMs, dropAfter: directives.dropAfter))
    }

    /// `models/{model}:countTokens`.
    public func countTokens(gemini body: ByteBuffer, model: String) -> MockPlan {
        guard let request = (try? JSONValue.parse(body))?.objectValue else { return Self.geminiError(status: 400, message: "Invalid JSON payload received.") }
        let n = MockConversation(gemini: request, model: model).promptTokens
        return MockPlan(status: 200, headers: [("content-type", "application/json")], firstByteDelayMs: 0, body: .full(JSONValue.object(["totalTokens": .int(n)]).jsonBuffer))
    }

    /// Keywords the `parameters` (OpenAPI subset) schema rejects.
    static let unsupportedSchemaKeys: Set<String> = ["$schema", "additionalProperties", "$ref", "$defs", "const", "exclusiveMinimum", "exclusiveMaximum", "propertyNames", "patternProperties", "oneOf", "allOf", "examples"]

    static func firstKey(in schema: JSONValue, from keys: Set<String>) -> String? {
        switch schema {
        case .object(let o):
            for (k, v) in o {
                if keys.contains(k) { return k }
                if k == "properties", let props = v.objectValue {
                    for (_, sub) in props { if let found = firstKey(in: sub, from: keys) { return found } }
                } else if let found = firstKey(in: v, from: keys) {
                    return found
                }
            }
            return nil
        case .array(let a): return a.lazy.compactMap { firstKey(in: $0, from: keys) }.first
        default: return nil
        }
    }

    static func validateGemini(_ r: JSONObject) -> String? {
        let body = JSONValue.object(r)
        guard let contents = body["contents"]?.arrayValue, !contents.isEmpty else { return "* GenerateContentRequest.contents: contents is not specified" }
        for tool in body["tools"]?.arrayValue ?? [] {
            for d in tool["functionDeclarations"]?.arrayValue ?? tool["function_declarations"]?.arrayValue ?? [] {
                if let p = d["parameters"], let bad = firstKey(in: p, from: unsupportedSchemaKeys) {
                    return "Invalid JSON payload received. Unknown name \"\(bad)\" at 'tools[0].function_declarations[0].parameters': Cannot find field."
                }
                if let p = d["parametersJsonSchema"] ?? d["parameters_json_schema"], let bad = firstKey(in: p, from: ["$schema"]) {
                    return "Invalid JSON payload received. Unknown name \"\(bad)\" in parameters_json_schema."
                }
            }
        }
        for (i, c) in contents.enumerated() {
            let role = c["role"]?.stringValue ?? "user"
            guard role == "user" || role == "model" else { return "Please use a valid role: user, model." }
            let parts = c["parts"]?.arrayValue ?? []
            let responses = parts.compactMap { ($0["functionResponse"] ?? $0["function_response"])?["name"]?.stringValue }
            if !responses.isEmpty {
                let previous = i > 0 ? contents[i - 1] : nil
                let calls = (previous?["parts"]?.arrayValue ?? []).compactMap { ($0["functionCall"] ?? $0["function_call"])?["name"]?.stringValue }
                if previous?["role"]?.stringValue != "model" || calls.count != responses.count {
                    return "Please ensure that function response turn comes immediately after a function call turn. And the number of function response parts should be equal to number of function call parts of the function call turn."
                }
            }
            if role == "model", let first = parts.first(where: { ($0["functionCall"] ?? $0["function_call"]) != nil }) {
                let sig = (first["thoughtSignature"] ?? first["thought_signature"])?.stringValue
                let call = first["functionCall"] ?? first["function_call"]
                let expected = MockSignature.gemini((call?["name"]?.stringValue ?? "") + ((try? JSONValue.parse((call?["args"] ?? .object([:])).jsonString)) ?? .null).jsonString)
                if sig == nil {
                    return "Unable to submit request because function call `\(call?["name"]?.stringValue ?? "")` in the \(i + 1). content block is missing a `thought_signature`."
                }
                if sig != expected, sig != "skip_thought_signature_validator", sig?.hasPrefix("Z2VtaW5pLXNpZ25hdHVyZT") == true {
                    return "Corrupted thought signature."
                }
            }
        }
        return nil
    }
}
