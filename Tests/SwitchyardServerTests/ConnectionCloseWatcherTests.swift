import NIOCore
import NIOEmbedded
import Synchronization
import SwitchyardHTTP
import Testing

/// A client that leaves must stop the work done for it, whenever it leaves — including before that
/// work began (a stream's body starts after its response head, and the client can go in between).
@Suite struct ConnectionCloseWatcherTests {
    /// Runs `body` in a task of its own: the watcher cancels the task it runs in, which must not be the
    /// test's. (The embedded channel is only touched by one task at a time.)
    static func inOwnTask<T: Sendable>(_ channel: EmbeddedChannel, _ body: @escaping @Sendable (EmbeddedChannel) async throws -> T) async throws -> T {
        nonisolated(unsafe) let channel = channel
        return try await Task { try await body(channel) }.value
    }

    /// A connection with a watcher in its pipeline, open.
    static func connection() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ConnectionCloseWatcher())
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        return channel
    }

    @Test func workForAClientThatStaysRunsUncancelled() async throws {
        let channel = try Self.connection()
        let cancelled = try await Self.inOwnTask(channel) { c in try await ConnectionCloseWatcher.cancellingOnClose(c) { Task.isCancelled } }
        #expect(!cancelled)
        let told = Atomic<Bool>(false)
        try await ConnectionCloseWatcher.watching(channel, onClose: { told.store(true, ordering: .relaxed) }) {}
        let wasTold = told.load(ordering: .relaxed)
        #expect(!wasTold)
    }

    @Test func aClientLeavingDuringTheWorkCancelsIt() async throws {
        let channel = try Self.connection()
        let cancelled = try await Self.inOwnTask(channel) { c in
            try await ConnectionCloseWatcher.cancellingOnClose(c) { () async throws -> Bool in
                try c.close().wait()
                return Task.isCancelled
            }
        }
        #expect(cancelled)
    }

    @Test func workThatStartsAfterTheClientLeftIsCancelledAtOnce() async throws {
        let channel = try Self.connection()
        try channel.close().wait()  // the watcher fires and leaves the registry
        #expect(!channel.isActive)
        let cancelled = try await Self.inOwnTask(channel) { c in try await ConnectionCloseWatcher.cancellingOnClose(c) { Task.isCancelled } }
        #expect(cancelled, "work begun after the client left ran as if it were still there")
        let told = Atomic<Bool>(false)
        try await ConnectionCloseWatcher.watching(channel, onClose: { told.store(true, ordering: .relaxed) }) {}
        let wasTold = told.load(ordering: .relaxed)
        #expect(wasTold, "work begun after the client left was not told")
    }
}
