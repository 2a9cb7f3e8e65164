import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import SwitchyardCore
import SwitchyardHTTP

/// Why a provider call failed below HTTP.
enum UpstreamTransportError: Error, Equatable, CustomStringConvertible {
    case connectTimeout
    case connectFailed(String)
    /// No response head before the first-byte deadline.
    case firstByteTimeout
    /// The response stopped for longer than the idle timeout.
    case readTimeout
    /// No connection became free before the deadline (the provider's `max_connections` are all busy).
    case poolTimeout
    /// The connection closed before the response ended.
    case closed
    case invalidURL(String)

    var description: String {
        switch self {
        case .connectTimeout: return "connect timed out"
        case .connectFailed(let why): return "connect failed: \(why)"
        case .firstByteTimeout: return "no response before the deadline"
        case .readTimeout: return "the response stalled"
        case .poolTimeout: return "no free connection before the deadline"
        case .closed: return "the connection closed before the response ended"
        case .invalidURL(let url): return "invalid URL \(url)"
        }
    }
}

/// Where a provider lives: scheme, host and port of its base URL (``UpstreamURL``, parsed once).
struct UpstreamEndpoint: Hashable, Sendable {
    var tls: Bool
    var host: String
    var port: Int

    static func defaultPort(tls: Bool) -> Int { tls ? 443 : 80 }

    /// The `Host` header: the port only when it is not the scheme's default.
    var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port == Self.defaultPort(tls: tls) ? h : "\(h):\(port)"
    }
}

extension UpstreamEndpoint {
    /// The endpoint of a base URL: its scheme's default port unless it names one.
    init(_ url: UpstreamURL) {
        let tls = url.scheme == "https"
        self.init(tls: tls, host: url.host, port: url.port ?? Self.defaultPort(tls: tls))
    }
}

/// Takes a provider's response part by part as it arrives, on the upstream connection's event loop
/// (``UpstreamConnectionHandler/startStreaming(_:body:firstByteDeadline:idleTimeout:sink:)``).
protocol UpstreamSink: AnyObject {
    func upstreamHead(_ head: HTTPResponseHead)
    func upstreamBody(_ buffer: ByteBuffer)
    func upstreamEnd()
    /// The exchange failed (no answer in time, a stall, the connection closed); the connection is closed.
    func upstreamFailed(_ error: any Error)
}

/// A provider's whole response, read by the connection (``UpstreamConnectionHandler/startCollecting``).
struct CollectedUpstreamResponse {
    var head: HTTPResponseHead
    var body: ByteBuffer
}

/// A provider's response head and its body, still arriving.
struct UpstreamHTTPResponse: Sendable {
    var head: HTTPResponseHead
    var body: UpstreamHTTPBody
}

/// The body of a response from an ``UpstreamPool`` connection, read as the consumer asks for it
/// (the connection stops reading from the socket while a few chunks wait unconsumed). Dropping the
/// iterator before the end closes the connection: the provider stops generating.
struct UpstreamHTTPBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    typealias Producer = NIOThrowingAsyncSequenceProducer<
        ByteBuffer, any Error, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark, UpstreamBodyDelegate
    >
    let producer: Producer

    struct AsyncIterator: AsyncIteratorProtocol {
        var inner: Producer.AsyncIterator
        mutating func next() async throws -> ByteBuffer? { try await inner.next() }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(inner: producer.makeAsyncIterator()) }
}

/// Connects a body's consumer back to its connection: more demand means read the socket again; a
/// consumer that goes away before the end closes the connection.
struct UpstreamBodyDelegate: NIOAsyncSequenceProducerDelegate {
    let handler: NIOLoopBound<UpstreamConnectionHandler>
    let exchange: Int

    func produceMore() {
        let handler = self.handler
        let exchange = self.exchange
        handler.eventLoop.execute { handler.value.demand(exchange) }
    }

    func didTerminate() {
        let handler = self.handler
        let exchange = self.exchange
        handler.eventLoop.execute { handler.value.consumerLeft(exchange) }
    }
}

