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

    /// Watchers by channel, so a request finds its connection's watcher without a pipeline lookup (which
    /// would hop to the event loop).
    private static let registry = Mutex<[ObjectIdentifier: ConnectionCloseWatcher]>([:])

    public init() {}

    /// The watcher in `channel`'s pipeline, if any.
    static func watcher(for channel: any Channel) -> ConnectionCloseWatcher? {
        registry.withLock { $0[ObjectIdentifier(channel)] }
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        attach(to: context.channel)
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        unregister(context.channel)
    }

    // MARK: Driven by a connection handler

    // A handler that sees the connection's end itself (the gateway's `GatewayConnection`) keeps the
    // watcher out of the pipeline, where every request part would pass through it, and tells it.

    /// Makes the watcher the one `channel`'s requests find.
    public func attach(to channel: any Channel) {
        let id = ObjectIdentifier(channel)
        Self.registry.withLock { $0[id] = self }
    }

    /// The client went: its channel closed (then `detach`) or its input ended.
    public func clientLeft() {
        fire()
    }

    /// The channel closed or the handler left it.
    public func detach(from channel: any Channel) {
        unregister(channel)
    }

    private func unregister(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        Self.registry.withLock { r in
            if r[id] === self { r[id] = nil }
        }
    }

    public func channelInactive(context: ChannelHandlerContext) {
        fire()
        unregister(context.channel)
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
    /// Runs `body`, cancelling the current task as soon as `channel`'s client goes away (so an upstream
    /// request it awaits is cancelled at once), or at once if it has already gone. Without a watcher in
    /// an open channel's pipeline (e.g. an in-memory test channel) `body` simply runs.
    ///
    /// No child task is created: `body` runs in the caller's task, which the close callback cancels
    /// through an ``UnsafeCurrentTask`` held by a lock-guarded ``TaskCanceller`` that is emptied before
    /// this function returns, so the callback can never touch a task that has finished.
    public static func cancellingOnClose<T>(_ channel: (any Channel)?, _ body: () async throws -> T) async throws -> T {
        guard let channel else { return try await body() }
        guard let watcher = watcher(for: channel) else {
            // The watcher leaves the registry when its connection closes, so a closed channel here is a
            // client that left before this work began (say, between a stream's response head and its
            // body): cancel at once rather than find out at the first write.
            if !channel.isActive { withUnsafeCurrentTask { $0?.cancel() } }
            return try await body()
        }
        let canceller = withUnsafeCurrentTask { TaskCanceller($0) }
        let token = watcher.onClose { canceller.cancel() }
        defer {
            watcher.cancel(token)
            canceller.disarm()
        }
        return try await body()
    }
}

extension ConnectionCloseWatcher {
    /// Runs `body` and calls `onClose` if `channel`'s client goes away meanwhile, without cancelling
    /// anything (for work that must finish even so, such as reading an answer to learn what it cost).
    public static func watching<T>(_ channel: (any Channel)?, onClose: @escaping @Sendable () -> Void, _ body: () async throws -> T) async throws -> T {
        guard let channel else { return try await body() }
        guard let watcher = watcher(for: channel) else {
            if !channel.isActive { onClose() }  // the client left before this work began
            return try await body()
        }
        let token = watcher.onClose(onClose)
        defer { watcher.cancel(token) }
        return try await body()
    }
}

/// Cancels one task from another thread, only while that task is known to be alive.
final class TaskCanceller: Sendable {
    // UnsafeCurrentTask is a plain task reference; access is serialised by the mutex, and `disarm()`
    // runs (in the task itself) before the task can finish.
    private nonisolated(unsafe) var task: UnsafeCurrentTask?
    private let lock = Mutex(())

    init(_ task: UnsafeCurrentTask?) { self.task = task }

    func cancel() {
        lock.withLock { _ in task?.cancel() }
    }

    func disarm() {
        lock.withLock { _ in task = nil }
    }
}
