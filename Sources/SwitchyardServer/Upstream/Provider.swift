import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardMock
import Synchronization

/// One request to a provider, already in the provider's wire format.
struct UpstreamRequest: Sendable {
    enum Operation: Sendable { case generate, countTokens, compact }
    var operation: Operation = .generate
    /// The upstream model id (Gemini puts it in the URL).
    var model: String
    var body: ByteBuffer
    var stream: Bool
    var requestID: String
    /// Time allowed until the response head arrives.
    var firstByteTimeout: Duration
    /// Headers forwarded from the client (`anthropic-version`, `anthropic-beta`).
    var headers: [(String, String)] = []
    /// Connecting and idle-gap timeouts (a client pool exists per distinct pair).
    var timeouts: TimeoutsConfig = .init()
    /// A deployment's own key, sent instead of the provider's.
    var apiKey: String?
}

/// A provider's answer: status, headers, and a body that may still be streaming.
struct UpstreamResponse: Sendable {
    var status: Int
    var headers: HTTPHeaders
    var body: UpstreamBody

    var contentType: String? { headers.first(name: "content-type") }
    var isEventStream: Bool { contentType?.lowercased().hasPrefix("text/event-stream") ?? false }
}

/// A configured provider and the transport that reaches it.
final class Provider: Sendable {
    enum Transport: Sendable {
        /// A real HTTP upstream, through this provider's own connection pools (one per timeout pair).
        /// `endpoint` is nil only for a base URL the configuration would have rejected.
        case http(endpoint: UpstreamEndpoint?, basePath: String, headers: HTTPHeaders)
        /// The built-in fake provider, in-process.
        case mock(MockEngine)
    }

    struct PoolKey: Hashable {
        var connectMs: Int64
        var idleMs: Int64
    }

    let name: String
    let type: ProviderType
    let transport: Transport
    let maxTokensField: OpenAIChat.MaxTokensField
    let maxConnections: Int
    private let pools = Mutex<[PoolKey: UpstreamPool]>([:])
    /// The provider's own requests per minute, across its deployments.
    private let minute: Mutex<RequestWindow?>

    /// The wire format this provider speaks.
    var format: WireFormat { type.wireFormat }

    init(config: ProviderConfig) {
        name = config.name
        type = config.type
        maxTokensField = config.maxTokensField
        maxConnections = config.maxConnections
        minute = Mutex(config.requestsPerMinute.map { RequestWindow(limit: $0) })
        switch config.type {
        case .mock:
            transport = .mock(MockEngine(settings: .init()))
        case .openai, .anthropic, .gemini, .openaiResponses:
            var headers = HTTPHeaders()
            headers.add(name: "user-agent", value: "switchyard/\(SwitchyardVersion.current)")
            if let key = config.apiKey {
                switch config.type {
                case .anthropic: headers.add(name: "x-api-key", value: key)
                case .gemini: headers.add(name: "x-goog-api-key", value: key)
                default: headers.add(name: "authorization", value: "Bearer \(key)")
                }
            }
            for (name, value) in config.headers.sorted(by: { $0.key < $1.key }) { headers.replaceOrAdd(name: name, value: value) }
            // Parsed once here (the configuration already validated it), not per request.
            let url = UpstreamURL(config.baseURL)
            transport = .http(endpoint: url.map(UpstreamEndpoint.init), basePath: url?.path ?? "", headers: headers)
        }
    }

    /// Counts a request against the provider's requests per minute; false when there is no room.
    func admit(_ now: Int64) -> Bool {
        minute.withLock { w in
            guard w != nil else { return true }
            guard w!.check(now: now).allowed else { return false }
            w!.record(now: now)
            return true
        }
    }

    /// When the provider's requests-per-minute window has room again (epoch ms).
    func availableAt(_ now: Int64) -> Int64 {
        minute.withLock { w in
            guard w != nil else { return now }
            let c = w!.check(now: now)
            return c.allowed ? now : c.resetAtMs
        }
    }