/// One HTTP/1.1 keep-alive connection to a provider, one request at a time. Lives on its channel's
/// event loop: every method runs there.
final class UpstreamConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private struct Exchange {
        let id: Int
        var head: EventLoopPromise<UpstreamHTTPResponse>?
        var source: UpstreamHTTPBody.Producer.Source?
        var wantsMore = true
        var keepAlive = true
        /// What the watchdog holds the exchange to.
        var deadline: Deadline
        let idleTimeout: TimeAmount
        /// Set when the whole response is read here rather than handed on as an async sequence.
        var collect: Collect?
        /// Set when the response's parts go to a sink as they arrive.
        var sink: (any UpstreamSink)?
    }

    private struct Collect {
        let limit: Int
        let promise: EventLoopPromise<CollectedUpstreamResponse>
        var head: HTTPResponseHead?
        var body = ByteBuffer()
    }

    /// Until the response head, its first-byte deadline; from the head on, the last read, which a
    /// stall of `idleTimeout` must not outlast.
    private enum Deadline {
        case firstByte(NIODeadline)
        case idleSince(NIODeadline)
    }

    private var context: ChannelHandlerContext?
    private var exchange: Exchange?
    /// One timer for the connection's deadlines, across exchanges: when it fires it checks the
    /// exchange in progress and sets itself again for what is due next (see ``watch(until:)``).
    /// Scheduling and cancelling two timers per request cost a heap insert and a linear-search
    /// removal each, on every request.
    private var watchdog: Scheduled<Void>?
    private var watchdogDue: NIODeadline?
    private var nextID = 0
    /// Told when a request ended and the connection can take another one.
    var onRequestEnd: (() -> Void)?
    /// Told when the connection closes (at any time).
    var onClose: (() -> Void)?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        stopWatching()
    }

    /// Sends a request (head, body, end, one flush) and answers with the response head, or fails.
    func start(_ head: HTTPRequestHead, body: ByteBuffer, firstByteDeadline: NIODeadline, idleTimeout: TimeAmount) -> EventLoopFuture<UpstreamHTTPResponse> {
        guard let context, context.channel.isActive, exchange == nil else {
            return (context?.eventLoop ?? MultiThreadedEventLoopGroup.singleton.any()).makeFailedFuture(UpstreamTransportError.closed)
        }
        let promise = context.eventLoop.makePromise(of: UpstreamHTTPResponse.self)
        begin(head, body: body, firstByteDeadline: firstByteDeadline, idleTimeout: idleTimeout, context: context) { $0.head = promise }
        return promise.futureResult
    }

    /// Starts an exchange: `configure` says how its answer is taken; the request goes out with one
    /// flush and the first-byte deadline runs. Returns the exchange's id.
    @discardableResult
    private func begin(
        _ head: HTTPRequestHead, body: ByteBuffer, firstByteDeadline: NIODeadline, idleTimeout: TimeAmount, context: ChannelHandlerContext,
        configure: (inout Exchange) -> Void
    ) -> Int {
        nextID &+= 1
        let id = nextID
        var x = Exchange(id: id, head: nil, deadline: .firstByte(firstByteDeadline), idleTimeout: idleTimeout)
        configure(&x)
        exchange = x
        // Due no later than the first-byte deadline, nor than one idle timeout from now: the head can
        // only come later, so its stall deadline is later still and the watchdog is never late.
        watch(until: min(firstByteDeadline, .now() + idleTimeout))
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if body.readableBytes > 0 { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        context.write(wrapOutboundOut(.end(nil)), promise: nil)
        DeferredFlush.flush(context)
        context.read()
        return id
    }

    /// The response head arrived: the first-byte deadline is met, the stall deadline runs from now.
    private func headArrived(_ head: HTTPResponseHead, _ x: inout Exchange) {
        x.deadline = .idleSince(.now())
        x.keepAlive = UpstreamResponseDecoder.isKeepAlive(head)
    }

    /// The exchange is over: a reusable connection goes back to the pool, any other closes. A body read
    /// up to the connection's end (no length, not chunked) ends with the connection: whatever its head
    /// said about keep-alive, the connection is not handed back (a call taking it would fail).
    private func ended(_ x: Exchange, reusable: Bool, context: ChannelHandlerContext) {
        exchange = nil
        if reusable, context.channel.isActive {
            // Keep a read pending while idle, so a provider closing the connection is noticed
            // (and the connection leaves the pool) before a request is written to it.
            context.read()
            // Back in the pool before the consumer hears the end, so its next request finds it.
            onRequestEnd?()
        } else {
            context.close(promise: nil)
        }
    }

    /// Sends a request like ``start(_:body:firstByteDeadline:idleTimeout:)`` and reads the whole
    /// response (up to `limit` body bytes; beyond it the exchange fails with
    /// `UpstreamBody.BodyTooLarge` and the connection closes), for a caller that does not relay it as
    /// it arrives.
    func startCollecting(
        _ head: HTTPRequestHead, body: ByteBuffer, firstByteDeadline: NIODeadline, idleTimeout: TimeAmount, limit: Int
    ) -> EventLoopFuture<CollectedUpstreamResponse> {
        guard let context, context.channel.isActive, exchange == nil else {
            return (context?.eventLoop ?? MultiThreadedEventLoopGroup.singleton.any()).makeFailedFuture(UpstreamTransportError.closed)
        }
        let promise = context.eventLoop.makePromise(of: CollectedUpstreamResponse.self)
        begin(head, body: body, firstByteDeadline: firstByteDeadline, idleTimeout: idleTimeout, context: context) {
            $0.collect = Collect(limit: limit, promise: promise)
        }
        return promise.futureResult
    }

    /// Sends a request like ``start(_:body:firstByteDeadline:idleTimeout:)`` and hands the response's
    /// parts to `sink` as they arrive; the sink slows the reading with ``pause(_:)`` and ``demand(_:)``.
    /// Returns the exchange's id, or nil (having told the sink nothing) when the connection is unusable.
    func startStreaming(
        _ head: HTTPRequestHead, body: ByteBuffer, firstByteDeadline: NIODeadline, idleTimeout: TimeAmount, sink: any UpstreamSink
    ) -> Int? {
        guard let context, context.channel.isActive, exchange == nil else { return nil }
        return begin(head, body: body, firstByteDeadline: firstByteDeadline, idleTimeout: idleTimeout, context: context) { $0.sink = sink }
    }

    /// The sink cannot take more for now: stop reading the socket until ``demand(_:)``.
    func pause(_ id: Int) {
        if exchange?.id == id { exchange?.wantsMore = false }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard var x = exchange else {
            // Nothing was asked: a provider talking out of turn leaves the connection unusable.
            context.close(promise: nil)
            return
        }
        if x.collect != nil {
            collect(unwrapInboundIn(data), &x, context: context)
            return
        }
        if let sink = x.sink {
            relay(unwrapInboundIn(data), &x, to: sink, context: context)
            return
        }
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard let promise = x.head else { return }
            headArrived(head, &x)
            x.head = nil
            let produced = UpstreamHTTPBody.Producer.makeSequence(
                elementType: ByteBuffer.self, failureType: (any Error).self,
                backPressureStrategy: .init(lowWatermark: 2, highWatermark: 8), finishOnDeinit: false,
                delegate: UpstreamBodyDelegate(handler: NIOLoopBound(self, eventLoop: context.eventLoop), exchange: x.id))
            x.source = produced.source
            exchange = x
            promise.succeed(UpstreamHTTPResponse(head: head, body: UpstreamHTTPBody(producer: produced.sequence)))
        case .body(let buffer):
            guard let source = x.source else { return }
            exchange = x
            noteRead()
            switch source.yield(contentsOf: CollectionOfOne(buffer)) {
            case .produceMore: break
            case .stopProducing, .dropped: exchange?.wantsMore = false
            }
        case .end:
            if let promise = x.head { promise.fail(UpstreamTransportError.closed) }
            ended(x, reusable: x.keepAlive && x.head == nil, context: context)
            x.source?.finish()
        }
    }

    private func relay(_ part: HTTPClientResponsePart, _ x: inout Exchange, to sink: any UpstreamSink, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            headArrived(head, &x)
            exchange = x
            sink.upstreamHead(head)
        case .body(let buffer):
            noteRead()
            sink.upstreamBody(buffer)
        case .end:
            ended(x, reusable: x.keepAlive, context: context)
            sink.upstreamEnd()
        }
    }

    private func collect(_ part: HTTPClientResponsePart, _ x: inout Exchange, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            headArrived(head, &x)
            x.collect!.head = head
            exchange = x
        case .body(let buffer):
            guard x.collect!.body.readableBytes + buffer.readableBytes <= x.collect!.limit else {
                fail(x.id, UpstreamBody.BodyTooLarge())
                return
            }
            exchange = nil  // no copy of the body while it grows
            x.collect!.body.writeImmutableBuffer(buffer)
            exchange = x
            noteRead()
        case .end:
            guard let collect = x.collect, let head = collect.head else {
                ended(x, reusable: false, context: context)
                x.collect?.promise.fail(UpstreamTransportError.closed)
                return
            }
            ended(x, reusable: x.keepAlive, context: context)
            collect.promise.succeed(CollectedUpstreamResponse(head: head, body: collect.body))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if let x = exchange, x.wantsMore { context.read() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let x = exchange { fail(x.id, UpstreamTransportError.closed) }
        stopWatching()
        onClose?()
        onClose = nil
        onRequestEnd = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let x = exchange { fail(x.id, error) }
        context.close(promise: nil)
    }

    /// The body's consumer wants more: read the socket again.
    func demand(_ id: Int) {
        guard exchange?.id == id, let context else { return }
        if exchange?.wantsMore == false {
            exchange?.wantsMore = true
            context.read()
        }
    }

    /// The body's consumer went away before the end: stop the provider by closing the connection.
    func consumerLeft(_ id: Int) {
        fail(id, UpstreamTransportError.closed)
    }

    /// Notes a read of the response body: the stall deadline runs from here.
    private func noteRead() {
        exchange?.deadline = .idleSince(.now())
    }

    /// Makes sure the watchdog fires by `due`: it stays as it is when it fires sooner (the common case:
    /// deadlines move later request after request), and is set again when it would fire later.
    private func watch(until due: NIODeadline) {
        if let current = watchdogDue, current <= due { return }
        guard let context else { return }
        watchdog?.cancel()
        watchdogDue = due
        watchdog = context.eventLoop.assumeIsolated().scheduleTask(deadline: due) { [weak self] in self?.watchdogFired() }
    }

    private func stopWatching() {
        watchdog?.cancel()
        watchdog = nil
        watchdogDue = nil
    }

    /// Fails an exchange whose deadline passed; otherwise sets the watchdog for what is due next, or
    /// lets it rest while no exchange runs (the next one sets it).
    private func watchdogFired() {
        watchdog = nil
        watchdogDue = nil
        guard let x = exchange else { return }
        let now = NIODeadline.now()
        switch x.deadline {
        case .firstByte(let deadline):
            if deadline <= now {
                fail(x.id, UpstreamTransportError.firstByteTimeout)
                return
            }
            watch(until: min(deadline, now + x.idleTimeout))
        case .idleSince(let lastRead):
            let due = lastRead + x.idleTimeout
            if due <= now {
                fail(x.id, UpstreamTransportError.readTimeout)
                return
            }
            watch(until: due)
        }
    }

    /// Ends the exchange with `error` (to whichever side is waiting) and closes the connection: a
    /// half-read response leaves it unusable.
    private func fail(_ id: Int, _ error: any Error) {
        guard let x = exchange, x.id == id else { return }
        exchange = nil
        x.head?.fail(error)
        x.collect?.promise.fail(error)
        x.sink?.upstreamFailed(error)
        x.source?.finish(error)
        context?.close(promise: nil)
    }
}

