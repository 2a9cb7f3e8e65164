import NIOCore
import NIOPosix
import Synchronization
import VaporCSQLite

#if canImport(Glibc)
import Glibc
#endif

/// A value bound to or read from a statement.
public enum SQLValue: Sendable, Equatable {
    case null
    case integer(Int)
    case float(Double)
    case text(String)
    case blob([UInt8])

    public var string: String? { if case .text(let s) = self { return s } else { return nil } }
    public var integer: Int? { if case .integer(let i) = self { return i } else { return nil } }
    public var isNull: Bool { self == .null }
}

/// Column names of a result, shared by its rows.
final class SQLColumns: Sendable {
    let index: [String: Int]
    init(_ names: [String]) {
        var index: [String: Int] = [:]
        for (i, n) in names.enumerated() where index[n] == nil { index[n] = i }
        self.index = index
    }
}

/// One result row.
public struct SQLRow: Sendable {
    let columns: SQLColumns
    let values: [SQLValue]

    public func column(_ name: String) -> SQLValue? {
        columns.index[name].map { values[$0] }
    }
}

public struct SQLiteFailure: Error, CustomStringConvertible {
    public var code: Int32
    public var message: String
    public var description: String { "SQLite error \(code): \(message)" }
}

/// Commits made through one connection (see ``SQLiteDB/Handle/countCommits(into:)``).
final class CommitCounter: Sendable {
    let value = Atomic<Int>(0)
    var count: Int { value.load(ordering: .acquiring) }
}

/// When a unit of work nobody waits for (a ledger batch written behind the requests) yields the CPU.
///
/// A batch runs ~0.6 ms of SQLite at one connection, and the kernel queued a thread it woke
/// meanwhile — the event loop on the provider's answer, or the client — behind it on the same vCPU,
/// neither preempting the batch nor moving the woken thread to the idle vCPU: one request every batch
/// (every ~6 ms) waited the whole batch (docs/benchmarks.md, nineteenth round). So the batch yields
/// (`sched_yield`) between statements after every `every` of running; with nobody else runnable on
/// the CPU a yield returns at once. Once its yields have kept it off the CPU for `budget` in all it
/// runs to the end: on saturated CPUs every yield let the event loops run for a while, and a writer
/// that yielded without end fell behind the load it writes (at 64 connections its CPU during the
/// load fell to a fifth, and its queue — and the process's memory — grew until the load stopped).
struct YieldPacer {
    /// Running time between yields (nanoseconds).
    static let every: UInt64 = 25_000
    /// Time the yields of one unit of work may keep it off the CPU in all (nanoseconds).
    static let budget: UInt64 = 300_000

    /// Whether the current unit of work still yields.
    private(set) var active = false
    /// When the current stretch of running began.
    private var stretchStart: UInt64 = 0
    /// Time spent in yields so far.
    private var yieldedFor: UInt64 = 0

    mutating func begin(at now: UInt64) {
        active = true
        stretchStart = now
        yieldedFor = 0
    }

    mutating func end() { active = false }

    /// Whether to yield at `now`.
    func due(at now: UInt64) -> Bool { active && now &- stretchStart >= Self.every }

    /// Records a yield that lasted from `start` to `end`.
    mutating func yielded(from start: UInt64, to end: UInt64) {
        stretchStart = end
        yieldedFor &+= end &- start
        if yieldedFor >= Self.budget { active = false }
    }
}

