import Logging
import NIOCore
import NIOPosix
import Synchronization
import SwitchyardCore
import VaporCSQLite

/// The embedded store: one SQLite file in WAL mode, driven through SQLite's C API.
///
/// Writes go through one connection, each transaction as one job on that connection's thread (so
/// transactions never interleave and a transaction of many statements costs one thread hop); reads
/// use a second connection so they never wait for a write. Other processes (the CLI) may write the
/// same file; SQLite serialises writers across processes.
public final class SQLiteStore: GatewayStore {
    let writer: SQLiteDB
    let reader: SQLiteDB
    let logger: Logger
    /// Grant sources known to exist, so due-grant checks cost no query once a period's grant is made.
    let grantMemo = Mutex(Set<String>())
    /// How long a connection waits for another writer (another process) to release the write lock.
    static let busyTimeoutMs: Int32 = 10_000
    /// Where ledger batches may run on the caller's thread (see ``transactionHere(_:)``).
    public enum InlineWrites: Sendable {
        /// Only when the caller runs on a SwiftNIO event loop (the gateway, whose tasks run there).
        /// Swift's cooperative pool has one thread per core, shared by every task of the process,
        /// so a transaction there would hold up all of them; there it hops as before.
        case onEventLoops
        /// Whenever the writer is free (tests of the inline path).
        case always
        case never
    }

    public var inlineWrites: InlineWrites {
        get { inlineSetting.withLock { $0 } }
        set { inlineSetting.withLock { $0 = newValue } }
    }
    private let inlineSetting = Mutex(InlineWrites.onEventLoops)
    private let inlineRuns = Atomic<Int>(0)

    /// Transactions run on the caller's thread so far (for tests).
    public var inlineTransactionCount: Int { inlineRuns.load(ordering: .relaxed) }

    /// Times a written-behind batch yielded the CPU so far (for tests; see ``yieldingTransaction(_:)``).
    public var writerYieldCount: Int { writer.yieldCount }
    /// Written-behind batches (or checkpoints) moved out of the idle class so far (for tests).
    public var writerExpediteCount: Int { writer.expediteCount }

    /// Moves a written-behind batch that runs in the idle class back into the normal one (the ledger
    /// calls it when a batch runs late; see ``IdleClass``).
    public func expediteBackgroundWrites() { writer.expedite() }

    /// Syncs the WAL to disk in small steps (file databases; see ``WALSyncer``).
    let walSyncer: WALSyncer?
    /// How often ``WALSyncer`` writes the WAL's new frames to disk.
    static let walSyncInterval = Duration.milliseconds(20)

    /// The database file (nil in memory).
    let path: String?

    private init(writer: SQLiteDB, reader: SQLiteDB, path: String?, commits: CommitCounter?, logger: Logger) {
        self.writer = writer
        self.reader = reader
        self.logger = logger
        self.path = path
        walSyncer = path.map { WALSyncer(path: $0 + "-wal", interval: Self.walSyncInterval, commits: commits) }
    }

    public var ledgerJournalPrefix: String? { path.map { $0 + "-ledger" } }

    /// Opens (creating if needed) the database and applies pending migrations.
    public static func open(_ location: DatabaseLocation, logger: Logger) async throws -> SQLiteStore {
        let writer: SQLiteDB
        let reader: SQLiteDB
        switch location {
        case .sqliteMemory:
            // In-memory databases cannot be shared between connections: use one for both roles.
            writer = try await SQLiteDB.open(path: nil)
            reader = writer
        case .sqlite(let path):
            do {
                writer = try await SQLiteDB.open(path: path)
                reader = try await SQLiteDB.open(path: path)
            } catch {
                throw StoreError.unavailable("cannot open SQLite database at \(path): \(error)")
            }
        }
        let path: String? = if case .sqlite(let path) = location { path } else { nil }
        let commits = path == nil ? nil : CommitCounter()
        let store = SQLiteStore(writer: writer, reader: reader, path: path, commits: commits, logger: logger)
        do {
            try await store.configure(isFile: reader !== writer)
            // After `wal_autocheckpoint`, which replaces the WAL hook the counter is kept by.
            if let commits { try await writer.run { $0.countCommits(into: commits) } }
            try await store.migrate()
        } catch {
            await store.close()
            throw error
        }
        return store
    }

