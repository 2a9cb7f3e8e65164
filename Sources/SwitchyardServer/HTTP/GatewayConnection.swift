import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import Synchronization
import SwitchyardHTTP

/// Serves one client connection's HTTP/1.1 requests from the channel pipeline: reads each request's
/// head and body, starts one task that answers it, and writes the answer through
/// ``GatewayResponseWriter``; then the next request, or the connection closes.
///
/// Hummingbird's `HTTP1Channel` ran a task for every connection, fed by a `NIOAsyncChannel`: each
/// request part crossed into that task through an async sequence and each response part back through
/// an async writer, and the task (with the frames of its deepest moment) lived as long as the
/// connection. Here a connection with nothing in flight holds no task, and a request's parts reach its
/// task already collected. What a client sees is the same: requests answered one at a time in order
/// (a pipelined request waits for the answer before it), `Connection: close` honoured, a malformed
/// request answered 400 and the connection closed, the idle timeout applied while no request is being
/// answered, and a graceful shutdown letting the request in flight finish.
///
/// Bodies are collected here up to `maxBodyBytes`; a larger body is read to its end and discarded, and
/// the request's body then throws `413` when a route reads it (routes answer `body_too_large` in the
/// client's format, as they did when Hummingbird's collector threw it).
final class GatewayConnection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias OutboundOut = HTTPResponsePart

    /// Answers a complete request through the writer; runs in a task of its own.
    typealias Serve = @Sendable (Request, any Channel, GatewayResponseWriter) async -> Void

    private enum State {
        /// Waiting for a request head.
        case idle
        /// A head arrived; its body is being collected (nil once it passed the limit).
        case reading(HTTPRequest, body: ByteBuffer?, tooLarge: Bool)
        /// A request is being answered.
        case responding
        case closed
    }

    private let serve: Serve
    /// Answers the requests it takes on this event loop, without a task (``LoopResponder``).
    private let direct: (any LoopResponder)?
    private let maxBodyBytes: Int
    private let idleTimeout: TimeAmount?
    private let logger: Logger
    /// The connection's codec, which knows each request's version and persistence, and whether the
    /// answer it wrote last lets the connection go on (``GatewayHTTPCodec/answerKeepsAlive``).
    private let wire: GatewayHTTPCodec

    private var context: ChannelHandlerContext?
    private var state = State.idle
    /// Numbers each answer, so a writer left over from an earlier request cannot write into a later one.
    private var exchange = 0
    /// A graceful shutdown, or the client's half-close, asked for the connection to end after the answer.
    private var closeAfterResponse = false
    /// The answer being ended is the connection's last: its request, or its framing, or a shutdown or
    /// half-close since, says so.
    private var endsConnection: Bool { !wire.answerKeepsAlive || closeAfterResponse }
    /// Parts that arrived while a request was being answered (a pipelining client), served after it.
    /// An array, not a `CircularBuffer`, which would allocate room for 16 parts on every connection
    /// (pipelining is rare; an empty array allocates nothing).
    private var pending: [HTTPRequestPart] = []
    private var pendingBytes = 0
    /// Request heads among `pending`: reading also pauses past `maxQueuedHeads` of them, since a
    /// flood of bodiless pipelined requests adds no body bytes.
    private var pendingHeads = 0
    static let maxQueuedHeads = 32
    /// Reading was paused because `pending` grew past a request's worth.
    private var readingPaused = false
    /// `answered` is handing queued parts on: an answer given at once meanwhile (a refusal the loop
    /// path writes without waiting) returns to that loop instead of starting a nested one, so a
    /// thousand pipelined requests do not nest a thousand frames deep.
    private var draining = false
    /// A malformed request followed the one being answered: answered 400 after it.
    private var parseErrorPending = false
    private var lastActivity = NIODeadline.now()
    private var idleTimer: Scheduled<Void>?
    /// Writes waiting for the channel to become writable again.
    private var writabilityWaiters: [EventLoopPromise<Void>] = []
    /// Told when the client goes (closes, or half-closes) while a ``LoopResponder`` answers `exchange`.
    private var clientGone: (exchange: Int, callback: () -> Void)?
    /// Tells the task path's work that the client went (``ConnectionCloseWatcher``), driven from here
    /// rather than from a handler of its own that every request part would pass through.
    private let watcher = ConnectionCloseWatcher()

    init(
        maxBodyBytes: Int, idleTimeout: TimeAmount?, logger: Logger, wire: GatewayHTTPCodec, direct: (any LoopResponder)? = nil,
        serve: @escaping Serve
    ) {
        self.wire = wire
        self.maxBodyBytes = maxBodyBytes
        self.idleTimeout = idleTimeout
        self.logger = logger
        self.direct = direct
        self.serve = serve
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        watcher.attach(to: context.channel)
        if context.channel.isActive { becameIdle() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
        watcher.detach(from: context.channel)
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        becameIdle()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        state = .closed
        idleTimer?.cancel()
        idleTimer = nil
        failWaiters()
        watcher.clientLeft()
        watcher.detach(from: context.channel)
        tellClientGone()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            let waiters = writabilityWaiters
            writabilityWaiters.removeAll()
            for w in waiters { w.succeed() }
        }
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if case .responding = state {
            queue(part, context: context)
            return
        }
        process(part, context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is ChannelShouldQuiesceEvent:
            // A graceful shutdown: an idle connection closes now, a busy one after its answer.
            endWhenIdle(context: context)
        case let e as ChannelEvent where e == .inputClosed:
            // The client will send nothing more: whatever is in flight is answered, then the connection ends.
            // For a request/response protocol whose request was read in full, that is the client leaving
            // (as the ``ConnectionCloseWatcher`` tells the task path).
            endWhenIdle(context: context)
            watcher.clientLeft()
            tellClientGone()
            context.fireUserInboundEventTriggered(event)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch state {
        case .idle, .reading:
            if error is HTTPParserError { badRequestAndClose(context: context) } else { context.close(promise: nil) }
        case .responding:
            // The request being answered was read in full; the malformed one after it is refused after the answer.
            if error is HTTPParserError { parseErrorPending = true } else { context.close(promise: nil) }
        case .closed:
            break
        }
    }

    // MARK: Requests

    private func process(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        lastActivity = .now()
        switch (state, part) {
        case (.idle, .head(let head)):
            state = .reading(head, body: nil, tooLarge: false)
        case (.reading(let head, var body, var tooLarge), .body(let bytes)):
            state = .responding  // nothing else runs while the buffer is out of `state` (no copy-on-write)
            if !tooLarge {
                if (body?.readableBytes ?? 0) + bytes.readableBytes > maxBodyBytes {
                    tooLarge = true
                    body = nil
                } else if body == nil {
                    body = bytes
                } else {
                    body!.writeImmutableBuffer(bytes)
                }
            }
            state = .reading(head, body: body, tooLarge: tooLarge)
        case (.reading(let head, let body, let tooLarge), .end):
            respond(to: head, body: body, tooLarge: tooLarge, context: context)
        case (.closed, _):
            break
        default:
            // A body without a head, or a head inside a body: the codec guarantees neither.
            context.close(promise: nil)
        }
    }

    private func respond(to head: HTTPRequest, body: ByteBuffer?, tooLarge: Bool, context: ChannelHandlerContext) {
        state = .responding
        exchange &+= 1
        // The idle timer stays armed: it ignores a connection that is answering, and one that was active
        // since it was set re-arms for the rest (cancelling and scheduling a timer per request cost ~1 %).
        if !tooLarge, let direct,
            direct.answer(head, body: body ?? ByteBuffer(), exchange: LoopExchange(connection: self, id: exchange, eventLoop: context.eventLoop))
        {
            return
        }
        let requestBody = tooLarge ? RequestBody(asyncSequence: BodyTooLarge()) : RequestBody(buffer: body ?? ByteBuffer())
        let request = Request(head: head, body: requestBody)
        let writer = GatewayResponseWriter(connection: NIOLoopBound(self, eventLoop: context.eventLoop), exchange: exchange)
        let channel = context.channel
        let serve = self.serve
        Task { await serve(request, channel, writer) }
    }

    /// Holds a part that arrived during an answer; stops reading once more than a request's worth waits.
    private func queue(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        pending.append(part)
        switch part {
        case .head: pendingHeads += 1
        case .body(let bytes): pendingBytes += bytes.readableBytes
        case .end: break
        }
        if !readingPaused, pendingBytes > maxBodyBytes || pendingHeads > Self.maxQueuedHeads {
            readingPaused = true
            try? context.channel.syncOptions?.setOption(.autoRead, value: false)
        }
    }

    private func endWhenIdle(context: ChannelHandlerContext) {
        switch state {
        case .idle:
            context.flush()  // the last answer may still wait for its round's flush
            context.close(promise: nil)
        case .reading: context.close(promise: nil)  // a request that can no longer arrive in full
        case .responding:
            closeAfterResponse = true
            wire.closing = true  // an answer not begun yet says so
        case .closed: break
        }
    }

    private func badRequestAndClose(context: ChannelHandlerContext) {
        state = .closed
        logger.debug("HTTP parse error, closing connection")
        context.write(wrapOutboundOut(.head(HTTPResponse(status: .badRequest, headerFields: [.connection: "close", .contentLength: "0"]))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    private func becameIdle() {
        lastActivity = .now()
        armIdleTimer()
    }

    private func armIdleTimer() {
        guard let idleTimeout, idleTimer == nil, let context else { return }
        let loop = context.eventLoop
        idleTimer = loop.assumeIsolated().scheduleTask(deadline: lastActivity + idleTimeout) { [self] in
            idleTimer = nil
            switch state {
            case .idle, .reading:
                if NIODeadline.now() >= lastActivity + idleTimeout { self.context?.close(promise: nil) } else { armIdleTimer() }
            case .responding, .closed:
                break  // re-armed when the answer ends
            }
        }
    }

    // MARK: Answers (called by the writer, on the connection's loop)

    /// Whether `exchange` is the answer in progress on an open connection.
    private func current(_ exchange: Int) throws -> ChannelHandlerContext {
        guard case .responding = state, exchange == self.exchange, let context else { throw ChannelError.ioOnClosedChannel }
        return context
    }

    func writeHead(_ head: HTTPResponse, exchange: Int, flush: Bool) throws {
        let context = try current(exchange)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if flush { DeferredFlush.flush(context) }
    }

    /// Writes a body part; returns a future to wait on when the channel is not writable.
    func writeBody(_ bytes: ByteBuffer, exchange: Int, flush: Bool) throws -> EventLoopFuture<Void>? {
        let context = try current(exchange)
        context.write(wrapOutboundOut(.body(bytes)), promise: nil)
        if flush { DeferredFlush.flush(context) }
        guard !context.channel.isWritable else { return nil }
        let promise = context.eventLoop.makePromise(of: Void.self)
        writabilityWaiters.append(promise)
        return promise.futureResult
    }

    /// Ends the answer and moves on to the next request (or closes the connection).
    func writeEnd(_ trailers: HTTPFields?, exchange: Int) throws {
        end(trailers, context: try current(exchange))
    }

    /// Writes a whole answer with one flush and moves on (``LoopResponder``s; on the connection's loop).
    /// Nothing is written when the connection has closed.
    func writeWhole(_ head: HTTPResponse, body: ByteBuffer, exchange: Int) {
        guard let context = try? current(exchange) else { return }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if body.readableBytes > 0 { context.write(wrapOutboundOut(.body(body)), promise: nil) }
        end(nil, context: context)
    }

    /// Writes the answer's end, flushed with the loop's round, and moves on. When the connection closes
    /// after the answer, the end is flushed at once and the connection closed once it is written: a
    /// close discards what was not written yet (a write waiting for the round's flush, or bytes the
    /// socket could not take yet from a client that reads slowly), up to one idle timeout.
    private func end(_ trailers: HTTPFields?, context: ChannelHandlerContext) {
        guard endsConnection else {
            context.write(wrapOutboundOut(.end(trailers)), promise: nil)
            DeferredFlush.flush(context)
            answered(context: context)
            return
        }
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: written)
        let channel = context.channel
        let limit = idleTimeout.map { context.eventLoop.scheduleTask(in: $0) { channel.close(promise: nil) } }
        written.futureResult.whenComplete { _ in
            limit?.cancel()
            channel.close(promise: nil)
        }
        answered(context: context)
    }

    /// Calls `callback` if the client goes before `exchange` is answered.
    func watchClient(_ exchange: Int, _ callback: @escaping () -> Void) {
        guard case .responding = state, exchange == self.exchange else {
            callback()
            return
        }
        clientGone = (exchange, callback)
    }

    private func tellClientGone() {
        guard let gone = clientGone else { return }
        clientGone = nil
        gone.callback()
    }

    /// Whether `exchange`'s answer is still open (its body writer did not finish it).
    func isOpen(_ exchange: Int) -> Bool {
        if case .responding = state, exchange == self.exchange { return true }
        return false
    }

    /// The answer failed part-way (the client left, or the body's producer threw): the connection
    /// cannot carry another request.
    func abort(exchange: Int) {
        guard let context = try? current(exchange) else { return }
        state = .closed
        context.close(promise: nil)
    }

    /// Whether a request's parts are being read (not answered, not closed).
    private var takesParts: Bool {
        switch state {
        case .idle, .reading: return true
        case .responding, .closed: return false
        }
    }

    private func answered(context: ChannelHandlerContext) {
        clientGone = nil
        state = .idle
        exchange &+= 1
        if endsConnection {
            state = .closed  // closed by `end` once the answer is written
            return
        }
        if parseErrorPending {
            badRequestAndClose(context: context)
            return
        }
        becameIdle()
        guard !draining else { return }
        draining = true
        defer { draining = false }
        // Until `process` starts another answer, which queues whatever follows.
        while takesParts, let part = pending.first {
            pending.removeFirst()
            switch part {
            case .head: pendingHeads -= 1
            case .body(let bytes): pendingBytes -= bytes.readableBytes
            case .end: break
            }
            process(part, context: context)
        }
        if readingPaused, pendingBytes <= maxBodyBytes, pendingHeads <= Self.maxQueuedHeads {
            readingPaused = false
            try? context.channel.syncOptions?.setOption(.autoRead, value: true)
        }
    }

    private func failWaiters() {
        let waiters = writabilityWaiters
        writabilityWaiters.removeAll()
        for w in waiters { w.fail(ChannelError.ioOnClosedChannel) }
    }
}

/// Answers some requests on the connection's event loop, without a task (``LoopPassthrough``).
protocol LoopResponder: Sendable {
    /// Takes the request and answers it through `exchange` (on its event loop), or returns false,
    /// having done nothing, for the task path to answer it.
    func answer(_ head: HTTPRequest, body: ByteBuffer, exchange: LoopExchange) -> Bool
}

/// The answer in progress on a connection, for a ``LoopResponder``. Used on `eventLoop` only.
struct LoopExchange {
    let connection: GatewayConnection
    let id: Int
    let eventLoop: any EventLoop

    /// Writes the whole answer; then the connection serves its next request.
    func write(_ head: HTTPResponse, body: ByteBuffer) { connection.writeWhole(head, body: body, exchange: id) }

    /// Writes a streamed answer's head, flushed (the body follows with ``writeBody(_:)``, then ``end()``).
    func writeHead(_ head: HTTPResponse) { try? connection.writeHead(head, exchange: id, flush: true) }

    /// Writes and flushes a part of a streamed answer; returns a future to wait on before writing more
    /// when the connection's buffer is full. Nothing is written when the connection has closed.
    func writeBody(_ bytes: ByteBuffer) -> EventLoopFuture<Void>? {
        (try? connection.writeBody(bytes, exchange: id, flush: true)) ?? nil
    }

    /// Ends a streamed answer; then the connection serves its next request.
    func end() { try? connection.writeEnd(nil, exchange: id) }

    /// Gives up on an answer that cannot be completed (its client left part-way): the connection closes.
    func abort() { connection.abort(exchange: id) }

    /// Calls `callback` if the client closes or half-closes the connection before the answer (at once
    /// if it already has).
    func onClientGone(_ callback: @escaping () -> Void) { connection.watchClient(id, callback) }
}

/// Writes one answer on its connection: head, body and end, from the answer's task. Each call does
/// its work at once when the task runs on the connection's loop (where the gateway's tasks run), and
/// hops there otherwise.
struct GatewayResponseWriter: Sendable {
    let connection: NIOLoopBound<GatewayConnection>
    let exchange: Int

    var loop: any EventLoop { connection.eventLoop }

    /// Writes `response` in full. A body of known length goes out with one flush at its end; a
    /// streamed one is flushed part by part. If the body fails the connection is closed (the client
    /// cannot tell a cut-off answer from a complete one otherwise).
    func send(_ response: Response) async {
        await send(ResponseHandoff(response))
    }

    /// Writes the response `handoff` holds. The head's fields are let go once the head is written, so
    /// a long stream does not keep them (~1 KB) for as long as it lasts.
    func send(_ handoff: ResponseHandoff) async {
        let exchange = self.exchange
        do {
            let (body, streamed) = try await onLoop { c -> (ResponseBody, Bool) in
                let response = handoff.take()
                let streamed = response.body.contentLength == nil
                try c.writeHead(response.head, exchange: exchange, flush: streamed)
                return (response.body, streamed)
            }
            try await body.write(GatewayBodyWriter(writer: self, flushEach: streamed))
            // A body closure that returned without finishing still ends its answer.
            try await onLoop { c in if c.isOpen(exchange) { try c.writeEnd(nil, exchange: exchange) } }
        } catch {
            let exchange = self.exchange
            let connection = self.connection
            if loop.inEventLoop { connection.value.abort(exchange: exchange) } else { loop.execute { connection.value.abort(exchange: exchange) } }
        }
    }

    func body(_ bytes: ByteBuffer, flush: Bool) async throws {
        let wait = try await onLoop { c in try c.writeBody(bytes, exchange: exchange, flush: flush) }
        if let wait { try await wait.get() }
    }

    func end(_ trailers: HTTPFields?) async throws {
        try await onLoop { c in try c.writeEnd(trailers, exchange: exchange) }
    }

    private func onLoop<T: Sendable>(_ work: @escaping @Sendable (GatewayConnection) throws -> T) async throws -> T {
        let connection = self.connection
        if loop.inEventLoop { return try work(connection.value) }
        return try await loop.submit { try work(connection.value) }.get()
    }
}

/// A response on its way to the connection, taken out once to be written.
final class ResponseHandoff: Sendable {
    private let response: Mutex<Response?>
    init(_ response: Response) { self.response = Mutex(response) }
    func take() -> Response { response.withLock { r in defer { r = nil }; return r! } }
}

/// The body writer Hummingbird's response bodies write into.
struct GatewayBodyWriter: ResponseBodyWriter {
    let writer: GatewayResponseWriter
    let flushEach: Bool

    mutating func write(_ buffer: ByteBuffer) async throws {
        try await writer.body(buffer, flush: flushEach)
    }

    /// Writes the buffers with one flush after the last.
    mutating func write(contentsOf buffers: some Sequence<ByteBuffer>) async throws {
        var iterator = buffers.makeIterator()
        var current = iterator.next()
        while let buffer = current {
            let next = iterator.next()
            try await writer.body(buffer, flush: flushEach && next == nil)
            current = next
        }
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        try await writer.end(trailingHeaders)
    }
}

/// The body of a request that exceeded the size limit: reading it throws `413`.
struct BodyTooLarge: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    struct AsyncIterator: AsyncIteratorProtocol {
        mutating func next() async throws -> ByteBuffer? { throw HTTPError(.contentTooLarge) }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator() }
}
