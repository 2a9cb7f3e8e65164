import NIOCore

extension Gemini {
    static func finish(_ raw: String?, hasCalls: Bool) -> FinishReason {
        switch raw {
        case "STOP", nil, "FINISH_REASON_UNSPECIFIED": return hasCalls ? .toolCalls : .stop
        case "MAX_TOKENS": return .length
        case "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "MODEL_ARMOR":
            return .contentFilter
        case let other?: return hasCalls ? .toolCalls : .other(other)
        }
    }

    static func finishString(_ f: FinishReason) -> String {
        switch f {
        case .stop, .stopSequence, .toolCalls, .pauseTurn: return "STOP"
        case .length: return "MAX_TOKENS"
        case .contentFilter, .refusal: return "SAFETY"
        case .other: return "OTHER"
        }
    }

    /// Reads `usageMetadata`. `candidatesTokenCount` excludes thoughts, so output adds them;
    /// `promptTokenCount` already includes cached content.
    public static func usage(_ u: JSONValue?) -> TokenUsage? {
        guard let u = u?.objectValue else { return nil }
        let thoughts = u["thoughtsTokenCount"]?.intValue ?? 0
        return TokenUsage(
            inputTokens: (u["promptTokenCount"]?.intValue ?? 0) + (u["toolUsePromptTokenCount"]?.intValue ?? 0),
            outputTokens: (u["candidatesTokenCount"]?.intValue ?? 0) + thoughts,
            cachedInputTokens: u["cachedContentTokenCount"]?.intValue ?? 0,
            reasoningTokens: thoughts)
    }

    static func usageJSON(_ u: TokenUsage) -> JSONValue {
        var o: JSONObject = [
            "promptTokenCount": .int(u.inputTokens),
            "candidatesTokenCount": .int(max(0, u.outputTokens - u.reasoningTokens)),
            "totalTokenCount": .int(u.inputTokens + u.outputTokens),
        ]
        if u.cachedInputTokens > 0 { o["cachedContentTokenCount"] = .int(u.cachedInputTokens) }
        if u.reasoningTokens > 0 { o["thoughtsTokenCount"] = .int(u.reasoningTokens) }
        return .object(o)
    }

    /// The canonical parts of one candidate's parts (signatures become tagged thinking parts placed
    /// before the part that carried them).
    static func decodeParts(_ parts: [JSONValue], idPrefix: String = issuedIDPrefix) -> [ContentPart] {
        var out: [ContentPart] = []
        for p in parts {
            let isThought = p["thought"]?.boolValue == true
            if let sig = p["thoughtSignature"]?.stringValue {
                appendThinking(&out, isThought ? (p["text"]?.stringValue ?? "") : "", signature: ThinkingSignature.geminiPrefix + sig)
                if isThought { continue }
            }
            if let t = p["text"]?.stringValue {
                if isThought { appendThinking(&out, t, signature: nil) } else if !t.isEmpty { out.append(.text(t)) }
            } else if let call = p["functionCall"] {
                let id = call["id"]?.stringValue.map { idPrefix + $0 } ?? TranslateSupport.randomID("call_")
                out.append(.toolCall(id: id, name: call["name"]?.stringValue ?? "", arguments: (call["args"] ?? .object([:])).jsonString))
            }
        }
        return out
    }

    /// Decodes an upstream `generateContent` response (first candidate).
    public static func decodeResponse(_ body: JSONObject) throws(GatewayError) -> ChatResponse {
        let b = JSONValue.object(body)
        let candidate = b["candidates"]?.arrayValue?.first
        let content = decodeParts(candidate?["content"]?["parts"]?.arrayValue ?? [])
        let hasCalls = content.contains { if case .toolCall = $0 { return true } else { return false } }
        var reason = finish(candidate?["finishReason"]?.stringValue, hasCalls: hasCalls)
        if candidate == nil, b["promptFeedback"]?["blockReason"] != nil { reason = .contentFilter }
        return ChatResponse(
            id: b["responseId"]?.stringValue ?? TranslateSupport.randomID("gen_"), model: b["modelVersion"]?.stringValue ?? "",
            content: content, finish: reason, usage: usage(b["usageMetadata"]))
    }

    /// Parts for a Gemini-format client. Canonical ids are given as `functionCall.id` (Gemini-issued ones
    /// without the gateway's tag), so the client echoes them in its `functionResponse`.
    static func encodeParts(_ content: [ContentPart]) -> [JSONValue] {
        var parts: [JSONValue] = []
        var pendingSignature: String?
        for part in content {
            var p: JSONObject?
            switch part {
            case .text(let t, _): p = ["text": .string(t)]
            case .thinking(let t, let sig):
                if let sig, let g = ThinkingSignature.gemini(sig) {
                    if t.isEmpty { pendingSignature = g; continue }
                    p = ["text": .string(t), "thought": true, "thoughtSignature": .string(g)]
                } else if let sig, !sig.isEmpty {
                    p = ["text": .string(t), "thought": true, "thoughtSignature": .string(ThinkingSignature.wrapForGemini(signature: sig))]
                } else {
                    p = ["text": .string(t), "thought": true]
                }
            case .redactedThinking(let data):
                p = ["text": "", "thought": true, "thoughtSignature": .string(ThinkingSignature.wrapForGemini(redacted: data))]
            case .toolCall(let id, let name, let args):
                let clientID = id.hasPrefix(issuedIDPrefix) ? String(id.dropFirst(issuedIDPrefix.count)) : id
                p = ["functionCall": ["id": .string(clientID), "name": .string(name), "args": TranslateSupport.argumentsObject(args)]]
            default: continue
            }
            if var q = p {
                if let sig = pendingSignature {
                    q["thoughtSignature"] = .string(sig)
                    pendingSignature = nil
                }
                parts.append(.object(q))
            }
        }
        return parts
    }

