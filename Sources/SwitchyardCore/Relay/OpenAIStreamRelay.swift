import NIOCore

/// Relays an OpenAI Chat Completions SSE stream from an OpenAI-compatible upstream to the client,
/// event by event, as bytes: events pass through unchanged except that `model` is rewritten to the
/// client-facing name (providers answer with their own ids, often dated snapshots). Reads `usage` from the chunk that carries it and notes the `[DONE]` sentinel.
///
/// A state machine fed upstream chunks; each call returns the bytes to write now (complete events
/// only, so a client never sees half an event, and nothing complete is held back).
public struct OpenAIStreamRelay: Sendable {
    private var scanner: SSEScanner
    private let clientModelLiteral: String
    private let maxDepth: Int

    /// Usage reported by the stream, if any chunk carried it.
    public private(set) var usage: TokenUsage?
    /// Whether the `data: [DONE]` sentinel was seen.
    public private(set) var sawDone = false
    /// Whether any event was relayed.
    public private(set) var sawEvent = false

    public init(clientModel: String, maxDepth: Int = 64) {
        self.scanner = SSEScanner()
        self.clientModelLiteral = JSONString.literal(clientModel)
        self.maxDepth = maxDepth
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
            sawDone = true
            out.writeImmutableBuffer(event.raw)
            return
        }
        guard let doc = try? ScannedObject(data, maxDepth: maxDepth) else {
            out.writeImmutableBuffer(event.raw)
            return
        }
        if let u = doc.member("usage"), u.kind == .object {
            usage = TokenUsage(openAI: try? JSONValue.parse(doc.rawValue(u)))
        }
        if let rewritten = doc.replacingModel(with: clientModelLiteral) {
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
