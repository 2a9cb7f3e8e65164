import HummingbirdCore
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The gateway's listening sockets: one per event loop, all on the same port (`SO_REUSEPORT`), each
/// accepting connections onto its own loop.
///
/// Hummingbird's `Server` listens once and hands each accepted connection to the next loop in turn, so
/// half the connections were accepted on one thread and served on the other: the registration, the
/// connection's task and its first read each woke the other thread (three `eventfd` wake-ups on the
/// way to a new connection's first request). Here the kernel spreads connections over the loops'
/// sockets, and a connection's channel, its requests' tasks (started from the connection's loop, which
/// Swift Concurrency's global executor keeps them on) and its upstream connection (the pool prefers the
/// request's loop) stay on one thread from accept to close.
///
/// Each accepted connection is set up by `initialize` (the gateway's: ``GatewayConnection`` and the
/// HTTP codec) and then serves itself from its pipeline: no task is kept per connection. A graceful
/// shutdown closes the listeners, asks every open connection to finish what it is serving, and waits
/// until all have closed; cancellation closes them at once.
struct LoopListeners: Service {
    let host: String
    let port: Int
    let backlog: Int
    let loops: [any EventLoop]
    let logger: Logger
    let onServerRunning: @Sendable (any Channel) async -> Void
    /// Sets up an accepted connection's pipeline.
    let initialize: @Sendable (any Channel) -> EventLoopFuture<Void>

    func run() async throws {
        let connections = OpenConnections()
        let listeners = try await bind(connections)
        logger.info("Server started and listening on \(host):\(listeners[0].0.localAddress?.port ?? port)",
            metadata: ["listeners": .stringConvertible(listeners.count)])
        let drained = listeners.map { $0.0.eventLoop.makePromise(of: Void.self) }
        let shutdown = ShutdownOnce {
            for ((_, quiescing), promise) in zip(listeners, drained) { quiescing.initiateShutdown(promise: promise) }
        }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await onServerRunning(listeners[0].0)
                for (listener, _) in listeners { try? await listener.closeFuture.get() }
                // A listener closes only through a shutdown, which completes its promise once the
                // connections it accepted have closed too.
                shutdown.run()
                for promise in drained { try? await promise.futureResult.get() }
            } onGracefulShutdown: {
                shutdown.run()
            }
        } onCancel: {
            shutdown.run()
            connections.closeAll()
        }
    }

    /// Binds a listener per loop. With more than one loop a given port is first claimed by a plain
    /// socket, which fails as usual if another process holds it; the `SO_REUSEPORT` group then binds
    /// that port. Without the probe a second gateway started on the same port by the same user would
    /// silently share its connections instead of failing. Port 0 needs no probe: the first listener
    /// gets a free port from the kernel and the others join it. (Probing port 0 too left the free port
    /// unbound between the probe's close and the first listener's bind, and a busy machine handed it
    /// to someone else in between: a start that failed at random.)
    private func bind(_ connections: OpenConnections) async throws -> [(any Channel, ServerQuiescingHelper)] {
        var port = self.port
        if loops.count > 1, port != 0 { port = try await Self.claimPort(host: host, port: port, on: loops[0]) }
        var listeners: [(any Channel, ServerQuiescingHelper)] = []
        do {
            for loop in loops {
                let quiescing = ServerQuiescingHelper(group: loop)
                let initialize = self.initialize
                let listener = try await ServerBootstrap(group: loop, childGroup: loop)
                    .serverChannelOption(.backlog, value: numericCast(backlog))
                    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                    .serverChannelOption(ChannelOptions.Types.SocketOption(level: .init(SOL_SOCKET), name: .init(SO_REUSEPORT)), value: loops.count > 1 ? 1 : 0)
                    .childChannelOption(.allowRemoteHalfClosure, value: true)
                    .serverChannelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                        }
                    }
                    .childChannelInitializer { channel in
                        connections.add(channel)
                        return initialize(channel)
                    }
                    .bind(host: host, port: port).get()
                port = listener.localAddress?.port ?? port
                listeners.append((listener, quiescing))
            }
        } catch {
            for (listener, _) in listeners { try? await listener.close() }
            throw error
        }
        return listeners
    }

    /// Binds and closes a listener without `SO_REUSEPORT` on `host:port`; returns the port it got.
    static func claimPort(host: String, port: Int, on loop: any EventLoop) async throws -> Int {
        let probe = try await ServerBootstrap(group: loop)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port).get()
        let claimed = probe.localAddress?.port ?? port
        try await probe.close()
        return claimed
    }
}

/// The connections the listeners accepted and that are still open, for closing them on cancellation.
final class OpenConnections: Sendable {
    private let open = Mutex<[ObjectIdentifier: any Channel]>([:])

    func add(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        open.withLock { $0[id] = channel }
        channel.closeFuture.whenComplete { _ in _ = self.open.withLock { $0.removeValue(forKey: id) } }
    }

    func closeAll() {
        for channel in open.withLock({ Array($0.values) }) { channel.close(promise: nil) }
    }
}

/// Runs its action the first time `run()` is called.
final class ShutdownOnce: Sendable {
    private let action: Mutex<(@Sendable () -> Void)?>
    init(_ action: @escaping @Sendable () -> Void) { self.action = Mutex(action) }
    func run() { action.withLock { a in defer { a = nil }; return a }?() }
}
