import NIOCore

/// An error the gateway answers a client with: an HTTP status, a category and a machine-readable code,
/// rendered in the format of the API the client called.
public struct GatewayError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The broad class of the error, which decides the type names used in each API format.
    public enum Category: Sendable, Equatable {
        case invalidRequest
        case authentication
        case permission
        case notFound
        case requestTooLarge
        case rateLimit
        case billing
        case upstream
        case unavailable
        case timeout
        case overloaded
        case `internal`

        /// The `error.type` value in OpenAI-format bodies.
        public var openAIType: String {
            switch self {
            case .invalidRequest, .notFound, .requestTooLarge: return "invalid_request_error"
            case .authentication: return "authentication_error"
            case .permission: return "permission_error"
            case .rateLimit: return "rate_limit_error"
            case .billing: return "insufficient_quota"
            case .upstream, .unavailable, .overloaded, .internal: return "server_error"
            case .timeout: return "timeout_error"
            }
        }
    }

    public var status: Int
    public var category: Category
    /// Machine-readable code, e.g. `invalid_api_key`, `model_not_found`.
    public var code: String
    public var message: String
    /// The request parameter at fault, if any.
    public var param: String?
    /// Seconds the client should wait before retrying (sent as `Retry-After`).
    public var retryAfterSeconds: Int?
    /// The same, to the millisecond (sent as `retry-after-ms`, which the OpenAI and Anthropic SDKs prefer).
    public var retryAfterMs: Int64?
    /// Methods the path does serve (sent as `Allow` with 405).
    public var allow: String?

    public init(status: Int, category: Category, code: String, message: String, param: String? = nil, retryAfterSeconds: Int? = nil) {
        self.status = status
        self.category = category
        self.code = code
        self.message = message
        self.param = param
        self.retryAfterSeconds = retryAfterSeconds
    }

    public var description: String { "\(status) \(code): \(message)" }

    // MARK: Common errors

    public static func invalidRequest(_ message: String, code: String = "invalid_request_error", param: String? = nil) -> GatewayError {
        .init(status: 400, category: .invalidRequest, code: code, message: message, param: param)
    }

    public static func invalidJSON(_ error: JSONScanner.ScanError) -> GatewayError {
        .init(status: 400, category: .invalidRequest, code: "invalid_json", message: error.description)
    }

    public static func missingField(_ name: String) -> GatewayError {
        .init(status: 400, category: .invalidRequest, code: "missing_required_parameter", message: "missing required parameter: `\(name)`", param: name)
    }

    public static func invalidField(_ name: String, _ message: String) -> GatewayError {
        .init(status: 400, category: .invalidRequest, code: "invalid_type", message: message, param: name)
    }

    public static let missingKey = GatewayError(
        status: 401, category: .authentication, code: "invalid_api_key",
        message: "missing API key: send it as `Authorization: Bearer KEY` or `x-api-key: KEY`")

    public static let invalidKey = GatewayError(
        status: 401, category: .authentication, code: "invalid_api_key", message: "invalid API key")

    public static func modelNotFound(_ model: String) -> GatewayError {
        .init(status: 404, category: .notFound, code: "model_not_found",
              message: "the model `\(model)` does not exist or you do not have access to it", param: "model")
    }

    public static func routeNotFound(_ method: String, _ path: String) -> GatewayError {
        .init(status: 404, category: .notFound, code: "not_found", message: "no route for \(method) \(path)")
    }

    public static func bodyTooLarge(limit: Int) -> GatewayError {
        .init(status: 413, category: .requestTooLarge, code: "request_too_large",
              message: "request body exceeds the limit of \(limit) bytes")
    }

    /// 429 for a request over one of its limits: `Retry-After` rounds up, `retry-after-ms` is exact.
    public static func rateLimited(_ r: LimitRejection) -> GatewayError {
        var e = GatewayError(
            status: 429, category: .rateLimit, code: "rate_limit_exceeded", message: r.message,
            retryAfterSeconds: Int((r.retryAfterMs + 999) / 1000))
        e.retryAfterMs = r.retryAfterMs
        return e
    }

    public static func internalError(_ message: String = "internal error") -> GatewayError {
        .init(status: 500, category: .internal, code: "internal_error", message: message)
    }

    // MARK: Rendering

    /// The OpenAI error body: `{"error":{"message","type","param","code"}}`.
    public func openAIBody() -> ByteBuffer {
        var out = ByteBuffer()
        out.reserveCapacity(96 + message.utf8.count)
        out.writeStaticString("{\"error\":{\"message\":")
        JSONString.write(message, into: &out)
        out.writeStaticString(",\"type\":")
        JSONString.write(category.openAIType, into: &out)
        out.writeStaticString(",\"param\":")
        if let param { JSONString.write(param, into: &out) } else { out.writeStaticString("null") }
        out.writeStaticString(",\"code\":")
        JSONString.write(code, into: &out)
        out.writeStaticString("}}")
        return out
    }
}
