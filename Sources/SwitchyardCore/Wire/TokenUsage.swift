/// Token counts of one request, normalised across wire formats.
///
/// `inputTokens` counts every prompt token, cached or not (OpenAI's `prompt_tokens` convention);
/// `cachedInputTokens` and `cacheCreationTokens` say how many of them were cache reads and writes.
public struct TokenUsage: Sendable, Equatable {
    public var inputTokens: Int
    public var outputTokens: Int
    public var cachedInputTokens: Int
    public var cacheCreationTokens: Int
    public var reasoningTokens: Int

    public init(inputTokens: Int = 0, outputTokens: Int = 0, cachedInputTokens: Int = 0, cacheCreationTokens: Int = 0, reasoningTokens: Int = 0) {
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.cachedInputTokens = cachedInputTokens
        self.cacheCreationTokens = cacheCreationTokens
        self.reasoningTokens = reasoningTokens
    }

    /// Reads an OpenAI Chat Completions `usage` object; nil when it is absent or not an object.
    /// An explicit zero stays zero: only a missing object means "unknown".
    public init?(openAI usage: JSONValue?) {
        guard let obj = usage?.objectValue else { return nil }
        inputTokens = obj["prompt_tokens"]?.intValue ?? 0
        outputTokens = obj["completion_tokens"]?.intValue ?? 0
        cachedInputTokens = obj["prompt_tokens_details"]?["cached_tokens"]?.intValue ?? 0
        cacheCreationTokens = 0
        reasoningTokens = obj["completion_tokens_details"]?["reasoning_tokens"]?.intValue ?? 0
    }

    /// Reads an OpenAI Chat Completions `usage` object from its scanned bytes, exactly as
    /// ``init(openAI:)-(JSONValue?)`` reads the parsed value (without building it: this runs for every
    /// answer relayed).
    public init(openAI usage: ScannedObject) {
        inputTokens = usage.int("prompt_tokens") ?? 0
        outputTokens = usage.int("completion_tokens") ?? 0
        cachedInputTokens = usage.object("prompt_tokens_details")?.int("cached_tokens") ?? 0
        cacheCreationTokens = 0
        reasoningTokens = usage.object("completion_tokens_details")?.int("reasoning_tokens") ?? 0
    }

    /// The OpenAI Chat Completions `usage` object.
    public var openAIJSON: JSONValue {
        var obj: JSONObject = [
            "prompt_tokens": .int(inputTokens),
            "completion_tokens": .int(outputTokens),
            "total_tokens": .int(inputTokens + outputTokens),
        ]
        obj["prompt_tokens_details"] = .object(["cached_tokens": .int(cachedInputTokens), "audio_tokens": .int(0)])
        obj["completion_tokens_details"] = .object([
            "reasoning_tokens": .int(reasoningTokens), "audio_tokens": .int(0),
            "accepted_prediction_tokens": .int(0), "rejected_prediction_tokens": .int(0),
        ])
        return .object(obj)
    }
}

extension TokenUsage {
    /// Usage of two calls together (an ensemble's proposers and aggregator).
    public static func + (a: TokenUsage, b: TokenUsage) -> TokenUsage {
        TokenUsage(
            inputTokens: a.inputTokens + b.inputTokens, outputTokens: a.outputTokens + b.outputTokens,
            cachedInputTokens: a.cachedInputTokens + b.cachedInputTokens, cacheCreationTokens: a.cacheCreationTokens + b.cacheCreationTokens,
            reasoningTokens: a.reasoningTokens + b.reasoningTokens)
    }
}