/// A provider's connections: HTTP/1.1 over TCP or TLS on SwiftNIO's own codec, kept alive and reused,
/// at most `maxConnections` at once (later requests wait for one to come free until their first-byte
/// deadline). Idle connections close after a minute. A request prefers an idle connection on the
/// event loop it runs on, so the relay stays on one thread.
final class UpstreamPool: Sendable {
    struct Settings: Sendable {
        var connectTimeout: TimeAmount
        var idleTimeout: TimeAmount
        var maxConnections: Int
        var keepIdle: TimeAmount = .seconds(60)
    }

    final class Connection: Sendable {
        let channel: any Channel
        let handler: NIOLoopBound<UpstreamConnectionHandler>
        /// When the connection last came back to the pool (uptime nanoseconds), and whether its idle
        /// check is scheduled: one timer per connection, set again while the connection keeps being used.
        let lastReleased = Atomic<Int64>(0)
        let idleCheckArmed = Atomic<Bool>(false)
        /// Set once the connection's slot was given back (it closed, or never opened).
        let slotFreed = Atomic<Bool>(false)
        init(channel: any Channel, handler: NIOLoopBound<UpstreamConnectionHandler>) {
            self.channel = channel
            self.handler = handler
        }
    }

    private struct Waiter {
        let id: Int
        let resume: @Sendable (Result<Connection?, any Error>) -> Void
    }

