#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Writes log lines to a file descriptor (stderr) from a thread of its own, so that the threads which
/// log — the event loops, one access line per request — never block in `write(2)`.
///
/// A process writing its log to a pipe that nobody reads (a stuck log shipper, a terminal paused with
/// Ctrl-S) blocks in `write` once the pipe's 64 KB are full. Written from the event loops, that stalled
/// every connection the loop served. Here a line is appended to a bounded buffer under a lock and the
/// writer thread drains it; when the buffer is full, lines are dropped and counted, and once writing
/// resumes the writer reports how many with a line of its own (``droppedNotice``). Nothing else waits.
///
/// Lines reach the descriptor in the order they were logged, in batches: after each write the writer
/// pauses ``batchPause`` (10 ms) so that a busy gateway makes at most a hundred `write` calls a second,
/// not one per request. Each write wakes this thread, and on a small machine a woken thread takes its
/// core from an event loop: at 1 ms the writer woke about a thousand times a second under load. ``flush(timeout:)`` waits for the buffer to empty (the server calls it as it exits).
public final class LogWriter: @unchecked Sendable {
    /// Where the writer is. Guarded by `state`, together with `pending` and `dropped`.
    private enum Phase: Equatable { case idle, pending, writing }

    private let state = ConditionLock<Phase>(value: .idle)
    private var pending = ByteBuffer()
    private var spare = ByteBuffer()
    private var dropped = 0
    /// The condition's value, readable while the lock is held.
    private var phase = Phase.idle
    private let capacity: Int
    private let fd: Int32
    private let droppedNotice: @Sendable (Int) -> ByteBuffer
    private let batchPause: UInt32
    private let thread: NIOThreadPool

    /// - Parameters:
    ///   - capacity: bytes of log lines held while the descriptor does not take them; lines beyond it are dropped.
    ///   - droppedNotice: the line reporting `n` dropped lines, in the log's format.
    public init(fd: Int32 = 2, capacity: Int, batchPauseMicroseconds: UInt32 = 10_000, droppedNotice: @escaping @Sendable (Int) -> ByteBuffer) {
        self.fd = fd
        self.capacity = max(capacity, 4096)
        self.droppedNotice = droppedNotice
        self.batchPause = batchPauseMicroseconds
        pending.reserveCapacity(min(self.capacity, 64 << 10))
        thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        thread.submit { [self] _ in run() }
    }

    /// Queues `line` (a complete line, newline included); drops it if the buffer is full.
    public func append(_ line: ByteBuffer) {
        state.lock()
        guard pending.readableBytes + line.readableBytes <= capacity else {
            dropped += 1
            state.unlock()
            return
        }
        pending.writeImmutableBuffer(line)
        // Wakes the writer only if it waits for lines; while it writes it will find these next.
        if phase == .idle { phase = .pending }
        state.unlock(withValue: phase)
    }

    /// Lines dropped since the last notice (for tests).
    public var droppedSinceNotice: Int {
        state.lock()
        defer { state.unlock() }
        return dropped
    }

    /// Waits until every queued line was handed to the descriptor, or `timeout` passed (a descriptor
    /// that takes nothing must not keep the process from exiting). Returns whether it emptied.
    @discardableResult
    public func flush(timeout: Double = 2) -> Bool {
        guard state.lock(whenValue: .idle, timeoutSeconds: timeout) else { return false }
        state.unlock()
        return true
    }

    private func run() {
        while true {
            state.lock(whenValue: .pending)
            // The queued lines leave; the emptied buffer of the last round takes their place.
            var batch = ByteBuffer()
            swap(&batch, &pending)
            swap(&pending, &spare)
            let lost = dropped
            dropped = 0
            phase = .writing
            state.unlock(withValue: phase)

            if lost > 0 { batch.writeImmutableBuffer(droppedNotice(lost)) }
            writeAll(batch)
            batch.clear()

            state.lock()
            spare = batch
            phase = pending.readableBytes > 0 || dropped > 0 ? .pending : .idle
            state.unlock(withValue: phase)
            if batchPause > 0 { usleep(batchPause) }
        }
    }

    private func writeAll(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { writeFully(fd, $0) }
    }
}

/// Writes all of `bytes` to `fd`, going on after partial writes and interruptions; stops at an error
/// (a closed or broken descriptor: there is nowhere to report it).
func writeFully(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) {
    var offset = 0
    while offset < bytes.count {
        let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
        if n < 0, errno == EINTR { continue }
        if n <= 0 { return }
        offset += n
    }
}
