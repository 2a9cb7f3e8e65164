import Foundation
import NIOHTTP1
import Synchronization
@testable import SwitchyardServer
import SwitchyardCore
@testable import SwitchyardStore
import Testing

/// Reservations and settlements decided in memory, journaled, and written to the database behind the
/// request path (`CreditMeter`, `LedgerJournal`).
@Suite("Ledger written behind the request path")
struct LedgerWriteBehindTests {
    /// A new empty directory under the system's temporary one (the caller removes it).
    static func temporaryDirectory(_ name: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// `billing()` with decided operations held back for an hour (until something reads the ledger).
    static func heldBack(_ config: inout GatewayConfig, _ port: Int) {
        billing()(&config, port)
        config.billing.ledgerWriteDelay = .init(milliseconds: 3_600_000)
    }

    @Test func theAnswerDoesNotWaitForTheDatabaseAndReadersSeeEverything() async throws {
        try await Harness.run(configure: Self.heldBack) { h in
            let (key, user) = try await h.funded(10)
            // The first request of a user asks the database (memory does not know the balance yet).
            let first = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "tiered"))
            #expect(first.status == 200 && first.headers.first(name: "X-Credits-Remaining") == "9")
            let second = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "tiered"))
            #expect(second.status == 200)
            #expect(second.headers.first(name: "X-Credits-Charged") == "1" && second.headers.first(name: "X-Credits-Remaining") == "8")
            // Decided in memory: both settlements and the second hold wait; only the first hold is written.
            #expect(try await h.store.usage(UsageQuery(userID: user)).count == 0)
            #expect(try await h.store.openReservations().map(\.requestID).count == 1)
            #expect(h.gateway.meter.journal == nil)  // a database in memory needs no journal
            // Readers write what is queued first.
            let balance = try await h.request(.GET, "/v1/credits", key: key)
            #expect(balance.json?["balance"] == .number("8") && balance.json?["reserved"] == .number("0"))
            #expect(try await h.store.usage(UsageQuery(userID: user)).map(\.credits) == [Credits.scale, Credits.scale])
            let check = try await h.store.checkLedger()
            #expect(check.isConsistent && check.openReservations == 0 && check.totalCharged == 2 * Credits.scale)
        }
    }

    @Test func parallelRequestsDecidedInMemoryNeverOverdraw() async throws {
        try await Harness.run(configure: Self.heldBack) { h in
            let (key, user) = try await h.funded(12)
            // Memory learns the balance from the first request, then decides the rest itself.
            #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "tiered")).status == 200)
            let responses = try await h.parallel(40, key: key, body: Harness.chat(model: "tiered"))
            #expect(responses.filter { $0.status == 200 }.count == 11 && responses.filter { $0.status == 402 }.count == 29)
            #expect(try await h.balance(user) == 0)
            let check = try await h.store.checkLedger()
            #expect(check.isConsistent && check.totalCharged == 12 * Credits.scale && check.negativeBuckets.isEmpty)
        }
    }

    @Test func aBalanceThatLooksTooSmallAsksTheDatabase() async throws {
        try await Harness.run(configure: billing()) { h in
            let (key, user) = try await h.funded(1)
            #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "tiered")).status == 200)
            // Another process (the CLI) grants credits: memory still says 0.
            _ = try await h.store.grant(userEmail: "payer@example.com", amount: 5 * Credits.scale, kind: .topup, note: nil, expiresAt: nil, idempotencyKey: nil, now: EpochClock.nowMilliseconds())
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "tiered"))
            #expect(r.status == 200 && r.headers.first(name: "X-Credits-Remaining") == "4")
            #expect(try await h.balance(user) == 4 * Credits.scale)
        }
    }

    @Test func aBucketThatExpiresIsNotSpentFromMemory() async throws {
        try await Harness.run(configure: billing()) { h in
            let key = try await h.store.createKey(name: "k", userEmail: "bonus@example.com", prefix: "sy-")
            let expires = EpochClock.nowMilliseconds() + 1_500
            _ = try await h.store.grant(userEmail: "bonus@example.com", amount: 5 * Credits.scale, kind: .bonus, note: nil, expiresAt: expires, idempotencyKey: nil, now: EpochClock.nowMilliseconds())
            #expect(try await h.request("/v1/chat/completions", key: key.secret, body: Harness.chat(model: "tiered")).status == 200)
            while EpochClock.nowMilliseconds() <= expires + 20 { try await Task.sleep(for: .milliseconds(50)) }
            // Memory would still say 4; the bonus expired.
            let r = try await h.request("/v1/chat/completions", key: key.secret, body: Harness.chat(model: "tiered"))
            #expect(r.status == 402 && r.headers.first(name: "X-Credits-Remaining") == "0")
        }
    }

    /// A process killed with decided operations still queued: the next one applies them from the
    /// journal, skipping what was written, so nothing is lost or charged twice.
    @Test func operationsJournaledBeforeACrashAreAppliedAtTheNextStart() async throws {
        let dir = try Self.temporaryDirectory("sy-journal")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = GatewayConfig(database: .sqlite(path: dir + "/ledger.db"))
        Self.heldBack(&config, 1)
        let store = try await SQLiteStore.open(config.database, logger: Harness.quiet)
        _ = try await store.createKey(name: "k", userEmail: "payer@example.com", prefix: "sy-")
        _ = try await store.grant(userEmail: "payer@example.com", amount: 10 * Credits.scale, kind: .topup, note: nil, expiresAt: nil, idempotencyKey: nil, now: EpochClock.nowMilliseconds())
        let user = try #require(try await store.listUsers().first { $0.email == "payer@example.com" }).id

        let crashed = CreditMeter(store: store, config: config, logger: Harness.quiet)
        func hold(_ id: String, _ credits: Int64) async throws -> ReservationResult {
            try await crashed.reserve(ReservationRequest(id: id, userID: user, keyID: "key_x", amount: credits * Credits.scale, model: "tiered"))
        }
        func usage(_ id: String) -> UsageRecord {
            UsageRecord(id: id, requestID: id, createdAt: EpochClock.nowMilliseconds(), userID: user, keyID: "key_x", model: "tiered", status: 200, outcome: "ok")
        }
        // Asked of the database (memory does not know the user yet), then settled in memory.
        #expect(try await hold("req_a", 3) == .reserved(available: 7 * Credits.scale))
        _ = try await crashed.settle(Settlement(.charge(cost: 2 * Credits.scale), usage: usage("req_a")), reserved: 3 * Credits.scale)
        // Decided in memory: a completed request, a refunded one, and one still in flight at the crash.
        #expect(try await hold("req_b", 2) == .reserved(available: 6 * Credits.scale))
        _ = try await crashed.settle(Settlement(.charge(cost: Credits.scale), usage: usage("req_b")), reserved: 2 * Credits.scale)
        #expect(try await hold("req_c", 2) == .reserved(available: 5 * Credits.scale))
        _ = try await crashed.settle(Settlement(.refund, usage: usage("req_c")), reserved: 2 * Credits.scale)
        #expect(try await hold("req_d", 4) == .reserved(available: 3 * Credits.scale))
        #expect(try await store.usage(UsageQuery(userID: user)).count == 0)
        #expect(crashed.journal?.pending == 6)

        // The next process (same database, the journal as the crash left it).
        let next = CreditMeter(store: store, config: config, logger: Harness.quiet)
        try await next.recoverJournal()
        await next.recoverOpenReservations()
        let rows = try await store.usage(UsageQuery(userID: user))
        #expect(Dictionary(uniqueKeysWithValues: rows.map { ($0.id, $0.credits) })
            == ["req_a": 2 * Credits.scale, "req_b": Credits.scale, "req_c": 0, "req_d": 4 * Credits.scale])  // req_d: `charge` charges the hold
        #expect(rows.first { $0.id == "req_d" }?.outcome == "interrupted")
        let balance = try await store.creditBalance(userID: user, policy: next.policy, now: EpochClock.nowMilliseconds())
        #expect(balance.available == 3 * Credits.scale && balance.reserved == 0)
        let check = try await store.checkLedger()
        #expect(check.isConsistent && check.openReservations == 0)
        // The journal it applied is gone; applying it again would change nothing.
        #expect(LedgerJournal.replay(prefix: dir + "/ledger.db-ledger").operations.isEmpty)

        await crashed.journal?.close()
        await next.journal?.close()
        await store.close()
    }

    /// A journal the database refuses: the start fails (after a few attempts) and the journal is kept,
    /// rather than serving — or settling the last run's holds — on a ledger missing what it says.
    @Test func aJournalThatCannotBeAppliedStopsTheStart() async throws {
        let dir = try Self.temporaryDirectory("sy-badjournal")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = GatewayConfig(database: .sqlite(path: dir + "/ledger.db"))
        billing()(&config, 1)
        let store = try await SQLiteStore.open(config.database, logger: Harness.quiet)
        _ = try await store.grant(userEmail: "payer@example.com", amount: 10 * Credits.scale, kind: .topup, note: nil, expiresAt: nil, idempotencyKey: nil, now: EpochClock.nowMilliseconds())
        let user = try #require(try await store.listUsers().first { $0.email == "payer@example.com" }).id
        // A hold written whose reservation row went missing: its journal line would write its entries twice.
        let hold = ReservationRequest(id: "req_x", userID: user, keyID: "key_x", amount: Credits.scale, model: "tiered", admitted: true)
        _ = try await store.apply([.reserve(hold)], policy: nil, now: EpochClock.nowMilliseconds())
        _ = try await store.writer.query("DELETE FROM reservations")
        let segment = dir + "/ledger.db-ledger.1"
        try (LedgerJournalCodec.encode(.reserve(hold)) + "\n").write(toFile: segment, atomically: true, encoding: .utf8)

        let meter = CreditMeter(store: store, config: config, logger: Harness.quiet)
        await #expect(throws: StoreError.self) { try await meter.recoverJournal() }
        #expect(FileManager.default.fileExists(atPath: segment))
        await meter.journal?.close()
        await store.close()
    }

    @Test func journalLinesRoundTripAndACutLineIsSkipped() throws {
        let usage = UsageRecord(
            id: "req_1", requestID: "client\tid\\with\nbreaks", createdAt: 1_764_000_000_123, userID: nil, keyID: "key_1", model: "gpt-5.1",
            provider: "up", upstreamModel: nil, inputTokens: 12, outputTokens: 34, cachedTokens: 5, usageEstimated: true, credits: 0,
            status: 499, outcome: "client_closed", latencyMs: 17, stream: true, errorCode: "\\N")
        let ops: [LedgerOperation] = [
            .reserve(ReservationRequest(id: "req_1", requestID: "r", userID: "usr_1", keyID: "key_1", amount: 1_500_000, model: "m\tx")),
            .settle(Settlement(.charge(cost: 1_250_000), usage: usage)),
            .settle(Settlement(.refund, usage: usage)),
            .usage(usage),
        ]
        for op in ops {
            let line = LedgerJournalCodec.encode(op)
            #expect(!line.contains("\n"))
            let back = try #require(LedgerJournalCodec.decode(Substring(line)))
            switch (op, back) {
            case (.reserve(let a), .reserve(let b)):
                #expect(a.id == b.id && a.requestID == b.requestID && a.userID == b.userID && a.amount == b.amount && a.model == b.model && b.admitted)
            case (.settle(let a), .settle(let b)):
                #expect(a.kind == b.kind && a.usage == b.usage)
            case (.usage(let a), .usage(let b)):
                #expect(a == b)
            default:
                Issue.record("decoded into another operation")
            }
        }
        let cut = LedgerJournalCodec.encode(ops[1]).dropLast(7)
        #expect(LedgerJournalCodec.decode(cut) == nil)
    }

    @Test func segmentsAreDeletedOnceWrittenAndClosed() async throws {
        let dir = try Self.temporaryDirectory("sy-segments")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let prefix = dir + "/db-ledger"
        let journal = LedgerJournal(prefix: prefix, firstSegment: 1, segmentLines: 2)
        let op = LedgerOperation.reserve(ReservationRequest(id: "req_1", userID: "usr_1", keyID: "key_1", amount: 1, model: "m"))
        let placed = [journal.append(op), journal.append(op), journal.append(op)].compactMap { $0 }
        // The first segment is the one asked for; the second is whichever the syncer had ready (or the
        // append opened): a later number.
        #expect(placed.count == 3 && placed[0] == 1 && placed[1] == 1 && placed[2] > 1)
        let second = placed[2]
        #expect(FileManager.default.fileExists(atPath: prefix + ".1") && FileManager.default.fileExists(atPath: journal.path(of: second)))
        journal.applied(segment: 1, count: 2)
        #expect(!FileManager.default.fileExists(atPath: prefix + ".1"), "a closed segment fully written stays")
        journal.applied(segment: second)
        #expect(FileManager.default.fileExists(atPath: journal.path(of: second)), "the open segment goes only when it is closed")
        #expect(LedgerJournal.replay(prefix: prefix).operations.count == 1)
        await journal.close()
        #expect(!FileManager.default.fileExists(atPath: journal.path(of: second)))
        #expect(LedgerJournal.replay(prefix: prefix).segments.isEmpty, "a segment prepared ahead was left behind")
    }

    @Test func theSyncerRotatesSegmentsSoAppendsMakeNoSystemCall() async throws {
        let dir = try Self.temporaryDirectory("sy-rotation")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let prefix = dir + "/db-ledger"
        let journal = LedgerJournal(prefix: prefix, firstSegment: 1, segmentLines: 3, syncInterval: .milliseconds(2))
        let op = LedgerOperation.reserve(ReservationRequest(id: "req_1", userID: "usr_1", keyID: "key_1", amount: 1, model: "m"))
        let line = LedgerJournalCodec.encode(op).utf8.count + 1
        var placed: [Int] = []
        for round in 0..<4 {
            // The syncer prepares the segment after the current one.
            #expect(try await StoreTests.waitFor({ LedgerJournal.replay(prefix: prefix).segments.count }, above: round),
                    "no segment was prepared ahead")
            for _ in 0..<3 { placed.append(try #require(journal.append(op))) }
        }
        #expect(journal.segmentsOpenedByAppend == 0, "an append opened a segment itself")
        let numbers = Array(Set(placed)).sorted()
        #expect(numbers.count == 4 && placed == numbers.flatMap { Array(repeating: $0, count: 3) })
        // Filled segments are cut to their lines by the syncer, not left at their preallocated size.
        _ = journal.append(op)
        for full in numbers {
            #expect(try await StoreTests.waitFor({
                (try? FileManager.default.attributesOfItem(atPath: journal.path(of: full))[.size] as? Int) == 3 * line ? 1 : 0
            }, above: 0), "segment \(full) was not cut to its lines")
        }
        let left = LedgerJournal.replay(prefix: prefix)
        #expect(left.operations.count == 13 && left.unreadable == 0)
        await journal.close()
    }

    @Test func aSegmentLeftOpenIsPreallocatedAndReplaysUpToItsZeroBytes() async throws {
        let dir = try Self.temporaryDirectory("sy-mapped")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let prefix = dir + "/db-ledger"
        let journal = LedgerJournal(prefix: prefix, firstSegment: 1, segmentBytes: 64 << 10)
        let ops = (1...3).map { LedgerOperation.reserve(ReservationRequest(id: "req_\($0)", userID: "usr_1", keyID: "key_1", amount: Int64($0), model: "m")) }
        for op in ops { #expect(journal.append(op) == 1) }
        // As a crash leaves it: the file is the preallocated size, the lines first, zero bytes after.
        let size = try FileManager.default.attributesOfItem(atPath: prefix + ".1")[.size] as? Int
        #expect(size == 64 << 10)
        let left = LedgerJournal.replay(prefix: prefix)
        #expect(left.unreadable == 0)
        #expect(left.operations.map { if case .reserve(let r) = $0 { r.id } else { "" } } == ["req_1", "req_2", "req_3"])
        // Closed with operations not yet in the database, the segment is cut to its lines.
        await journal.close()
        let lines = ops.map { LedgerJournalCodec.encode($0).utf8.count + 1 }.reduce(0, +)
        #expect(try FileManager.default.attributesOfItem(atPath: prefix + ".1")[.size] as? Int == lines)
        #expect(LedgerJournal.replay(prefix: prefix).operations.count == 3)
    }

    @Test func aSegmentClosesBeforeALineThatWouldNotFit() async throws {
        let dir = try Self.temporaryDirectory("sy-mapped-full")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let prefix = dir + "/db-ledger"
        let journal = LedgerJournal(prefix: prefix, firstSegment: 1, segmentBytes: 4096)
        let op = LedgerOperation.reserve(ReservationRequest(id: "req_1", userID: "usr_1", keyID: "key_1", amount: 1, model: String(repeating: "m", count: 900)))
        let perSegment = 4096 / (LedgerJournalCodec.encode(op).utf8.count + 1)
        let segments = (0..<(perSegment * 2 + 1)).compactMap { _ in journal.append(op) }
        let numbers = Array(Set(segments)).sorted()
        #expect(numbers.count == 3 && numbers[0] == 1)
        #expect(segments == Array(repeating: numbers[0], count: perSegment) + Array(repeating: numbers[1], count: perSegment) + [numbers[2]])
        let left = LedgerJournal.replay(prefix: prefix)
        #expect(Set(numbers).isSubset(of: left.segments) && left.operations.count == segments.count && left.unreadable == 0)
        // A line larger than a whole segment cannot be journaled: the caller writes it to the database.
        let huge = LedgerOperation.reserve(ReservationRequest(id: "req_2", userID: "usr_1", keyID: "key_1", amount: 1, model: String(repeating: "m", count: 5000)))
        #expect(journal.append(huge) == nil)
        await journal.close()
    }

    @Test func theJournalIsSyncedAfterAppendsNotWhileIdle() async throws {
        let dir = try Self.temporaryDirectory("sy-journal-sync")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let journal = LedgerJournal(prefix: dir + "/db-ledger", firstSegment: 1, syncInterval: .milliseconds(5))
        let op = LedgerOperation.reserve(ReservationRequest(id: "req_1", userID: "usr_1", keyID: "key_1", amount: 1, model: "m"))
        #expect(journal.append(op) == 1)
        #expect(try await StoreTests.waitFor({ journal.syncCount }, above: 0), "the appended line was not synced")
        // The segment stays open with nothing new: forty intervals bring no sync.
        try await Task.sleep(for: .milliseconds(50))
        let idle = journal.syncCount
        try await Task.sleep(for: .milliseconds(200))
        #expect(journal.syncCount == idle, "an unchanged segment was synced again")
        #expect(journal.append(op) == 1)
        #expect(try await StoreTests.waitFor({ journal.syncCount }, above: idle), "the next line was not synced")
        await journal.close()
    }

    /// A batch written behind runs at a low priority where the store can (SQLite: the idle scheduling
    /// class), which saturated CPUs can starve. The meter asks the store to expedite a batch that is
    /// still running ``CreditMeter/lateAfter`` after it started while decisions queue behind it (once
    /// per batch), and one that someone on the request path waits behind at once.
    @Test func aBatchThatRunsLateIsExpedited() async throws {
        let store = try await SQLiteStore.open(.sqliteMemory, logger: Harness.quiet)
        _ = try await store.grant(userEmail: "payer@example.com", amount: 100 * Credits.scale, kind: .topup, note: nil, expiresAt: nil, idempotencyKey: nil, now: EpochClock.nowMilliseconds())
        let user = try #require(try await store.listUsers().first { $0.email == "payer@example.com" }).id
        let slow = HeldBatches(store)
        var config = GatewayConfig(database: .sqliteMemory)
        billing()(&config, 1)
        let meter = CreditMeter(store: slow, config: config, logger: Harness.quiet)
        func hold(_ id: String) -> ReservationRequest {
            ReservationRequest(id: id, userID: user, keyID: "key_x", amount: Credits.scale, model: "tiered")
        }
        // The first reservation asks the database; the next ones are decided in memory and written behind.
        _ = try await meter.reserve(hold("req_1"))
        #expect(meter.reserveImmediately(hold("req_2")) != nil)
        while !slow.batchRunning { try await Task.sleep(for: .milliseconds(1)) }
        #expect(slow.expedited == 0, "expedited with nothing queued behind the batch")
        try await Task.sleep(for: .nanoseconds(CreditMeter.lateAfter + 20_000_000))
        #expect(meter.reserveImmediately(hold("req_3")) != nil)
        #expect(slow.expedited == 1, "a late batch with a decision queued behind it was not expedited")
        #expect(meter.reserveImmediately(hold("req_4")) != nil)
        #expect(slow.expedited == 1, "expedited again for the same batch")
        // Someone waits behind it (a reader writes what is queued first): expedited at once.
        async let synced: Void = meter.sync()
        let deadline = ContinuousClock.now + .seconds(10)
        while slow.expedited < 2, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(1)) }
        #expect(slow.expedited == 2, "a batch someone waits behind was not expedited")
        slow.release()
        await synced
        let balance = try await store.creditBalance(userID: user, policy: meter.policy, now: EpochClock.nowMilliseconds())
        #expect(balance.reserved == 4 * Credits.scale)
        #expect(try await store.checkLedger().isConsistent)
        await store.close()
    }
}