    private struct State {
        var idle: [Connection] = []
        var open = 0
        var waiters: [Waiter] = []
        var nextWaiter = 0
        var closed = false
    }

    let endpoint: UpstreamEndpoint
    let settings: Settings
    private let tls: NIOSSLContext?
    private let group: MultiThreadedEventLoopGroup
    private let loopCount: Int
    private let state = Mutex(State())

    /// `tlsConfiguration` for `https` endpoints: the system's trust roots unless told otherwise.
    init(endpoint: UpstreamEndpoint, settings: Settings, tlsConfiguration: TLSConfiguration = .makeClientConfiguration(),
         group: MultiThreadedEventLoopGroup = .singleton) throws {
        self.endpoint = endpoint
        self.settings = settings
        self.group = group
        loopCount = group.makeIterator().reduce(0) { n, _ in n + 1 }
        tls = endpoint.tls ? try NIOSSLContext(configuration: tlsConfiguration) : nil
    }

    /// Sends `head` and `body`, returning once the response head arrived (its body may still be
    /// arriving). Cancelling the calling task closes the connection. A connection on `preferred` (the
    /// caller's event loop) is used when there is one.
    func execute(
        _ head: HTTPRequestHead, body: ByteBuffer, firstByteDeadline: NIODeadline,
        preferring preferred: (any EventLoop)? = MultiThreadedEventLoopGroup.currentEventLoop
    ) async throws -> UpstreamHTTPResponse {
        let connection = try await acquire(deadline: firstByteDeadline, here: preferred)
        let handler = connection.handler
        let idle = settings.idleTimeout
        let future = connection.channel.eventLoop.flatSubmit {
            handler.value.start(head, body: body, firstByteDeadline: firstByteDeadline, idleTimeout: idle)
        }
        return try await withTaskCancellationHandler {
            do {
                return try await future.get()
            } catch {
                if Task.isCancelled { throw CancellationError() }
                throw error
            }
        } onCancel: {
            connection.channel.close(promise: nil)
        }
    }