    /// The connection pool for a timeout pair (created on first use): models with their own connect
    /// and idle timeouts get pools of their own.
    func pool(_ endpoint: UpstreamEndpoint, _ timeouts: TimeoutsConfig) throws(GatewayError) -> UpstreamPool {
        let key = PoolKey(connectMs: timeouts.connect.milliseconds, idleMs: timeouts.idle.milliseconds)
        let settings = UpstreamPool.Settings(
            connectTimeout: .milliseconds(key.connectMs), idleTimeout: .milliseconds(key.idleMs), maxConnections: maxConnections)
        let made = pools.withLock { pools -> Result<UpstreamPool, any Error> in
            if let p = pools[key] { return .success(p) }
            return Result { try UpstreamPool(endpoint: endpoint, settings: settings) }.map { p in
                pools[key] = p
                return p
            }
        }
        switch made {
        case .success(let p): return p
        case .failure(let error):
            throw GatewayError(status: 502, category: .upstream, code: "upstream_unreachable",
                               message: "cannot reach the provider `\(name)`: \(UpstreamFailure.describe(error))")
        }
    }

    /// Sends a request; throws a client-facing ``GatewayError`` when no response head arrives.
    func send(_ request: UpstreamRequest, logger: Logger) async throws(GatewayError) -> UpstreamResponse {
        // One function per transport: the caller's task carries the frame of whichever runs while it
        // waits for the provider, so each frame holds only its own transport's values.
        switch transport {
        case .mock(let engine): return try await sendToMock(engine, request)
        case .http(let endpoint, let basePath, let baseHeaders): return try await sendOverHTTP(endpoint, basePath, baseHeaders, request)
        }
    }

    @inline(never)
    private func sendToMock(_ engine: MockEngine, _ request: UpstreamRequest) async throws(GatewayError) -> UpstreamResponse {
        guard request.operation == .generate else {
            throw GatewayError(status: 400, category: .invalidRequest, code: "unsupported_operation", message: "the mock provider cannot count tokens")
        }
        let plan = engine.chatCompletion(body: request.body)
        if plan.firstByteDelayMs > 0 {
            guard Duration.milliseconds(plan.firstByteDelayMs) < request.firstByteTimeout else {
                try? await LoopTimer.sleep(for: request.firstByteTimeout)
                throw UpstreamFailure.timeout(provider: name)
            }
            do { try await LoopTimer.sleep(for: .milliseconds(plan.firstByteDelayMs)) } catch { throw UpstreamFailure.cancelled }
        }
        var headers = HTTPHeaders()
        for (k, v) in plan.headers { headers.add(name: k, value: v) }
        switch plan.body {
        case .full(let buffer):
            return UpstreamResponse(status: plan.status, headers: headers, body: .buffer(buffer))
        case .events(let events, let delay, let dropAfter):
            return UpstreamResponse(status: plan.status, headers: headers, body: .mock(MockEventBody(events: events, delayMs: delay, dropAfter: dropAfter)))
        }
    }

    @inline(never)
    private func sendOverHTTP(
        _ endpoint: UpstreamEndpoint?, _ basePath: String, _ baseHeaders: HTTPHeaders, _ request: UpstreamRequest
    ) async throws(GatewayError) -> UpstreamResponse {
        let (pool, head) = try httpRequest(endpoint, basePath, baseHeaders, request)
        do {
            let response = try await pool.execute(
                head, body: request.body, firstByteDeadline: .now() + .nanoseconds(Int64(request.firstByteTimeout.nanoseconds)))
            return UpstreamResponse(status: Int(response.head.status.code), headers: response.head.headers, body: .http(response.body))
        } catch {
            throw UpstreamFailure.classify(error, provider: name)
        }
    }

    /// The pool and request head for `request` to an HTTP provider; nil for the built-in mock.
    func httpRequest(_ request: UpstreamRequest) throws(GatewayError) -> (UpstreamPool, HTTPRequestHead)? {
        guard case .http(let endpoint, let basePath, let baseHeaders) = transport else { return nil }
        return try httpRequest(endpoint, basePath, baseHeaders, request)
    }

