import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import SwitchyardCore
import SwitchyardStore

extension HTTPField.Name {
    static let xRequestID = HTTPField.Name("x-request-id")!
    static let xAPIKey = HTTPField.Name("x-api-key")!
    static let xGoogAPIKey = HTTPField.Name("x-goog-api-key")!
    static let requestID = HTTPField.Name("request-id")!
    static let retryAfter = HTTPField.Name("retry-after")!
    static let retryAfterMs = HTTPField.Name("retry-after-ms")!
    static let cacheControl = HTTPField.Name("cache-control")!
}

/// Request ids: the client's when sane, otherwise generated.
enum RequestIDs {
    static func from(_ headers: HTTPFields) -> String? {
        guard let value = headers[.xRequestID], (1...128).contains(value.utf8.count),
            value.utf8.allSatisfy({ b in
                (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
                    || b == UInt8(ascii: "-") || b == UInt8(ascii: "_") || b == UInt8(ascii: ".") || b == UInt8(ascii: ":")
            })
        else { return nil }
        return value
    }

    /// `req_` and 24 characters, time-ordered (see ``APIKeys/generateOrderedID(prefix:random:)``).
    static func generate() -> String { APIKeys.generateOrderedID(prefix: "req_") }
}

/// Outermost middleware: assigns the request id, turns any thrown error into an error response in the
/// client's API format, and writes the access log line once the response body has been sent.
struct GatewayMiddleware: RouterMiddleware {
    typealias Context = GatewayContext
    let logger: Logger
    /// Methods served on each fixed path, so a wrong method gets 405 (with `Allow`) rather than 404.
    let routeMethods: [String: [String]]
    let limiter: RateLimiter
    let meter: CreditMeter

    // Everything up to the response head (auth, limits, credits, routing, the provider call) runs in
    // the request's task, which ends once the head is out; a streamed body is written by a task of its
    // own (`GatewayApplication`). A task keeps the stack memory of its deepest moment until it ends:
    // written from the request's task, each open stream would carry the whole request path's frames
    // (~15 KB) for as long as it lasts.
    func handle(_ request: Request, context: GatewayContext, next: (Request, GatewayContext) async throws -> Response) async throws -> Response {
        try await respond(request, context: context, next: next)
    }

    private func respond(_ request: Request, context: GatewayContext, next: (Request, GatewayContext) async throws -> Response) async throws -> Response {
        var context = context
        let id = RequestIDs.from(request.headers) ?? RequestIDs.generate()
        context.requestID = id
        let log = context.log
        log.begin(requestID: id, method: request.method.rawValue, path: request.uri.path, logger: logger, meter: meter)
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            response = await failed(error, request: request, requestID: id, log: log)
        }
        Self.finish(&response.headers, requestID: id, format: WireFormat.of(request), log: log, limiter: limiter)
        log.set(status: Int(response.status.code))
        guard log.waitsForBody else {
            log.emit(outcome: response.status.code == 499 ? "client_closed" : "ok")
            return response
        }
        let body = response.body
        response.body = ResponseBody(contentLength: body.contentLength) { writer in
            do {
                try await body.write(writer)
                log.emit(outcome: "ok")
            } catch {
                log.emit(outcome: error is CancellationError ? "client_closed" : "write_failed")
                throw error
            }
        }
        return response
    }

    /// The headers every answer gets once its request path is done: the request id, the rate limits of
    /// an authenticated caller with limits in force, and the credit figures.
    static func finish(_ headers: inout HTTPFields, requestID id: String, format: WireFormat, log: RequestLog, limiter: RateLimiter) {
        // Room for every header added from here on (request ids 2, rate limits 9, credits 2, `date` 1) in
        // one allocation: appended one by one they double the array to 32 fields (1.8 KB), which a
        // streamed response keeps for as long as the stream is open.
        headers.reserveCapacity(headers.count + 14)
        headers[.xRequestID] = id
        if format == .anthropic { headers[.requestID] = id }  // what the anthropic SDK reads
        let (principal, snapshot) = log.rateLimitState
        if let principal, !principal.limits.isUnlimited {
            RateLimitHeaders.apply(snapshot ?? limiter.peek(principal.limits), format: format, now: EpochClock.nowMilliseconds(), to: &headers)
        }
        let credits = log.creditFigures
        CreditHeaders.apply(charged: credits.charged, remaining: credits.remaining, reserved: credits.reserved, to: &headers)
    }

