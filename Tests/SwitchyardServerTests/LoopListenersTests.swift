import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import SwitchyardServer

/// The gateway's listeners (``LoopListeners``): one socket per event loop on one port, a connection
/// served on the loop that accepted it, and a port that is already taken refused as before.
@Suite struct LoopListenersTests {
    /// Records, for each accepted connection, the loop that accepted it (its listener's) and whether
    /// the connection lives on that same loop; then closes it.
    struct Probe: Sendable {
        struct Value: Sendable {
            let acceptedOn: ObjectIdentifier
            let servedOnSameLoop: Bool
        }
        let seen: NIOLockedValueBox<[Value]>

        func initialize(_ channel: any Channel) -> EventLoopFuture<Void> {
            let listener = channel.parent!.eventLoop
            seen.withLockedValue {
                $0.append(Value(acceptedOn: ObjectIdentifier(listener), servedOnSameLoop: listener === channel.eventLoop))
            }
            // Closed once set up, from the loop it lives on.
            channel.eventLoop.execute { channel.close(promise: nil) }
            return channel.eventLoop.makeSucceededVoidFuture()
        }
    }

    static func listeners(_ probe: Probe, group: MultiThreadedEventLoopGroup, port: Int, running: @escaping @Sendable (any Channel) async -> Void)
        -> LoopListeners
    {
        LoopListeners(
            host: "127.0.0.1", port: port, backlog: 64, loops: Array(group.makeIterator()),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), onServerRunning: running,
            initialize: probe.initialize)
    }

    /// Runs listeners on a free port while `body` uses that port, then stops them.
    static func whileListening(_ probe: Probe, group: MultiThreadedEventLoopGroup, _ body: @escaping @Sendable (Int) async throws -> Void)
        async throws
    {
        let (ports, sink) = AsyncStream<Int>.makeStream()
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                defer { sink.finish() }  // listeners that fail to start end the stream: the #require below fails, nothing hangs
                try await listeners(probe, group: group, port: 0) { sink.yield($0.localAddress!.port!) }.run()
            }
            var iterator = ports.makeAsyncIterator()
            try await body(try #require(await iterator.next()))
            tasks.cancelAll()
        }
    }

    struct StartedInsteadOfRefusing: Error {}

    /// Runs `listeners`, which should fail to bind at once; if they are still running after 5 s they
    /// started, and are stopped with ``StartedInsteadOfRefusing`` (so a regression fails, not hangs).
    static func refusedOrTimedOut(_ listeners: LoopListeners) async throws {
        try await withThrowingTaskGroup(of: Void.self) { race in
            race.addTask { try await listeners.run() }
            race.addTask {
                try await Task.sleep(for: .seconds(5))
                throw StartedInsteadOfRefusing()
            }
            defer { race.cancelAll() }
            try await race.next()
        }
    }

    @Test func eachConnectionIsServedOnTheLoopThatAcceptedIt() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let seen = NIOLockedValueBox<[Probe.Value]>([])
        try await Self.whileListening(Probe(seen: seen), group: group) { port in
            for _ in 0..<24 {
                let client = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port).get()
                try await client.closeFuture.get()  // the probe closes it once served
            }
        }
        let values = seen.withLockedValue { $0 }
        #expect(values.count == 24)
        #expect(values.allSatisfy { $0.servedOnSameLoop }, "a connection was served on another loop than its listener's")
        // The kernel spread the connections over both loops' sockets (all 24 on one: odds of 2^-23).
        #expect(Set(values.map(\.acceptedOn)).count == 2)
        try await group.shutdownGracefully()
    }

    /// With `SO_REUSEPORT` alone, a second gateway on the same port would start and quietly take half
    /// the first one's connections; the port is claimed by a plain socket first, so it fails instead.
    @Test func aPortAlreadyListenedOnIsRefused() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let seen = NIOLockedValueBox<[Probe.Value]>([])
        try await Self.whileListening(Probe(seen: seen), group: group) { port in
            await #expect(throws: IOError.self) {
                try await Self.refusedOrTimedOut(Self.listeners(Probe(seen: seen), group: group, port: port) { _ in })
            }
        }
        // A port held by another program (a listener without SO_REUSEPORT) is refused too.
        let other = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        await #expect(throws: IOError.self) {
            try await Self.refusedOrTimedOut(Self.listeners(Probe(seen: seen), group: group, port: other.localAddress!.port!) { _ in })
        }
        try await other.close()
        try await group.shutdownGracefully()
    }
}