/// The kernel's idle scheduling class (`SCHED_IDLE`) for work nobody waits for: the ledger's
/// written-behind batches and the WAL checkpoints.
///
/// Yielding between statements (``YieldPacer``) cannot reach inside one statement: a batch's `COMMIT`
/// (a few dozen `pwrite`s of WAL frames) and a checkpoint (hundreds of pages and an `fsync`) each ran
/// for up to a few milliseconds, and a thread of a request's chain the kernel woke meanwhile on the same
/// vCPU waited for them, while the other vCPU idled (docs/benchmarks.md, twentieth round). A thread in
/// the idle class is preempted by any other thread that wakes on its CPU, and a CPU that runs only
/// idle-class threads counts as free when the kernel places a woken thread.
///
/// The idle class can starve: on saturated CPUs such a thread runs a sliver of the time. So work in the
/// idle class is moved back to the normal class (``SQLiteDB/expedite()``) as soon as someone waits for
/// the connection (another unit of work submitted to it), or the ledger notices that a batch runs late
/// (``CreditMeter``); the units of work of the next second then start in the normal class.
///
/// Leaving the idle class takes `CAP_SYS_NICE` or a `RLIMIT_NICE` of at least 20 (nice 0; systemd's
/// `LimitNICE=`), so a process without either never enters it: a thread it could not move back would
/// be stuck there. `SWITCHYARD_IDLE_CLASS=0` keeps everything in the normal class.
enum IdleClass {
    /// `SCHED_IDLE` (Linux).
    static let policy: Int32 = 5
    /// How long the units of work after an expedited one start in the normal class (nanoseconds).
    static let normalAfterExpedite: UInt64 = 1_000_000_000

    /// Whether this process uses the idle class: it may leave it again, and nothing turned it off.
    static let available: Bool = {
        #if os(Linux)
        if let off = getenv("SWITCHYARD_IDLE_CLASS"), String(cString: off) == "0" { return false }
        return mayLeave
        #else
        return false
        #endif
    }()

    /// Whether a thread of this process may go back from `SCHED_IDLE` to the normal class at nice 0:
    /// `CAP_SYS_NICE` in the effective set, or a soft `RLIMIT_NICE` of 20 or more.
    static var mayLeave: Bool {
        #if os(Linux)
        var limit = rlimit()
        if getrlimit(Int32(__RLIMIT_NICE.rawValue), &limit) == 0, limit.rlim_cur >= 20 { return true }
        let fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { _ = close(fd) }
        var bytes = [UInt8](repeating: 0, count: 8192)
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return false }
        let status = String(decoding: bytes[..<n], as: UTF8.self)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
            let effective = UInt64(line.dropFirst("CapEff:".count).filter { !$0.isWhitespace }, radix: 16)
        else { return false }
        return effective & (1 << 23) != 0  // CAP_SYS_NICE
        #else
        return false
        #endif
    }

    /// Puts the calling thread into the idle class or back into the normal one; whether it worked.
    @discardableResult
    static func setCurrent(idle: Bool) -> Bool {
        #if os(Linux)
        var param = sched_param()
        return sched_setscheduler(0, idle ? policy : Int32(SCHED_OTHER), &param) == 0
        #else
        return false
        #endif
    }

    /// The calling thread's scheduling policy (for tests).
    static var currentPolicy: Int32 {
        #if os(Linux)
        return sched_getscheduler(0)
        #else
        return Int32(SCHED_OTHER)
        #endif
    }
}

/// One SQLite connection driven directly through the C API on a thread of its own.
///
/// A whole unit of work — a transaction with all its statements — runs as one job on that thread
/// (``run(_:)``), so it costs one thread hop however many statements it has, and statements are
/// prepared once and reused. (sqlite-nio hops to a thread pool for every statement, which made a
/// metered request's dozen statements cost about a millisecond.) Short units of work on the request
/// path may run on the caller's thread instead (``runHere(_:)``) when the connection is free: no
/// hop at all. A lock keeps the two from ever using the handle at once.
final class SQLiteDB: Sendable {
    /// The handle and its statement cache; touched only on `thread`.
    final class Handle: @unchecked Sendable {
        let raw: OpaquePointer
        var statements: [String: OpaquePointer] = [:]

        /// Counts this connection's commits once ``countCommits(into:)`` installed the WAL hook.
        private(set) var commits: CommitCounter?

        init(_ raw: OpaquePointer) { self.raw = raw }

