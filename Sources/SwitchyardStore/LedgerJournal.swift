import NIOPosix
import Synchronization
import SwitchyardCore

#if canImport(Glibc)
import Glibc
#endif

/// An append-only journal of the ledger operations the gateway decided in memory and has not yet
/// written to the database: one line per operation, copied into a shared memory mapping of the
/// segment file, so an operation is in the kernel's page cache — and survives a crash of the process
/// (`kill -9`) — from the moment `append` returns, without a system call per line (a `write` per line
/// cost two system calls per metered request). A thread syncs the file to disk every `syncInterval`
/// (as the WAL's syncer does), so a power loss takes back no more than that.
///
/// The journal is split into segments (`<prefix>.<n>`), each preallocated to `segmentBytes` (so a full
/// disk shows up when a segment opens, never as a fault on a write into the mapping) and cut to what it
/// holds when it closes; a segment is deleted once it is closed and every operation in it is in the
/// database. At start, ``replay(prefix:)`` reads what a previous process left behind, in order (a
/// segment left open ends in zero bytes; one prepared and never written holds only zero bytes).
///
/// `append` runs on the event loops, so it makes no system call while the syncer keeps up: the syncer
/// thread opens, preallocates and maps the next segment ahead, and unmaps, cuts, syncs, closes and
/// deletes the ones that filled. (Done on the loop, a rotation cost five system calls every ~4 MB, and
/// cutting the file waited for the disk: `ftruncate` frees blocks, and on a file system mounted with
/// `discard` that waits for the device's discard.) Only when no prepared segment is ready does `append`
/// open one itself.
public final class LedgerJournal: Sendable {
    private struct State {
        /// The segment being written, if one is open.
        var open: OpenSegment?
        /// The next segment, opened ahead by the syncer; it becomes `open` when that one fills.
        var ready: OpenSegment?
        /// The number the next segment created gets. Numbers only grow, in the order segments are
        /// created, and lines go to segments in that order, so replaying by number replays in order.
        var nextNumber: Int
        /// Operations not yet in the database, per segment.
        var unapplied: [Int: Int] = [:]
        /// Segments that filled, for the syncer to unmap, cut, sync, close (and delete if `remove`).
        var retired: [OpenSegment] = []
        /// Lines written so far, so the syncer can tell whether the current segment changed.
        var appended = 0
    }

    /// An open segment: its number, descriptor, shared mapping (`segmentBytes` long, only written under
    /// the journal's lock), and what has been written into it.
    private struct OpenSegment: @unchecked Sendable {
        let number: Int
        let fd: Int32
        let base: UnsafeMutableRawPointer
        var used = 0
        var lines = 0
        /// Retired with every operation already in the database: deleted once closed.
        var remove = false
    }

    public let prefix: String
    /// Operations per segment before the next one starts.
    let segmentLines: Int
    /// Bytes per segment (preallocated); a segment closes before a line that would not fit.
    let segmentBytes: Int
    private let state: Mutex<State>
    private let thread = NIOThreadPool(numberOfThreads: 1)
    private let stopping = Atomic<Bool>(false)
    private let syncInterval: Duration
    private let syncs = Atomic<Int>(0)
    private let inlineOpens = Atomic<Int>(0)

    /// `fdatasync` calls made by the syncer so far (for tests).
    public var syncCount: Int { syncs.load(ordering: .relaxed) }
    /// Segments `append` had to open itself because none was prepared (for tests and diagnostics).
    public var segmentsOpenedByAppend: Int { inlineOpens.load(ordering: .relaxed) }

    /// Starts a new journal after the segments `replay` found (which the caller deletes once applied).
    /// The first segment is opened here, on the caller's thread.
    public init(
        prefix: String, firstSegment: Int, segmentLines: Int = 16_384, segmentBytes: Int = 4 << 20, syncInterval: Duration = .milliseconds(20)
    ) {
        self.prefix = prefix
        self.segmentLines = segmentLines
        self.segmentBytes = max(4096, segmentBytes)
        self.syncInterval = syncInterval
        state = Mutex(State(nextNumber: firstSegment))
        if let first = openSegment(number: firstSegment) {
            state.withLock { $0.ready = first; $0.nextNumber = firstSegment + 1 }
        }
        thread.start()
        thread.submit { [self] s in
            guard case .active = s else { return }
            self.syncLoop()
        }
    }

    public func path(of segment: Int) -> String { "\(prefix).\(segment)" }

