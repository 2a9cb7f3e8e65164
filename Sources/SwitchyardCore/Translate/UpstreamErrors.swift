import NIOCore

/// Reads a provider's error body (in the provider's format) into a ``GatewayError`` that keeps its
/// status and message, so it can be re-rendered in the client's format.
public enum UpstreamErrors {
    public static func parse(_ raw: ByteBuffer, status: Int, format: WireFormat, provider: String) -> GatewayError {
        let parsed = try? JSONValue.parse(raw)
        var message: String?
        var code: String?
        switch format {
        case .openAI, .responses:
            let e = parsed?["error"]
            message = e?["message"]?.stringValue ?? e?.stringValue
            code = e?["code"]?.stringValue ?? e?["type"]?.stringValue
        case .anthropic:
            message = parsed?["error"]?["message"]?.stringValue
            code = parsed?["error"]?["type"]?.stringValue
        case .gemini:
            message = parsed?["error"]?["message"]?.stringValue
            code = parsed?["error"]?["status"]?.stringValue
        }
        let snippet = String(buffer: raw).prefix(300)
        let text = message ?? ("the provider `\(provider)` answered HTTP \(status)" + (snippet.isEmpty ? "" : ": \(snippet)"))
        let category: GatewayError.Category
        switch status {
        case 429: category = .rateLimit
        case 529: category = .overloaded
        case 503: category = .unavailable
        case 504: category = .timeout
        case 404: category = .notFound
        case 413: category = .requestTooLarge
        case 400..<500: category = .invalidRequest
        default: category = .upstream
        }
        return GatewayError(status: status, category: category, code: code ?? "upstream_error", message: text)
    }

    /// Whether an error says the provider rejected the gateway's own credentials (rather than the
    /// client's request): 401/403 anywhere, and Gemini's 400 `API_KEY_INVALID`.
    public static func isCredentialFailure(_ raw: ByteBuffer, status: Int, format: WireFormat) -> Bool {
        if status == 401 || status == 403 { return true }
        if format == .gemini, status == 400 {
            return String(buffer: raw).contains("API_KEY_INVALID")
        }
        return false
    }

    /// The status a client of `format` should see for a provider status (529 is Anthropic's own).
    public static func clientStatus(_ status: Int, client: WireFormat) -> Int {
        status == 529 && client != .anthropic ? 503 : status
    }
}