        /// Counts every commit this connection makes to a WAL-mode database from now on, with SQLite's
        /// WAL hook (run after each commit). The hook is the automatic checkpoint's too: setting
        /// `PRAGMA wal_autocheckpoint` afterwards replaces it, so install it after configuring. The
        /// handle keeps the counter alive.
        func countCommits(into counter: CommitCounter) {
            commits = counter
            sqlite_nio_sqlite3_wal_hook(raw, { context, _, _, _ in
                Unmanaged<CommitCounter>.fromOpaque(context!).takeUnretainedValue().value.add(1, ordering: .releasing)
                return SQLITE_OK
            }, Unmanaged.passUnretained(counter).toOpaque())
        }

        /// Paces units of work that run on the connection's own thread with nobody waiting for them
        /// (the ledger's write-behind batches, ``beginYielding()``): between statements they yield the
        /// CPU now and then (see ``YieldPacer``). Never active for work on a caller's thread.
        private var pacer = YieldPacer()
        /// Yields taken so far (for tests and diagnostics; read from any thread).
        let yields = Atomic<Int>(0)

        /// The connection's thread while a unit of work runs there in the idle class (0 otherwise):
        /// whom ``expedite()`` moves back. Set and cleared only on that thread.
        let idleThread = Atomic<UInt>(0)
        /// When ``expedite()`` last moved a unit of work out of the idle class (uptime, ns; 0: never).
        let expeditedAt = Atomic<UInt64>(0)

        /// Starts a unit of work nobody waits for, on the connection's own thread: it yields the CPU
        /// now and then, and runs in the idle class (``IdleClass``) unless a unit of work was
        /// expedited within the last second.
        func beginYielding() {
            let now = NIODeadline.now().uptimeNanoseconds
            pacer.begin(at: now)
            guard IdleClass.available else { return }
            let expedited = expeditedAt.load(ordering: .acquiring)
            guard expedited == 0 || now &- expedited >= IdleClass.normalAfterExpedite else { return }
            idleThread.store(UInt(pthread_self()), ordering: .releasing)
            if !IdleClass.setCurrent(idle: true) { idleThread.store(0, ordering: .releasing) }
        }

        func endYielding() {
            pacer.end()
            guard idleThread.load(ordering: .relaxed) != 0 else { return }
            idleThread.store(0, ordering: .releasing)
            IdleClass.setCurrent(idle: false)
        }

        /// Moves the unit of work in progress, if it runs in the idle class, back into the normal
        /// class; the units of work of the next second start there too. From any thread.
        func expedite() {
            // If the unit of work ends meanwhile, its thread is back in the normal class, and setting
            // that again changes nothing.
            let thread = idleThread.load(ordering: .acquiring)
            guard thread != 0 else { return }
            expeditedAt.store(NIODeadline.now().uptimeNanoseconds, ordering: .releasing)
            var param = sched_param()
            if pthread_setschedparam(pthread_t(thread), Int32(SCHED_OTHER), &param) == 0 {
                expedited.add(1, ordering: .relaxed)
            }
        }

        /// Units of work moved out of the idle class so far (for tests and diagnostics).
        let expedited = Atomic<Int>(0)

        @inline(__always) private func yieldIfDue() {
            guard pacer.active else { return }
            let now = NIODeadline.now().uptimeNanoseconds
            guard pacer.due(at: now) else { return }
            sched_yield()
            yields.add(1, ordering: .relaxed)
            pacer.yielded(from: now, to: NIODeadline.now().uptimeNanoseconds)
        }

        /// Rows inserted, updated or deleted through this connection since it opened.
        var totalChanges: Int { Int(sqlite_nio_sqlite3_total_changes64(raw)) }

        var lastError: String { sqlite_nio_sqlite3_errmsg(raw).map { String(cString: $0) } ?? "unknown error" }

        /// Runs one statement and returns its rows.
        func query(_ sql: String, _ binds: [SQLValue] = []) throws -> [SQLRow] {
            try run(try statement(sql), binds)
        }

        /// Runs one statement once per row of bindings (an INSERT of many rows): the statement is looked
        /// up once, where a `query` per row hashed the SQL text each time to find it.
        func executeEach(_ sql: String, _ rows: [[SQLValue]]) throws {
            guard !rows.isEmpty else { return }
            let stmt = try statement(sql)
            for row in rows { _ = try run(stmt, row) }
        }

