import NIOCore

/// A wire format spoken by a client or a provider.
public enum WireFormat: String, Sendable, Equatable, CaseIterable {
    /// OpenAI Chat Completions.
    case openAI = "openai"
    /// Anthropic Messages.
    case anthropic
    /// Google Gemini `generateContent`.
    case gemini
    /// OpenAI Responses (`POST /v1/responses`).
    case responses
}

/// One entry point over the per-format translators.
public enum Translator {
    /// Decodes a client request. For Gemini, `model` and `stream` come from the URL.
    public static func decodeRequest(_ format: WireFormat, _ body: JSONObject, model: String, stream: Bool) throws(GatewayError) -> ChatRequest {
        switch format {
        case .openAI: return try OpenAIChat.decodeRequest(body)
        case .anthropic: return try AnthropicMessages.decodeRequest(body)
        case .gemini: return try Gemini.decodeRequest(body, model: model, stream: stream)
        case .responses: return try OpenAIResponses.decodeRequest(body)
        }
    }

    /// Options for encoding a request for a provider.
    public struct EncodeOptions: Sendable {
        public var maxTokensField: OpenAIChat.MaxTokensField
        public var defaultMaxTokens: Int
        public init(maxTokensField: OpenAIChat.MaxTokensField = .maxTokens, defaultMaxTokens: Int = 8192) {
            self.maxTokensField = maxTokensField
            self.defaultMaxTokens = defaultMaxTokens
        }
    }

    /// Encodes a canonical request for a provider.
    public static func encodeRequest(_ format: WireFormat, _ r: ChatRequest, upstreamModel: String, options: EncodeOptions) throws(GatewayError) -> JSONObject {
        switch format {
        case .openAI: return OpenAIChat.encodeRequest(r, model: upstreamModel, maxTokensField: options.maxTokensField)
        case .anthropic: return try AnthropicMessages.encodeRequest(r, model: upstreamModel, options: .init(defaultMaxTokens: options.defaultMaxTokens))
        case .gemini: return try Gemini.encodeRequest(r)
        case .responses: return OpenAIResponses.encodeRequest(r, model: upstreamModel)
        }
    }

    /// Decodes a provider's non-streamed response.
    public static func decodeResponse(_ format: WireFormat, _ body: JSONObject, request: ChatRequest) throws(GatewayError) -> ChatResponse {
        switch format {
        case .openAI: return try OpenAIChat.decodeResponse(body)
        case .anthropic: return try AnthropicMessages.decodeResponse(body, structuredOutput: request.usesStructuredOutputTool)
        case .gemini: return try Gemini.decodeResponse(body)
        case .responses: return try OpenAIResponses.decodeResponse(body)
        }
    }

    /// Encodes a canonical response for a client.
    public static func encodeResponse(_ format: WireFormat, _ r: ChatResponse, model: String, created: Int) -> JSONObject {
        switch format {
        case .openAI: return OpenAIChat.encodeResponse(r, model: model, created: created)
        case .anthropic: return AnthropicMessages.encodeResponse(r, model: model)
        case .gemini: return Gemini.encodeResponse(r, model: model)
        case .responses: return OpenAIResponses.encodeResponse(r, model: model, created: created)
        }
    }

    /// An error body in a client's format.
    public static func errorBody(_ format: WireFormat, _ e: GatewayError, requestID: String? = nil) -> ByteBuffer {
        switch format {
        case .openAI, .responses: return e.openAIBody()
        case .anthropic: return AnthropicMessages.errorBody(e, requestID: requestID)
        case .gemini: return Gemini.errorBody(e)
        }
    }
}

extension ChatRequest {
    /// Whether an Anthropic-bound encoding of this request asks for structured output through a tool.
    public var usesStructuredOutputTool: Bool {
        if case .jsonSchema? = responseFormat { return true }
        return false
    }
}

/// What the four provider stream decoders share: SSE framing, an event handler, and what to close when
/// the upstream ends.
protocol SSEEventDecoder {
    var scanner: SSEScanner { get set }
    /// Appends the canonical events one upstream SSE event produces.
    mutating func handle(_ event: SSEEvent, into out: inout [StreamEvent])
    /// Appends what the end of the upstream stream closes (open blocks).
    mutating func endOfStream(_ out: inout [StreamEvent])
}

extension SSEEventDecoder {
    mutating func endOfStream(_ out: inout [StreamEvent]) {}

    /// Feeds upstream bytes; returns the events they complete.
    mutating func decode(_ chunk: ByteBuffer) throws -> [StreamEvent] {
        scanner.feed(chunk)
        var out: [StreamEvent] = []
        while let event = try scanner.next() { handle(event, into: &out) }
        return out
    }

    /// The upstream ended: a last unterminated event, then whatever is still open.
    mutating func decodeEnd() -> [StreamEvent] {
        var out: [StreamEvent] = []
        if let event = scanner.finish() { handle(event, into: &out) }
        endOfStream(&out)
        return out
    }
}

/// A provider stream decoder of any format.
public enum AnyStreamDecoder: Sendable {
    case openAI(OpenAIStreamDecoder)
    case anthropic(AnthropicStreamDecoder)
    case gemini(GeminiStreamDecoder)
    case responses(ResponsesStreamDecoder)

