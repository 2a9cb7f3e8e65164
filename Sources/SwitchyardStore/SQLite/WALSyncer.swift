import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Writes a WAL file's new frames to disk every `interval` (`fdatasync`), on a thread of its own.
///
/// The once-a-second checkpoint must `fsync` the WAL before copying it into the database. Left to
/// itself, that fsync writes a whole second of frames at once, and while that write is in the disk's
/// queue, the commits on the request path wait inside `pwrite` on the WAL: a WAL frame is 4,120
/// bytes, so most frame writes cover only part of a block, and ext4 then reads the block first. Those
/// waits made about one request a second take 10–80 ms. Synced in small steps, the checkpoint finds
/// little left to write (docs/benchmarks.md, eighth round). It also narrows what a power loss can take
/// back under `synchronous = NORMAL` from everything since the last checkpoint to one interval.
///
/// A sync of a file with nothing new to write costs a system call and no I/O.
final class WALSyncer: Sendable {
    let path: String
    let interval: Duration
    private let thread = NIOThreadPool(numberOfThreads: 1)
    private let stopping = Atomic<Bool>(false)
    private let syncs = Atomic<Int>(0)

    /// `path` is the WAL file (the database's path and `-wal`); it may not exist yet.
    init(path: String, interval: Duration) {
        self.path = path
        self.interval = interval
        thread.start()
        thread.submit { [self] state in
            guard case .active = state else { return }
            self.run()
        }
    }

    /// Syncs done so far (for tests and diagnostics).
    var syncCount: Int { syncs.load(ordering: .relaxed) }

    private func run() {
        let nanos = interval.components.seconds * 1_000_000_000 + interval.components.attoseconds / 1_000_000_000
        var pause = timespec(tv_sec: Int(nanos / 1_000_000_000), tv_nsec: Int(nanos % 1_000_000_000))
        var fd: Int32 = -1
        while !stopping.load(ordering: .acquiring) {
            _ = nanosleep(&pause, nil)
            if fd < 0 { fd = open(path, O_RDONLY | O_CLOEXEC) }
            if fd >= 0, fdatasync(fd) == 0 { syncs.add(1, ordering: .relaxed) }
        }
        if fd >= 0 { _ = close(fd) }
    }

    /// Stops the syncing thread (within one interval) and waits for it.
    func stop() async {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        try? await thread.shutdownGracefully()
    }
}
