/// The format-neutral model every translation goes through: a client request is decoded into a
/// ``ChatRequest``, encoded for the provider; the provider's answer is decoded into a ``ChatResponse``
/// (or a sequence of ``StreamEvent``s) and encoded for the client. Three wire formats need three decoders
/// and three encoders instead of nine pairwise translators.

/// Who wrote a message. The leading system prompt lives in ``ChatRequest/system``; `system` messages are
/// the ones that appear later in the conversation (Claude Code injects them), kept in place.
public enum ChatRole: String, Sendable, Equatable {
    case user, assistant, system
}

/// Where an image or document's bytes are.
public enum MediaSource: Sendable, Equatable {
    /// Inline base64 data with its media type (`image/png`, `application/pdf`).
    case base64(mediaType: String, data: String)
    /// A URL the provider (or the gateway, for providers that need inline data) fetches.
    case url(String)
    /// A provider-side file id (OpenAI `file_id`, Anthropic `file_id`, Gemini `fileUri`).
    case file(id: String, mediaType: String?)
}

/// One piece of message content.
public enum ContentPart: Sendable, Equatable {
    case text(String, cacheControl: JSONValue? = nil)
    case image(MediaSource, detail: String? = nil, cacheControl: JSONValue? = nil)
    case document(MediaSource, title: String? = nil, cacheControl: JSONValue? = nil)
    /// Plain-text document content (Anthropic `{"type":"text"}` document sources).
    case textDocument(String, title: String? = nil, cacheControl: JSONValue? = nil)
    /// A call the assistant made; `arguments` is JSON text exactly as the model produced it.
    case toolCall(id: String, name: String, arguments: String)
    /// The result of a call, sent back by the user side.
    case toolResult(ToolResult)
    /// Model reasoning; `signature` is opaque and must travel back byte-exact.
    case thinking(String, signature: String?)
    /// Reasoning the provider encrypted; `data` travels back byte-exact.
    case redactedThinking(data: String)
    /// Audio input (OpenAI `input_audio`), kept only for formats that accept it.
    case audio(data: String, format: String)

    public var textValue: String? {
        if case .text(let t, _) = self { return t }
        return nil
    }
}

/// A tool's answer to a ``ContentPart/toolCall``.
public struct ToolResult: Sendable, Equatable {
    public var callID: String
    /// The tool's name when the format carries it (Gemini needs it; OpenAI does not send it).
    public var name: String?
    /// Text, images or documents the tool returned.
    public var content: [ContentPart]
    public var isError: Bool
    public var cacheControl: JSONValue?

    public init(callID: String, name: String? = nil, content: [ContentPart], isError: Bool = false, cacheControl: JSONValue? = nil) {
        self.callID = callID
        self.name = name
        self.content = content
        self.isError = isError
        self.cacheControl = cacheControl
    }

    /// The result's text, parts joined by newlines (for formats that take a string).
    public var text: String {
        content.compactMap(\.textValue).joined(separator: "\n")
    }
}

public struct ChatMessage: Sendable, Equatable {
    public var role: ChatRole
    public var content: [ContentPart]

    public init(role: ChatRole, content: [ContentPart]) {
        self.role = role
        self.content = content
    }
}

/// A function the model may call.
public struct ToolDefinition: Sendable, Equatable {
    public var name: String
    public var description: String?
    /// JSON Schema of the arguments (always an object schema).
    public var parameters: JSONValue
    public var strict: Bool?
    public var cacheControl: JSONValue?

    public init(name: String, description: String? = nil, parameters: JSONValue, strict: Bool? = nil, cacheControl: JSONValue? = nil) {
        self.name = name
        self.description = description
        self.parameters = parameters
        self.strict = strict
        self.cacheControl = cacheControl
    }
}

/// Whether and which tool the model must call.
public enum ToolChoice: Sendable, Equatable {
    case auto, none, required
    case tool(String)
}

/// Structured output the client asked for.
public enum ResponseFormat: Sendable, Equatable {
    case text
    case jsonObject
    case jsonSchema(name: String, schema: JSONValue, strict: Bool?, description: String?)
}

