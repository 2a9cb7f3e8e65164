import HummingbirdCore
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import ServiceLifecycle

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
/// sockets, and a connection's channel, its task (started from the accepting loop, which Swift
/// Concurrency's global executor keeps it on) and its upstream connection (the pool prefers the
/// request's loop) stay on one thread from accept to close.
///
/// Everything else is as Hummingbird's server does it: `HTTP1Channel` sets up and serves each
/// connection, and a graceful shutdown closes the listeners and lets open connections finish.
struct LoopListeners<ChildChannel: ServerChildChannel>: Service {
    let childChannel: ChildChannel
    let host: String
    let port: Int
    let backlog: Int
    let loops: [any EventLoop]
    let logger: Logger
    let onServerRunning: @Sendable (any Channel) async -> Void

    typealias Listener = NIOAsyncChannel<ChildChannel.Value, Never>

    func run() async throws {
        let listeners = try await bind()
        logger.info("Server started and listening on \(host):\(listeners[0].0.channel.localAddress?.port ?? port)",
            metadata: ["listeners": .stringConvertible(listeners.count)])
        await withGracefulShutdownHandler {
            await onServerRunning(listeners[0].0.channel)
            await withDiscardingTaskGroup { group in
                for (listener, _) in listeners {
                    group.addTask { await accept(on: listener) }
                }
            }
        } onGracefulShutdown: {
            // Each listener closes and its open connections are asked to finish what they are serving.
            for (_, quiescing) in listeners { quiescing.initiateShutdown(promise: nil) }
        }
    }

    /// Serves one listener's connections, each in a task of its own started on that listener's loop.
    private func accept(on listener: Listener) async {
        let childChannel = self.childChannel
        let logger = self.logger
        await withDiscardingTaskGroup { group in
            do {
                try await listener.executeThenClose { inbound in
                    for try await connection in inbound {
                        group.addTask { await childChannel.handle(value: connection, logger: logger) }
                    }
                }
            } catch {
                logger.error("Waiting on child channel: \(error)")
            }
        }
    }

    /// Binds a listener per loop. With more than one loop a given port is first claimed by a plain
    /// socket, which fails as usual if another process holds it; the `SO_REUSEPORT` group then binds
    /// that port. Without the probe a second gateway started on the same port by the same user would
    /// silently share its connections instead of failing. Port 0 needs no probe: the first listener
    /// gets a free port from the kernel and the others join it. (Probing port 0 too left the free port
    /// unbound between the probe's close and the first listener's bind, and a busy machine handed it
    /// to someone else in between: a start that failed at random.)
    private func bind() async throws -> [(Listener, ServerQuiescingHelper)] {
        var port = self.port
        if loops.count > 1, port != 0 { port = try await Self.claimPort(host: host, port: port, on: loops[0]) }
        var listeners: [(Listener, ServerQuiescingHelper)] = []
        do {
            for loop in loops {
                let quiescing = ServerQuiescingHelper(group: loop)
                let childChannel = self.childChannel
                let logger = self.logger
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
                    .bind(host: host, port: port, serverBackPressureStrategy: nil) { channel in
                        childChannel.setup(channel: channel, logger: logger)
                    }
                port = listener.channel.localAddress?.port ?? port
                listeners.append((listener, quiescing))
            }
        } catch {
            for (listener, _) in listeners { try? await listener.channel.close() }
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