        private func run(_ stmt: OpaquePointer, _ binds: [SQLValue]) throws -> [SQLRow] {
            yieldIfDue()
            defer {
                sqlite_nio_sqlite3_reset(stmt)
                sqlite_nio_sqlite3_clear_bindings(stmt)
            }
            for (i, value) in binds.enumerated() {
                let index = Int32(i + 1)
                let rc: Int32
                switch value {
                case .null: rc = sqlite_nio_sqlite3_bind_null(stmt, index)
                case .integer(let v): rc = sqlite_nio_sqlite3_bind_int64(stmt, index, Int64(v))
                case .float(let v): rc = sqlite_nio_sqlite3_bind_double(stmt, index, v)
                case .text(var v):
                    // The string's own bytes (SQLite copies them): passing the String made a C-string copy per value.
                    rc = v.withUTF8 { utf8 in
                        // An empty string has no bytes to point at, and a null pointer would bind NULL.
                        guard let base = utf8.baseAddress, !utf8.isEmpty else {
                            return sqlite_nio_sqlite3_bind_text64(stmt, index, "", 0, SQLiteDB.transient, UInt8(SQLITE_UTF8))
                        }
                        return base.withMemoryRebound(to: CChar.self, capacity: utf8.count) {
                            sqlite_nio_sqlite3_bind_text64(stmt, index, $0, UInt64(utf8.count), SQLiteDB.transient, UInt8(SQLITE_UTF8))
                        }
                    }
                case .blob(let v):
                    rc = v.withUnsafeBytes { sqlite_nio_sqlite3_bind_blob64(stmt, index, $0.baseAddress, UInt64($0.count), SQLiteDB.transient) }
                }
                guard rc == SQLITE_OK else { throw SQLiteFailure(code: rc, message: lastError) }
            }
            var rows: [SQLRow] = []
            var columns: SQLColumns?
            while true {
                let rc = sqlite_nio_sqlite3_step(stmt)
                if rc == SQLITE_DONE { break }
                guard rc == SQLITE_ROW else { throw SQLiteFailure(code: rc, message: lastError) }
                let count = sqlite_nio_sqlite3_column_count(stmt)
                if columns == nil {
                    columns = SQLColumns((0..<count).map { String(cString: sqlite_nio_sqlite3_column_name(stmt, $0)) })
                }
                var values: [SQLValue] = []
                values.reserveCapacity(Int(count))
                for c in 0..<count {
                    switch sqlite_nio_sqlite3_column_type(stmt, c) {
                    case SQLITE_INTEGER: values.append(.integer(Int(sqlite_nio_sqlite3_column_int64(stmt, c))))
                    case SQLITE_FLOAT: values.append(.float(sqlite_nio_sqlite3_column_double(stmt, c)))
                    case SQLITE_TEXT:
                        let text = sqlite_nio_sqlite3_column_text(stmt, c)
                        let n = Int(sqlite_nio_sqlite3_column_bytes(stmt, c))
                        values.append(.text(text.map { String(decoding: UnsafeBufferPointer(start: $0, count: n), as: UTF8.self) } ?? ""))
                    case SQLITE_BLOB:
                        let n = Int(sqlite_nio_sqlite3_column_bytes(stmt, c))
                        let p = sqlite_nio_sqlite3_column_blob(stmt, c)
                        values.append(.blob(p.map { Array(UnsafeRawBufferPointer(start: $0, count: n)) } ?? []))
                    default: values.append(.null)
                    }
                }
                rows.append(SQLRow(columns: columns!, values: values))
            }
            return rows
        }

        private func statement(_ sql: String) throws -> OpaquePointer {
            if let s = statements[sql] { return s }
            if statements.count >= 512 {
                // Multi-row INSERTs of varying sizes make many distinct texts: start over rather than grow.
                for s in statements.values { sqlite_nio_sqlite3_finalize(s) }
                statements.removeAll()
            }
            var stmt: OpaquePointer?
            let rc = sqlite_nio_sqlite3_prepare_v3(raw, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
            guard rc == SQLITE_OK, let stmt else { throw SQLiteFailure(code: rc, message: lastError) }
            statements[sql] = stmt
            return stmt
        }

        func close() {
            for s in statements.values { sqlite_nio_sqlite3_finalize(s) }
            statements.removeAll()
            sqlite_nio_sqlite3_close_v2(raw)
        }
    }