    public init(_ format: WireFormat, request: ChatRequest) {
        switch format {
        case .responses: self = .responses(ResponsesStreamDecoder())
        case .openAI: self = .openAI(OpenAIStreamDecoder())
        case .anthropic: self = .anthropic(AnthropicStreamDecoder(structuredOutput: request.usesStructuredOutputTool))
        case .gemini: self = .gemini(GeminiStreamDecoder())
        }
    }

    public mutating func feed(_ chunk: ByteBuffer) throws -> [StreamEvent] {
        switch self {
        case .openAI(var d): defer { self = .openAI(d) }; return try d.feed(chunk)
        case .anthropic(var d): defer { self = .anthropic(d) }; return try d.feed(chunk)
        case .gemini(var d): defer { self = .gemini(d) }; return try d.feed(chunk)
        case .responses(var d): defer { self = .responses(d) }; return try d.feed(chunk)
        }
    }

    public mutating func finish() -> [StreamEvent] {
        switch self {
        case .openAI(var d): defer { self = .openAI(d) }; return d.finish()
        case .anthropic(var d): defer { self = .anthropic(d) }; return d.finish()
        case .gemini(var d): defer { self = .gemini(d) }; return d.finish()
        case .responses(var d): defer { self = .responses(d) }; return d.finish()
        }
    }
}

/// A client stream encoder of any format.
public enum AnyStreamEncoder: Sendable {
    case openAI(OpenAIStreamEncoder)
    case anthropic(AnthropicStreamEncoder)
    case gemini(GeminiStreamEncoder)
    case responses(ResponsesStreamEncoder)

    public init(_ format: WireFormat, model: String, created: Int, includeUsage: Bool) {
        switch format {
        case .responses: self = .responses(ResponsesStreamEncoder(model: model, created: created))
        case .openAI: self = .openAI(OpenAIStreamEncoder(model: model, created: created, includeUsage: includeUsage))
        case .anthropic: self = .anthropic(AnthropicStreamEncoder(model: model))
        case .gemini: self = .gemini(GeminiStreamEncoder(model: model))
        }
    }

    public mutating func encode(_ event: StreamEvent, into out: inout ByteBuffer) {
        switch self {
        case .openAI(var e): e.encode(event, into: &out); self = .openAI(e)
        case .anthropic(var e): e.encode(event, into: &out); self = .anthropic(e)
        case .gemini(var e): e.encode(event, into: &out); self = .gemini(e)
        case .responses(var e): e.encode(event, into: &out); self = .responses(e)
        }
    }

    public mutating func finish(into out: inout ByteBuffer) {
        switch self {
        case .openAI(var e): e.finish(into: &out); self = .openAI(e)
        case .anthropic(var e): e.finish(into: &out); self = .anthropic(e)
        case .gemini(var e): e.finish(into: &out); self = .gemini(e)
        case .responses(var e): e.finish(into: &out); self = .responses(e)
        }
    }

    /// The final `response` object of a Responses stream (for storing it).
    public var finalResponse: JSONValue? {
        if case .responses(let e) = self { return e.finalResponse }
        return nil
    }
}

/// Rebuilds a complete answer from stream events: final usage, finish reason and content (for logs,
/// billing and carrying reasoning across turns).
public struct StreamAccumulator: Sendable {
    public private(set) var usage: TokenUsage?
    public private(set) var finish: FinishReason?
    public private(set) var content: [ContentPart] = []
    public private(set) var failed: GatewayError?
    /// Characters of output (text, thinking, tool arguments) seen so far.
    public private(set) var outputChars = 0
    private var indexToPart: [Int: Int] = [:]

    public init() {}

    public mutating func add(_ event: StreamEvent) {
        switch event {
        case .start: break
        case .textStart(let i):
            indexToPart[i] = content.count
            content.append(.text(""))
        case .textDelta(let i, let t):
            outputChars += t.utf8.count
            if let k = indexToPart[i], case .text(let old, let c) = content[k] { content[k] = .text(old + t, cacheControl: c) }
        case .thinkingStart(let i):
            indexToPart[i] = content.count
            content.append(.thinking("", signature: nil))
        case .thinkingDelta(let i, let t):
            outputChars += t.utf8.count
            if let k = indexToPart[i], case .thinking(let old, let sig) = content[k] { content[k] = .thinking(old + t, signature: sig) }
        case .signatureDelta(let i, let s):
            if let k = indexToPart[i], case .thinking(let old, let sig) = content[k] { content[k] = .thinking(old, signature: (sig ?? "") + s) }
        case .redactedThinking(let i, let data):
            indexToPart[i] = content.count
            content.append(.redactedThinking(data: data))
        case .toolCallStart(let i, let id, let name):
            indexToPart[i] = content.count
            content.append(.toolCall(id: id, name: name, arguments: ""))
        case .toolCallDelta(let i, let a):
            outputChars += a.utf8.count
            if let k = indexToPart[i], case .toolCall(let id, let name, let old) = content[k] { content[k] = .toolCall(id: id, name: name, arguments: old + a) }
        case .blockStop: break
        case .usage(let u): usage = u
        case .finish(let f): finish = f
        case .error(let e): failed = e
        }
    }
}