    private func configure(isFile: Bool) async throws {
        for connection in isFile ? [writer, reader] : [writer] {
            _ = try await connection.query("PRAGMA busy_timeout = \(Self.busyTimeoutMs)")
            _ = try await connection.query("PRAGMA foreign_keys = ON")
        }
        for connection in isFile ? [writer, reader] : [writer] {
            // Keep the working set in memory: a 16 MB page cache, reads through mmap (no copies).
            _ = try await connection.query("PRAGMA cache_size = -16384")
            _ = try await connection.query("PRAGMA temp_store = MEMORY")
            if isFile { _ = try await connection.query("PRAGMA mmap_size = 268435456") }
        }
        if isFile {
            // WAL with synchronous=NORMAL: a commit is durable against a process crash (kill -9) once
            // it returns; only a power loss can take the last commits back.
            _ = try await writer.query("PRAGMA journal_mode = WAL")
            _ = try await writer.query("PRAGMA synchronous = NORMAL")
            // Checkpoints (which fsync) would stall whichever commit crosses the WAL threshold; they run
            // once a second instead (``maintain()``), and a WAL that grew is truncated back.
            _ = try await writer.query("PRAGMA wal_autocheckpoint = 0")
            _ = try await writer.query("PRAGMA journal_size_limit = 67108864")
        }
    }

    /// Runs `body` inside one write transaction, as one job on the writer's thread.
    func transaction<T: Sendable>(_ body: @escaping @Sendable (SQLiteDB.Handle) throws -> T) async throws -> T {
        try await writer.run { db in
            _ = try db.query("BEGIN IMMEDIATE")
            return try Self.commit(db, body)
        }
    }

    /// Like ``transaction(_:)``, for work nobody waits for (the ledger's write-behind batches): it
    /// yields the CPU between statements every ~25 µs of running, up to a budget (``YieldPacer``), and
    /// runs in the idle scheduling class until someone waits for it (``IdleClass``).
    func yieldingTransaction<T: Sendable>(_ body: @escaping @Sendable (SQLiteDB.Handle) throws -> T) async throws -> T {
        try await writer.runInBackground { db in
            _ = try db.query("BEGIN IMMEDIATE")
            return try Self.commit(db, body)
        }
    }

    /// Runs `body` in the transaction `db` has begun and commits it; rolls it back if `body` throws.
    private static func commit<T>(_ db: SQLiteDB.Handle, _ body: (SQLiteDB.Handle) throws -> T) throws -> T {
        do {
            let result = try body(db)
            _ = try db.query("COMMIT")
            return result
        } catch {
            _ = try? db.query("ROLLBACK")
            throw error
        }
    }

    /// Like ``transaction(_:)``, but on the calling thread when the writer is free and no other
    /// process holds the write lock — the request path's ledger batches take no thread hop that way.
    /// It never waits on the calling thread: a busy writer (another batch, another process) sends the
    /// work to the writer's thread, which waits as long as ``transaction(_:)`` does.
    func transactionHere<T: Sendable>(_ body: @escaping @Sendable (SQLiteDB.Handle) throws -> T) async throws -> T {
        switch inlineWrites {
        case .always: break
        case .never: return try await transaction(body)
        case .onEventLoops: if MultiThreadedEventLoopGroup.currentEventLoop == nil { return try await transaction(body) }
        }
        let attempt = try writer.runHere { db -> HereAttempt<T> in
            sqlite_nio_sqlite3_busy_timeout(db.raw, 0)
            defer { sqlite_nio_sqlite3_busy_timeout(db.raw, Self.busyTimeoutMs) }
            do {
                _ = try db.query("BEGIN IMMEDIATE")
            } catch let failure as SQLiteFailure where failure.code == SQLITE_BUSY {
                return .busy
            }
            return .done(try Self.commit(db, body))
        }
        if case .done(let result) = attempt {
            inlineRuns.add(1, ordering: .relaxed)
            return result
        }
        return try await transaction(body)
    }

