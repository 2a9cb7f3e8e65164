import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import SwitchyardCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The gateway's HTTP application: Hummingbird's router behind the gateway's own HTTP/1.1 connection
/// handling (``GatewayConnection``) and listeners (``LoopListeners``), rather than Hummingbird's
/// `Application`, `Server` and `HTTP1Channel`.
///
/// - Per request: `Application.run` handed each request a copy of the logger with a fresh
///   `hb.request.id` (a request id generated and a metadata dictionary allocated per request) and ran
///   it inside `withLogger`, a task-local binding a stream's task then kept for as long as the stream
///   lasted. The gateway has its own request id (`request-id`, in the access log and the error
///   bodies) and logs through its own logger, so neither is done here.
/// - Per connection: the listeners are one socket per event loop, so a connection is accepted, set up
///   and served on one thread, and a connection holds no task of its own (one runs per request).
///
/// What the application does otherwise is the same: the router answers, errors it does not turn into
/// a response become a 500, every response gets a `Date` header, and the background services run in
/// one service group with the server.
public struct GatewayApplication<Responder: HTTPResponder>: Service
where Responder.Context: InitializableFromSource<ApplicationRequestContextSource> {
    public let responder: Responder
    /// How each connection is served: timeouts, decoder limits, extra channel handlers.
    public let http1: HTTP1Channel.Configuration
    /// The largest request body collected; a larger one makes the route's body read throw `413`.
    public let maxBodyBytes: Int
    public let host: String
    public let port: Int
    public let backlog: Int
    public let services: [any Service]
    public let logger: Logger
    let running: @Sendable (any Channel) async -> Void
    /// Answers the requests it takes on the connection's event loop, before the router sees them.
    var direct: (any LoopResponder)? = nil

    public func run() async throws {
        let responder = self.responder
        let logger = self.logger
        let dates = HTTPDate()
        let serve: GatewayConnection.Serve = { request, channel, writer in
            let context = Responder.Context(source: .init(channel: channel, logger: logger))
            var response: Response
            do {
                response = try await responder.respond(to: request, context: context)
            } catch {
                logger.debug("unhandled error", metadata: ["error.type": "\(error)"])
                response = Response(status: .internalServerError, body: .init())
            }
            response.headers[.date] = dates.current
            if response.body.contentLength == nil {
                // A streamed body is written by a task of its own, which holds only the body's frames for as
                // long as the stream lasts; the request path's (deeper) frames end with this task.
                let handoff = ResponseHandoff(response)
                Task { await writer.send(handoff) }
            } else {
                await writer.send(response)
            }
        }
        let server = LoopListeners(
            host: host, port: port, backlog: backlog, loops: Array(MultiThreadedEventLoopGroup.singleton.makeIterator()),
            logger: logger, onServerRunning: running, initialize: Self.initializer(http1, maxBodyBytes: maxBodyBytes, logger: logger, direct: direct, serve: serve))
        try await ServiceGroup(configuration: .init(services: services + [server], logger: logger)).run()
    }

    /// Sets up a client connection: its HTTP/1.1 (``GatewayHTTPCodec``, with the decoder limits), the configured extra
    /// handlers, and the ``GatewayConnection`` serving it.
    static func initializer(
        _ http1: HTTP1Channel.Configuration, maxBodyBytes: Int, logger: Logger, direct: (any LoopResponder)? = nil,
        serve: @escaping GatewayConnection.Serve
    ) -> @Sendable (any Channel) -> EventLoopFuture<Void> {
        { channel in
            channel.eventLoop.makeCompletedFuture {
                let limits = HTTP1RequestParser.Limits(
                    maxHeadBytes: http1.httpDecoder.maxHeaderListSize, maxFieldBytes: http1.httpDecoder.maxHeaderFieldSize,
                    maxFieldCount: http1.httpDecoder.maxHeaderFieldCount)
                let pipeline = channel.pipeline.syncOperations
                let codec = GatewayHTTPCodec(limits: limits)
                try pipeline.addHandler(codec)
                try pipeline.addHandlers(http1.additionalChannelHandlers())
                try pipeline.addHandler(GatewayConnection(
                    maxBodyBytes: maxBodyBytes, idleTimeout: http1.idleTimeout, logger: logger, wire: codec, direct: direct, serve: serve))
            }
        }
    }
}

/// The `Date` header's value (`EpochClock.httpDate`), formatted once per second.
final class HTTPDate: Sendable {
    private let cache = Mutex<(second: Int, text: String)>((-1, ""))

    var current: String {
        let now = time(nil)
        return cache.withLock { c in
            if c.second != now { c = (now, EpochClock.httpDate(now)) }
            return c.text
        }
    }
}
