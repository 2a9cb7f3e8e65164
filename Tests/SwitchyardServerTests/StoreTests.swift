import Foundation
import SQLiteNIO
import Logging
import SwitchyardCore
@testable import SwitchyardStore
import Testing

@Suite("SQLite store")
struct StoreTests {
    /// Runs `body` with the path of a database file in a fresh directory, removed afterwards.
    static func withFileStore(_ body: (String) async throws -> Void) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try await body(dir.appendingPathComponent("test.db").path)
    }

    @Test func textValuesBindAsTheirBytesAndAnEmptyOneIsNotNull() async throws {
        let store = try await SQLiteStore.open(.sqliteMemory, logger: Harness.quiet)
        let values = ["", "plain", "naïve – 日本語 \u{1F600}", "with\u{0}nul", String(repeating: "x", count: 5000), "tail"]
        for value in values {
            for text in [value, String(("#" + value).dropFirst())] {  // a native string and one made from a substring
                let row = try #require(try await store.writer.query("SELECT ? AS v, typeof(?) AS t, length(CAST(? AS BLOB)) AS n", [.text(text), .text(text), .text(text)]).first)
                #expect(row.column("t")?.string == "text")
                #expect(row.column("v")?.string == text)
                #expect(row.column("n")?.integer == text.utf8.count)
            }
        }
        await store.close()
    }

    @Test func createLookupRevoke() async throws {
        let store = try await SQLiteStore.open(.sqliteMemory, logger: Harness.quiet)
        let created = try await store.createKey(name: "ci", userEmail: "Dev@Example.com", prefix: "sk-")
        #expect(created.secret.hasPrefix("sk-"))
        #expect(created.record.last4 == String(created.secret.suffix(4)))
        #expect(created.record.userEmail == "dev@example.com")  // emails are stored lower-cased

        let found = try #require(try await store.lookupKey(hash: APIKeys.hash(created.secret)))
        #expect(found.id == created.record.id)
        #expect(found.userEmail == "dev@example.com")  // emails are stored lower-cased
        #expect(try await store.lookupKey(hash: APIKeys.hash(created.secret + "x")) == nil)

        #expect(try await store.revokeKey(id: created.record.id))
        #expect(try await store.lookupKey(hash: APIKeys.hash(created.secret))?.isRevoked == true)
        #expect(try await store.revokeKey(id: created.record.id))  // idempotent
        #expect(try await !store.revokeKey(id: "key_missing"))
        await store.close()
    }

    @Test func keysOfOneUserShareTheUserRecord() async throws {
        let store = try await SQLiteStore.open(.sqliteMemory, logger: Harness.quiet)
        let a = try await store.createKey(name: "a", userEmail: "u@example.com", prefix: "sy-")
        let b = try await store.createKey(name: "b", userEmail: "U@example.com", prefix: "sy-")
        #expect(a.record.userID == b.record.userID)
        let service = try await store.createKey(name: "c", userEmail: nil, prefix: "sy-")
        #expect(service.record.userID == "usr_service" && service.record.userKind == "service")
        #expect(try await store.listKeys().map(\.name).sorted() == ["a", "b", "c"])
        await store.close()
    }

    @Test func everyKeyChangeMovesTheAuthGeneration() async throws {
        let store = try await SQLiteStore.open(.sqliteMemory, logger: Harness.quiet)
        let g0 = try await store.authGeneration()
        let k = try await store.createKey(name: "a", userEmail: nil, prefix: "sy-")
        let g1 = try await store.authGeneration()
        _ = try await store.revokeKey(id: k.record.id)
        let g2 = try await store.authGeneration()
        #expect(g0 < g1 && g1 < g2)
        await store.close()
    }

    /// Waits until `count` passes `floor` (true) or 10 s pass (false).
    static func waitFor(_ count: () -> Int, above floor: Int) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(10)
        while count() <= floor, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        return count() > floor
    }

    @Test func theWALIsSyncedAfterEachWriteNotWhileIdleAndNotAfterClose() async throws {
        try await Self.withFileStore { path in
            let store = try await SQLiteStore.open(.sqlite(path: path), logger: Harness.quiet)
            let syncer = try #require(store.walSyncer)
            #expect(syncer.path == path + "-wal")
            _ = try await store.createKey(name: "a", userEmail: nil, prefix: "sy-")
            #expect(try await Self.waitFor({ syncer.syncCount }, above: 0), "the WAL was not synced in the background")
            // Idle: ten intervals without a write bring no sync (each would be a cache flush to the disk).
            try await Task.sleep(for: .milliseconds(100))
            let idle = syncer.syncCount
            try await Task.sleep(for: .milliseconds(200))
            #expect(syncer.syncCount == idle, "an unchanged WAL was synced again")
            // Each commit is counted and synced within an interval or so.
            let commits = try #require(syncer.commits)
            for i in 0..<3 {
                let before = syncer.syncCount
                let counted = commits.count
                _ = try await store.createKey(name: "k\(i)", userEmail: nil, prefix: "sy-")
                #expect(commits.count > counted, "commit \(i) was not counted")
                #expect(try await Self.waitFor({ syncer.syncCount }, above: before), "commit \(i) was not synced")
            }
            // A commit by another process on the same database (the CLI) changes the file: synced too.
            let other = try await SQLiteStore.open(.sqlite(path: path), logger: Harness.quiet)
            try await Task.sleep(for: .milliseconds(100))
            let before = syncer.syncCount
            _ = try await other.createKey(name: "cli", userEmail: nil, prefix: "sy-")
            #expect(try await Self.waitFor({ syncer.syncCount }, above: before), "another process's commit was not synced")
            await other.close()
            await store.close()
            let after = syncer.syncCount
            _ = try await SQLiteStore.open(.sqlite(path: path), logger: Harness.quiet).createKey(name: "later", userEmail: nil, prefix: "sy-")
            try await Task.sleep(for: .milliseconds(200))
            #expect(syncer.syncCount == after, "the WAL syncer kept running after the store closed")
        }
        let memory = try await SQLiteStore.open(.sqliteMemory, logger: Harness.quiet)
        #expect(memory.walSyncer == nil)
        await memory.close()
    }

    @Test func onlyTheHashIsStored() async throws {
        try await Self.withFileStore { path in
            let store = try await SQLiteStore.open(.sqlite(path: path), logger: Harness.quiet)
            let created = try await store.createKey(name: "a", userEmail: nil, prefix: "sy-")
            await store.close()
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path)) + ((try? Data(contentsOf: URL(fileURLWithPath: path + "-wal"))) ?? Data())
            #expect(bytes.range(of: Data(created.secret.utf8)) == nil, "the secret was written to disk")
            #expect(bytes.range(of: Data(APIKeys.hash(created.secret).hex.utf8)) != nil)
        }
    }

    @Test func reopeningKeepsDataAndDoesNotRerunMigrations() async throws {
        try await Self.withFileStore { path in
            let first = try await SQLiteStore.open(.sqlite(path: path), logger: Harness.quiet)
            let created = try await first.createKey(name: "a", userEmail: nil, prefix: "sy-")
            await first.close()
            let second = try await SQLiteStore.open(.sqlite(path: path), logger: Harness.quiet)
            #expect(try await second.lookupKey(hash: APIKeys.hash(created.secret))?.id == created.record.id)
            await second.close()
        }
    }

    @Test func twoStoresOnOneFileSeeEachOthersWrites() async throws {
        // What the CLI and a running gateway do.
        try await Self.withFileStore { path in
            let gateway = try await SQLiteStore.open(.sqlite(path: path), logger: Harness.quiet)
            let cli = try await SQLiteStore.open(.sqlite(path: path), logger: Harness.quiet)
            let before = try await gateway.authGeneration()
            let created = try await cli.createKey(name: "a", userEmail: nil, prefix: "sy-")
            #expect(try await gateway.authGeneration() > before)
            #expect(try await gateway.lookupKey(hash: APIKeys.hash(created.secret)) != nil)
            await cli.close()
            await gateway.close()
        }
    }

    @Test func concurrentCreatesAreAllKept() async throws {
        let store = try await SQLiteStore.open(.sqliteMemory, logger: Harness.quiet)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<50 {
                group.addTask { _ = try await store.createKey(name: "k\(i)", userEmail: "u\(i % 5)@example.com", prefix: "sy-") }
            }
            try await group.waitForAll()
        }
        #expect(try await store.listKeys().count == 50)
        await store.close()
    }

    @Test func unopenableDatabaseIsAClearError() async throws {
        do {
            _ = try await SQLiteStore.open(.sqlite(path: "/nonexistent-dir/x/y.db"), logger: Harness.quiet)
            Issue.record("expected an error")
        } catch let error as StoreError {
            #expect(error.description.contains("/nonexistent-dir/x/y.db"))
        }
    }

    @Test func usersPlansAndDisablingMoveTheAuthGeneration() async throws {
        let store = try await SQLiteStore.open(.sqliteMemory, logger: Harness.quiet)
        let user = try await store.createUser(email: "Ann@Example.com", plan: "pro")
        #expect(user.email == "ann@example.com" && user.plan == "pro" && user.kind == "person" && !user.isDisabled)
        await #expect(throws: StoreError.self) { try await store.createUser(email: "ann@example.com", plan: nil) }
        let key = try await store.createKey(name: "k", userEmail: "ann@example.com", prefix: "sy-")
        #expect(key.record.userPlan == "pro" && key.record.userID == user.id)

        var generation = try await store.authGeneration()
        func moved() async throws -> Bool {
            let now = try await store.authGeneration()
            defer { generation = now }
            return now > generation
        }
        #expect(try await store.setPlan(email: "ANN@example.com", plan: nil)?.plan == nil)
        #expect(try await moved())
        #expect(try await store.setDisabled(email: "ann@example.com", true)?.isDisabled == true)
        #expect(try await moved())
        #expect(try await store.lookupKey(hash: APIKeys.hash(key.secret))?.userDisabledAt != nil)
        #expect(try await store.setDisabled(email: "ann@example.com", false)?.isDisabled == false)
        #expect(try await store.setPlan(email: "nobody@example.com", plan: "pro") == nil)
        #expect(try await store.listUsers().map(\.email) == ["ann@example.com"])
        await store.close()
    }

    @Test func keyOptionsRotationAndUpdates() async throws {
        let store = try await SQLiteStore.open(.sqliteMemory, logger: Harness.quiet)
        let options = KeyOptions(expiresAt: 4_000_000_000_000, models: ["gpt-*"], limits: .init(requestsPerMinute: 5, tokensPerMinute: 100))
        let created = try await store.createKey(name: "k", userEmail: nil, prefix: "sy-", options: options)
        #expect(created.record.options == options)
        #expect(created.record.userKind == "service" && created.record.userEmail == "service@switchyard.local")

        let before = EpochClock.nowMilliseconds()
        let rotated = try #require(try await store.rotateKey(id: created.record.id, prefix: "sy-", graceMs: 60_000))
        #expect(rotated.record.id == created.record.id && rotated.secret != created.secret)
        #expect(rotated.record.last4 == String(rotated.secret.suffix(4)))
        let old = try #require(try await store.lookupKey(hash: APIKeys.hash(created.secret)))
        let end = try #require(old.secretExpiresAt)
        #expect(end >= before + 60_000 && end <= EpochClock.nowMilliseconds() + 60_000)
        #expect(try await store.lookupKey(hash: APIKeys.hash(rotated.secret))?.secretExpiresAt == nil)
        // A second rotation never extends an ending secret.
        _ = try await store.rotateKey(id: created.record.id, prefix: "sy-", graceMs: 3_600_000)
        #expect(try await store.lookupKey(hash: APIKeys.hash(created.secret))?.secretExpiresAt == end)

        let updated = try #require(try await store.updateKey(id: created.record.id, KeyUpdate(name: "renamed", expiresAt: .some(nil), models: .some(nil))))
        #expect(updated.name == "renamed" && updated.options.expiresAt == nil && updated.options.models == nil)
        #expect(updated.options.limits == options.limits)  // untouched
        #expect(try await store.updateKey(id: created.record.id, KeyUpdate(limits: LimitValues()))?.options.limits.isEmpty == true)
        #expect(try await store.updateKey(id: "key_missing", KeyUpdate(name: "x")) == nil)
        _ = try await store.revokeKey(id: created.record.id)
        #expect(try await store.rotateKey(id: created.record.id, prefix: "sy-", graceMs: 0) == nil)
        await store.close()
    }

    @Test func dailyCountsKeepTheHighestAndForgetOldDays() async throws {
        let store = try await SQLiteStore.open(.sqliteMemory, logger: Harness.quiet)
        try await store.saveDailyCounts([("user:a", 100, 5), ("user:b", 100, 2)])
        try await store.saveDailyCounts([("user:a", 100, 3)])  // a stale write never lowers a count
        #expect(try await store.dailyCounts(day: 100) == ["user:a": 5, "user:b": 2])
        try await store.saveDailyCounts([("user:a", 102, 1)])
        #expect(try await store.dailyCounts(day: 100).isEmpty)
        #expect(try await store.dailyCounts(day: 102) == ["user:a": 1])
        await store.close()
    }

    @Test func keysFromBeforeUsersExistedMoveToTheServiceUser() async throws {
        try await Self.withFileStore { path in
            // A database as the first release left it: migration 1 only, a key without a user.
            let db = try await SQLiteConnection.open(storage: .file(path: path), logger: Harness.quiet)
            _ = try await db.query("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            for statement in SQLiteMigrations.all[0].statements { _ = try await db.query(statement) }
            _ = try await db.query("INSERT INTO schema_migrations VALUES (1, 0)")
            _ = try await db.query("INSERT INTO api_keys (id, name, prefix, last4, created_at) VALUES ('key_old', 'old', 'sy-', 'abcd', 1000)")
            _ = try await db.query("INSERT INTO key_secrets (hash, key_id, created_at) VALUES ('\(APIKeys.hash("sy-old-secret").hex)', 'key_old', 1000)")
            try await db.close()

            let store = try await SQLiteStore.open(.sqlite(path: path), logger: Harness.quiet)
            let key = try #require(try await store.lookupKey(hash: APIKeys.hash("sy-old-secret")))
            #expect(key.userID == "usr_service" && key.userKind == "service" && key.options == KeyOptions())
            #expect(try await store.listUsers().map(\.kind) == ["service"])
            // New keys without a user join the same service user.
            #expect(try await store.createKey(name: "new", userEmail: nil, prefix: "sy-").record.userID == "usr_service")
            await store.close()
        }
    }

    @Test func ledgerEntriesLoseAutoincrementAndKeepTheirIds() async throws {
        try await Self.withFileStore { path in
            // A database at migration 4: a user, a bucket and two entries with ids far apart.
            let db = try await SQLiteConnection.open(storage: .file(path: path), logger: Harness.quiet)
            _ = try await db.query("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            for migration in SQLiteMigrations.all where migration.version <= 4 {
                for statement in migration.statements { _ = try await db.query(statement) }
                _ = try await db.query("INSERT INTO schema_migrations VALUES (\(migration.version), 0)")
            }
            _ = try await db.query("INSERT INTO users (id, email, kind, created_at) VALUES ('usr_a', 'a@example.com', 'person', 1000)")
            _ = try await db.query(
                "INSERT INTO credit_buckets (id, user_id, kind, granted, balance, created_at, source) VALUES ('cb_a', 'usr_a', 'topup', 7, 7, 1000, 'g')")
            _ = try await db.query(
                "INSERT INTO ledger_entries (id, user_id, bucket_id, kind, amount, idempotency_key, created_at) VALUES (3, 'usr_a', 'cb_a', 'topup', 5, 'k3', 1000)")
            _ = try await db.query(
                "INSERT INTO ledger_entries (id, user_id, bucket_id, kind, amount, idempotency_key, created_at) VALUES (40, 'usr_a', 'cb_a', 'topup', 2, 'k40', 1001)")
            try await db.close()

            let store = try await SQLiteStore.open(.sqlite(path: path), logger: Harness.quiet)
            #expect(try await store.creditHistory(userID: "usr_a", limit: 10).map(\.id) == [40, 3])
            #expect(try await store.checkLedger().isConsistent)
            _ = try await store.grant(userEmail: "a@example.com", amount: 1, kind: .topup, note: nil, expiresAt: nil, idempotencyKey: nil, now: 2000)
            let ids = try await store.creditHistory(userID: "usr_a", limit: 10).map(\.id)
            #expect(ids.count == 3 && ids[0] > 40 && Array(ids.dropFirst()) == [40, 3])
            // The table is a plain rowid table now: no `sqlite_sequence` row is kept for it.
            let schema = try await store.writer.query("SELECT sql FROM sqlite_master WHERE name = 'ledger_entries'").first?.column("sql")?.string
            #expect(schema.map { !$0.contains("AUTOINCREMENT") } == true)
            let sequences = try await store.writer.query("SELECT name FROM sqlite_sequence").compactMap { $0.column("name")?.string }
            #expect(!sequences.contains("ledger_entries"))
            await store.close()
        }
    }
}