    private enum HereAttempt<T> {
        case done(T)
        case busy
    }

    private func migrate() async throws {
        try await transaction { db in
            _ = try db.query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            let rows = try db.query("SELECT MAX(version) AS v FROM schema_migrations")
            let current = rows.first?.column("v")?.integer ?? 0
            for migration in SQLiteMigrations.all where migration.version > current {
                for statement in migration.statements {
                    _ = try db.query(statement)
                }
                _ = try db.query(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    [.integer(migration.version), .integer(Int(EpochClock.nowMilliseconds()))])
                self.logger.info("applied migration", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
            }
        }
    }

    /// Copies committed WAL frames into the database file, so the WAL stays small. The gateway calls it
    /// every second. The bulk of the copying (and its fsyncs) runs on the reader's thread, off the write
    /// path; then a second checkpoint on the writer's thread, between write batches, copies the few
    /// frames committed meanwhile, so the next commit can start the WAL over. (From the reader alone
    /// the checkpoint never catches up with a busy writer, and the WAL only grows.)
    public func maintain() async {
        guard reader !== writer else { return }
        do {
            // Nobody waits for them: in the idle class, like the batches (``IdleClass``).
            _ = try await reader.runInBackground { try $0.query("PRAGMA wal_checkpoint(PASSIVE)") }
            _ = try await writer.runInBackground { try $0.query("PRAGMA wal_checkpoint(PASSIVE)") }
        } catch {
            logger.warning("WAL checkpoint failed", metadata: ["error": .string("\(error)")])
        }
    }

    public func ping() async throws {
        _ = try await reader.query("SELECT 1")
    }

    public func close() async {
        await walSyncer?.stop()
        try? await writer.close()
        if reader !== writer { try? await reader.close() }
    }

    // MARK: Keys

    static let keyColumns = """
        k.id, k.name, k.user_id, u.email AS user_email, k.prefix, k.last4, k.created_at, k.revoked_at,
        k.expires_at, k.models, k.limits, u.plan AS user_plan, u.disabled_at AS user_disabled_at, u.kind AS user_kind
        """

    static func int64(_ row: SQLRow, _ column: String) -> Int64? {
        row.column(column).flatMap { $0.isNull ? nil : $0.integer.map(Int64.init) }
    }

    static func keyRecord(_ row: SQLRow) -> KeyRecord {
        var r = KeyRecord(
            id: row.column("id")?.string ?? "",
            name: row.column("name")?.string ?? "",
            userID: row.column("user_id")?.string,
            userEmail: row.column("user_email")?.string,
            prefix: row.column("prefix")?.string ?? "",
            last4: row.column("last4")?.string ?? "",
            createdAt: int64(row, "created_at") ?? 0,
            revokedAt: int64(row, "revoked_at"))
        r.options.expiresAt = int64(row, "expires_at")
        if let text = row.column("models")?.string, let v = try? JSONValue.parse(text), let list = v.arrayValue {
            r.options.models = list.compactMap(\.stringValue)
        }
        if let text = row.column("limits")?.string, let v = try? JSONValue.parse(text) {
            r.options.limits = LimitValues(
                requestsPerMinute: v["requests_per_minute"]?.intValue, requestsPerDay: v["requests_per_day"]?.intValue,
                concurrentRequests: v["concurrent_requests"]?.intValue, tokensPerMinute: v["tokens_per_minute"]?.intValue)
        }
        r.userPlan = row.column("user_plan")?.string
        r.userDisabledAt = int64(row, "user_disabled_at")
        r.userKind = row.column("user_kind")?.string ?? "person"
        r.secretExpiresAt = int64(row, "secret_expires_at")
        return r
    }

    static func modelsJSON(_ models: [String]?) -> SQLValue {
        models.map { .text(JSONValue.array($0.map { .string($0) }).jsonString) } ?? .null
    }

    static func limitsJSON(_ l: LimitValues) -> SQLValue {
        guard !l.isEmpty else { return .null }
        var o = JSONObject()
        if let v = l.requestsPerMinute { o["requests_per_minute"] = .int(v) }
        if let v = l.requestsPerDay { o["requests_per_day"] = .int(v) }
        if let v = l.concurrentRequests { o["concurrent_requests"] = .int(v) }
        if let v = l.tokensPerMinute { o["tokens_per_minute"] = .int(v) }
        return .text(JSONValue.object(o).jsonString)
    }

    static func optional(_ v: Int64?) -> SQLValue { v.map { .integer(Int($0)) } ?? .null }

    public func createKey(name: String, userEmail: String?, prefix: String, options: KeyOptions) async throws -> CreatedKey {
        let secret = APIKeys.generateSecret(prefix: prefix)
        let hash = APIKeys.hash(secret)
        let id = APIKeys.generateID(prefix: "key_")
        let now = Int(EpochClock.nowMilliseconds())
        try await transaction { db in
            let userID: String
            if let email = userEmail {
                userID = try Self.ensureUser(email: email, now: now, db: db)
            } else {
                userID = try Self.ensureServiceUser(now: now, db: db)
            }
            _ = try db.query(
                "INSERT INTO api_keys (id, name, user_id, prefix, last4, created_at, expires_at, models, limits) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [.text(id), .text(name), .text(userID), .text(prefix), .text(APIKeys.last4(secret)), .integer(now),
                 Self.optional(options.expiresAt), Self.modelsJSON(options.models), Self.limitsJSON(options.limits)])
            _ = try db.query(
                "INSERT INTO key_secrets (hash, key_id, created_at) VALUES (?, ?, ?)",
                [.text(hash.hex), .text(id), .integer(now)])
            try Self.bumpAuthGeneration(db)
        }
        guard let record = try await key(id: id) else { throw StoreError.unavailable("the new key \(id) could not be read back") }
        return CreatedKey(record: record, secret: secret)
    }