    /// Encodes a canonical response for a Gemini-format client.
    public static func encodeResponse(_ r: ChatResponse, model: String) -> JSONObject {
        var body: JSONObject = [:]
        body["candidates"] = .array([[
            "content": ["role": "model", "parts": .array(encodeParts(r.content))],
            "finishReason": .string(finishString(r.finish)), "index": 0,
        ]])
        if let u = r.usage { body["usageMetadata"] = usageJSON(u) }
        body["modelVersion"] = .string(model)
        body["responseId"] = .string(r.id)
        return body
    }

    /// Google's status names by HTTP status.
    public static func statusName(_ status: Int) -> String {
        switch status {
        case 400, 413: return "INVALID_ARGUMENT"
        case 401: return "UNAUTHENTICATED"
        case 402: return "FAILED_PRECONDITION"
        case 403: return "PERMISSION_DENIED"
        case 404: return "NOT_FOUND"
        case 405: return "INVALID_ARGUMENT"
        case 409: return "ABORTED"
        case 429: return "RESOURCE_EXHAUSTED"
        case 499: return "CANCELLED"
        case 501: return "UNIMPLEMENTED"
        case 503, 529: return "UNAVAILABLE"
        case 504: return "DEADLINE_EXCEEDED"
        case 400..<500: return "FAILED_PRECONDITION"
        default: return "INTERNAL"
        }
    }

    /// The error body of a Gemini-format response.
    public static func errorBody(_ e: GatewayError) -> ByteBuffer {
        JSONValue.object(["error": ["code": .int(e.status), "message": .string(e.message), "status": .string(statusName(e.status))]]).jsonBuffer
    }
}

/// Turns a Gemini `streamGenerateContent?alt=sse` stream (from an upstream) into canonical events.
public struct GeminiStreamDecoder: SSEEventDecoder, Sendable {
    var scanner = SSEScanner()
    private var started = false
    private var nextBlock = 0
    private enum Open: Equatable { case none, text(Int), thinking(Int) }
    private var open: Open = .none
    private var sawCall = false
    private var finished = false

    public init() {}

    public mutating func feed(_ chunk: ByteBuffer) throws -> [StreamEvent] {
        try decode(chunk)
    }

    public mutating func finish() -> [StreamEvent] {
        decodeEnd()
    }

    mutating func endOfStream(_ out: inout [StreamEvent]) { close(&out) }

    private mutating func close(_ out: inout [StreamEvent]) {
        switch open {
        case .text(let i), .thinking(let i): out.append(.blockStop(index: i))
        case .none: break
        }
        open = .none
    }

    private mutating func block(_ make: (Int) -> [StreamEvent], into out: inout [StreamEvent]) {
        let i = nextBlock
        nextBlock += 1
        out += make(i)
    }

    mutating func handle(_ event: SSEEvent, into out: inout [StreamEvent]) {
        guard let data = event.data, let obj = try? JSONValue.parse(data) else { return }
        if let error = obj["error"], !error.isNull {
            close(&out)
            let status = error["code"]?.intValue ?? 502
            out.append(.error(GatewayError(status: status, category: status == 503 ? .unavailable : .upstream,
                                           code: error["status"]?.stringValue ?? "upstream_stream_error",
                                           message: error["message"]?.stringValue ?? "the provider reported an error mid-stream")))
            return
        }
        if !started {
            started = true
            out.append(.start(id: obj["responseId"]?.stringValue ?? TranslateSupport.randomID("gen_"), model: obj["modelVersion"]?.stringValue ?? ""))
        }
        let candidate = obj["candidates"]?.arrayValue?.first
        for p in candidate?["content"]?["parts"]?.arrayValue ?? [] {
            if let sig = p["thoughtSignature"]?.stringValue {
                // A signature travels as its own (empty) thinking block placed before the part it came on.
                close(&out)
                block({ [.thinkingStart(index: $0), .signatureDelta(index: $0, ThinkingSignature.geminiPrefix + sig), .blockStop(index: $0)] }, into: &out)
            }
            if let t = p["text"]?.stringValue {
                if t.isEmpty { continue }
                if p["thought"]?.boolValue == true {
                    if case .thinking(let i) = open { out.append(.thinkingDelta(index: i, t)); continue }
                    close(&out)
                    let i = nextBlock
                    nextBlock += 1
                    open = .thinking(i)
                    out += [.thinkingStart(index: i), .thinkingDelta(index: i, t)]
                } else {
                    if case .text(let i) = open { out.append(.textDelta(index: i, t)); continue }
                    close(&out)
                    let i = nextBlock
                    nextBlock += 1
                    open = .text(i)
                    out += [.textStart(index: i), .textDelta(index: i, t)]
                }
            } else if let call = p["functionCall"] {
                // Gemini sends each call whole.
                close(&out)
                sawCall = true
                let id = call["id"]?.stringValue.map { Gemini.issuedIDPrefix + $0 } ?? TranslateSupport.randomID("call_")
                let args = (call["args"] ?? .object([:])).jsonString
                block({ [.toolCallStart(index: $0, id: id, name: call["name"]?.stringValue ?? ""), .toolCallDelta(index: $0, args), .blockStop(index: $0)] }, into: &out)
            }
        }
        if let u = Gemini.usage(obj["usageMetadata"]) { out.append(.usage(u)) }
        if let reason = candidate?["finishReason"]?.stringValue, !finished {
            finished = true
            close(&out)
            out.append(.finish(Gemini.finish(reason, hasCalls: sawCall)))
        } else if candidate == nil, obj["promptFeedback"]?["blockReason"] != nil, !finished {
            finished = true
            close(&out)
            out.append(.finish(.contentFilter))
        }
    }
}

