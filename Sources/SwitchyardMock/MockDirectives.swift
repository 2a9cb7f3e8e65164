import SwitchyardCore

/// Per-request behaviour of the fake provider, chosen by the caller.
///
/// Three sources, later ones overriding earlier ones:
/// - `x-mock-*` request headers (`x-mock-status: 503`), for tests that call the mock directly;
/// - a `"mock": {...}` member in the JSON body, which the gateway forwards untouched;
/// - a `[[mock status=503 delay_ms=200]]` marker in the last user message, which survives any
///   format translation and so works through every client API.
public struct MockDirectives: Sendable, Equatable {
    /// Answer with this HTTP status and an error body in the provider's format.
    public var status: Int?
    /// Error message for `status`.
    public var message: String?
    /// `retry-after` seconds sent with `status`.
    public var retryAfter: Int?
    /// Delay before the response head, in milliseconds.
    public var delayMs: Int?
    /// Delay between stream chunks, in milliseconds.
    public var chunkDelayMs: Int?
    /// Number of content chunks in a stream.
    public var chunks: Int?
    /// Drop the connection after sending this many stream events.
    public var dropAfter: Int?
    /// Reply length in words.
    public var words: Int?
    /// Number of tool calls to make when tools are offered (0 = answer in text).
    public var toolCalls: Int?
    /// Omit usage from the reply (to test gateways that must cope with missing usage).
    public var omitUsage = false
    /// Report this many cached prompt tokens.
    public var cachedTokens: Int?
    /// Stamp each streamed Chat Completions chunk with the wall-clock time the mock wrote it
    /// (`"mock_sent_us"`, microseconds since the epoch), so a benchmark can tell how long a relay held it.
    public var stampEvents = false

    public init() {}

    /// Recognised keys: status, message, retry_after, delay_ms, chunk_delay_ms, chunks, drop_after,
    /// words, tool_calls, usage (`none` omits it), cached_tokens, stamp_events.
    public mutating func apply(_ pairs: [String: String]) {
        func int(_ k: String) -> Int? { pairs[k].flatMap { Int($0) } }
        if let v = int("status") { status = v }
        if let v = pairs["message"] { message = v }
        if let v = int("retry_after") { retryAfter = v }
        if let v = int("delay_ms") { delayMs = v }
        if let v = int("chunk_delay_ms") { chunkDelayMs = v }
        if let v = int("chunks") { chunks = max(1, v) }
        if let v = int("drop_after") { dropAfter = max(0, v) }
        if let v = int("words") { words = max(0, v) }
        if let v = int("tool_calls") { toolCalls = max(0, v) }
        if let v = pairs["usage"] { omitUsage = (v == "none" || v == "false") }
        if let v = int("cached_tokens") { cachedTokens = max(0, v) }
        if let v = pairs["stamp_events"] { stampEvents = (v == "true" || v == "1") }
    }

    /// Pairs from `x-mock-*` headers (`x-mock-delay-ms` → `delay_ms`).
    public static func pairs(fromHeaders headers: [(name: String, value: String)]) -> [String: String] {
        var out: [String: String] = [:]
        for (name, value) in headers {
            let lower = name.lowercased()
            guard lower.hasPrefix("x-mock-") else { continue }
            out[String(lower.dropFirst(7)).replacingDashes()] = value
        }
        return out
    }

    /// Pairs from a `"mock": {...}` JSON member.
    public static func pairs(fromJSON value: JSONValue?) -> [String: String] {
        guard let obj = value?.objectValue else { return [:] }
        var out: [String: String] = [:]
        for (k, v) in obj {
            switch v {
            case .string(let s): out[k] = s
            case .number(let n): out[k] = n
            case .bool(let b): out[k] = b ? "true" : "false"
            default: continue
            }
        }
        return out
    }

    /// Pairs from the last `[[mock k=v ...]]` marker in `text`.
    public static func pairs(fromText text: String) -> [String: String] {
        guard let start = text.ranges(of: "[[mock").last else { return [:] }
        guard let end = text[start.upperBound...].firstRange(of: "]]") else { return [:] }
        var out: [String: String] = [:]
        for token in text[start.upperBound..<end.lowerBound].split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }) {
            let parts = token.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { continue }
            out[String(parts[0])] = String(parts[1])
        }
        return out
    }
}

extension String {
    fileprivate func replacingDashes() -> String { String(map { $0 == "-" ? "_" : $0 }) }
}
