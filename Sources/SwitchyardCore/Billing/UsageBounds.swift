import NIOCore

/// Upper bounds on what a request can use, computed from its bytes before it is sent, so the credits
/// reserved for it cover its final cost.
public enum UsageBounds {
    /// Tokens assumed for one image part (providers scale images down to about 1.6K tokens at most).
    public static let imageTokens = 1_600
    /// Tokens assumed for one document or file part (a 100-page PDF at 3K tokens a page).
    public static let documentTokens = 300_000
    /// Tokens for framing a provider adds (role markers, the tool-use system prompt).
    public static let framingTokens = 1_024

    /// An upper bound on a request's input tokens: one token per byte of the body (every text token
    /// covers at least one byte, and the JSON around it adds more), plus allowances for media parts,
    /// whose tokens do not follow from their bytes.
    public static func inputTokens(_ body: ByteBuffer) -> Int {
        let media = mediaParts(body)
        return body.readableBytes + framingTokens + media.images * imageTokens + media.documents * documentTokens
    }

    /// Counts image-like and document-like parts: `"type"` values that introduce them in the OpenAI and
    /// Anthropic formats (`image_url`, `image`, `document`, `file`, …) and Gemini's `inlineData` /
    /// `fileData` keys. A text part that happens to look like one is counted too: the bound only gets safer.
    public static func mediaParts(_ body: ByteBuffer) -> (images: Int, documents: Int) {
        var images = 0, documents = 0
        body.withUnsafeReadableBytes { bytes in
            var i = 0
            let n = bytes.count
            var afterTypeKey = false
            while i < n {
                guard bytes[i] == UInt8(ascii: "\"") else {
                    i += 1
                    continue
                }
                // A string literal: find its end, skipping escapes.
                let start = i + 1
                var j = start
                while j < n, bytes[j] != UInt8(ascii: "\"") { j += bytes[j] == UInt8(ascii: "\\") ? 2 : 1 }
                let literal = start <= min(j, n) && j - start <= 11 ? String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<min(j, n)]), as: UTF8.self) : ""
                var k = j + 1
                while k < n, bytes[k] == UInt8(ascii: " ") || bytes[k] == UInt8(ascii: "\n") || bytes[k] == UInt8(ascii: "\r") || bytes[k] == UInt8(ascii: "\t") { k += 1 }
                let isKey = k < n && bytes[k] == UInt8(ascii: ":")
                if isKey {
                    switch literal {
                    case "inlineData", "inline_data": images += 1
                    case "fileData", "file_data": documents += 1
                    default: break
                    }
                    afterTypeKey = literal == "type"
                } else {
                    if afterTypeKey {
                        switch literal {
                        case "image", "image_url", "input_image": images += 1
                        case "document", "file", "input_file": documents += 1
                        default: break
                        }
                    }
                    afterTypeKey = false
                }
                i = j + 1
            }
        }
        return (images, documents)
    }

    /// Thinking tokens assumed for a Gemini request that does not fix its thinking budget (Gemini counts
    /// thoughts apart from `maxOutputTokens`; dynamic budgets go up to 32K).
    public static let geminiDynamicThinking = 32_768

    /// The output tokens an upstream request body allows: its cap (`max_completion_tokens`/`max_tokens`,
    /// Anthropic's `max_tokens`, which includes thinking, or Gemini's `maxOutputTokens`) and, for Gemini,
    /// the thinking allowance on top. `cap` is nil when the body sets none.
    public static func outputCap(_ body: ByteBuffer, format: WireFormat) -> (cap: Int?, thinking: Int) {
        guard let doc = try? ScannedObject(body, maxDepth: 128) else { return (nil, format == .gemini ? geminiDynamicThinking : 0) }
        func int(_ m: JSONScanner.Member?) -> Int? { m.flatMap { Int(String(buffer: doc.rawValue($0))) } }
        switch format {
        case .openAI:
            return (int(doc.member("max_completion_tokens")) ?? int(doc.member("max_tokens")), 0)
        case .anthropic:
            return (int(doc.member("max_tokens")), 0)
        case .responses:
            return (int(doc.member("max_output_tokens")), 0)
        case .gemini:
            guard let g = doc.member("generationConfig") ?? doc.member("generation_config"), g.kind == .object,
                let config = (try? JSONValue.parse(doc.rawValue(g)))?.objectValue
            else { return (nil, geminiDynamicThinking) }
            let cap = (config["maxOutputTokens"] ?? config["max_output_tokens"])?.intValue
            let thinking = (config["thinkingConfig"] ?? config["thinking_config"])?.objectValue
            let budget = (thinking?["thinkingBudget"] ?? thinking?["thinking_budget"])?.intValue
            return (cap, budget.map { $0 >= 0 ? $0 : geminiDynamicThinking } ?? geminiDynamicThinking)
        }
    }
}

