import Foundation
import Synchronization
import SwitchyardCore
@testable import SwitchyardStore
import Testing

@Suite("Credit ledger (SQLite)")
struct LedgerStoreTests {
    let noGrants = CreditGrantPolicy(defaultPlan: "free", plans: [:])
    static let c = Credits.scale

    func store() async throws -> SQLiteStore { try await SQLiteStore.open(.sqliteMemory, logger: Harness.quiet) }

    func user(_ store: SQLiteStore, _ email: String = "ann@example.com", plan: String? = nil) async throws -> String {
        try await store.createUser(email: email, plan: plan).id
    }

    func usage(_ id: String, user: String) -> UsageRecord {
        UsageRecord(id: id, requestID: id, createdAt: EpochClock.nowMilliseconds(), userID: user, keyID: "key_x", model: "m", status: 200, outcome: "ok")
    }

    @Test func reserveChargeReleaseAndRefund() async throws {
        let s = try await store()
        let u = try await user(s)
        let now = EpochClock.nowMilliseconds()
        _ = try await s.grant(userEmail: "ann@example.com", amount: 10 * Self.c, kind: .topup, note: "first", expiresAt: nil, idempotencyKey: nil, now: now)
        let r = try await s.reserve([ReservationRequest(id: "r1", userID: u, keyID: "key_x", amount: 4 * Self.c, model: "m")], policy: noGrants, now: now)
        #expect(r == [.reserved(available: 6 * Self.c)])
        #expect(try await s.creditBalance(userID: u, policy: noGrants, now: now).reserved == 4 * Self.c)
        let settled = try await s.settle([Settlement(.charge(cost: 1_500_000), usage: usage("r1", user: u))], now: now)
        #expect(settled == [SettlementResult(charged: 1_500_000, available: 8_500_000, uncovered: 0)])
        // Settling again charges nothing more.
        let again = try await s.settle([Settlement(.charge(cost: 1_500_000), usage: usage("r1", user: u))], now: now)
        #expect(again[0].charged == 0 && again[0].available == 8_500_000)

        _ = try await s.reserve([ReservationRequest(id: "r2", userID: u, keyID: "key_x", amount: 8 * Self.c, model: "m")], policy: noGrants, now: now)
        #expect(try await s.settle([Settlement(.refund, usage: usage("r2", user: u))], now: now)[0].available == 8_500_000)
        #expect(try await s.reserve([ReservationRequest(id: "r3", userID: u, keyID: "key_x", amount: 9 * Self.c, model: "m")], policy: noGrants, now: now) == [.insufficient(available: 8_500_000)])

        let entries = try await s.creditHistory(userID: u, limit: 100)
        #expect(entries.map(\.kind) == [.refund, .reservation, .charge, .release, .reservation, .topup])
        // A request's entries are keyed by the request first, so they sit together in the key index
        // and new ones append at its end (request ids are time-ordered).
        #expect(entries.filter { $0.requestID == "r1" }.map(\.idempotencyKey).sorted().map { $0.prefix(while: { $0 != ":" }) } == ["r1", "r1", "r1"])
        #expect(entries.filter { $0.requestID == "r1" }.map(\.idempotencyKey).sorted().map { $0.split(separator: ":")[1] } == ["charge", "release", "reservation"])
        let rows = try await s.usage(UsageQuery(userID: u))
        #expect(rows.map(\.credits).sorted() == [0, 1_500_000])
        let check = try await s.checkLedger()
        #expect(check.isConsistent && check.totalCharged == 1_500_000 && check.openReservations == 0, "\(check)")
        await s.close()
    }

