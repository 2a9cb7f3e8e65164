import NIOCore
import NIOPosix

/// Flushes written channels together once the event loop has handled the I/O events it woke up for,
/// instead of one by one as each is written. At 64 connections a loop wakes for several sockets at
/// once, and every flush is a `writev` that wakes whoever reads the other end (the provider, the
/// client), which then preempts the loop (2 cores, shared with them) before it reaches the next socket:
/// about one preemption per request. Flushed together, the peers wake together and find more to read
/// per wake-up.
///
/// The first flush of a loop's round goes out at once, so a lone request (one connection) waits for
/// nothing: not for the work that follows its write (the access line, the connection's return to the
/// pool). Later ones in the same round wait for the round's end: a task of the same loop (queued
/// without a wake-up: a loop queues tasks for itself without writing to its eventfd), which runs after
/// the current batch of events and before the loop waits again.
public enum DeferredFlush {
    // Only ever touched by its own thread (a thread-specific value).
    private final class Round: @unchecked Sendable {
        var open = false
        /// The loop whose task ends the round: the thread's only one, except for embedded test loops.
        var loop: ObjectIdentifier?
        var waiting: [ChannelHandlerContext] = []

        func end() {
            // A flush can run handlers that write and flush again: they are flushed before the round ends.
            while !waiting.isEmpty {
                let due = waiting
                waiting.removeAll(keepingCapacity: true)
                for context in due { context.flush() }
            }
            open = false
        }
    }

    private static let round = ThreadSpecificVariable<Round>()

    /// Flushes `context` now if it is the first of the loop's round, otherwise when the round ends.
    /// Call on `context`'s loop.
    public static func flush(_ context: ChannelHandlerContext) {
        context.eventLoop.preconditionInEventLoop()
        let current: Round
        if let existing = round.currentValue {
            current = existing
        } else {
            current = Round()
            round.currentValue = current
        }
        let loop = ObjectIdentifier(context.eventLoop)
        guard current.open else {
            current.open = true
            current.loop = loop
            context.flush()
            context.eventLoop.execute { current.end() }
            return
        }
        // Another loop on this thread (only test loops share a thread) would end the round, maybe never.
        guard current.loop == loop else {
            context.flush()
            return
        }
        current.waiting.append(context)
    }
}