    static let serviceEmail = "service@switchyard.local"

    static func ensureServiceUser(now: Int, db: SQLiteDB.Handle) throws -> String {
        if let row = try db.query("SELECT id FROM users WHERE kind = 'service' ORDER BY created_at LIMIT 1").first,
            let id = row.column("id")?.string
        {
            return id
        }
        _ = try db.query(
            "INSERT OR IGNORE INTO users (id, email, created_at, kind) VALUES ('usr_service', ?, ?, 'service')",
            [.text(serviceEmail), .integer(now)])
        return "usr_service"
    }

    static func ensureUser(email: String, now: Int, db: SQLiteDB.Handle) throws -> String {
        let normalized = email.lowercased()
        if let row = try db.query("SELECT id FROM users WHERE email = ?", [.text(normalized)]).first,
            let id = row.column("id")?.string
        {
            return id
        }
        let id = APIKeys.generateID(prefix: "usr_")
        _ = try db.query(
            "INSERT INTO users (id, email, created_at) VALUES (?, ?, ?)", [.text(id), .text(normalized), .integer(now)])
        return id
    }

    static func bumpAuthGeneration(_ db: SQLiteDB.Handle) throws {
        _ = try db.query("UPDATE meta SET value = value + 1 WHERE key = 'auth_generation'")
    }

    public func listKeys() async throws -> [KeyRecord] {
        try await reader.query(
            "SELECT \(Self.keyColumns) FROM api_keys k LEFT JOIN users u ON u.id = k.user_id ORDER BY k.created_at DESC, k.id"
        ).map(Self.keyRecord)
    }

    public func key(id: String) async throws -> KeyRecord? {
        try await writerOrReader().query(
            "SELECT \(Self.keyColumns) FROM api_keys k LEFT JOIN users u ON u.id = k.user_id WHERE k.id = ?", [.text(id)]
        ).first.map(Self.keyRecord)
    }