    /// The error response for a request that failed, in the client's format; settles any credits it held.
    /// Kept out of `respond`, whose frame every request carries while it is inside the request path.
    @inline(never)
    private func failed(_ error: any Error, request: Request, requestID id: String, log: RequestLog) async -> Response {
        var gatewayError = GatewayError(error, method: request.method, path: request.uri.path)
        if gatewayError.code == "not_found", let allowed = routeMethods[request.uri.path] {
            gatewayError = GatewayError(
                status: 405, category: .invalidRequest, code: "method_not_allowed",
                message: "\(request.method.rawValue) is not allowed on \(request.uri.path); use \(allowed.joined(separator: " or "))")
            gatewayError.allow = allowed.joined(separator: ", ")
        }
        if gatewayError.category == .internal { logger.error("unhandled error", metadata: ["request_id": .string(id), "error": .string("\(error)")]) }
        log.set(errorCode: gatewayError.code)
        if let ticket = log.ticket {
            // Nothing reached the client: a platform failure is refunded; a client that left pays per policy.
            let left = gatewayError.code == "client_closed"
            if let result = await ticket.settle(
                left ? .clientLeft : .failedBeforeContent, reported: nil, status: gatewayError.status, errorCode: gatewayError.code)
            {
                log.set(creditsCharged: result.charged, remaining: result.available)
            }
        }
        return ErrorResponse.make(gatewayError, format: WireFormat.of(request), requestID: id)
    }
}

extension WireFormat {
    /// Which client API a request speaks, deciding the shape of its error bodies.
    static func of(_ request: Request) -> WireFormat {
        let path = request.uri.path
        if path.hasSuffix("/v1/messages") || path.hasSuffix("/v1/messages/count_tokens") { return .anthropic }
        // The colon first: a byte scan, where a substring search builds a search table per call.
        if path.utf8.contains(UInt8(ascii: ":")), path.contains("/models/") { return .gemini }
        if path.hasSuffix("/v1beta/models") { return .gemini }
        if path.hasSuffix("/v1/models") {
            if request.headers[.anthropicVersion] != nil { return .anthropic }
            if request.headers[.xGoogAPIKey] != nil || request.headers[HTTPField.Name("x-goog-api-client")!] != nil { return .gemini }
        }
        return .openAI
    }
}

/// Error responses in each client format.
enum ErrorResponse {
    static func make(_ error: GatewayError, format: WireFormat, requestID: String) -> Response {
        answer(error, format: format, requestID: requestID).response
    }

    static func answer(_ error: GatewayError, format: WireFormat, requestID: String) -> Answer {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let retry = error.retryAfterSeconds { headers[.retryAfter] = String(retry) }
        if let ms = error.retryAfterMs { headers[.retryAfterMs] = String(ms) }
        if let allow = error.allow { headers[.allow] = allow }
        let status = UpstreamErrors.clientStatus(error.status, client: format)
        return Answer(status: status, headers: headers, body: Translator.errorBody(format, error, requestID: requestID))
    }
}

/// A complete answer, held as its parts: what both request paths build (the one in tasks wraps it in a
/// Hummingbird `Response`; the one on the event loop writes it as it is).
struct Answer {
    var status: Int
    var headers: HTTPFields
    var body: ByteBuffer

    var response: Response { Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: body)) }
}

extension GatewayError {
    /// Maps anything thrown on the request path to a client-facing error.
    init(_ error: any Error, method: HTTPRequest.Method, path: String) {
        switch error {
        case let e as GatewayError:
            self = e
        case is CancellationError:
            // The client left before the response head; nobody reads this answer, the log does.
            self = .init(status: 499, category: .invalidRequest, code: "client_closed", message: "the client closed the connection")
        case let e as HTTPError:
            switch e.status {
            case .notFound: self = .routeNotFound(method.rawValue, path)
            case .contentTooLarge: self = .bodyTooLarge(limit: 0)
            case .methodNotAllowed: self = .init(status: 405, category: .invalidRequest, code: "method_not_allowed", message: "\(method.rawValue) is not allowed on \(path)")
            default:
                let category: GatewayError.Category = e.status.code >= 500 ? .internal : .invalidRequest
                self = .init(status: Int(e.status.code), category: category, code: "http_\(e.status.code)", message: e.body ?? e.status.reasonPhrase)
            }
        default:
            self = .internalError()
        }
    }
}