    func shutdown() async {
        let (idle, waiters) = state.withLock { s -> ([Connection], [Waiter]) in
            s.closed = true
            defer { s.idle.removeAll(); s.waiters.removeAll() }
            return (s.idle, s.waiters)
        }
        for w in waiters { w.resume(.failure(UpstreamTransportError.closed)) }
        for c in idle { try? await c.channel.close() }
    }

    // MARK: Connections

    private enum Pick {
        case reuse(Connection)
        case open
        case wait
    }

    private func acquire(deadline: NIODeadline, here: (any EventLoop)?) async throws -> Connection {
        switch try pick(here: here) {
        case .reuse(let c): return c
        case .open:
            return try await connect(on: here ?? group.next()).get()
        case .wait:
            if let c = try await waitForConnection(deadline: deadline) { return c }
            // Woken to open one of our own (a connection closed and freed its slot).
            return try await connect(on: here ?? group.next()).get()
        }
    }

    /// ``acquire(deadline:here:)`` for a caller on `loop` that must not wait: the pool's idle
    /// connection when there is one, otherwise a future of a new or released connection. A caller that
    /// no longer needs the connection it gets hands it back with ``giveBack(_:)``.
    func acquire(deadline: NIODeadline, on loop: any EventLoop) -> EventLoopFuture<Connection> {
        let pick: Pick
        do { pick = try self.pick(here: loop) } catch { return loop.makeFailedFuture(error) }
        switch pick {
        case .reuse(let c): return loop.makeSucceededFuture(c)
        case .open: return connect(on: loop)
        case .wait:
            let promise = loop.makePromise(of: Connection?.self)
            let id = state.withLock { s -> Int? in
                if s.closed { return nil }
                s.nextWaiter += 1
                s.waiters.append(Waiter(id: s.nextWaiter, resume: { promise.completeWith($0) }))
                return s.nextWaiter
            }
            guard let id else { return loop.makeFailedFuture(UpstreamTransportError.closed) }
            let timer = loop.scheduleTask(deadline: deadline) { [weak self] in self?.abandon(id, UpstreamTransportError.poolTimeout) }
            return promise.futureResult.flatMap { connection in
                timer.cancel()
                return connection.map { loop.makeSucceededFuture($0) } ?? self.connect(on: loop)
            }.flatMapErrorThrowing { error in
                timer.cancel()
                throw error
            }
        }
    }

