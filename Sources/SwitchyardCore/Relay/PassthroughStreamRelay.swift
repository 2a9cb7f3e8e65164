import NIOCore

/// Relays a provider's SSE stream to a client that speaks the same format, event by event, as bytes:
/// events pass through unchanged except that the model name is rewritten to the client-facing one
/// (providers answer with their own ids, often dated snapshots). Usage is read on the way.
///
/// A state machine fed upstream chunks; each call returns the bytes to write now (complete events
/// only, so a client never sees half an event, and nothing complete is held back).
public struct PassthroughStreamRelay: Sendable {
    private var scanner: SSEScanner
    let format: WireFormat
    private let clientModelLiteral: String
    private let maxDepth: Int
    /// Drop OpenAI's usage-only chunk (the gateway asked for it; the client did not).
    private let dropUsageChunk: Bool

    /// Usage reported by the stream (the latest complete figure).
    public private(set) var usage: TokenUsage?
    /// Whether the stream's proper end was seen (`[DONE]`, `message_stop`, or a Gemini finish reason).
    public private(set) var sawEnd = false
    /// Whether any event was relayed.
    public private(set) var sawEvent = false
    /// Bytes of content-carrying members relayed (an over-estimate of the output's characters: it
    /// includes their JSON framing).
    public private(set) var outputChars = 0
    /// Responses streams: the final `response` object (from `response.completed`/`incomplete`), raw.
    public private(set) var finalResponse: ByteBuffer?

    public init(format: WireFormat, clientModel: String, maxDepth: Int = 64, dropUsageChunk: Bool = false) {
        self.scanner = SSEScanner()
        self.format = format
        self.clientModelLiteral = JSONString.literal(clientModel)
        self.maxDepth = maxDepth
        self.dropUsageChunk = dropUsageChunk
    }

    /// Feeds one upstream chunk; returns what to write to the client (possibly empty).
    public mutating func process(_ chunk: ByteBuffer) throws -> ByteBuffer {
        scanner.feed(chunk)
        var out = ByteBuffer()
        while let event = try scanner.next() {
            relay(event, into: &out)
        }
        return out
    }

    /// Ends the stream: returns any final event that lacked its terminating blank line.
    public mutating func finish() -> ByteBuffer {
        var out = ByteBuffer()
        if let event = scanner.finish() {
            relay(event, into: &out)
            if out.readableBytes > 0, !out.readableBytesView.hasSuffix([UInt8(ascii: "\n"), UInt8(ascii: "\n")]) {
                out.writeStaticString("\n\n")
            }
        }
        return out
    }

    private mutating func relay(_ event: SSEEvent, into out: inout ByteBuffer) {
        sawEvent = true
        guard let data = event.data else {
            out.writeImmutableBuffer(event.raw)  // comments (heartbeats) and bare fields pass as they came
            return
        }
        if event.isDoneSentinel {
            sawEnd = true
            out.writeImmutableBuffer(event.raw)
            return
        }
        guard let doc = try? ScannedObject(data, maxDepth: maxDepth) else {
            out.writeImmutableBuffer(event.raw)
            return
        }
        var rewritten: ByteBuffer?
        switch format {
        case .openAI:
            if let c = doc.member("choices"), c.valueRange.count > 2 {
                // Only deltas that carry content count (not the role-only first chunk or the finish chunk).
                // Byte searches: this runs for every event of every stream.
                if doc.valueContains(c, "\"tool_calls\"") || doc.valueContains(c, "\"reasoning")
                    || (doc.valueContains(c, "\"content\":\"") && !doc.valueContains(c, "\"content\":\"\""))
                {
                    outputChars += max(1, c.valueRange.count - 80)
                }
                // Some OpenAI-compatible servers never send [DONE]: a finish reason ends the answer too.
                if doc.valueContains(c, "\"finish_reason\":\"") { sawEnd = true }
            }
            if let u = doc.object("usage") {
                usage = TokenUsage(openAI: u)
                if dropUsageChunk, let choices = doc.member("choices"), doc.rawValue(choices).readableBytesView.elementsEqual("[]".utf8) {
                    return
                }
            }
            rewritten = doc.replacingModel(with: clientModelLiteral)
        case .anthropic:
            switch doc.string("type") {
            case "message_start":
                if let m = doc.member("message"), m.kind == .object, let inner = try? ScannedObject(doc.rawValue(m), maxDepth: maxDepth) {
                    usage = AnthropicMessages.usage((try? JSONValue.parse(inner.buffer))?["usage"])
                    if let newInner = inner.replacingModel(with: clientModelLiteral) {
                        var editor = doc.editor()
                        editor.replaceValue(of: m, with: String(buffer: newInner))
                        rewritten = editor.result()
                    }
                }
            case "message_delta":
                usage = AnthropicMessages.usage((try? JSONValue.parse(data))?["usage"], base: usage)
            case "content_block_delta":
                if let d = doc.member("delta") { outputChars += max(1, d.valueRange.count - 30) }
            case "message_stop":
                sawEnd = true
            default: break
            }
        case .responses:
            let type = doc.string("type") ?? ""
            switch type {
            case "response.output_text.delta", "response.function_call_arguments.delta", "response.reasoning_summary_text.delta", "response.refusal.delta":
                if let d = doc.member("delta") { outputChars += max(1, d.valueRange.count - 2) }
            case "response.created", "response.in_progress", "response.completed", "response.incomplete", "response.failed":
                guard let m = doc.member("response"), m.kind == .object, let inner = try? ScannedObject(doc.rawValue(m), maxDepth: maxDepth) else { break }
                let newInner = inner.replacingModel(with: clientModelLiteral)
                if let newInner {
                    var editor = doc.editor()
                    editor.replaceValue(of: m, with: String(buffer: newInner))
                    rewritten = editor.result()
                }
                if type == "response.completed" || type == "response.incomplete" || type == "response.failed" {
                    sawEnd = type != "response.failed"
                    if let u = inner.member("usage"), u.kind == .object { usage = OpenAIResponses.usage(try? JSONValue.parse(inner.rawValue(u))) }
                    if type != "response.failed" { finalResponse = newInner ?? inner.buffer }
                }
            default: break
            }
        case .gemini:
            if let c = doc.member("candidates"), c.valueRange.count > 2 {
                if doc.valueContains(c, "\"text\"") || doc.valueContains(c, "\"functionCall\"") { outputChars += max(1, c.valueRange.count - 120) }
            }
            if let u = doc.member("usageMetadata"), u.kind == .object {
                usage = Gemini.usage(try? JSONValue.parse(doc.rawValue(u)))
            }
            if let c = doc.member("candidates"), doc.valueContains(c, "\"finishReason\"") {
                sawEnd = true
            }
            if let m = doc.member("modelVersion"), m.kind == .string {
                var editor = doc.editor()
                editor.replaceValue(of: m, with: clientModelLiteral)
                rewritten = editor.result()
            }
        }
        if let rewritten {
            SSEEvent.write(event: event.event, data: rewritten, into: &out)
        } else {
            out.writeImmutableBuffer(event.raw)
        }
    }
}

extension ByteBufferView {
    func hasSuffix(_ suffix: [UInt8]) -> Bool {
        guard count >= suffix.count else { return false }
        return self[(endIndex - suffix.count)...].elementsEqual(suffix)
    }
}
