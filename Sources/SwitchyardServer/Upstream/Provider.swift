import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import SwitchyardCore
import SwitchyardMock

/// One request to a provider, already in the provider's wire format.
struct UpstreamRequest: Sendable {
    /// Path appended to the provider's base URL, e.g. `/chat/completions`.
    var path: String
    var body: ByteBuffer
    var stream: Bool
    var requestID: String
    /// Time allowed until the response head arrives.
    var firstByteTimeout: Duration
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
        /// A real HTTP upstream, through this provider's own connection pool.
        case http(HTTPClient, baseURL: String, headers: HTTPHeaders)
        /// The built-in fake provider, in-process.
        case mock(MockEngine)
    }

    let name: String
    let type: ProviderType
    let transport: Transport

    init(config: ProviderConfig, timeouts: TimeoutsConfig) {
        name = config.name
        type = config.type
        switch config.type {
        case .mock:
            transport = .mock(MockEngine(settings: .init()))
        case .openai:
            var c = HTTPClient.Configuration()
            c.redirectConfiguration = .disallow
            c.decompression = .disabled
            c.timeout = .init(connect: .milliseconds(timeouts.connect.milliseconds), read: .milliseconds(timeouts.idle.milliseconds))
            var pool = HTTPClient.Configuration.ConnectionPool(
                idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: config.maxConnections)
            // Fail fast on a refused connection (502) instead of retrying until the deadline.
            pool.retryConnectionEstablishment = false
            c.connectionPool = pool
            c.httpVersion = .automatic
            let client = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, configuration: c)
            var headers = HTTPHeaders()
            headers.add(name: "user-agent", value: "switchyard/\(SwitchyardVersion.current)")
            if let key = config.apiKey { headers.add(name: "authorization", value: "Bearer \(key)") }
            for (name, value) in config.headers.sorted(by: { $0.key < $1.key }) { headers.replaceOrAdd(name: name, value: value) }
            transport = .http(client, baseURL: config.baseURL, headers: headers)
        }
    }

    /// Sends a request; throws a client-facing ``GatewayError`` when no response head arrives.
    func send(_ request: UpstreamRequest, logger: Logger) async throws(GatewayError) -> UpstreamResponse {
        switch transport {
        case .mock(let engine):
            let plan = engine.chatCompletion(body: request.body)
            if plan.firstByteDelayMs > 0 {
                guard Duration.milliseconds(plan.firstByteDelayMs) < request.firstByteTimeout else {
                    try? await Task.sleep(for: request.firstByteTimeout)
                    throw UpstreamFailure.timeout(provider: name)
                }
                do { try await Task.sleep(for: .milliseconds(plan.firstByteDelayMs)) } catch { throw UpstreamFailure.cancelled }
            }
            var headers = HTTPHeaders()
            for (k, v) in plan.headers { headers.add(name: k, value: v) }
            switch plan.body {
            case .full(let buffer):
                return UpstreamResponse(status: plan.status, headers: headers, body: .buffer(buffer))
            case .events(let events, let delay, let dropAfter):
                return UpstreamResponse(status: plan.status, headers: headers, body: .mock(MockEventBody(events: events, delayMs: delay, dropAfter: dropAfter)))
            }

        case .http(let client, let baseURL, let baseHeaders):
            var r = HTTPClientRequest(url: baseURL + request.path)
            r.method = .POST
            r.headers = baseHeaders
            r.headers.add(name: "content-type", value: "application/json")
            r.headers.add(name: "accept", value: request.stream ? "text/event-stream" : "application/json")
            r.headers.add(name: "x-request-id", value: request.requestID)
            r.body = .bytes(request.body)
            do {
                let response = try await client.execute(r, deadline: .now() + .nanoseconds(Int64(request.firstByteTimeout.nanoseconds)), logger: logger)
                return UpstreamResponse(status: Int(response.status.code), headers: response.headers, body: .http(response.body))
            } catch {
                throw UpstreamFailure.classify(error, provider: name)
            }
        }
    }

    func shutdown() async {
        if case .http(let client, _, _) = transport {
            try? await client.shutdown()
        }
    }
}

/// Maps transport failures to client-facing errors.
enum UpstreamFailure {
    static func timeout(provider: String) -> GatewayError {
        GatewayError(status: 504, category: .timeout, code: "upstream_timeout", message: "the provider `\(provider)` did not answer in time")
    }

    static let cancelled = GatewayError(status: 499, category: .invalidRequest, code: "client_closed", message: "the client closed the request")

    static func classify(_ error: any Error, provider: String) -> GatewayError {
        if error is CancellationError { return cancelled }
        if let e = error as? HTTPClientError {
            switch e {
            case .deadlineExceeded, .readTimeout, .connectTimeout, .tlsHandshakeTimeout:
                return timeout(provider: provider)
            case .getConnectionFromPoolTimeout:
                return GatewayError(status: 503, category: .unavailable, code: "upstream_unavailable",
                                    message: "no connection to the provider `\(provider)` became available", retryAfterSeconds: 1)
            case .cancelled:
                return cancelled
            default:
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
        if let e = error as? HTTPClientError, e == .readTimeout {
            return GatewayError(status: 504, category: .timeout, code: "upstream_timeout",
                                message: "the provider `\(provider)` stopped sending in the middle of the stream")
        }
        return GatewayError(status: 502, category: .upstream, code: "upstream_stream_error",
                            message: "the connection to the provider `\(provider)` broke in the middle of the stream")
    }
}

/// The body of an upstream response, whichever transport produced it.
enum UpstreamBody: AsyncSequence, Sendable {
    case http(HTTPClientResponse.Body)
    case mock(MockEventBody)
    case buffer(ByteBuffer)

    typealias Element = ByteBuffer

    struct AsyncIterator: AsyncIteratorProtocol {
        enum Backing {
            case http(HTTPClientResponse.Body.AsyncIterator)
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
            if index > 0, body.delayMs > 0 { try await Task.sleep(for: .milliseconds(body.delayMs)) }
            defer { index += 1 }
            return body.events[index]
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(body: self) }
}
