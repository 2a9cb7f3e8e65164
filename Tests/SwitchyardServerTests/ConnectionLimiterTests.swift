import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SwitchyardHTTP
import Testing

/// The limiter in front of every client connection: the descriptor budget, and the receive buffer an
/// accepted connection starts with and may grow to (an open stream keeps its connection's buffer).
@Suite struct ConnectionLimiterTests {
    /// A listener whose accepted connections go through a ``ConnectionLimiter``; each accepted channel
    /// is handed to `accepted`.
    static func listen(budget: ConnectionBudget, accepted: AsyncStream<any Channel>.Continuation) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(ConnectionLimiter(budget: budget))
                    accepted.yield(child)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    static func connect(to server: any Channel) async throws -> any Channel {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(to: server.localAddress!).get()
    }

    /// Whether `channel` closes within `seconds` (false instead of waiting forever when it stays open).
    static func closes(_ channel: any Channel, within seconds: Int64) async throws -> Bool {
        let loop = channel.eventLoop
        let promise = loop.makePromise(of: Bool.self)
        let done = NIOLockedValueBox(false)
        let settle: @Sendable (Bool) -> Void = { closed in
            if done.withLockedValue({ d in defer { d = true }; return !d }) { promise.succeed(closed) }
        }
        channel.closeFuture.whenComplete { _ in settle(true) }
        loop.scheduleTask(in: .seconds(seconds)) { settle(false) }
        return try await promise.futureResult.get()
    }

    @Test func anAcceptedConnectionReadsIntoASmallBufferThatMayGrowTo16KB() async throws {
        let (channels, sink) = AsyncStream<any Channel>.makeStream()
        let server = try await Self.listen(budget: ConnectionBudget(limit: 8), accepted: sink)
        let client = try await Self.connect(to: server)
        var iterator = channels.makeAsyncIterator()
        let child = try #require(await iterator.next())
        let option = try await child.eventLoop.submit { try child.syncOptions!.getOption(ChannelOptions.recvAllocator) }.get()
        let allocator = try #require(option as? AdaptiveRecvByteBufferAllocator)
        #expect(allocator.initial == 512, "SwiftNIO's default first read is 2 KB, which every open stream's connection keeps")
        #expect(allocator.maximum == ConnectionLimiter.maxReadSize)
        // Once it admitted the connection, the limiter has left its pipeline: no read passes through it.
        let stillThere = try await child.eventLoop.submit { (try? child.pipeline.syncOperations.handler(type: ConnectionLimiter.self)) != nil }.get()
        #expect(!stillThere)
        try await client.close()
        try await server.close()
    }

    @Test func connectionsBeyondTheBudgetAreClosedAndAClosedOneGivesItsPlaceBack() async throws {
        let budget = ConnectionBudget(limit: 1)
        let (channels, sink) = AsyncStream<any Channel>.makeStream()
        let server = try await Self.listen(budget: budget, accepted: sink)
        var iterator = channels.makeAsyncIterator()
        let first = try await Self.connect(to: server)
        let firstChild = try #require(await iterator.next())
        #expect(budget.current == 1)

        let second = try await Self.connect(to: server)
        let secondChild = try #require(await iterator.next())
        #expect(try await Self.closes(secondChild, within: 10), "a connection beyond the budget was kept")
        #expect(try await Self.closes(second, within: 10))
        #expect(firstChild.isActive)
        #expect(budget.current == 1)

        try await first.close()
        try await firstChild.closeFuture.get()
        let deadline = ContinuousClock.now + .seconds(10)
        while budget.current != 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(budget.current == 0, "a closed connection did not give its place back")
        let third = try await Self.connect(to: server)
        _ = try #require(await iterator.next())
        #expect(budget.current == 1, "the place a closed connection gave back was not taken by the next")  // a refused one counts 0
        try await third.close()
        try await server.close()
    }
}