    /// Reads that must see this connection's own just-committed writes use the writer.
    func writerOrReader() -> SQLiteDB { writer }

    public func revokeKey(id: String) async throws -> Bool {
        try await transaction { db in
            let rows = try db.query("SELECT id FROM api_keys WHERE id = ?", [.text(id)])
            guard !rows.isEmpty else { return false }
            _ = try db.query(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                [.integer(Int(EpochClock.nowMilliseconds())), .text(id)])
            try Self.bumpAuthGeneration(db)
            return true
        }
    }

    public func rotateKey(id: String, prefix: String, graceMs: Int64) async throws -> CreatedKey? {
        let secret = APIKeys.generateSecret(prefix: prefix)
        let now = EpochClock.nowMilliseconds()
        let found = try await transaction { db -> Bool in
            let rows = try db.query("SELECT id FROM api_keys WHERE id = ? AND revoked_at IS NULL", [.text(id)])
            guard !rows.isEmpty else { return false }
            // Earlier secrets end at now + grace (or sooner, if they were already ending).
            _ = try db.query(
                "UPDATE key_secrets SET expires_at = MIN(COALESCE(expires_at, ?), ?) WHERE key_id = ?",
                [.integer(Int(now + graceMs)), .integer(Int(now + graceMs)), .text(id)])
            _ = try db.query(
                "INSERT INTO key_secrets (hash, key_id, created_at) VALUES (?, ?, ?)",
                [.text(APIKeys.hash(secret).hex), .text(id), .integer(Int(now))])
            _ = try db.query("UPDATE api_keys SET prefix = ?, last4 = ? WHERE id = ?", [.text(prefix), .text(APIKeys.last4(secret)), .text(id)])
            try Self.bumpAuthGeneration(db)
            return true
        }
        guard found, let record = try await key(id: id) else { return nil }
        return CreatedKey(record: record, secret: secret)
    }

    public func updateKey(id: String, _ u: KeyUpdate) async throws -> KeyRecord? {
        let found = try await transaction { db -> Bool in
            guard !(try db.query("SELECT id FROM api_keys WHERE id = ?", [.text(id)])).isEmpty else { return false }
            if let name = u.name { _ = try db.query("UPDATE api_keys SET name = ? WHERE id = ?", [.text(name), .text(id)]) }
            if let e = u.expiresAt { _ = try db.query("UPDATE api_keys SET expires_at = ? WHERE id = ?", [Self.optional(e), .text(id)]) }
            if let m = u.models { _ = try db.query("UPDATE api_keys SET models = ? WHERE id = ?", [Self.modelsJSON(m), .text(id)]) }
            if let l = u.limits { _ = try db.query("UPDATE api_keys SET limits = ? WHERE id = ?", [Self.limitsJSON(l), .text(id)]) }
            try Self.bumpAuthGeneration(db)
            return true
        }
        return found ? try await key(id: id) : nil
    }

    public func lookupKey(hash: KeyHash) async throws -> KeyRecord? {
        let rows = try await reader.query(
            """
            SELECT \(Self.keyColumns), s.hash AS hash, s.expires_at AS secret_expires_at FROM key_secrets s
            JOIN api_keys k ON k.id = s.key_id LEFT JOIN users u ON u.id = k.user_id
            WHERE s.hash = ?
            """, [.text(hash.hex)])
        guard let row = rows.first, let stored = row.column("hash")?.string.flatMap(KeyHash.init(hex:)),
            stored.constantTimeEquals(hash)
        else { return nil }
        return Self.keyRecord(row)
    }

    public func authGeneration() async throws -> Int64 {
        let rows = try await reader.query("SELECT value FROM meta WHERE key = 'auth_generation'")
        return Int64(rows.first?.column("value")?.integer ?? 0)
    }

    // MARK: Users

    static func userRecord(_ row: SQLRow) -> UserRecord {
        UserRecord(
            id: row.column("id")?.string ?? "", email: row.column("email")?.string ?? "", plan: row.column("plan")?.string,
            disabledAt: int64(row, "disabled_at"), kind: row.column("kind")?.string ?? "person", createdAt: int64(row, "created_at") ?? 0)
    }

