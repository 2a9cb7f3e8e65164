import Foundation
import Logging
import SwitchyardCore
import SwitchyardStore
import Testing

@Suite("SQLite store")
struct StoreTests {
    func withFileStore(_ body: (String) async throws -> Void) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try await body(dir.appendingPathComponent("test.db").path)
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

    @Test func onlyTheHashIsStored() async throws {
        try await withFileStore { path in
            let store = try await SQLiteStore.open(.sqlite(path: path), logger: Harness.quiet)
            let created = try await store.createKey(name: "a", userEmail: nil, prefix: "sy-")
            await store.close()
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path)) + ((try? Data(contentsOf: URL(fileURLWithPath: path + "-wal"))) ?? Data())
            #expect(bytes.range(of: Data(created.secret.utf8)) == nil, "the secret was written to disk")
            #expect(bytes.range(of: Data(APIKeys.hash(created.secret).hex.utf8)) != nil)
        }
    }

    @Test func reopeningKeepsDataAndDoesNotRerunMigrations() async throws {
        try await withFileStore { path in
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
        try await withFileStore { path in
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
}