    /// A connection taken with ``acquire(deadline:on:)`` and not used: back to the pool.
    func giveBack(_ connection: Connection) { released(connection) }

    /// Takes an idle connection, or a slot for a new one, or says to wait.
    private func pick(here: (any EventLoop)?) throws -> Pick {
        try state.withLock { s -> Pick in
            guard !s.closed else { throw UpstreamTransportError.closed }
            /// The newest live idle connection that `fits`; closing ones are dropped (their close
            /// handler gives the slot back).
            func takeIdle(_ fits: (Connection) -> Bool) -> Connection? {
                while let i = s.idle.lastIndex(where: fits) {
                    let c = s.idle.remove(at: i)
                    if c.channel.isActive { return c }
                }
                return nil
            }
            if let c = takeIdle({ here == nil || $0.channel.eventLoop === here }) { return .reuse(c) }
            // No idle connection on this event loop. Another loop's would cost two thread hand-offs per
            // request (the request out, the response back); a plaintext connection of our own costs one
            // TCP handshake, once, so open one while there is room — but only while the other loops hold
            // fewer idle connections than there are loops: the gateway budgets one descriptor per client
            // connection for its upstream, and a pool that kept opening beside idle ones would spend
            // descriptors it does not have at 10,000 streams. A TLS handshake costs more than the
            // hand-offs: borrow.
            let local = tls == nil && here != nil && s.open < settings.maxConnections && s.idle.count < loopCount
            if !local, let c = takeIdle({ _ in true }) { return .reuse(c) }
            if s.open < settings.maxConnections {
                s.open += 1
                return .open
            }
            return .wait
        }
    }

