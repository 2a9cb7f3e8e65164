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
/// It syncs only when something was written since its last sync: a commit through the gateway's own
/// writer (counted by SQLite's WAL hook, ``commits``), or a change of the file's size or modification
/// time (another process, such as the CLI, writing the same database). A `fdatasync` of an unchanged
/// file is not free on ext4: it still sends the disk a cache flush, and an idle gateway sent ~50 a
/// second. A write by another process within the same coarse clock tick as the last sync does not
/// change the modification time; its frames then reach the disk with the next change or the next
/// checkpoint (within a second).
final class WALSyncer: Sendable {
    let path: String
    let interval: Duration
    /// The gateway's own commits (nil: only the file's size and modification time tell).
    let commits: CommitCounter?
    private let thread = NIOThreadPool(numberOfThreads: 1)
    private let stopping = Atomic<Bool>(false)
    private let syncs = Atomic<Int>(0)

    /// `path` is the WAL file (the database's path and `-wal`); it may not exist yet. `commits` counts
    /// the commits of the process's writer connection.
    init(path: String, interval: Duration, commits: CommitCounter?) {
        self.path = path
        self.interval = interval
        self.commits = commits
        thread.start()
        thread.submit { [self] state in
            guard case .active = state else { return }
            self.run()
        }
    }

    private struct Snapshot: Equatable {
        var commits: Int
        var size: Int
        var seconds: Int
        var nanoseconds: Int
    }

    /// Syncs done so far (for tests and diagnostics).
    var syncCount: Int { syncs.load(ordering: .relaxed) }

    private func run() {
        let nanos = interval.components.seconds * 1_000_000_000 + interval.components.attoseconds / 1_000_000_000
        var pause = timespec(tv_sec: Int(nanos / 1_000_000_000), tv_nsec: Int(nanos % 1_000_000_000))
        var fd: Int32 = -1
        var synced: Snapshot?
        while !stopping.load(ordering: .acquiring) {
            _ = nanosleep(&pause, nil)
            if fd < 0 { fd = open(path, O_RDONLY | O_CLOEXEC) }
            guard fd >= 0 else { continue }
            // Taken before the sync: whatever is written while it runs changes the next snapshot.
            var st = stat()
            guard fstat(fd, &st) == 0 else { continue }
            let now = Snapshot(commits: commits?.count ?? 0, size: Int(st.st_size), seconds: st.st_mtim.tv_sec, nanoseconds: st.st_mtim.tv_nsec)
            guard now != synced else { continue }
            if fdatasync(fd) == 0 {
                syncs.add(1, ordering: .relaxed)
                synced = now
            }
        }
        if fd >= 0 { _ = close(fd) }
    }

    /// Stops the syncing thread (within one interval) and waits for it.
    func stop() async {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        try? await thread.shutdownGracefully()
    }
}