    static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    private let handle: Handle
    /// Times a unit of work on this connection yielded the CPU (see ``YieldPacer``).
    var yieldCount: Int { handle.yields.load(ordering: .relaxed) }
    /// Units of work moved out of the idle class so far (see ``IdleClass``).
    var expediteCount: Int { handle.expedited.load(ordering: .relaxed) }

    /// Moves a unit of work nobody waited for out of the idle class, if one runs there (``IdleClass``).
    func expedite() { handle.expedite() }
    private let thread: NIOThreadPool
    private let closed = Atomic<Bool>(false)
    /// Held while a unit of work uses the handle, on whichever thread it runs.
    private let inUse = Mutex(())

    private init(handle: Handle, thread: NIOThreadPool) {
        self.handle = handle
        self.thread = thread
    }

    /// Opens a database file (created if missing), or a private in-memory database for `nil`.
    static func open(path: String?) async throws -> SQLiteDB {
        let thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        do {
            let handle = try await thread.runIfActive { () throws -> Handle in
                var raw: OpaquePointer?
                let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI
                let rc = sqlite_nio_sqlite3_open_v2(path ?? ":memory:", &raw, flags, nil)
                guard rc == SQLITE_OK, let raw else {
                    let message = raw.flatMap { sqlite_nio_sqlite3_errmsg($0).map { String(cString: $0) } } ?? "cannot open"
                    if let raw { sqlite_nio_sqlite3_close_v2(raw) }
                    throw SQLiteFailure(code: rc, message: message)
                }
                return Handle(raw)
            }
            return SQLiteDB(handle: handle, thread: thread)
        } catch {
            try? await thread.shutdownGracefully()
            throw error
        }
    }

    /// Runs `body` on the connection's thread; the handle is valid only inside it. Work in the idle
    /// class there is expedited first: this one waits behind it.
    func run<T: Sendable>(_ body: @escaping @Sendable (Handle) throws -> T) async throws -> T {
        handle.expedite()
        return try await submit(body)
    }

    /// Runs `body` on the connection's thread as work nobody waits for: between statements it yields
    /// the CPU now and then (``YieldPacer``), and it runs in the idle class (``IdleClass``). It does not
    /// expedite the work ahead of it.
    func runInBackground<T: Sendable>(_ body: @escaping @Sendable (Handle) throws -> T) async throws -> T {
        try await submit { handle in
            handle.beginYielding()
            defer { handle.endYielding() }
            return try body(handle)
        }
    }

    /// Runs `body` on the connection's thread, holding the handle.
    private func submit<T: Sendable>(_ body: @escaping @Sendable (Handle) throws -> T) async throws -> T {
        guard !closed.load(ordering: .relaxed) else { throw SQLiteFailure(code: SQLITE_MISUSE, message: "the database is closed") }
        let handle = self.handle
        return try await thread.runIfActive { try self.inUse.withLock { _ in try body(handle) } }
    }

    /// Runs `body` on the calling thread if no other unit of work is using the connection; nil if one
    /// is (the caller then goes through ``run(_:)``). For short work on the request path.
    func runHere<T>(_ body: (Handle) throws -> T) throws -> T? {
        guard !closed.load(ordering: .relaxed) else { throw SQLiteFailure(code: SQLITE_MISUSE, message: "the database is closed") }
        let handle = self.handle
        return try inUse.withLockIfAvailable { _ in try body(handle) }
    }

    /// One statement, in its own job.
    func query(_ sql: String, _ binds: [SQLValue] = []) async throws -> [SQLRow] {
        try await run { try $0.query(sql, binds) }
    }

    func close() async {
        guard !closed.exchange(true, ordering: .relaxed) else { return }
        let handle = self.handle
        try? await thread.runIfActive { handle.close() }
        try? await thread.shutdownGracefully()
    }
}
