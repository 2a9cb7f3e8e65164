import NIOCore
import Synchronization

/// Tells a long-running response that its client connection has gone, without reading the connection.
///
/// Hummingbird only notices a client leaving when a write fails, and its inbound-close helper consumes
/// the connection (so it cannot be kept alive). This handler sits in each connection's pipeline and
/// runs registered callbacks when the channel becomes inactive; a streaming response registers one that
/// cancels its task, which cancels the upstream request. Keep-alive is unaffected.
public final class ConnectionCloseWatcher: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    public typealias InboundIn = NIOAny

    private struct State {
        var closed = false
        var next: UInt64 = 0
        var callbacks: [UInt64: @Sendable () -> Void] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    public func channelInactive(context: ChannelHandlerContext) {
        fire()
        context.fireChannelInactive()
    }

    /// Hummingbird allows remote half-closure, so a client closing its socket first shows up as
    /// `inputClosed` (the channel stays open for writing): for a request/response protocol whose request
    /// was fully read, that is the client leaving.
    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed { fire() }
        context.fireUserInboundEventTriggered(event)
    }

    private func fire() {
        let callbacks = state.withLock { s -> [@Sendable () -> Void] in
            s.closed = true
            defer { s.callbacks.removeAll() }
            return Array(s.callbacks.values)
        }
        for callback in callbacks { callback() }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    /// Runs `callback` when the connection closes (at once if it already has); returns a token to cancel.
    func onClose(_ callback: @escaping @Sendable () -> Void) -> UInt64? {
        let token = state.withLock { s -> UInt64? in
            guard !s.closed else { return nil }
            s.next &+= 1
            s.callbacks[s.next] = callback
            return s.next
        }
        if token == nil { callback() }
        return token
    }

    func cancel(_ token: UInt64?) {
        guard let token else { return }
        state.withLock { _ = $0.callbacks.removeValue(forKey: token) }
    }
}

extension ConnectionCloseWatcher {
    /// Runs `body`, cancelling it as soon as `channel`'s client goes away. Without a watcher in the
    /// pipeline (e.g. an in-memory test channel) `body` simply runs.
    public static func cancellingOnClose<T: Sendable>(_ channel: (any Channel)?, _ body: () async throws -> T) async throws -> T {
        guard let channel, let watcher = try? await channel.pipeline.handler(type: ConnectionCloseWatcher.self).get() else {
            return try await body()
        }
        let (closed, closer) = AsyncStream<Void>.makeStream()
        let token = watcher.onClose { closer.finish() }
        defer { watcher.cancel(token) }
        return try await withoutActuallyEscaping(body) { body in
            // The closure runs in a child task while this task only awaits the group, so it is never
            // used concurrently (the same construction as Hummingbird's inbound-close helper).
            nonisolated(unsafe) let work = body
            return try await withThrowingTaskGroup(of: T?.self) { group in
                group.addTask {
                    for await _ in closed {}
                    if Task.isCancelled { return nil }
                    throw CancellationError()
                }
                group.addTask { try await work() }
                while let result = try await group.next() {
                    if let value = result {
                        group.cancelAll()
                        closer.finish()
                        return value
                    }
                }
                throw CancellationError()
            }
        }
    }
}