/// How much the model should think before answering.
public enum Reasoning: Sendable, Equatable {
    /// OpenAI-style effort: `minimal`, `low`, `medium`, `high` (others kept as given).
    case effort(String)
    /// Anthropic/Gemini-style token budget.
    case budget(Int)
    /// Explicitly off.
    case disabled

    /// The budget this setting stands for (`nil` when disabled).
    public var budgetTokens: Int? {
        switch self {
        case .budget(let n): return n
        case .disabled: return nil
        case .effort(let e):
            switch e {
            case "none": return nil
            case "minimal": return 1024
            case "low": return 2048
            case "medium": return 8192
            case "high": return 16384
            case "xhigh": return 32768
            default: return 8192
            }
        }
    }

    /// The effort this setting stands for.
    public var effort: String? {
        switch self {
        case .effort(let e): return e
        case .disabled: return nil
        case .budget(let n):
            switch n {
            case ..<1536: return "minimal"
            case ..<4096: return "low"
            case ..<12288: return "medium"
            default: return "high"
            }
        }
    }
}

/// A chat request in no particular wire format.
public struct ChatRequest: Sendable, Equatable {
    public var model: String
    /// System prompt blocks, in order (OpenAI system/developer messages, Anthropic `system`, Gemini
    /// `systemInstruction`). Each may carry Anthropic `cache_control`.
    public var system: [ContentPart] = []
    public var messages: [ChatMessage] = []
    public var tools: [ToolDefinition] = []
    public var toolChoice: ToolChoice?
    public var parallelToolCalls: Bool?
    public var maxTokens: Int?
    public var temperature: Double?
    public var topP: Double?
    public var topK: Int?
    public var stop: [String] = []
    public var responseFormat: ResponseFormat?
    public var reasoning: Reasoning?
    public var stream = false
    /// The client asked for usage in the stream (OpenAI `stream_options.include_usage`).
    public var includeUsage = false
    /// Number of choices wanted.
    public var n: Int?
    /// An end-user id (OpenAI `user`, Anthropic `metadata.user_id`).
    public var user: String?
    public var seed: Int?
    public var presencePenalty: Double?
    public var frequencyPenalty: Double?
    /// Log probabilities requested (OpenAI only).
    public var logprobs: Bool?
    /// Parameters that only some formats know, kept so a same-family encoder can forward them.
    public var extras: JSONObject = [:]

    public init(model: String) { self.model = model }
}

/// Why generation stopped, in neutral terms.
public enum FinishReason: Sendable, Equatable {
    case stop
    case length
    case toolCalls
    case stopSequence(String?)
    case contentFilter
    case refusal
    case pauseTurn
    /// A value with no neutral equivalent, kept for logs.
    case other(String)
}

/// A complete (non-streamed) answer.
public struct ChatResponse: Sendable, Equatable {
    public var id: String
    public var model: String
    /// Text, tool calls and thinking, in the order the model produced them.
    public var content: [ContentPart]
    public var finish: FinishReason
    public var usage: TokenUsage?
    /// Creation time in seconds since the epoch, when the provider said.
    public var created: Int?

    public init(id: String, model: String, content: [ContentPart], finish: FinishReason, usage: TokenUsage?, created: Int? = nil) {
        self.id = id
        self.model = model
        self.content = content
        self.finish = finish
        self.usage = usage
        self.created = created
    }
}

/// One step of a streamed answer. Content blocks are numbered in the order they start, from 0.
public enum StreamEvent: Sendable, Equatable {
    /// The answer began.
    case start(id: String, model: String)
    /// A text block began.
    case textStart(index: Int)
    case textDelta(index: Int, String)
    /// A thinking block began.
    case thinkingStart(index: Int)
    case thinkingDelta(index: Int, String)
    case signatureDelta(index: Int, String)
    /// A redacted thinking block (complete in one event).
    case redactedThinking(index: Int, data: String)
    /// A tool call began.
    case toolCallStart(index: Int, id: String, name: String)
    /// A fragment of a tool call's JSON arguments.
    case toolCallDelta(index: Int, String)
    /// The block at `index` is complete.
    case blockStop(index: Int)
    /// Token counts (may arrive more than once; later values supersede earlier ones).
    case usage(TokenUsage)
    /// Generation stopped.
    case finish(FinishReason)
    /// The stream failed; nothing follows.
    case error(GatewayError)
}
