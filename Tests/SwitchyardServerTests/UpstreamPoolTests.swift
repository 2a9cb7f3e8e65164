import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
@testable import SwitchyardServer
import Testing

/// The provider transport against a small SwiftNIO server that counts connections and can answer late,
/// close after each answer, or speak TLS.
@Suite("Upstream connection pool")
struct UpstreamPoolTests {
    /// A self-signed certificate for localhost and 127.0.0.1 (valid until 2126), and its key.
    static let certificate = """
    -----BEGIN CERTIFICATE-----
    MIIBmzCCAUGgAwIBAgIUMRSs2B03YsITx0Nc5tUmSvbzOk0wCgYIKoZIzj0EAwIw
    FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMjA2MjMxNloYDzIxMjYxMDI5
    MDYyMzE2WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
    PQMBBwNCAAQU9p9h/RiAzO31/pSOyz+OLzvPgdp/ZVqhNX49/dS9lbTboJzTMZlk
    yPr7uncMPtQUcVK0MZf3MgU9VWuDVl4so28wbTAdBgNVHQ4EFgQUznKqSb/Sh0Xp
    wyy6vgWZTgKzcAAwHwYDVR0jBBgwFoAUznKqSb/Sh0Xpwyy6vgWZTgKzcAAwDwYD
    VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI
    zj0EAwIDSAAwRQIgRAdyUYk80gQWN+s3E9EJClSWbcTQQzHEvwrO2xR+mw4CIQCU
    aEc6J7PjRnMPbSELpRAoUkiwwQEMUBWV60f5qrL6vw==
    -----END CERTIFICATE-----
    """
    static let key = """
    -----BEGIN PRIVATE KEY-----
    MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgsOTAb6BbYIJfdzer
    m4lVEKmRXaSGLotZu3sBisZa0JOhRANCAAQU9p9h/RiAzO31/pSOyz+OLzvPgdp/
    ZVqhNX49/dS9lbTboJzTMZlkyPr7uncMPtQUcVK0MZf3MgU9VWuDVl4s
    -----END PRIVATE KEY-----
    """

    final class Counter: Sendable {
        private let value = Atomic<Int>(0)
        func add() { value.add(1, ordering: .relaxed) }
        var count: Int { value.load(ordering: .relaxed) }
    }

    final class TestServer: Sendable {
        let channel: any Channel
        let accepted = Counter()
        let closed = Counter()
        var port: Int { channel.localAddress!.port! }

