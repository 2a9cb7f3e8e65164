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

/// The gateway's HTTP application: Hummingbird's router and HTTP/1.1 connection handling, run by the
/// gateway's own server loop rather than Hummingbird's `Application` and `Server`.
///
/// - Per request: `Application.run` handed each request a copy of the logger with a fresh
///   `hb.request.id` (a request id generated and a metadata dictionary allocated per request) and ran
///   it inside `withLogger`, a task-local binding a stream's task then kept for as long as the stream
///   lasted. The gateway has its own request id (`request-id`, in the access log and the error
///   bodies) and logs through its own logger, so neither is done here.
/// - Per connection: the listeners are one socket per event loop (``LoopListeners``), so a connection
///   is accepted, set up and served on one thread.
///
/// What the application does otherwise is the same: the router answers, errors it does not turn into
/// a response become a 500, every response gets a `Date` header, and the background services run in
/// one service group with the server.
public struct GatewayApplication<Responder: HTTPResponder>: Service
where Responder.Context: InitializableFromSource<ApplicationRequestContextSource> {
    public let responder: Responder
    /// How each connection is served: timeouts, decoder limits, extra channel handlers.
    public let http1: HTTP1Channel.Configuration
    public let host: String
    public let port: Int
    public let backlog: Int
    public let services: [any Service]
    public let logger: Logger
    let running: @Sendable (any Channel) async -> Void

    public func run() async throws {
        let responder = self.responder
        let logger = self.logger
        let dates = HTTPDate()
        let connection = HTTP1Channel(responder: { (request, responseWriter: consuming ResponseWriter, channel) in
            let context = Responder.Context(source: .init(channel: channel, logger: logger))
            var response: Response
            do {
                response = try await responder.respond(to: request, context: context)
            } catch let error as HTTPParserError {
                throw error
            } catch {
                logger.debug("unhandled error", metadata: ["error.type": "\(error)"])
                response = Response(status: .internalServerError, body: .init())
            }
            response.headers[.date] = dates.current
            do {
                try await responseWriter.write(response: response.head, body: response.body)
            } catch is HTTPParserError {
                // The head is out: a parse error of the request's body must close the connection, not
                // make Hummingbird answer a second time with a 400.
                throw ResponseAlreadyStarted()
            }
        }, configuration: http1)
        let server = LoopListeners(
            childChannel: connection, host: host, port: port, backlog: backlog,
            loops: Array(MultiThreadedEventLoopGroup.singleton.makeIterator()), logger: logger, onServerRunning: running)
        try await ServiceGroup(configuration: .init(services: services + [server], logger: logger)).run()
    }

    struct ResponseAlreadyStarted: Error {}
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