    public func createUser(email: String, plan: String?) async throws -> UserRecord {
        let normalized = email.lowercased()
        let id = APIKeys.generateID(prefix: "usr_")
        try await transaction { db in
            guard (try db.query("SELECT id FROM users WHERE email = ?", [.text(normalized)])).isEmpty else {
                throw StoreError.invalid("a user with the email \(normalized) already exists")
            }
            _ = try db.query(
                "INSERT INTO users (id, email, created_at, plan) VALUES (?, ?, ?, ?)",
                [.text(id), .text(normalized), .integer(Int(EpochClock.nowMilliseconds())), plan.map { .text($0) } ?? .null])
        }
        guard let user = try await user(email: normalized) else { throw StoreError.unavailable("the new user could not be read back") }
        return user
    }

    public func listUsers() async throws -> [UserRecord] {
        try await reader.query("SELECT * FROM users ORDER BY created_at, email").map(Self.userRecord)
    }

    public func user(email: String) async throws -> UserRecord? {
        try await writer.query("SELECT * FROM users WHERE email = ?", [.text(email.lowercased())]).first.map(Self.userRecord)
    }

    public func setPlan(email: String, plan: String?) async throws -> UserRecord? {
        let changed = try await transaction { db -> Bool in
            // A new plan starts new billing periods (its monthly credits are granted from now on).
            _ = try db.query(
                "UPDATE users SET plan_since = ? WHERE email = ? AND plan IS NOT ?",
                [.integer(Int(EpochClock.nowMilliseconds())), .text(email.lowercased()), plan.map { .text($0) } ?? .null])
            _ = try db.query("UPDATE users SET plan = ? WHERE email = ?", [plan.map { .text($0) } ?? .null, .text(email.lowercased())])
            let found = !(try db.query("SELECT id FROM users WHERE email = ?", [.text(email.lowercased())])).isEmpty
            if found { try Self.bumpAuthGeneration(db) }
            return found
        }
        return changed ? try await user(email: email) : nil
    }

    public func setDisabled(email: String, _ disabled: Bool) async throws -> UserRecord? {
        let changed = try await transaction { db -> Bool in
            let value: SQLValue = disabled ? .integer(Int(EpochClock.nowMilliseconds())) : .null
            _ = try db.query(
                disabled ? "UPDATE users SET disabled_at = COALESCE(disabled_at, ?) WHERE email = ?" : "UPDATE users SET disabled_at = ? WHERE email = ?",
                [value, .text(email.lowercased())])
            let found = !(try db.query("SELECT id FROM users WHERE email = ?", [.text(email.lowercased())])).isEmpty
            if found { try Self.bumpAuthGeneration(db) }
            return found
        }
        return changed ? try await user(email: email) : nil
    }

    // MARK: Daily counters

    public func dailyCounts(day: Int64) async throws -> [String: Int] {
        var out: [String: Int] = [:]
        for row in try await reader.query("SELECT subject, count FROM daily_counts WHERE day = ?", [.integer(Int(day))]) {
            if let s = row.column("subject")?.string { out[s] = row.column("count")?.integer ?? 0 }
        }
        return out
    }

    public func saveDailyCounts(_ counts: [(subject: String, day: Int64, count: Int)]) async throws {
        guard !counts.isEmpty else { return }
        try await transaction { db in
            for c in counts {
                _ = try db.query(
                    "INSERT INTO daily_counts (subject, day, count) VALUES (?, ?, ?) ON CONFLICT(subject, day) DO UPDATE SET count = MAX(count, excluded.count)",
                    [.text(c.subject), .integer(Int(c.day)), .integer(c.count)])
            }
            // Older days are not needed.
            if let newest = counts.map(\.day).max() {
                _ = try db.query("DELETE FROM daily_counts WHERE day < ?", [.integer(Int(newest - 1))])
            }
        }
    }
}
