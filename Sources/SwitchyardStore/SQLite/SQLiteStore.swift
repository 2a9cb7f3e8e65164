import Logging
import NIOCore
import NIOPosix
import SQLiteNIO
import SwitchyardCore

/// The embedded store: one SQLite file in WAL mode.
///
/// Writes go through one connection, one transaction at a time (``AsyncLock``); reads use a second
/// connection so they never wait for a write. Other processes (the CLI) may write the same file.
public final class SQLiteStore: GatewayStore {
    let writer: SQLiteConnection
    let reader: SQLiteConnection
    private let writeLock = AsyncLock()
    let logger: Logger

    private init(writer: SQLiteConnection, reader: SQLiteConnection, logger: Logger) {
        self.writer = writer
        self.reader = reader
        self.logger = logger
    }

    /// Opens (creating if needed) the database and applies pending migrations.
    public static func open(_ location: DatabaseLocation, logger: Logger) async throws -> SQLiteStore {
        let writer: SQLiteConnection
        let reader: SQLiteConnection
        switch location {
        case .sqliteMemory:
            // In-memory databases cannot be shared between connections: use one for both roles.
            writer = try await SQLiteConnection.open(storage: .memory, logger: logger)
            reader = writer
        case .sqlite(let path):
            do {
                writer = try await SQLiteConnection.open(storage: .file(path: path), logger: logger)
            } catch {
                throw StoreError.unavailable("cannot open SQLite database at \(path): \(error)")
            }
            reader = try await SQLiteConnection.open(storage: .file(path: path), logger: logger)
        }
        let store = SQLiteStore(writer: writer, reader: reader, logger: logger)
        do {
            try await store.configure(isFile: reader !== writer)
            try await store.migrate()
        } catch {
            await store.close()
            throw error
        }
        return store
    }

    private func configure(isFile: Bool) async throws {
        for connection in isFile ? [writer, reader] : [writer] {
            // busy_timeout replaces sqlite-nio's spinning busy handler with a sleeping one.
            _ = try await connection.query("PRAGMA busy_timeout = 10000")
            _ = try await connection.query("PRAGMA foreign_keys = ON")
        }
        if isFile {
            _ = try await writer.query("PRAGMA journal_mode = WAL")
            _ = try await writer.query("PRAGMA synchronous = NORMAL")
        }
    }

    /// Runs `body` inside one write transaction; concurrent callers queue in order.
    func transaction<T: Sendable>(_ body: (SQLiteConnection) async throws -> T) async throws -> T {
        try await writeLock.withLock {
            _ = try await writer.query("BEGIN IMMEDIATE")
            do {
                let result = try await body(writer)
                _ = try await writer.query("COMMIT")
                return result
            } catch {
                _ = try? await writer.query("ROLLBACK")
                throw error
            }
        }
    }

    private func migrate() async throws {
        try await transaction { db in
            _ = try await db.query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            let rows = try await db.query("SELECT MAX(version) AS v FROM schema_migrations")
            let current = rows.first?.column("v")?.integer ?? 0
            for migration in SQLiteMigrations.all where migration.version > current {
                for statement in migration.statements {
                    _ = try await db.query(statement)
                }
                _ = try await db.query(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    [.integer(migration.version), .integer(Int(EpochClock.nowMilliseconds()))])
                logger.info("applied migration", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
            }
        }
    }

    public func ping() async throws {
        _ = try await reader.query("SELECT 1")
    }

    public func close() async {
        try? await writer.close()
        if reader !== writer { try? await reader.close() }
    }

    // MARK: Keys

    static let keyColumns = """
        k.id, k.name, k.user_id, u.email AS user_email, k.prefix, k.last4, k.created_at, k.revoked_at
        """

    static func keyRecord(_ row: SQLiteRow) -> KeyRecord {
        KeyRecord(
            id: row.column("id")?.string ?? "",
            name: row.column("name")?.string ?? "",
            userID: row.column("user_id")?.string,
            userEmail: row.column("user_email")?.string,
            prefix: row.column("prefix")?.string ?? "",
            last4: row.column("last4")?.string ?? "",
            createdAt: Int64(row.column("created_at")?.integer ?? 0),
            revokedAt: row.column("revoked_at").flatMap { $0.isNull ? nil : Int64($0.integer ?? 0) })
    }

    public func createKey(name: String, userEmail: String?, prefix: String) async throws -> CreatedKey {
        let secret = APIKeys.generateSecret(prefix: prefix)
        let hash = APIKeys.hash(secret)
        let id = APIKeys.generateID(prefix: "key_")
        let now = Int(EpochClock.nowMilliseconds())
        let record = try await transaction { db -> KeyRecord in
            var userID: String?
            if let email = userEmail {
                userID = try await Self.ensureUser(email: email, now: now, db: db)
            }
            _ = try await db.query(
                "INSERT INTO api_keys (id, name, user_id, prefix, last4, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [.text(id), .text(name), userID.map { .text($0) } ?? .null, .text(prefix), .text(APIKeys.last4(secret)), .integer(now)])
            _ = try await db.query(
                "INSERT INTO key_secrets (hash, key_id, created_at) VALUES (?, ?, ?)",
                [.text(hash.hex), .text(id), .integer(now)])
            try await Self.bumpAuthGeneration(db)
            return KeyRecord(
                id: id, name: name, userID: userID, userEmail: userEmail, prefix: prefix,
                last4: APIKeys.last4(secret), createdAt: Int64(now), revokedAt: nil)
        }
        return CreatedKey(record: record, secret: secret)
    }

    static func ensureUser(email: String, now: Int, db: SQLiteConnection) async throws -> String {
        let normalized = email.lowercased()
        if let row = try await db.query("SELECT id FROM users WHERE email = ?", [.text(normalized)]).first,
            let id = row.column("id")?.string
        {
            return id
        }
        let id = APIKeys.generateID(prefix: "usr_")
        _ = try await db.query(
            "INSERT INTO users (id, email, created_at) VALUES (?, ?, ?)", [.text(id), .text(normalized), .integer(now)])
        return id
    }

    static func bumpAuthGeneration(_ db: SQLiteConnection) async throws {
        _ = try await db.query("UPDATE meta SET value = value + 1 WHERE key = 'auth_generation'")
    }

    public func listKeys() async throws -> [KeyRecord] {
        try await reader.query(
            "SELECT \(Self.keyColumns) FROM api_keys k LEFT JOIN users u ON u.id = k.user_id ORDER BY k.created_at DESC, k.id"
        ).map(Self.keyRecord)
    }

    public func revokeKey(id: String) async throws -> Bool {
        try await transaction { db in
            let rows = try await db.query("SELECT id FROM api_keys WHERE id = ?", [.text(id)])
            guard !rows.isEmpty else { return false }
            _ = try await db.query(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                [.integer(Int(EpochClock.nowMilliseconds())), .text(id)])
            try await Self.bumpAuthGeneration(db)
            return true
        }
    }

    public func lookupKey(hash: KeyHash) async throws -> KeyRecord? {
        let rows = try await reader.query(
            """
            SELECT \(Self.keyColumns), s.hash AS hash FROM key_secrets s
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
}