/// A store whose first batch written behind waits until the test releases it, and that counts the
/// meter's requests to expedite.
final class HeldBatches: CreditStore {
    let inner: SQLiteStore
    private let running = Atomic<Bool>(false)
    private let released = Atomic<Bool>(false)
    private let expedites = Atomic<Int>(0)

    init(_ inner: SQLiteStore) { self.inner = inner }

    var batchRunning: Bool { running.load(ordering: .acquiring) }
    var expedited: Int { expedites.load(ordering: .acquiring) }
    func release() { released.store(true, ordering: .releasing) }

    func expediteBackgroundWrites() { expedites.add(1, ordering: .releasing) }

    func apply(_ operations: [LedgerOperation], policy: CreditGrantPolicy?, now: Int64, waiting: Bool) async throws -> LedgerResult {
        if !waiting {
            running.store(true, ordering: .releasing)
            while !released.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(1)) }
        }
        return try await inner.apply(operations, policy: policy, now: now, waiting: waiting)
    }
    func appliedRequests(_ ids: [String]) async throws -> AppliedRequests { try await inner.appliedRequests(ids) }
    var ledgerJournalPrefix: String? { nil }
    func reserve(_ requests: [ReservationRequest], policy: CreditGrantPolicy, now: Int64) async throws -> [ReservationResult] {
        try await inner.reserve(requests, policy: policy, now: now)
    }
    func settle(_ settlements: [Settlement], now: Int64) async throws -> [SettlementResult] { try await inner.settle(settlements, now: now) }
    func recordUsage(_ rows: [UsageRecord]) async throws { try await inner.recordUsage(rows) }
    func grant(userEmail: String, amount: Int64, kind: BucketKind, note: String?, expiresAt: Int64?, idempotencyKey: String?, now: Int64) async throws -> CreditBucket {
        try await inner.grant(userEmail: userEmail, amount: amount, kind: kind, note: note, expiresAt: expiresAt, idempotencyKey: idempotencyKey, now: now)
    }
    func creditBalance(userID: String, policy: CreditGrantPolicy, now: Int64) async throws -> CreditBalance {
        try await inner.creditBalance(userID: userID, policy: policy, now: now)
    }
    func creditHistory(userID: String, limit: Int) async throws -> [LedgerEntry] { try await inner.creditHistory(userID: userID, limit: limit) }
    func usage(_ query: UsageQuery) async throws -> [UsageRecord] { try await inner.usage(query) }
    func openReservations() async throws -> [OpenReservation] { try await inner.openReservations() }
    func createCodes(count: Int, credits: Int64, expiresAt: Int64?, now: Int64) async throws -> [CreatedCode] {
        try await inner.createCodes(count: count, credits: credits, expiresAt: expiresAt, now: now)
    }
    func listCodes() async throws -> [CodeRecord] { try await inner.listCodes() }
    func redeem(code: String, userID: String, policy: CreditGrantPolicy, now: Int64) async throws -> RedeemResult {
        try await inner.redeem(code: code, userID: userID, policy: policy, now: now)
    }
    func checkLedger() async throws -> LedgerCheck { try await inner.checkLedger() }
}