    /// Waits for a released connection (or a freed slot: nil) until `deadline`.
    private func waitForConnection(deadline: NIODeadline) async throws -> Connection? {
        let id = state.withLock { s -> Int in s.nextWaiter += 1; return s.nextWaiter }
        let loop = group.any()
        let timer = loop.scheduleTask(deadline: deadline) { [weak self] in self?.abandon(id, UpstreamTransportError.poolTimeout) }
        defer { timer.cancel() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Connection?, any Error>) in
                let closed = state.withLock { s -> Bool in
                    if s.closed { return true }
                    s.waiters.append(Waiter(id: id, resume: { continuation.resume(with: $0) }))
                    return false
                }
                if closed { continuation.resume(throwing: UpstreamTransportError.closed) }
            }
        } onCancel: {
            self.abandon(id, CancellationError())
        }
    }

    private func abandon(_ id: Int, _ error: any Error) {
        let waiter = state.withLock { s -> Waiter? in
            guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return s.waiters.remove(at: i)
        }
        waiter?.resume(.failure(error))
    }

    /// A connection finished a request and can take another (`connection`), or a slot came free
    /// (nil: a connection closed, or never opened).
    private func released(_ connection: Connection?) {
        enum Next { case give(Waiter, Connection?), keep(armIdleCheck: Bool), none }
        let next = state.withLock { s -> Next in
            if let connection, s.closed {
                // Its close handler gives the slot back.
                connection.channel.close(promise: nil)
                return .none
            }
            if !s.waiters.isEmpty {
                let w = s.waiters.removeFirst()
                // A freed slot passes to the waiter, who opens its own connection.
                return .give(w, connection)
            }
            if let connection {
                s.idle.append(connection)
                connection.lastReleased.store(Int64(NIODeadline.now().uptimeNanoseconds), ordering: .relaxed)
                // Armed and disarmed only under the lock, so a connection never sits idle unwatched.
                return .keep(armIdleCheck: !connection.idleCheckArmed.exchange(true, ordering: .relaxed))
            }
            s.open -= 1
            return .none
        }
        switch next {
        case .give(let w, let c): w.resume(.success(c))
        case .keep(let arm):
            if arm, let connection { scheduleIdleClose(connection, at: .now() + settings.keepIdle) }
        case .none: break
        }
    }

    /// Closes `connection` if it has sat in the pool for `keepIdle`; otherwise looks again when it
    /// would have.
    private func scheduleIdleClose(_ connection: Connection, at deadline: NIODeadline) {
        let keepIdle = settings.keepIdle
        connection.channel.eventLoop.scheduleTask(deadline: deadline) { [weak self] in
            guard let self, connection.channel.isActive else { return }
            enum Step { case close, later(NIODeadline), disarmed }
            let step = self.state.withLock { s -> Step in
                guard let i = s.idle.firstIndex(where: { $0 === connection }) else {
                    // In use: the next release arms the check again.
                    connection.idleCheckArmed.store(false, ordering: .relaxed)
                    return .disarmed
                }
                let due = NIODeadline.uptimeNanoseconds(UInt64(connection.lastReleased.load(ordering: .relaxed))) + keepIdle
                guard due <= .now() else { return .later(due) }
                s.idle.remove(at: i)
                return .close
            }
            switch step {
            case .close: connection.channel.close(promise: nil)  // its close handler gives the slot back
            case .later(let due): self.scheduleIdleClose(connection, at: due)
            case .disarmed: break
            }
        }
    }

    /// A connection closed (idle or not): it leaves the pool and its slot comes free, once.
    private func closed(_ connection: Connection) {
        state.withLock { s in
            if let i = s.idle.firstIndex(where: { $0 === connection }) { s.idle.remove(at: i) }
        }
        if !connection.slotFreed.exchange(true, ordering: .acquiringAndReleasing) { released(nil) }
    }

    /// Opens a connection in the slot the caller took; gives the slot back if it cannot.
    private func connect(on loop: any EventLoop) -> EventLoopFuture<Connection> {
        let endpoint = self.endpoint
        let tls = self.tls
        let made = Mutex<Connection?>(nil)
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(settings.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.autoRead, value: false)
            // Reads start at 512 bytes (SwiftNIO's default is 2 KB) and grow with the answer: a stream's
            // events are a few hundred bytes each, and each open stream's connection keeps its buffer.
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536))
            .channelInitializer { [weak self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls {
                        // SNI names hosts, never addresses.
                        let sni = endpoint.host.first?.isNumber == true || endpoint.host.contains(":") ? nil : endpoint.host
                        try sync.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: sni))
                    }
                    // SwiftNIO's client handlers, replaced: its header validator and request encoder by one
                    // handler that checks and writes the head in one pass (``UpstreamRequestEncoder``), its
                    // response decoder by one that parses heads in place (``UpstreamResponseDecoder``).
                    try sync.addHandler(UpstreamRequestEncoder())
                    try sync.addHandler(UpstreamResponseDecoder())
                    let handler = UpstreamConnectionHandler()
                    let connection = Connection(channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop))
                    handler.onRequestEnd = { self?.released(connection) }
                    handler.onClose = { self?.closed(connection) }
                    made.withLock { $0 = connection }
                    try sync.addHandler(handler)
                }
            }
        let promise = loop.makePromise(of: Connection.self)
        bootstrap.connect(host: endpoint.host, port: endpoint.port).whenComplete { result in
            switch result {
            case .success:
                if let connection = made.withLock({ $0 }) {
                    promise.succeed(connection)
                } else {
                    self.released(nil)
                    promise.fail(UpstreamTransportError.connectFailed("no channel"))
                }
            case .failure(let error):
                if let connection = made.withLock({ $0 }) {
                    connection.channel.close(promise: nil)
                    self.closed(connection)
                } else {
                    self.released(nil)
                }
                if let e = error as? ChannelError, case .connectTimeout = e {
                    promise.fail(UpstreamTransportError.connectTimeout)
                } else {
                    promise.fail(UpstreamTransportError.connectFailed("\(error)"))
                }
            }
        }
        return promise.futureResult
    }
}