    private func httpRequest(
        _ endpoint: UpstreamEndpoint?, _ basePath: String, _ baseHeaders: HTTPHeaders, _ request: UpstreamRequest
    ) throws(GatewayError) -> (UpstreamPool, HTTPRequestHead) {
        let target = try target(basePath, request)
        guard let endpoint else {
            throw GatewayError(status: 502, category: .upstream, code: "upstream_unreachable",
                               message: "the provider `\(name)` has an unusable base URL")
        }
        let pool = try self.pool(endpoint, request.timeouts)
        var headers = HTTPHeaders([("host", endpoint.hostHeader)])
        headers.add(contentsOf: baseHeaders)
        if let key = request.apiKey {
            switch type {
            case .anthropic: Self.set(&headers, "x-api-key", key)
            case .gemini: Self.set(&headers, "x-goog-api-key", key)
            default: Self.set(&headers, "authorization", "Bearer \(key)")
            }
        }
        headers.add(name: "content-type", value: "application/json")
        headers.add(name: "accept", value: request.stream ? "text/event-stream" : "application/json")
        headers.add(name: "x-request-id", value: request.requestID)
        for (k, v) in request.headers { Self.set(&headers, k, v) }
        if type == .anthropic, !headers.contains(name: "anthropic-version") {
            headers.add(name: "anthropic-version", value: AnthropicMessages.defaultVersion)
        }
        Self.set(&headers, "content-length", String(request.body.readableBytes))
        return (pool, HTTPRequestHead(version: .http1_1, method: .POST, uri: target, headers: headers))
    }

    /// `replaceOrAdd` without its removal pass when the name is absent: the pass rebuilt the header
    /// array (an allocation each time, several per upstream request).
    private static func set(_ headers: inout HTTPHeaders, _ name: String, _ value: String) {
        if headers.contains(name: name) {
            headers.replaceOrAdd(name: name, value: value)
        } else {
            headers.add(name: name, value: value)
        }
    }

    /// Whether the provider is reached over HTTP (not the built-in mock).
    var isHTTP: Bool {
        if case .http = transport { return true }
        return false
    }

    /// The request target (path and query) under the base URL's path `base`, as each provider's API lays it out.
    func target(_ base: String, _ r: UpstreamRequest) throws(GatewayError) -> String {
        switch (type, r.operation) {
        case (.anthropic, .generate): return base + "/v1/messages"
        case (.anthropic, .countTokens): return base + "/v1/messages/count_tokens"
        case (.gemini, _):
            let versioned = ["/v1", "/v1beta", "/v1alpha"].contains(where: { base.hasSuffix($0) }) ? base : base + "/v1beta"
            let model = r.model.hasPrefix("models/") ? String(r.model.dropFirst("models/".count)) : r.model
            let escaped = model.addingPercentEncodingForPath()
            switch r.operation {
            case .countTokens: return "\(versioned)/models/\(escaped):countTokens"
            case .generate: return r.stream ? "\(versioned)/models/\(escaped):streamGenerateContent?alt=sse" : "\(versioned)/models/\(escaped):generateContent"
            case .compact: throw GatewayError(status: 400, category: .invalidRequest, code: "unsupported_operation",
                                              message: "`/responses/compact` needs a model served through the OpenAI Responses API; the provider `\(name)` is not")
            }
        case (.openaiResponses, .generate): return base + "/responses"
        case (.openaiResponses, .compact): return base + "/responses/compact"
        case (_, .compact):
            throw GatewayError(status: 400, category: .invalidRequest, code: "unsupported_operation",
                               message: "`/responses/compact` needs a model served through the OpenAI Responses API; the provider `\(name)` is not")
        case (_, .countTokens):
            throw GatewayError(status: 400, category: .invalidRequest, code: "unsupported_operation", message: "the provider `\(name)` cannot count tokens")
        default: return base + "/chat/completions"
        }
    }

    func shutdown() async {
        let all = pools.withLock { p -> [UpstreamPool] in
            defer { p.removeAll() }
            return Array(p.values)
        }
        for pool in all { await pool.shutdown() }
    }
}

/// Maps transport failures to client-facing errors.
enum UpstreamFailure {
    static func timeout(provider: String) -> GatewayError {
        GatewayError(status: 504, category: .timeout, code: "upstream_timeout", message: "the provider `\(provider)` did not answer in time")
    }

    static let cancelled = GatewayError(status: 499, category: .invalidRequest, code: "client_closed", message: "the client closed the request")

    /// A whole answer that is not a JSON object.
    static func notJSONObject(provider: String) -> GatewayError {
        GatewayError(status: 502, category: .upstream, code: "upstream_invalid_response",
                     message: "the provider `\(provider)` returned a body that is not a JSON object")
    }

    /// A whole answer past `limits.max_response_size`.
    static func tooLarge(limit: Int) -> GatewayError {
        GatewayError(status: 502, category: .upstream, code: "upstream_response_too_large", message: "the provider's response exceeds \(limit) bytes")
    }

    /// A stream event past the scanner's bound.
    static func eventTooLarge(provider: String) -> GatewayError {
        GatewayError(status: 502, category: .upstream, code: "upstream_invalid_response",
                     message: "the provider `\(provider)` sent an event larger than the gateway accepts")
    }