    /// Appends one operation; returns the segment it went to, or nil if it could not be written (the
    /// caller then writes the operation to the database before going on).
    public func append(_ operation: LedgerOperation) -> Int? {
        let line = LedgerJournalCodec.encodeLine(operation)
        guard line.count <= segmentBytes else { return nil }
        return state.withLock { s -> Int? in
            if s.open.map({ $0.lines >= segmentLines || $0.used + line.count > segmentBytes }) ?? true {
                if var full = s.open {
                    full.remove = (s.unapplied[full.number] ?? 0) == 0
                    s.retired.append(full)
                    s.open = nil
                }
                if let ready = s.ready {
                    s.open = ready
                    s.ready = nil
                } else {
                    // The syncer has not caught up (or cannot open one): open it here.
                    let number = s.nextNumber
                    s.nextNumber += 1
                    inlineOpens.add(1, ordering: .relaxed)
                    // On failure, tried again with the next operation, under the next number.
                    guard let opened = openSegment(number: number) else { return nil }
                    s.open = opened
                }
            }
            line.withUnsafeBytes { (s.open!.base + s.open!.used).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            s.open!.used += line.count
            s.open!.lines += 1
            s.appended += 1
            let number = s.open!.number
            s.unapplied[number, default: 0] += 1
            return number
        }
    }

    /// Creates, preallocates and maps segment `number`; nil (nothing left behind) when any step fails,
    /// a full disk included.
    private func openSegment(number: Int) -> OpenSegment? {
        let path = path(of: number)
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return nil }
        let base = posix_fallocate(fd, 0, off_t(segmentBytes)) == 0
            ? mmap(nil, segmentBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED
        guard let base, base != MAP_FAILED else {
            _ = Glibc.close(fd)
            unlink(path)
            return nil
        }
        return OpenSegment(number: number, fd: fd, base: base)
    }

    /// Unmaps a segment that filled (or the last one, at close), cuts its file to the lines it holds,
    /// syncs and closes it, and deletes it if every operation in it is in the database.
    private func finish(_ segment: OpenSegment) {
        munmap(segment.base, segmentBytes)
        _ = ftruncate(segment.fd, off_t(segment.used))
        if fdatasync(segment.fd) == 0 { syncs.add(1, ordering: .relaxed) }
        _ = Glibc.close(segment.fd)
        if segment.remove { unlink(path(of: segment.number)) }
    }

    /// Drops a prepared segment that never became current (it holds no line).
    private func discard(_ segment: OpenSegment) {
        munmap(segment.base, segmentBytes)
        _ = Glibc.close(segment.fd)
        unlink(path(of: segment.number))
    }

    /// Records that `count` operations of `segment` are in the database; deletes the segment when it
    /// is closed and none is left.
    public func applied(segment: Int, count: Int = 1) {
        let remove = state.withLock { s -> Bool in
            let left = (s.unapplied[segment] ?? 0) - count
            if left > 0 {
                s.unapplied[segment] = left
                return false
            }
            s.unapplied[segment] = nil
            return segment != s.open?.number
        }
        if remove { unlink(path(of: segment)) }
    }

    /// Operations appended and not yet reported applied.
    public var pending: Int { state.withLock { $0.unapplied.values.reduce(0, +) } }

    /// Syncs and closes the journal; with nothing left unapplied, deletes its segments.
    public func close() async {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        try? await thread.shutdownGracefully()
        let (retired, ready) = state.withLock { s -> ([OpenSegment], OpenSegment?) in
            if var last = s.open {
                // Segments leave `unapplied` when their last operation is written: empty means all are in.
                last.remove = s.unapplied.isEmpty
                s.retired.append(last)
                s.open = nil
            }
            defer { s.retired = []; s.ready = nil }
            return (s.retired, s.ready)
        }
        for segment in retired { finish(segment) }
        if let ready { discard(ready) }
    }

    private func syncLoop() {
        let nanos = syncInterval.components.seconds * 1_000_000_000 + syncInterval.components.attoseconds / 1_000_000_000
        var pause = timespec(tv_sec: Int(nanos / 1_000_000_000), tv_nsec: Int(nanos % 1_000_000_000))
        // Lines already synced. A segment with no new line is not synced again: a `fdatasync` with
        // nothing to write still sends the disk a cache flush (see `WALSyncer`).
        var synced = 0
        while !stopping.load(ordering: .acquiring) {
            prepareNext()
            _ = nanosleep(&pause, nil)
            // The current segment is synced through a duplicate, so appends never wait for the disk.
            let (current, retired, appended) = state.withLock { s -> (Int32, [OpenSegment], Int) in
                defer { s.retired = [] }
                return (s.open.map { s.appended != synced ? dup($0.fd) : -1 } ?? -1, s.retired, s.appended)
            }
            if current >= 0 {
                if fdatasync(current) == 0 { syncs.add(1, ordering: .relaxed) }
                _ = Glibc.close(current)
            }
            for segment in retired { finish(segment) }
            if current >= 0 || !retired.isEmpty { synced = appended }
        }
    }

    /// Opens the segment after the current one, unless one is ready. Its number is taken before the
    /// file is created; if `append` opened a segment of its own meanwhile (a later number), the prepared
    /// one would take lines after that one's under an earlier number, so it is dropped instead.
    private func prepareNext() {
        let number = state.withLock { s -> Int? in
            guard s.ready == nil else { return nil }
            defer { s.nextNumber += 1 }
            return s.nextNumber
        }
        guard let number, let segment = openSegment(number: number) else { return }
        let taken = state.withLock { s -> Bool in
            guard s.ready == nil, s.nextNumber == number + 1, !stopping.load(ordering: .relaxed) else { return false }
            s.ready = segment
            return true
        }
        if !taken { discard(segment) }
    }

    // MARK: Reading back

    /// What a previous process left: its segments in order and the operations in them.
    public struct Leftover: Sendable {
        public var segments: [Int]
        public var operations: [LedgerOperation]
        /// Lines that could not be read (a line cut short by a crash, at the end of a segment).
        public var unreadable: Int
        /// The segment number a new journal starts at.
        public var nextSegment: Int { (segments.max() ?? 0) + 1 }
    }

    /// Reads every segment under `prefix`, oldest first.
    public static func replay(prefix: String) -> Leftover {
        let directory: String
        let base: String
        if let slash = prefix.lastIndex(of: "/") {
            directory = String(prefix[..<slash]).isEmpty ? "/" : String(prefix[..<slash])
            base = String(prefix[prefix.index(after: slash)...])
        } else {
            directory = "."
            base = prefix
        }
        var segments: [Int] = []
        if let dir = opendir(directory) {
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                guard name.hasPrefix(base + "."), let n = Int(name.dropFirst(base.count + 1)) else { continue }
                segments.append(n)
            }
            closedir(dir)
        }
        segments.sort()
        var operations: [LedgerOperation] = []
        var unreadable = 0
        for segment in segments {
            guard let text = readFile("\(prefix).\(segment)") else { continue }
            for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
                if let op = LedgerJournalCodec.decode(line) { operations.append(op) } else { unreadable += 1 }
            }
        }
        return Leftover(segments: segments, operations: operations, unreadable: unreadable)
    }

    /// Deletes segments a replay read (once their operations are in the database).
    public static func remove(prefix: String, segments: [Int]) {
        for segment in segments { unlink("\(prefix).\(segment)") }
    }

    private static func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { _ = Glibc.close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        // A segment the previous process left open ends in its preallocated zero bytes.
        if let end = bytes.firstIndex(of: 0) { bytes.removeSubrange(end...) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// One ledger operation per line: fields separated by tabs; tabs, line breaks and backslashes in text
/// escaped; `\N` for a missing value. `R` reservations, `S` settlements (`c<cost>` or `r` for a
/// refund, then the usage row), `U` usage rows.
public enum LedgerJournalCodec {
    public static func encode(_ operation: LedgerOperation) -> String {
        var line = encodeLine(operation)
        line.removeLast()
        return String(decoding: line, as: UTF8.self)
    }

    /// The operation's line, newline included, as the bytes `append` writes (built in place: the
    /// journal writes two lines per metered request).
    static func encodeLine(_ operation: LedgerOperation) -> [UInt8] {
        var out = LineWriter()
        switch operation {
        case .reserve(let r):
            out.raw("R")
            out.text(r.id)
            out.text(r.requestID)
            out.text(r.userID)
            out.text(r.keyID)
            out.number(r.amount)
            out.text(r.model)
        case .settle(let s):
            out.raw("S")
            switch s.kind {
            case .refund: out.raw("\tr")
            case .charge(let cost):
                out.raw("\tc")
                out.digits(cost)
            }
            out.usage(s.usage)
        case .usage(let u):
            out.raw("U")
            out.usage(u)
        }
        out.bytes.append(0x0A)
        return out.bytes
    }

    /// Appends tab-led fields to a line.
    private struct LineWriter {
        var bytes: [UInt8] = []

        init() { bytes.reserveCapacity(512) }  // a settlement line with long ids passes 320 bytes

        mutating func raw(_ s: StaticString) {
            s.withUTF8Buffer { bytes.append(contentsOf: $0) }
        }

        mutating func digits(_ n: Int64) {
            if n < 0 { bytes.append(0x2D) }
            // Written backwards into a local buffer, then appended: reversing `bytes[start...]` in place
            // went through an array slice, which copied the line twice per number.
            var m = n.magnitude
            var scratch: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: enough for 20 digits
            withUnsafeMutableBytes(of: &scratch) { raw in
                var i = raw.count
                repeat {
                    i -= 1
                    raw[i] = UInt8(0x30 + m % 10)
                    m /= 10
                } while m != 0
                bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[i...]))
            }
        }

        mutating func number(_ n: Int64) {
            bytes.append(0x09)
            digits(n)
        }

        mutating func flag(_ b: Bool) { bytes.append(0x09); bytes.append(b ? 0x31 : 0x30) }

        mutating func text(_ s: String) {
            bytes.append(0x09)
            // Ids, models and outcomes hold nothing to escape: they go in whole, not byte by byte.
            var s = s
            let whole = s.withUTF8 { utf8 -> Bool in
                for c in utf8 where c == 0x5C || c == 0x09 || c == 0x0A || c == 0x0D { return false }
                bytes.append(contentsOf: utf8)
                return true
            }
            if whole { return }
            for c in s.utf8 {
                switch c {
                case 0x5C: bytes.append(0x5C); bytes.append(0x5C)
                case 0x09: bytes.append(0x5C); bytes.append(0x74)
                case 0x0A: bytes.append(0x5C); bytes.append(0x6E)
                case 0x0D: bytes.append(0x5C); bytes.append(0x72)
                default: bytes.append(c)
                }
            }
        }

        mutating func optional(_ s: String?) {
            if let s { text(s) } else { raw("\t\\N") }
        }

        mutating func usage(_ u: UsageRecord) {
            text(u.id); text(u.requestID); number(u.createdAt); optional(u.userID); optional(u.keyID); text(u.model)
            optional(u.provider); optional(u.upstreamModel); number(Int64(u.inputTokens)); number(Int64(u.outputTokens)); number(Int64(u.cachedTokens))
            flag(u.usageEstimated); number(u.credits); number(Int64(u.status)); text(u.outcome); number(Int64(u.latencyMs)); flag(u.stream)
            optional(u.errorCode)
        }
    }

    public static func decode(_ line: Substring) -> LedgerOperation? {
        let f = line.split(separator: "\t", omittingEmptySubsequences: false)
        guard let tag = f.first else { return nil }
        switch tag {
        case "R":
            guard f.count == 7, let amount = Int64(f[5]) else { return nil }
            return .reserve(ReservationRequest(
                id: unescape(f[1]), requestID: unescape(f[2]), userID: unescape(f[3]), keyID: unescape(f[4]), amount: amount,
                model: unescape(f[6]), admitted: true))
        case "S":
            guard f.count == 20, let usage = usage(f[2...]) else { return nil }
            let kind: Settlement.Kind
            if f[1] == "r" {
                kind = .refund
            } else if f[1].hasPrefix("c"), let cost = Int64(f[1].dropFirst()) {
                kind = .charge(cost: cost)
            } else {
                return nil
            }
            return .settle(Settlement(kind, usage: usage))
        case "U":
            guard f.count == 19, let usage = usage(f[1...]) else { return nil }
            return .usage(usage)
        default:
            return nil
        }
    }

    private static func usage(_ f: ArraySlice<Substring>) -> UsageRecord? {
        let v = Array(f)
        guard v.count == 18, let created = Int64(v[2]), let input = Int(v[8]), let output = Int(v[9]), let cached = Int(v[10]),
              let credits = Int64(v[12]), let status = Int(v[13]), let latency = Int(v[15])
        else { return nil }
        return UsageRecord(
            id: unescape(v[0]), requestID: unescape(v[1]), createdAt: created, userID: optional(v[3]), keyID: optional(v[4]),
            model: unescape(v[5]), provider: optional(v[6]), upstreamModel: optional(v[7]), inputTokens: input, outputTokens: output,
            cachedTokens: cached, usageEstimated: v[11] == "1", credits: credits, status: status, outcome: unescape(v[14]),
            latencyMs: latency, stream: v[16] == "1", errorCode: optional(v[17]))
    }

    static func unescape(_ s: Substring) -> String {
        guard s.utf8.contains(0x5C) else { return String(s) }
        var out = ""
        var escaped = false
        for c in s.unicodeScalars {
            if escaped {
                switch c {
                case "t": out += "\t"
                case "n": out += "\n"
                case "r": out += "\r"
                default: out.unicodeScalars.append(c)
                }
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else {
                out.unicodeScalars.append(c)
            }
        }
        return out
    }

    private static func optional(_ s: Substring) -> String? { s == "\\N" ? nil : unescape(s) }
}