    @Test func spendsPlanCreditsFirstThenBonusThenTopUps() async throws {
        let policy = CreditGrantPolicy(defaultPlan: "pro", plans: ["pro": .init(monthly: 5 * Self.c, signup: 0)])
        let s = try await store()
        let u = try await user(s)
        let now = EpochClock.nowMilliseconds()
        _ = try await s.grant(userEmail: "ann@example.com", amount: 3 * Self.c, kind: .topup, note: nil, expiresAt: nil, idempotencyKey: nil, now: now)
        _ = try await s.grant(userEmail: "ann@example.com", amount: 2 * Self.c, kind: .bonus, note: nil, expiresAt: nil, idempotencyKey: nil, now: now)
        _ = try await s.reserve([ReservationRequest(id: "r1", userID: u, keyID: "k", amount: 6 * Self.c, model: "m")], policy: policy, now: now)
        _ = try await s.settle([Settlement(.charge(cost: 6 * Self.c), usage: usage("r1", user: u))], now: now)
        let balance = try await s.creditBalance(userID: u, policy: policy, now: now)
        // Plan 5 then bonus 1: the bonus has 1 left and the top-up is untouched.
        #expect(balance.buckets.map(\.kind) == [.bonus, .topup] && balance.buckets.map(\.balance) == [Self.c, 3 * Self.c])
        await s.close()
    }

    @Test func planGrantsHappenOncePerPeriodAndExpireAtItsEnd() async throws {
        let policy = CreditGrantPolicy(defaultPlan: "free", plans: ["free": .init(monthly: 0, signup: 100 * Self.c), "pro": .init(monthly: 750 * Self.c, signup: 0)])
        let s = try await store()
        let u = try await user(s, plan: "pro")
        let start = EpochClock.nowMilliseconds()
        // Many concurrent first uses: one grant.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<8 { group.addTask { _ = try await s.creditBalance(userID: u, policy: policy, now: start) } }
            try await group.waitForAll()
        }
        #expect(try await s.creditBalance(userID: u, policy: policy, now: start).available == 750 * Self.c)
        // A new store (a restart) does not grant again within the period.
        let reopened = s
        reopened.grantMemo.withLock { $0.removeAll() }
        #expect(try await reopened.creditBalance(userID: u, policy: policy, now: start + 1000).available == 750 * Self.c)

        // Spend 100, then the period ends: the rest expires and the next period grants 750 anew.
        _ = try await s.reserve([ReservationRequest(id: "r1", userID: u, keyID: "k", amount: 100 * Self.c, model: "m")], policy: policy, now: start)
        _ = try await s.settle([Settlement(.charge(cost: 100 * Self.c), usage: usage("r1", user: u))], now: start)
        let nextPeriod = start + 32 * 86_400_000
        let later = try await s.creditBalance(userID: u, policy: policy, now: nextPeriod)
        #expect(later.available == 750 * Self.c && later.buckets.count == 1)
        let kinds = try await s.creditHistory(userID: u, limit: 100).map(\.kind)
        #expect(kinds.filter { $0 == .grant }.count == 2 && kinds.contains(.expiry))
        #expect(try await s.checkLedger().isConsistent)