        /// Answers every request with 200 and `ok`, after `delayMs`; `close` adds `connection: close`;
        /// `dropIdleAfterMs` closes a kept-alive connection that long after an answer, unannounced (as
        /// providers do with idle connections); `endless` streams a chunk every 20 ms until the client goes;
        /// `stallFrom` answers that many requests, then sends later ones a head and one chunk, and nothing more;
        /// `silentFrom` answers that many requests, then sends later ones nothing at all.
        init(
            delayMs: Int64 = 0, close: Bool = false, dropIdleAfterMs: Int64? = nil, endless: Bool = false, tls: Bool = false,
            stallFrom: Int? = nil, silentFrom: Int? = nil
        ) async throws {
            let accepted = self.accepted
            let closed = self.closed
            let context = tls ? try NIOSSLContext(configuration: .makeServerConfiguration(
                certificateChain: [.certificate(try NIOSSLCertificate(bytes: Array(Self.certPEM.utf8), format: .pem))],
                privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(Self.keyPEM.utf8), format: .pem)))) : nil
            channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .childChannelInitializer { child in
                    accepted.add()
                    return child.eventLoop.makeCompletedFuture {
                        if let context { try child.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context)) }
                        try child.pipeline.syncOperations.configureHTTPServerPipeline()
                        try child.pipeline.syncOperations.addHandler(
                            Responder(delayMs: delayMs, close: close, dropIdleAfterMs: dropIdleAfterMs, endless: endless, closed: closed,
                                      stallFrom: stallFrom, silentFrom: silentFrom))
                    }
                }
                .bind(host: "127.0.0.1", port: 0).get()
        }

        static var certPEM: String { UpstreamPoolTests.certificate }
        static var keyPEM: String { UpstreamPoolTests.key }

        func stop() async { try? await channel.close() }
    }

    final class Responder: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let delayMs: Int64
        let close: Bool
        let dropIdleAfterMs: Int64?
        let endless: Bool
        let closed: Counter
        let stallFrom: Int?
        let silentFrom: Int?
        /// Requests answered on this connection so far.
        var served = 0
        init(delayMs: Int64, close: Bool, dropIdleAfterMs: Int64?, endless: Bool, closed: Counter, stallFrom: Int?, silentFrom: Int?) {
            self.stallFrom = stallFrom
            self.silentFrom = silentFrom
            self.delayMs = delayMs
            self.close = close
            self.dropIdleAfterMs = dropIdleAfterMs
            self.endless = endless
            self.closed = closed
        }

        func channelInactive(context: ChannelHandlerContext) {
            closed.add()
            context.fireChannelInactive()
        }

        /// Writes a chunk every 20 ms for as long as the connection is open.
        static func drip(_ context: NIOLoopBound<ChannelHandlerContext>) {
            guard context.value.channel.isActive else { return }
            context.value.writeAndFlush(NIOAny(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "data: x\n\n")))), promise: nil)
            context.value.eventLoop.scheduleTask(in: .milliseconds(20)) { drip(context) }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            served += 1
            if let silentFrom, served > silentFrom { return }
            if let stallFrom, served > stallFrom {
                let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders([("content-length", "100")]))
                context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
                context.writeAndFlush(NIOAny(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "o")))), promise: nil)
                return
            }
            if endless {
                let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders([("content-type", "text/event-stream"), ("transfer-encoding", "chunked")]))
                context.writeAndFlush(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
                Self.drip(bound)
                return
            }
            let close = self.close
            let dropIdle = self.dropIdleAfterMs
            context.eventLoop.scheduleTask(in: .milliseconds(delayMs)) {
                let context = bound.value
                var headers = HTTPHeaders([("content-length", "2"), ("content-type", "application/json")])
                if close { headers.add(name: "connection", value: "close") }
                context.write(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "ok")))), promise: nil)
                context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in
                    if close { context.close(promise: nil) }
                    if let dropIdle { context.eventLoop.scheduleTask(in: .milliseconds(dropIdle)) { bound.value.close(promise: nil) } }
                }
            }
        }
    }

    func pool(_ server: TestServer, tls: Bool = false, max: Int = 8, trust: Bool = true) throws -> UpstreamPool {
        var configuration = TLSConfiguration.makeClientConfiguration()
        if trust { configuration.trustRoots = .certificates([try NIOSSLCertificate(bytes: Array(Self.certificate.utf8), format: .pem)]) }
        return try UpstreamPool(
            endpoint: UpstreamEndpoint(tls: tls, host: tls ? "localhost" : "127.0.0.1", port: server.port),
            settings: .init(connectTimeout: .seconds(2), idleTimeout: .seconds(5), maxConnections: max),
            tlsConfiguration: configuration)
    }

    /// Polls `condition` every 10 ms for up to `seconds` (the caller checks the outcome).
    func waitUntil(seconds: Int, _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while !condition(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
    }

    func get(_ pool: UpstreamPool, deadline: TimeAmount = .seconds(5), preferring loop: (any EventLoop)? = nil) async throws -> String {
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/chat/completions",
                                   headers: HTTPHeaders([("host", "x"), ("content-length", "2")]))
        let response = try await pool.execute(head, body: ByteBuffer(string: "{}"), firstByteDeadline: .now() + deadline, preferring: loop)
        var out = ByteBuffer()
        for try await var chunk in response.body { out.writeBuffer(&chunk) }
        return String(buffer: out)
    }

    @Test func sequentialRequestsShareOneKeepAliveConnection() async throws {
        let server = try await TestServer()
        let pool = try pool(server)
        for _ in 0..<5 { #expect(try await get(pool) == "ok") }
        #expect(server.accepted.count == 1)
        await pool.shutdown()
        await server.stop()
    }

    /// Requests alternate between two event loops, as a client's connections do. A plaintext provider
    /// gets a connection per loop (no request crosses threads to reach its connection); a TLS provider,
    /// whose handshake costs more than the crossing, and a pool at its limit share one.
    @Test func eachEventLoopOpensItsOwnPlaintextConnectionWhileThereIsRoom() async throws {
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let (a, b) = (loops.next(), loops.next())
        #expect(a !== b)
        for (tls, max, connections) in [(false, 8, 2), (true, 8, 1), (false, 1, 1)] {
            let server = try await TestServer(tls: tls)
            let pool = try pool(server, tls: tls, max: max)
            for loop in [a, b, a, b, a] { #expect(try await get(pool, preferring: loop) == "ok") }
            #expect(server.accepted.count == connections, "tls: \(tls), max: \(max)")
            await pool.shutdown()
            await server.stop()
        }
        try await loops.shutdownGracefully()
    }

    /// The pool opens beside idle connections on other loops only while they are fewer than the loops:
    /// a client connection is budgeted one upstream descriptor, so at 10,000 streams a pool that kept
    /// opening its own would run the process out of descriptors.
    @Test func manyIdleConnectionsOnAnotherLoopAreBorrowedNotDoubled() async throws {
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let (a, b) = (loops.next(), loops.next())
        let server = try await TestServer(delayMs: 300)
        let pool = try pool(server)
        // Three at once on loop a: three connections, idle there afterwards.
        try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<3 { group.addTask { try await self.get(pool, preferring: a) } }
            for try await answer in group { #expect(answer == "ok") }
        }
        #expect(server.accepted.count == 3)
        for _ in 0..<2 { #expect(try await get(pool, preferring: b) == "ok") }
        #expect(server.accepted.count == 3)
        await pool.shutdown()
        await server.stop()
        try await loops.shutdownGracefully()
    }

    @Test func aProviderThatClosesAfterEachAnswerGetsAFreshConnection() async throws {
        let server = try await TestServer(close: true)
        let pool = try pool(server, max: 1)
        // One slot: each answer's close must give it back, or the second request would wait forever.
        for _ in 0..<3 { #expect(try await get(pool, deadline: .seconds(2)) == "ok") }
        #expect(server.accepted.count == 3)
        await pool.shutdown()
        await server.stop()
    }

    /// An answer with neither a length nor chunks is read up to the connection's end, so the connection
    /// ends with it: it must not go back to the pool, even for a moment, whatever the head said about
    /// keep-alive (a call taking it then would fail with `closed`). A framed answer hands it back.
    @Test func aBodyReadToTheConnectionsEndDoesNotHandTheConnectionBack() throws {
        for (answer, framed) in [
            ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n\r\n{}", false),
            ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", true),
        ] {
            let handler = UpstreamConnectionHandler()
            let channel = try UpstreamResponseDecoderTests.providerChannel(handler)
            var handedBack = 0
            handler.onRequestEnd = { handedBack += 1 }
            let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/chat/completions", headers: HTTPHeaders([("content-length", "2")]))
            let collected = handler.startCollecting(
                head, body: ByteBuffer(string: "{}"), firstByteDeadline: .now() + .seconds(5), idleTimeout: .seconds(5), limit: 1000)
            // Ends the loop round the request's flush opened (`DeferredFlush` keeps it per thread, and a
            // round left open would hold back flushes of other tests on this thread).
            channel.embeddedEventLoop.run()
            try channel.writeInbound(ByteBuffer(string: answer))
            if !framed { try channel.close().wait() }  // the provider ends the body by closing
            #expect(String(buffer: try collected.wait().body) == "{}")
            #expect(handedBack == (framed ? 1 : 0), "\(answer)")
            _ = try? channel.finish()
        }
    }

    @Test func aConnectionTheProviderDropsWhileIdleLeavesThePool() async throws {
        let server = try await TestServer(dropIdleAfterMs: 20)
        let pool = try pool(server, max: 1)
        #expect(try await get(pool) == "ok")
        // Wait for the provider's close (polled: on a loaded machine 20 ms can be much longer), then give
        // the pool a moment to read the FIN.
        try await waitUntil(seconds: 5) { server.closed.count > 0 }
        try await Task.sleep(for: .milliseconds(200))
        // The dropped connection must not be handed out again (a request written to it would fail).
        #expect(try await get(pool) == "ok")
        #expect(server.accepted.count == 2)
        await pool.shutdown()
        await server.stop()
    }

    @Test func aBodyConsumerThatLeavesClosesTheConnection() async throws {
        let server = try await TestServer(endless: true)
        let pool = try pool(server)
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/chat/completions",
                                   headers: HTTPHeaders([("host", "x"), ("content-length", "2")]))
        do {
            let response = try await pool.execute(head, body: ByteBuffer(string: "{}"), firstByteDeadline: .now() + .seconds(5))
            var iterator = response.body.makeAsyncIterator()
            let first = try await iterator.next()
            #expect(first.map { String(buffer: $0) }?.contains("data: x") == true)
        }
        // The iterator is gone: the provider's connection closes, so it stops generating.
        try await waitUntil(seconds: 2) { server.closed.count > 0 }
        #expect(server.closed.count == 1)
        await pool.shutdown()
        await server.stop()
    }

    @Test func noResponseHeadBeforeTheDeadlineIsAFirstByteTimeout() async throws {
        let server = try await TestServer(delayMs: 1000)
        let pool = try pool(server)
        await #expect(throws: UpstreamTransportError.firstByteTimeout) { try await get(pool, deadline: .milliseconds(100)) }
        await pool.shutdown()
        await server.stop()
    }

    @Test(.timeLimit(.minutes(1))) func aResponseThatStallsLongerThanTheIdleTimeoutIsAReadTimeout() async throws {
        // Two quick answers first, so the stalled one runs on a connection whose deadline timer was
        // set by earlier exchanges.
        let server = try await TestServer(stallFrom: 2)
        let pool = try UpstreamPool(
            endpoint: UpstreamEndpoint(tls: false, host: "127.0.0.1", port: server.port),
            settings: .init(connectTimeout: .seconds(2), idleTimeout: .milliseconds(200), maxConnections: 1))
        let loop = MultiThreadedEventLoopGroup.singleton.any()
        for _ in 0..<2 { #expect(try await get(pool, deadline: .seconds(30), preferring: loop) == "ok") }
        let start = ContinuousClock.now
        await #expect(throws: UpstreamTransportError.readTimeout) { try await get(pool, deadline: .seconds(30), preferring: loop) }
        let waited = ContinuousClock.now - start
        #expect(waited >= .milliseconds(150) && waited < .seconds(5), "\(waited)")
        #expect(server.accepted.count == 1)
        await pool.shutdown()
        await server.stop()
    }

    @Test(.timeLimit(.minutes(1))) func aShortFirstByteDeadlineAfterLongOnesOnTheSameConnectionStillHolds() async throws {
        // Earlier exchanges had 30 s deadlines; the silent one's 150 ms must not wait for their timer.
        let server = try await TestServer(silentFrom: 3)
        let pool = try self.pool(server, max: 1)
        let loop = MultiThreadedEventLoopGroup.singleton.any()
        for _ in 0..<3 { #expect(try await get(pool, deadline: .seconds(30), preferring: loop) == "ok") }
        let start = ContinuousClock.now
        await #expect(throws: UpstreamTransportError.firstByteTimeout) { try await get(pool, deadline: .milliseconds(150), preferring: loop) }
        #expect(ContinuousClock.now - start < .seconds(2))
        #expect(server.accepted.count == 1)
        await pool.shutdown()
        await server.stop()
    }

    @Test func requestsBeyondMaxConnectionsWaitUntilTheirDeadline() async throws {
        let server = try await TestServer(delayMs: 3000)
        let pool = try pool(server, max: 1)
        async let first = get(pool)
        // The first request holds the only slot once it has connected (the pool takes the slot first).
        try await waitUntil(seconds: 10) { server.accepted.count > 0 }
        // The only connection is busy for ~3 s: a request that may wait 100 ms gives up...
        await #expect(throws: UpstreamTransportError.poolTimeout) { try await get(pool, deadline: .milliseconds(100)) }
        // ...one that may wait longer gets the connection when the first answer is done.
        #expect(try await get(pool, deadline: .seconds(15)) == "ok")
        #expect(try await first == "ok")
        #expect(server.accepted.count == 1)
        await pool.shutdown()
        await server.stop()
    }

    @Test func tlsProvidersAreVerifiedAgainstTheTrustRoots() async throws {
        let server = try await TestServer(tls: true)
        let trusting = try pool(server, tls: true)
        #expect(try await get(trusting) == "ok")
        #expect(try await get(trusting) == "ok")
        #expect(server.accepted.count == 1)
        // The system's roots do not know this self-signed certificate: no answer is accepted.
        let strict = try pool(server, tls: true, trust: false)
        await #expect(throws: (any Error).self) { try await get(strict) }
        await trusting.shutdown()
        await strict.shutdown()
        await server.stop()
    }

    @Test func theHostHeaderNamesThePortOnlyWhenItIsNotTheDefault() {
        #expect(UpstreamEndpoint(tls: true, host: "api.openai.com", port: 443).hostHeader == "api.openai.com")
        #expect(UpstreamEndpoint(tls: false, host: "127.0.0.1", port: 8080).hostHeader == "127.0.0.1:8080")
        #expect(UpstreamEndpoint(tls: false, host: "::1", port: 9000).hostHeader == "[::1]:9000")
    }
}
