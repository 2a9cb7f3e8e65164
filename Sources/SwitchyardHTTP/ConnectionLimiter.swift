import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How many client connections the server keeps open at once, shared by every connection's
/// ``ConnectionLimiter``.
///
/// A process that runs out of file descriptors fails in places that cannot recover — libdispatch,
/// which Swift concurrency runs on, traps when it cannot open `/proc` files — so the gateway refuses
/// connections beyond what its descriptor limit can carry (each client may need an upstream socket too)
/// instead of accepting them into a crash.
public final class ConnectionBudget: Sendable {
    public let limit: Int
    private let open = Atomic<Int>(0)

    public init(limit: Int) { self.limit = max(1, limit) }

    public var current: Int { open.load(ordering: .relaxed) }

    func acquire() -> Bool {
        let now = open.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue
        if now > limit {
            open.wrappingSubtract(1, ordering: .acquiringAndReleasing)
            return false
        }
        return true
    }

    func release() { open.wrappingSubtract(1, ordering: .acquiringAndReleasing) }

    /// Raises the soft descriptor limit to the hard one and returns the connection budget that fits it:
    /// two descriptors per client connection (its socket and an upstream one), with `reserve` kept for
    /// the database, logs and the runtime.
    public static func fromDescriptorLimit(reserve: Int = 256) -> (budget: ConnectionBudget, descriptors: Int) {
        var descriptors = 1024
        #if canImport(Glibc)
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            if limit.rlim_cur < limit.rlim_max {
                var raised = limit
                raised.rlim_cur = limit.rlim_max
                if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
            }
            descriptors = Int(min(limit.rlim_cur, 1 << 20))  // RLIM_INFINITY is the largest value
        }
        #endif
        return (ConnectionBudget(limit: max(16, (descriptors - reserve) / 2)), descriptors)
    }
}

/// Closes a new client connection at once when the ``ConnectionBudget`` is spent, and bounds the
/// receive buffer an accepted connection keeps.
public final class ConnectionLimiter: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    public typealias InboundIn = NIOAny

    /// The largest read on a client connection. SwiftNIO's adaptive allocator grows a connection's
    /// receive buffer to its largest read (up to 64 KB by default) and keeps it pooled on the channel
    /// for as long as the connection lives; a client that once sent a large prompt and then holds its
    /// connection for a long stream would hold that buffer the whole time. Large bodies take a few more
    /// reads instead.
    public static let maxReadSize = 16 * 1024

    /// The first read's size. A request head and a small body fit; a larger body grows the next read
    /// (SwiftNIO's adaptive allocator jumps from 512 bytes to 8 KB after one full read). SwiftNIO's
    /// default is 2 KB, and an open stream keeps its connection's buffer pooled for as long as it lasts.
    public static let initialReadSize = 512

    private let budget: ConnectionBudget

    public init(budget: ConnectionBudget) { self.budget = budget }

    /// Admits the connection or closes it. An admitted connection gives its place back when it closes
    /// (its close future), and the limiter leaves the pipeline at once: it has nothing to do with the
    /// connection's reads, each of which would otherwise pass through it.
    public func handlerAdded(context: ChannelHandlerContext) {
        guard budget.acquire() else {
            context.close(promise: nil)
            return
        }
        let budget = self.budget
        context.channel.closeFuture.whenComplete { _ in budget.release() }
        try? context.channel.syncOptions?.setOption(
            ChannelOptions.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: Self.initialReadSize, maximum: Self.maxReadSize))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