        // Moving to the free plan grants its sign-up bonus once; moving back within the pro period grants nothing new.
        _ = try await s.setPlan(email: "ann@example.com", plan: "free")
        #expect(try await s.creditBalance(userID: u, policy: policy, now: nextPeriod + 1).available == 850 * Self.c)
        _ = try await s.setPlan(email: "ann@example.com", plan: "pro")
        _ = try await s.setPlan(email: "ann@example.com", plan: "free")
        #expect(try await s.creditBalance(userID: u, policy: policy, now: nextPeriod + 2).available == 850 * Self.c)
        await s.close()
    }

    @Test func aHoldOnABucketThatExpiresStillPays() async throws {
        let s = try await store()
        let u = try await user(s)
        let now = EpochClock.nowMilliseconds()
        _ = try await s.grant(userEmail: "ann@example.com", amount: 5 * Self.c, kind: .bonus, note: nil, expiresAt: now + 1000, idempotencyKey: nil, now: now)
        _ = try await s.reserve([ReservationRequest(id: "r1", userID: u, keyID: "k", amount: 2 * Self.c, model: "m")], policy: noGrants, now: now)
        let result = try await s.settle([Settlement(.charge(cost: Self.c), usage: usage("r1", user: u))], now: now + 5000)
        #expect(result[0].charged == Self.c && result[0].uncovered == 0 && result[0].available == 0)
        let check = try await s.checkLedger()
        #expect(check.isConsistent)
        await s.close()
    }

    @Test func aCostAboveTheHoldDrawsOnTheBalanceAndNeverGoesNegative() async throws {
        let s = try await store()
        let u = try await user(s)
        let now = EpochClock.nowMilliseconds()
        _ = try await s.grant(userEmail: "ann@example.com", amount: 3 * Self.c, kind: .topup, note: nil, expiresAt: nil, idempotencyKey: nil, now: now)
        _ = try await s.reserve([ReservationRequest(id: "r1", userID: u, keyID: "k", amount: Self.c, model: "m")], policy: noGrants, now: now)
        let extra = try await s.settle([Settlement(.charge(cost: 2 * Self.c), usage: usage("r1", user: u))], now: now)
        #expect(extra[0] == SettlementResult(charged: 2 * Self.c, available: Self.c, uncovered: 0))
        _ = try await s.reserve([ReservationRequest(id: "r2", userID: u, keyID: "k", amount: Self.c, model: "m")], policy: noGrants, now: now)
        let short = try await s.settle([Settlement(.charge(cost: 5 * Self.c), usage: usage("r2", user: u))], now: now)
        #expect(short[0] == SettlementResult(charged: Self.c, available: 0, uncovered: 4 * Self.c))
        let check = try await s.checkLedger()
        #expect(check.isConsistent && check.negativeBuckets.isEmpty)
        await s.close()
    }

    @Test func parallelBatchesNeverOverdraw() async throws {
        let s = try await store()
        let u = try await user(s)
        let now = EpochClock.nowMilliseconds()
        _ = try await s.grant(userEmail: "ann@example.com", amount: 10 * Self.c, kind: .topup, note: nil, expiresAt: nil, idempotencyKey: nil, now: now)
        let results = try await withThrowingTaskGroup(of: [ReservationResult].self) { group in
            for batch in 0..<10 {
                group.addTask {
                    try await s.reserve((0..<5).map { ReservationRequest(id: "b\(batch)-\($0)", userID: u, keyID: "k", amount: 300_000, model: "m") }, policy: self.noGrants, now: now)
                }
            }
            var all: [ReservationResult] = []
            for try await r in group { all += r }
            return all
        }
        let held = results.filter { if case .reserved = $0 { return true } else { return false } }.count
        #expect(held == 33)  // 10 credits / 0.3 each
        #expect(try await s.creditBalance(userID: u, policy: noGrants, now: now).available == 100_000)
        await s.close()
    }

    @Test func grantsAreIdempotentByKey() async throws {
        let s = try await store()
        let u = try await user(s)
        let now = EpochClock.nowMilliseconds()
        let a = try await s.grant(userEmail: "ann@example.com", amount: 5 * Self.c, kind: .topup, note: nil, expiresAt: nil, idempotencyKey: "invoice-7", now: now)
        let b = try await s.grant(userEmail: "ann@example.com", amount: 5 * Self.c, kind: .topup, note: nil, expiresAt: nil, idempotencyKey: "invoice-7", now: now)
        #expect(a.id == b.id)
        #expect(try await s.creditBalance(userID: u, policy: noGrants, now: now).available == 5 * Self.c)
        await s.close()
    }

    @Test func codesRedeemExactlyOnce() async throws {
        let s = try await store()
        let u = try await user(s)
        let other = try await user(s, "bob@example.com")
        let now = EpochClock.nowMilliseconds()
        let codes = try await s.createCodes(count: 3, credits: 25 * Self.c, expiresAt: now + 60_000, now: now)
        #expect(Set(codes.map(\.code)).count == 3 && codes.allSatisfy { $0.code.hasPrefix("SYC-") && $0.code.count == 23 })
        #expect(try await s.redeem(code: codes[0].code, userID: u, policy: noGrants, now: now) == .redeemed(credits: 25 * Self.c, available: 25 * Self.c))
        #expect(try await s.redeem(code: codes[0].code, userID: other, policy: noGrants, now: now) == .alreadyRedeemed)
        // Case, dashes and look-alike letters do not matter.
        let sloppy = codes[1].code.lowercased().replacingOccurrences(of: "-", with: " ")
        #expect(try await s.redeem(code: sloppy, userID: other, policy: noGrants, now: now) == .redeemed(credits: 25 * Self.c, available: 25 * Self.c))
        #expect(try await s.redeem(code: codes[2].code, userID: other, policy: noGrants, now: now + 120_000) == .expired)
        #expect(try await s.redeem(code: "SYC-NOPE-NOPE-NOPE-NOPE", userID: other, policy: noGrants, now: now) == .unknown)
        let listed = try await s.listCodes()
        #expect(listed.filter { $0.redeemedBy != nil }.count == 2)
        await s.close()
    }

    /// Reservations and settlements decided in memory reach the database together; a hold settled in
    /// the same batch leaves no `reservations` row behind and is never written at all (two b-tree
    /// writes per metered request fewer), while a hold still open at the batch's end is written.
    @Test func aHoldSettledInItsOwnBatchIsNeverWritten() async throws {
        let s = try await store()
        let u = try await user(s)
        let now = EpochClock.nowMilliseconds()
        _ = try await s.grant(userEmail: "ann@example.com", amount: 10 * Self.c, kind: .topup, note: nil, expiresAt: nil, idempotencyKey: nil, now: now)
        let before = try await s.writer.run { $0.totalChanges }
        let result = try await s.apply([
            .reserve(ReservationRequest(id: "r1", userID: u, keyID: "k", amount: 2 * Self.c, model: "m")),
            .reserve(ReservationRequest(id: "r2", userID: u, keyID: "k", amount: 3 * Self.c, model: "m")),
            .settle(Settlement(.charge(cost: Self.c), usage: usage("r1", user: u))),
        ], policy: noGrants, now: now)
        let changed = try await s.writer.run { $0.totalChanges } - before
        #expect(result.users[u]?.available == 6 * Self.c)
        #expect(try await s.openReservations().map(\.id) == ["r2"])
        let entries = try await s.creditHistory(userID: u, limit: 100).filter { $0.kind != .topup }
        #expect(entries.map(\.kind).sorted { $0.rawValue < $1.rawValue } == [.charge, .release, .reservation, .reservation])
        // r1's reservation, release and charge are one packed row; r2's reservation a row of its own.
        let rows = try await s.writer.run { try $0.query("SELECT held FROM ledger_entries WHERE kind != 'topup'") }
        #expect(rows.count == 2)
        // The two rows, the one bucket's balance, r2's hold and r1's usage row: nothing for r1's hold.
        #expect(changed == rows.count + 1 + 1 + 1)
        let check = try await s.checkLedger()
        #expect(check.isConsistent && check.openReservations == 1, "\(check)")
        // Settling r2 later, in a batch of its own, deletes its hold as before.
        _ = try await s.settle([Settlement(.refund, usage: usage("r2", user: u))], now: now)
        #expect(try await s.openReservations().isEmpty)
        #expect(try await s.creditBalance(userID: u, policy: noGrants, now: now).available == 9 * Self.c)
        await s.close()
    }

    /// A hold reserved and settled in the same batch is stored as one row per bucket, and the history
    /// lists exactly the entries a hold settled in a later batch gets: the same kinds, amounts, buckets
    /// and keys in the same order, each with an id of its own. Balances and the ledger check agree.
    @Test func aPackedHoldListsTheSameEntriesAsOneSettledLater() async throws {
        let s = try await store()
        let ann = try await user(s)
        let bob = try await user(s, "bob@example.com")
        let now = EpochClock.nowMilliseconds()
        for email in ["ann@example.com", "bob@example.com"] {
            // Two buckets, so a hold spans both and a cost above it draws on what is left.
            _ = try await s.grant(userEmail: email, amount: 3 * Self.c, kind: .bonus, note: nil, expiresAt: nil, idempotencyKey: nil, now: now)
            _ = try await s.grant(userEmail: email, amount: 10 * Self.c, kind: .topup, note: nil, expiresAt: nil, idempotencyKey: nil, now: now)
        }
        let settlements: [(String, Settlement.Kind)] = [
            ("a", .charge(cost: Self.c)),  // below the hold, from the first bucket only
            ("b", .charge(cost: 7 * Self.c)),  // above the hold: the rest from the live buckets
            ("c", .refund),
            ("d", .charge(cost: 0)),
        ]
        func reserve(_ user: String, _ id: String) -> LedgerOperation {
            .reserve(ReservationRequest(id: "\(user == ann ? "ann" : "bob")-\(id)", userID: user, keyID: "k", amount: 4 * Self.c, model: "m"))
        }
        func settle(_ user: String, _ id: String, _ kind: Settlement.Kind) -> LedgerOperation {
            .settle(Settlement(kind, usage: usage("\(user == ann ? "ann" : "bob")-\(id)", user: user)))
        }
        for (id, kind) in settlements {
            // Ann's in one batch each (packed); Bob's hold in one batch, its settlement in the next.
            _ = try await s.apply([reserve(ann, id), settle(ann, id, kind)], policy: noGrants, now: now)
            _ = try await s.apply([reserve(bob, id)], policy: noGrants, now: now)
            _ = try await s.apply([settle(bob, id, kind)], policy: noGrants, now: now)
        }
        let packedRows = try await s.writer.run { try $0.query("SELECT 1 FROM ledger_entries WHERE held IS NOT NULL") }
        #expect(!packedRows.isEmpty)
        let annHistory = try await s.creditHistory(userID: ann, limit: 1_000)
        let bobHistory = try await s.creditHistory(userID: bob, limit: 1_000)
        // Buckets named by what they were granted as, requests by their own name.
        func comparable(_ entries: [LedgerEntry], _ name: String) -> [[String]] {
            let kinds = Dictionary(entries.filter { $0.kind == .topup || $0.kind == .bonus }.compactMap { e in e.bucketID.map { ($0, e.kind.rawValue) } }) { a, _ in a }
            var groups: [[String]] = []
            var last: String?
            for e in entries {
                let request = e.requestID?.replacingOccurrences(of: name, with: "x") ?? "-"
                let bucket = e.bucketID.flatMap { kinds[$0] } ?? "-"
                let key = e.kind == .topup || e.kind == .bonus ? "" : e.idempotencyKey.replacingOccurrences(of: name, with: "x").replacingOccurrences(of: e.bucketID ?? "?", with: bucket)
                let line = "\(e.kind.rawValue) \(e.amount) \(bucket) \(request) \(key)"
                if request != "-", request == last { groups[groups.count - 1].append(line) } else { groups.append([line]) }
                last = request
            }
            // A hold over several buckets lists its entries bucket by bucket when packed, kind by kind
            // when not: the same entries, in the same place among the others.
            return groups.map { $0.sorted() }
        }
        #expect(comparable(annHistory, "ann") == comparable(bobHistory, "bob"))
        #expect(Set(annHistory.map(\.id)).count == annHistory.count, "two listed entries share an id")
        #expect(annHistory.map(\.id) == annHistory.map(\.id).sorted(by: >), "the history is not newest first")
        let annAvailable = try await s.creditBalance(userID: ann, policy: noGrants, now: now).available
        #expect(annAvailable == (try await s.creditBalance(userID: bob, policy: noGrants, now: now)).available)
        let check = try await s.checkLedger()
        #expect(check.isConsistent && check.openReservations == 0, "\(check)")
        // A limit counts listed entries, not rows.
        #expect(try await s.creditHistory(userID: ann, limit: 4).map(\.id) == Array(annHistory.prefix(4)).map(\.id))
        await s.close()
    }

    /// A settlement sent again after its hold was packed charges nothing and writes no second usage row.
    @Test func aPackedSettlementSentAgainChangesNothing() async throws {
        let s = try await store()
        let u = try await user(s)
        let now = EpochClock.nowMilliseconds()
        _ = try await s.grant(userEmail: "ann@example.com", amount: 10 * Self.c, kind: .topup, note: nil, expiresAt: nil, idempotencyKey: nil, now: now)
        for (id, kind) in [("r1", Settlement.Kind.charge(cost: 2 * Self.c)), ("r2", .refund)] {
            _ = try await s.apply([
                .reserve(ReservationRequest(id: id, userID: u, keyID: "k", amount: 4 * Self.c, model: "m")),
                .settle(Settlement(kind, usage: usage(id, user: u))),
            ], policy: noGrants, now: now)
            let again = try await s.settle([Settlement(kind, usage: usage(id, user: u))], now: now)
            #expect(again[0].charged == 0 && again[0].available == 8 * Self.c)
        }
        #expect(try await s.usage(UsageQuery(userID: u)).count == 2)
        let check = try await s.checkLedger()
        #expect(check.isConsistent && check.totalCharged == 2 * Self.c, "\(check)")
        await s.close()
    }

    @Test func openReservationsSurviveAReopen() async throws {
        try await StoreTests.withFileStore { path in
            let now = EpochClock.nowMilliseconds()
            let first = try await SQLiteStore.open(.sqlite(path: path), logger: Harness.quiet)
            let u = try await first.createUser(email: "ann@example.com", plan: nil).id
            _ = try await first.grant(userEmail: "ann@example.com", amount: 5 * Self.c, kind: .topup, note: nil, expiresAt: nil, idempotencyKey: nil, now: now)
            _ = try await first.reserve([ReservationRequest(id: "r1", userID: u, keyID: "k", amount: 2 * Self.c, model: "m")], policy: noGrants, now: now)
            await first.close()
            let second = try await SQLiteStore.open(.sqlite(path: path), logger: Harness.quiet)
            #expect(try await second.openReservations().map(\.id) == ["r1"])
            #expect(try await second.creditBalance(userID: u, policy: noGrants, now: now).available == 3 * Self.c)
            await second.close()
        }
    }

    /// A file store whose waited batches run on the caller's thread even off an event loop (the tests
    /// run on Swift's pool), and the time to stamp operations with (the body closes it).
    static func withInlineFileStore(_ body: (SQLiteStore, Int64) async throws -> Void) async throws {
        try await StoreTests.withFileStore { path in
            let store = try await SQLiteStore.open(.sqlite(path: path), logger: Harness.quiet)
            store.inlineWrites = .always
            try await body(store, EpochClock.nowMilliseconds())
        }
    }

    /// A batch a request waits for may run on the caller's thread; one written behind the requests
    /// (nobody waits for it) goes to the writer's thread, so an event loop's other requests do not
    /// wait behind its transaction.
    @Test func onlyABatchARequestWaitsForRunsOnTheCallersThread() async throws {
        try await Self.withInlineFileStore { store, now in
            let u = try await store.createUser(email: "ann@example.com", plan: nil).id
            _ = try await store.grant(userEmail: "ann@example.com", amount: 5 * Self.c, kind: .topup, note: nil, expiresAt: nil, idempotencyKey: nil, now: now)
            let before = store.inlineTransactionCount
            let hold = { (id: String) in LedgerOperation.reserve(ReservationRequest(id: id, userID: u, keyID: "k", amount: Self.c, model: "m", admitted: true)) }
            _ = try await store.apply([hold("r1")], policy: nil, now: now, waiting: false)
            let usage = UsageRecord(id: "u1", requestID: "q1", createdAt: now, userID: u, keyID: "k", model: "m", status: 200, outcome: "ok")
            try await store.recordUsage([usage])
            #expect(store.inlineTransactionCount == before, "a batch written behind ran on the caller's thread")
            _ = try await store.apply([hold("r2")], policy: nil, now: now, waiting: true)
            #expect(store.inlineTransactionCount == before + 1)
            #expect(Set(try await store.openReservations().map(\.id)) == ["r1", "r2"])
            await store.close()
        }
    }

    /// A batch written behind yields the CPU between its statements now and then, so a thread the
    /// kernel queued behind it (an event loop, a client) does not wait for the whole transaction; a
    /// batch run on the caller's thread (an event loop) never does.
    @Test func aLongBatchWrittenBehindYieldsTheCPU() async throws {
        try await Self.withInlineFileStore { store, now in
            let rows = { (tag: String) in
                (0..<2_000).map { UsageRecord(id: "\(tag)\($0)", requestID: "q\($0)", createdAt: now, userID: nil, keyID: "k", model: "m", status: 200, outcome: "ok") }
            }
            let before = store.writerYieldCount
            // Two thousand rows take milliseconds: far more than one stretch between yields.
            _ = try await store.apply(rows("behind").map { .usage($0) }, policy: nil, now: now, waiting: false)
            let behind = store.writerYieldCount
            #expect(behind > before, "a long batch written behind never yielded")
            _ = try await store.apply(rows("waited").map { .usage($0) }, policy: nil, now: now, waiting: true)
            #expect(store.inlineTransactionCount == 1)
            #expect(store.writerYieldCount == behind, "a batch on the caller's thread yielded")
            await store.close()
        }
    }

    /// A batch yields after every stretch of running, and stops yielding once its yields have kept
    /// it off the CPU for the budget in all (on saturated CPUs a writer that kept yielding fell behind).
    @Test func aBatchYieldsAfterEachStretchUntilItsBudgetIsSpent() {
        var pacer = YieldPacer()
        let every = YieldPacer.every, budget = YieldPacer.budget
        #expect(!pacer.due(at: 10 * every), "yields before a unit of work began")
        pacer.begin(at: 1_000)
        #expect(!pacer.due(at: 1_000 + every - 1))
        #expect(pacer.due(at: 1_000 + every))
        // Each yield kept it off the CPU for a third of the budget: the third spends it.
        var now = 1_000 + every
        for i in 1...3 {
            pacer.yielded(from: now, to: now + budget / 3 + 1)
            now += budget / 3 + 1
            #expect(!pacer.due(at: now + every - 1), "yielded again before a stretch of running")
            now += every
            #expect(pacer.due(at: now) == (i < 3), "yield \(i): budget spent \(i < 3 ? "too early" : "but it still yields")")
        }
        #expect(!pacer.due(at: now + 100 * every))
        // The next unit of work has the whole budget again; one that ended yields no more.
        pacer.begin(at: now)
        #expect(pacer.due(at: now + every))
        pacer.end()
        #expect(!pacer.due(at: now + every))
    }

    /// Work nobody waits for — a batch written behind — runs in the idle scheduling class, so that a
    /// request's thread woken on its CPU preempts it even inside one statement (a `COMMIT`); work
    /// someone waits for never does, and the thread is back in the normal class after each batch.
    @Test(.enabled(if: IdleClass.available, "leaving SCHED_IDLE takes CAP_SYS_NICE or RLIMIT_NICE >= 20 (CI runs as root)"))
    func aBatchWrittenBehindRunsInTheIdleClassAndWorkWaitedForDoesNot() async throws {
        let store = try await SQLiteStore.open(.sqliteMemory, logger: Harness.quiet)
        #expect(try await store.yieldingTransaction { _ in IdleClass.currentPolicy } == IdleClass.policy)
        #expect(try await store.transaction { _ in IdleClass.currentPolicy } == Int32(SCHED_OTHER))
        #expect(try await store.writer.run { _ in IdleClass.currentPolicy } == Int32(SCHED_OTHER), "the thread stayed in the idle class")
        #expect(store.writerExpediteCount == 0)
        await store.close()
    }

    /// A batch in the idle class can starve on saturated CPUs: once someone waits behind it (work
    /// submitted to the same connection), it moves to the normal class, and so do the batches of the
    /// next second.
    @Test(.enabled(if: IdleClass.available, "leaving SCHED_IDLE takes CAP_SYS_NICE or RLIMIT_NICE >= 20 (CI runs as root)"))
    func aBatchSomeoneWaitsBehindLeavesTheIdleClass() async throws {
        let store = try await SQLiteStore.open(.sqliteMemory, logger: Harness.quiet)
        let gate = Gate()
        async let batch = store.yieldingTransaction { _ -> [Int32] in
            let before = IdleClass.currentPolicy
            gate.entered.store(true, ordering: .releasing)
            while !gate.open.load(ordering: .acquiring) { usleep(1_000) }
            return [before, IdleClass.currentPolicy]
        }
        while !gate.entered.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(1)) }
        #expect(store.writerExpediteCount == 0)
        async let waited = store.transaction { _ in IdleClass.currentPolicy }
        let deadline = ContinuousClock.now + .seconds(10)
        while store.writerExpediteCount == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(1)) }
        gate.open.store(true, ordering: .releasing)
        #expect(try await batch == [IdleClass.policy, Int32(SCHED_OTHER)], "the batch waited behind stayed in the idle class")
        #expect(try await waited == Int32(SCHED_OTHER))
        #expect(store.writerExpediteCount == 1)
        #expect(try await store.yieldingTransaction { _ in IdleClass.currentPolicy } == Int32(SCHED_OTHER), "the next batch went idle at once")
        await store.close()
    }

    /// A unit of work on the writer's thread that waits until the test lets it go on.
    final class Gate: Sendable {
        let entered = Atomic<Bool>(false)
        let open = Atomic<Bool>(false)
    }

    /// Ledger batches run on the request's own thread when the writer is free; when another writer
    /// (here a second connection, as the CLI would be) holds the write lock they must wait for it on
    /// the writer's thread rather than fail or stall the caller.
    @Test func aBatchWaitsOutAnotherWritersLock() async throws {
        try await StoreTests.withFileStore { path in
            let now = EpochClock.nowMilliseconds()
            let gateway = try await SQLiteStore.open(.sqlite(path: path), logger: Harness.quiet)
            gateway.inlineWrites = .always  // the test runs on Swift's pool, not an event loop
            let other = try await SQLiteStore.open(.sqlite(path: path), logger: Harness.quiet)
            let u = try await gateway.createUser(email: "ann@example.com", plan: nil).id
            _ = try await gateway.grant(userEmail: "ann@example.com", amount: 5 * Self.c, kind: .topup, note: nil, expiresAt: nil, idempotencyKey: nil, now: now)
            // The other writer holds the lock for 2 s from the moment the flag says it has it (a fixed sleep
            // here raced it on a loaded machine).
            final class Flag: Sendable { let value = Atomic<Bool>(false) }
            let inside = Flag()
            let holding = Task { try await other.transaction { _ in inside.value.store(true, ordering: .releasing); usleep(2_000_000) } }
            while !inside.value.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(5)) }
            let started = ContinuousClock.now
            let results = try await gateway.reserve([ReservationRequest(id: "r1", userID: u, keyID: "k", amount: 2 * Self.c, model: "m")], policy: noGrants, now: now)
            let waited = ContinuousClock.now - started
            try await holding.value
            #expect(results == [.reserved(available: 3 * Self.c)])
            #expect(waited > .milliseconds(100))  // it really met the other writer's lock
            #expect(try await gateway.openReservations().map(\.id) == ["r1"])
            await other.close()
            await gateway.close()
        }
    }
}