    static func classify(_ error: any Error, provider: String) -> GatewayError {
        if error is CancellationError { return cancelled }
        if let e = error as? GatewayError { return e }
        if let e = error as? UpstreamTransportError {
            switch e {
            case .firstByteTimeout, .readTimeout, .connectTimeout:
                return timeout(provider: provider)
            case .poolTimeout:
                return GatewayError(status: 503, category: .unavailable, code: "upstream_unavailable",
                                    message: "no connection to the provider `\(provider)` became available", retryAfterSeconds: 1)
            case .connectFailed, .closed, .invalidURL:
                break
            }
        }
        return GatewayError(status: 502, category: .upstream, code: "upstream_unreachable",
                            message: "cannot reach the provider `\(provider)`: \(Self.describe(error))")
    }

    /// A short description of a transport error (never includes request headers, so no secrets).
    static func describe(_ error: any Error) -> String {
        let text = String(describing: error)
        return text.count > 200 ? String(text.prefix(200)) + "…" : text
    }

    /// The error event for a stream that broke after its first byte.
    static func streamBroken(_ error: any Error, provider: String) -> GatewayError {
        if let e = error as? UpstreamTransportError, e == .readTimeout {
            return GatewayError(status: 504, category: .timeout, code: "upstream_timeout",
                                message: "the provider `\(provider)` stopped sending in the middle of the stream")
        }
        return GatewayError(status: 502, category: .upstream, code: "upstream_stream_error",
                            message: "the connection to the provider `\(provider)` broke in the middle of the stream")
    }
}

/// The body of an upstream response, whichever transport produced it.
enum UpstreamBody: AsyncSequence, Sendable {
    case http(UpstreamHTTPBody)
    case mock(MockEventBody)
    case buffer(ByteBuffer)

    typealias Element = ByteBuffer

    struct AsyncIterator: AsyncIteratorProtocol {
        enum Backing {
            case http(UpstreamHTTPBody.AsyncIterator)
            case mock(MockEventBody.AsyncIterator)
            case buffer(ByteBuffer?)
        }

        var backing: Backing

        mutating func next() async throws -> ByteBuffer? {
            switch backing {
            case .http(var it):
                let v = try await it.next()
                backing = .http(it)
                return v
            case .mock(var it):
                let v = try await it.next()
                backing = .mock(it)
                return v
            case .buffer(let b):
                backing = .buffer(nil)
                return b
            }
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        switch self {
        case .http(let body): return AsyncIterator(backing: .http(body.makeAsyncIterator()))
        case .mock(let body): return AsyncIterator(backing: .mock(body.makeAsyncIterator()))
        case .buffer(let b): return AsyncIterator(backing: .buffer(b))
        }
    }

    /// Collects the whole body, failing past `limit` bytes.
    func collect(upTo limit: Int) async throws -> ByteBuffer {
        if case .buffer(let b) = self { return b }
        var out = ByteBuffer()
        for try await chunk in self {
            guard out.readableBytes + chunk.readableBytes <= limit else { throw BodyTooLarge() }
            var chunk = chunk
            out.writeBuffer(&chunk)
        }
        return out
    }

    struct BodyTooLarge: Error {}
}

/// The in-process mock's stream: events `delayMs` apart, failing after `dropAfter` events if set.
struct MockEventBody: AsyncSequence, Sendable {
    let events: MockEventScript
    let delayMs: Int
    let dropAfter: Int?

    struct Dropped: Error {}

    struct AsyncIterator: AsyncIteratorProtocol {
        let body: MockEventBody
        var index = 0

        mutating func next() async throws -> ByteBuffer? {
            guard index < body.events.count else { return nil }
            if let drop = body.dropAfter, index >= drop { throw Dropped() }
            if index > 0, body.delayMs > 0 { try await LoopTimer.sleep(for: .milliseconds(body.delayMs)) }
            defer { index += 1 }
            return body.events[index]
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(body: self) }
}

extension String {
    /// Percent-encodes everything but unreserved characters, for one URL path segment.
    func addingPercentEncodingForPath() -> String {
        var out = ""
        for b in utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(Character(UnicodeScalar(b)))
            default:
                out += "%" + String(b, radix: 16, uppercase: true).leftPadded(2)
            }
        }
        return out
    }

    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}