/// Writes canonical events as a Gemini SSE stream for the client. Function calls are sent whole (as
/// Gemini does), so their argument fragments are gathered until the call's block ends.
public struct GeminiStreamEncoder: Sendable {
    private let model: String
    private var id = TranslateSupport.randomID("gen_")
    private var usage: TokenUsage?
    private var finishReason: FinishReason?
    private var calls: [Int: (id: String, name: String, args: String)] = [:]
    private var pendingSignature: String?
    /// Signatures by thinking block, sent when the block ends.
    private var signatureBlocks: [Int: String] = [:]

    public init(model: String) {
        self.model = model
    }

    private mutating func chunk(_ parts: [JSONObject], finish: FinishReason?, into out: inout ByteBuffer) {
        var parts = parts
        if let sig = pendingSignature, !parts.isEmpty {
            parts[0]["thoughtSignature"] = .string(sig)
            pendingSignature = nil
        }
        var candidate: JSONObject = ["content": ["role": "model", "parts": .array(parts.map { .object($0) })], "index": 0]
        if let finish { candidate["finishReason"] = .string(Gemini.finishString(finish)) }
        var obj: JSONObject = ["candidates": .array([.object(candidate)])]
        if let usage { obj["usageMetadata"] = Gemini.usageJSON(usage) }
        obj["modelVersion"] = .string(model)
        obj["responseId"] = .string(id)
        SSEEvent.write(event: nil, data: JSONValue.object(obj).jsonBuffer, into: &out)
    }

    public mutating func encode(_ event: StreamEvent, into out: inout ByteBuffer) {
        switch event {
        case .start(let upstreamID, _): if !upstreamID.isEmpty { id = upstreamID }
        case .textStart, .thinkingStart: break
        case .textDelta(_, let t): chunk([["text": .string(t)]], finish: nil, into: &out)
        case .thinkingDelta(_, let t): chunk([["text": .string(t), "thought": true]], finish: nil, into: &out)
        case .signatureDelta(let i, let s):
            signatureBlocks[i, default: ""] += s
        case .redactedThinking(_, let data):
            chunk([["text": "", "thought": true, "thoughtSignature": .string(ThinkingSignature.wrapForGemini(redacted: data))]], finish: nil, into: &out)
        case .toolCallStart(let i, let callID, let name):
            calls[i] = (callID.hasPrefix(Gemini.issuedIDPrefix) ? String(callID.dropFirst(Gemini.issuedIDPrefix.count)) : callID, name, "")
        case .toolCallDelta(let i, let args): calls[i]?.args += args
        case .blockStop(let i):
            if let sig = signatureBlocks.removeValue(forKey: i) {
                if let g = ThinkingSignature.gemini(sig) {
                    pendingSignature = g  // Gemini's own: rides on the next part, as Gemini sends it
                } else if !sig.isEmpty {
                    chunk([["text": "", "thought": true, "thoughtSignature": .string(ThinkingSignature.wrapForGemini(signature: sig))]], finish: nil, into: &out)
                }
            }
            if let call = calls.removeValue(forKey: i) {
                chunk([["functionCall": ["id": .string(call.id), "name": .string(call.name), "args": TranslateSupport.argumentsObject(call.args)]]], finish: nil, into: &out)
            }
        case .usage(let u): usage = u
        case .finish(let f): finishReason = f
        case .error(let e):
            out.writeStaticString("data: ")
            out.writeImmutableBuffer(Gemini.errorBody(e))
            out.writeStaticString("\n\n")
        }
    }

    /// Ends a completed stream with the chunk that carries the finish reason and final usage.
    public mutating func finish(into out: inout ByteBuffer) {
        chunk([["text": ""]], finish: finishReason ?? .stop, into: &out)
    }
}
