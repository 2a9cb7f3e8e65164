import NIOCore

/// Something that turns a provider's stream into the client's, chunk by chunk.
public protocol StreamProcessor: Sendable {
    /// Feeds one upstream chunk; returns what to write to the client now.
    mutating func process(_ chunk: ByteBuffer) throws -> ByteBuffer
    /// The upstream ended; returns the client stream's closing bytes.
    mutating func finish() -> ByteBuffer
    /// The upstream broke; returns the bytes that tell the client so, in its format.
    mutating func fail(_ error: GatewayError) -> ByteBuffer
    /// Usage the stream reported.
    var usage: TokenUsage? { get }
    /// About how many characters of output content (text, thinking, tool arguments) were relayed: zero
    /// means nothing but framing reached the client. Used to estimate output when usage is unknown.
    var outputChars: Int { get }
    /// Whether the provider's stream reached its proper end.
    var completed: Bool { get }
}

/// Error events in each client format, for failures after a stream has started.
public enum StreamErrors {
    public static func event(_ format: WireFormat, _ e: GatewayError) -> ByteBuffer {
        var out = ByteBuffer()
        switch format {
        case .openAI:
            out.writeStaticString("data: ")
            out.writeImmutableBuffer(e.openAIBody())
            out.writeStaticString("\n\n")
        case .anthropic:
            SSEEvent.write(event: "error", data: AnthropicMessages.errorBody(e), into: &out)
        case .gemini:
            out.writeStaticString("data: ")
            out.writeImmutableBuffer(Gemini.errorBody(e))
            out.writeStaticString("\n\n")
        case .responses:
            out = OpenAIResponses.errorEvent(e, sequence: 0)
        }
        return out
    }
}

extension PassthroughStreamRelay: StreamProcessor {
    public var completed: Bool { sawEnd }

    public mutating func fail(_ error: GatewayError) -> ByteBuffer {
        var out = finish()
        out.writeImmutableBuffer(StreamErrors.event(format, error))
        return out
    }
}

/// Translates a provider's stream into another format: provider decoder → canonical events → client encoder.
public struct TranslatingStream: StreamProcessor {
    private var decoder: AnyStreamDecoder
    private var encoder: AnyStreamEncoder
    /// The whole answer, rebuilt (usage, finish reason, content).
    public private(set) var accumulator = StreamAccumulator()
    private var ended = false
    /// Added to the usage the provider reports, in the client's stream and the bill (an ensemble's
    /// proposers, whose calls the client does not see).
    public var usageExtra: TokenUsage?

    public init(from provider: WireFormat, to client: WireFormat, request: ChatRequest, clientModel: String, created: Int) {
        decoder = AnyStreamDecoder(provider, request: request)
        encoder = AnyStreamEncoder(client, model: clientModel, created: created, includeUsage: request.includeUsage)
    }

    public var usage: TokenUsage? { accumulator.usage }
    public var outputChars: Int { accumulator.outputChars }
    /// The final `response` object, for a Responses client.
    public var finalResponse: JSONValue? { encoder.finalResponse }
    public var completed: Bool { accumulator.finish != nil && accumulator.failed == nil }

    private mutating func emit(_ events: [StreamEvent], into out: inout ByteBuffer) {
        for var e in events where !ended {
            if let extra = usageExtra, case .usage(let u) = e { e = .usage(u + extra) }
            accumulator.add(e)
            encoder.encode(e, into: &out)
            if case .error = e { ended = true }
        }
    }

    public mutating func process(_ chunk: ByteBuffer) throws -> ByteBuffer {
        var out = ByteBuffer()
        emit(try decoder.feed(chunk), into: &out)
        return out
    }

    public mutating func finish() -> ByteBuffer {
        var out = ByteBuffer()
        emit(decoder.finish(), into: &out)
        guard !ended else { return out }
        if accumulator.finish == nil {
            // The provider closed the stream without saying it was done: that is a broken stream.
            emit([.error(GatewayError(status: 502, category: .upstream, code: "upstream_stream_error",
                                       message: "the provider ended the stream before finishing its answer"))], into: &out)
            return out
        }
        ended = true
        encoder.finish(into: &out)
        return out
    }

    public mutating func fail(_ error: GatewayError) -> ByteBuffer {
        var out = ByteBuffer()
        emit(decoder.finish(), into: &out)
        emit([.error(error)], into: &out)
        return out
    }
}
