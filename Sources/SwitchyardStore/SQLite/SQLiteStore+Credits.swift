import Synchronization
import SwitchyardCore

/// The credit ledger on SQLite. Every operation runs in one write transaction (so decisions are made
/// on the committed state, whichever process wrote it), reads each user's buckets once per batch, and
/// writes its entries with multi-row statements: a batch of N requests costs a handful of statements.
extension SQLiteStore {
    // MARK: Working set of one transaction

    /// Buckets of the users a transaction touches, and the entries it will append.
    struct LedgerWork {
        var buckets: [String: [BucketBalance]] = [:]
        /// Rows to append, in order; nil where a row was taken back (a hold settled in this batch).
        var entries: [PendingEntry?] = []
        var changed: Set<String> = []
        let now: Int64

        init(now: Int64) { self.now = now }

        func available(_ user: String) -> Int64 { CreditAllocator.available(buckets[user] ?? [], now: now) }

        /// When the user's first live bucket with credits in it expires.
        func nextExpiry(_ user: String) -> Int64? {
            (buckets[user] ?? []).compactMap { b in b.balance > 0 ? b.expiresAt.flatMap { $0 > now ? $0 : nil } : nil }.min()
        }

        mutating func adjust(_ user: String, _ bucket: String, by amount: Int64) {
            guard let i = buckets[user]?.firstIndex(where: { $0.id == bucket }) else { return }
            buckets[user]![i].balance += amount
            changed.insert(bucket)
        }

        /// Appends an entry and moves the bucket's balance by its amount. With `entryBucket` (and a nil
        /// `bucket`) the entry names that bucket without moving its balance (the caller already did).
        mutating func entry(_ user: String, bucket: String?, kind: LedgerEntry.Kind, amount: Int64, request: String?, key: String, note: String? = nil, entryBucket: String? = nil) {
            entries.append(PendingEntry(user: user, bucket: bucket ?? entryBucket, kind: kind, amount: amount, request: request, key: key, note: note, held: nil))
            if let bucket { adjust(user, bucket, by: amount) }
        }

        func balance(of bucket: String) -> Int64? {
            for list in buckets.values { if let b = list.first(where: { $0.id == bucket }) { return b.balance } }
            return nil
        }
    }

    /// Loads every bucket with a non-zero balance of `users`.
    static func loadBuckets(_ users: Set<String>, now: Int64, db: SQLiteDB.Handle) throws -> LedgerWork {
        var work = LedgerWork(now: now)
        for user in users { work.buckets[user] = [] }
        for chunk in Array(users).chunked(500) {
            let rows = try db.query(
                "SELECT id, user_id, kind, balance, expires_at, created_at FROM credit_buckets WHERE balance != 0 AND user_id IN (\(placeholders(chunk.count)))",
                chunk.map { .text($0) })
            for row in rows {
                guard let id = row.column("id")?.string, let user = row.column("user_id")?.string else { continue }
                work.buckets[user, default: []].append(BucketBalance(
                    id: id, kind: BucketKind(rawValue: row.column("kind")?.string ?? "") ?? .topup,
                    balance: int64(row, "balance") ?? 0, expiresAt: int64(row, "expires_at"), createdAt: int64(row, "created_at") ?? 0))
            }
        }
        return work
    }

    /// Records the expiry of what is left in buckets whose time has passed.
    static func expire(_ work: inout LedgerWork) {
        for (user, list) in work.buckets {
            for b in list where b.balance > 0 && (b.expiresAt.map { $0 <= work.now } ?? false) {
                work.entry(user, bucket: b.id, kind: .expiry, amount: -b.balance, request: nil, key: "expiry:\(b.id):\(APIKeys.idBase62(12))")
            }
        }
    }

    /// Grants plan credits that are due: the sign-up bonus once per user and plan, and the monthly
    /// credits once per billing period (and never while an earlier grant of the plan is still live).
    func applyGrants(_ users: Set<String>, policy: CreditGrantPolicy, work: inout LedgerWork, db: SQLiteDB.Handle) throws {
        guard policy.grantsAnything, !users.isEmpty else { return }
        var due: [(user: String, source: String, kind: BucketKind, amount: Int64, expires: Int64?, livePrefix: String?)] = []
        for chunk in Array(users).chunked(500) {
            let rows = try db.query(
                "SELECT id, plan, plan_since, created_at FROM users WHERE id IN (\(Self.placeholders(chunk.count)))", chunk.map { .text($0) })
            for row in rows {
                guard let id = row.column("id")?.string else { continue }
                let plan = row.column("plan")?.string ?? policy.defaultPlan
                guard let grants = policy.plans[plan] else { continue }
                if grants.signup > 0 {
                    due.append((id, "signup:\(id):\(plan)", .bonus, grants.signup, nil, nil))
                }
                if grants.monthly > 0 {
                    let anchor = Self.int64(row, "plan_since") ?? Self.int64(row, "created_at") ?? work.now
                    let period = BillingPeriod.containing(work.now, anchor: anchor)
                    due.append((id, "monthly:\(id):\(plan):\(period.start)", .plan, grants.monthly, period.end, "monthly:\(id):\(plan):"))
                }
            }
        }
        let unknown = grantMemo.withLock { memo in due.filter { !memo.contains($0.source) } }
        guard !unknown.isEmpty else { return }
        var existing = Set<String>()
        for chunk in unknown.chunked(500) {
            for row in try db.query(
                "SELECT source FROM credit_buckets WHERE source IN (\(Self.placeholders(chunk.count)))", chunk.map { .text($0.source) })
            {
                if let s = row.column("source")?.string { existing.insert(s) }
            }
        }
        var created: [[SQLValue]] = []
        for grant in unknown where !existing.contains(grant.source) {
            if let prefix = grant.livePrefix {
                // A plan left and rejoined within a period keeps the grant it already had.
                let live = try db.query(
                    "SELECT 1 FROM credit_buckets WHERE user_id = ? AND kind = 'plan' AND source LIKE ? AND expires_at > ? LIMIT 1",
                    [.text(grant.user), .text(prefix + "%"), .integer(Int(work.now))])
                if !live.isEmpty { continue }
            }
            let id = APIKeys.generateID(prefix: "cb_")
            created.append([
                .text(id), .text(grant.user), .text(grant.kind.rawValue), .integer(Int(grant.amount)), .integer(0),
                grant.expires.map { .integer(Int($0)) } ?? .null, .integer(Int(work.now)), .text(grant.source),
                .text(grant.kind == .plan ? "monthly plan credits" : "sign-up bonus"),
            ])
            work.buckets[grant.user, default: []].append(BucketBalance(id: id, kind: grant.kind, balance: 0, expiresAt: grant.expires, createdAt: work.now))
            work.entry(grant.user, bucket: id, kind: grant.kind == .plan ? .grant : .bonus, amount: grant.amount, request: nil, key: "grant:\(grant.source)")
        }
        try Self.insertRows(
            db, "credit_buckets", ["id", "user_id", "kind", "granted", "balance", "expires_at", "created_at", "source", "note"], created)
        grantMemo.withLock { memo in
            if memo.count > 100_000 { memo.removeAll() }
            for grant in unknown { memo.insert(grant.source) }
        }
    }

    /// One ledger row to append. A row with `held` stands for the entries of a hold that was
    /// reserved and settled in the same batch (see ``packedEntries(_:held:)``): its `amount` is their net.
    struct PendingEntry {
        var user: String
        var bucket: String?
        var kind: LedgerEntry.Kind
        var amount: Int64
        var request: String?
        var key: String
        var note: String?
        var held: Int64?
    }

    /// Appends the transaction's entries and writes the changed balances. Ids are given here, in
    /// order: a packed row leaves room below its id for the entries it stands for, so every listed
    /// entry keeps an id of its own and the order they were written in.
    static func flush(_ work: LedgerWork, db: SQLiteDB.Handle) throws {
        let pending = work.entries.compactMap { $0 }
        if !pending.isEmpty {
            var id = Int64(try db.query("SELECT COALESCE(MAX(id), 0) AS m FROM ledger_entries").first?.column("m")?.integer ?? 0)
            let rows = pending.map { e -> [SQLValue] in
                id += 1 + Int64(e.held == nil ? 0 : packedGap(e.kind))
                return [
                    .integer(Int(id)), .text(e.user), e.bucket.map { .text($0) } ?? .null, .text(e.kind.rawValue), .integer(Int(e.amount)),
                    e.request.map { .text($0) } ?? .null, .text(e.key), .integer(Int(work.now)), e.note.map { .text($0) } ?? .null,
                    e.held.map { .integer(Int($0)) } ?? .null,
                ]
            }
            try insertRows(
                db, "ledger_entries", ["id", "user_id", "bucket_id", "kind", "amount", "request_id", "idempotency_key", "created_at", "note", "held"], rows)
        }
        for bucket in work.changed {
            guard let balance = work.balance(of: bucket) else { continue }
            _ = try db.query("UPDATE credit_buckets SET balance = ? WHERE id = ?", [.integer(Int(balance)), .text(bucket)])
        }
    }

    /// The idempotency key of a request's ledger entry: the request first, so a request's entries sit
    /// together in the key index and new ones append at its end (request ids are time-ordered). Keys that
    /// began with the kind (`charge:req_…`, before this format) grew four ranges in mid-index, each insert
    /// splitting half-full pages and each settlement writing several of them to the WAL.
    static func requestEntryKey(_ request: String, _ kind: LedgerEntry.Kind, _ bucket: String) -> String {
        "\(request):\(kind.rawValue):\(bucket)"
    }

    /// Bounds of every key `requestEntryKey(request, kind, _)`, whatever the bucket: `…:kind:` up to
    /// `…:kind;` (the character after `:`).
    static func keyRange(_ request: String, _ kind: LedgerEntry.Kind) -> [SQLValue] {
        let low = requestEntryKey(request, kind, "")
        return [.text(low), .text(String(low.dropLast()) + ";")]
    }

    static func placeholders(_ n: Int) -> String { Array(repeating: "?", count: n).joined(separator: ",") }

    /// Inserts rows with one prepared single-row statement, stepped per row (in-thread, a step is
    /// cheaper than building and caching a multi-row statement text per batch size).
    static func insertRows(_ db: SQLiteDB.Handle, _ table: String, _ columns: [String], _ rows: [[SQLValue]], orIgnore: Bool = false) throws {
        guard !rows.isEmpty else { return }
        let sql = "INSERT \(orIgnore ? "OR IGNORE " : "")INTO \(table) (\(columns.joined(separator: ", "))) VALUES (\(placeholders(columns.count)))"
        try db.executeEach(sql, rows)
    }

    // MARK: Reserve and settle

    public func reserve(_ requests: [ReservationRequest], policy: CreditGrantPolicy, now: Int64) async throws -> [ReservationResult] {
        try await apply(requests.map { .reserve($0) }, policy: policy, now: now).outcomes.map {
            if case .reserved(let r) = $0 { return r }
            throw StoreError.unavailable("a reservation produced no result")
        }
    }

    public func settle(_ settlements: [Settlement], now: Int64) async throws -> [SettlementResult] {
        try await apply(settlements.map { .settle($0) }, policy: nil, now: now).outcomes.map {
            if case .settled(let r) = $0 { return r }
            throw StoreError.unavailable("a settlement produced no result")
        }
    }

    public func recordUsage(_ rows: [UsageRecord]) async throws {
        _ = try await apply(rows.map { .usage($0) }, policy: nil, now: EpochClock.nowMilliseconds(), waiting: false)
    }

    public func apply(_ operations: [LedgerOperation], policy: CreditGrantPolicy?, now: Int64, waiting: Bool) async throws -> LedgerResult {
        guard !operations.isEmpty else { return LedgerResult(outcomes: [], users: [:]) }
        let body: @Sendable (SQLiteDB.Handle) throws -> LedgerResult = { db in try self.apply(operations, policy: policy, now: now, db: db) }
        // Written behind, on an event loop, the batch would hold up every other request of that loop
        // for its whole transaction (at one connection: p90 +100 µs, p99 +150 µs).
        // Nobody waits for a written-behind batch: on the writer's thread, yielding the CPU now and then.
        return waiting ? try await transactionHere(body) : try await yieldingTransaction(body)
    }

    public func appliedRequests(_ ids: [String]) async throws -> AppliedRequests {
        var applied = AppliedRequests(reserved: [], settled: [])
        for chunk in ids.chunked(500) {
            let values = chunk.map { SQLValue.text($0) }
            for row in try await reader.query("SELECT id FROM reservations WHERE id IN (\(Self.placeholders(chunk.count)))", values) {
                if let id = row.column("id")?.string { applied.reserved.insert(id) }
            }
            for row in try await reader.query("SELECT id FROM usage_records WHERE id IN (\(Self.placeholders(chunk.count)))", values) {
                if let id = row.column("id")?.string { applied.settled.insert(id) }
            }
        }
        applied.reserved.formUnion(applied.settled)
        return applied
    }

    /// Runs a batch of reservations, settlements and usage rows in one transaction: each user's buckets
    /// are read once, and the batch's entries, holds and rows are written together.
    func apply(_ operations: [LedgerOperation], policy: CreditGrantPolicy?, now: Int64, db: SQLiteDB.Handle) throws -> LedgerResult {
        var reserveUsers = Set<String>()
        var settleUsers = Set<String>()
        var settleIDs: [String] = []
        for op in operations {
            switch op {
            case .reserve(let r): reserveUsers.insert(r.userID)
            case .settle(let s):
                settleIDs.append(s.usage.id)
                if let u = s.usage.userID { settleUsers.insert(u) }
            case .usage: break
            }
        }
        var holds: [String: (user: String, allocation: [(String, Int64)])] = [:]
        for chunk in settleIDs.chunked(500) {
            for row in try db.query(
                "SELECT id, user_id, allocations FROM reservations WHERE id IN (\(Self.placeholders(chunk.count)))", chunk.map { .text($0) })
            {
                guard let id = row.column("id")?.string, let user = row.column("user_id")?.string else { continue }
                holds[id] = (user, Self.parseAllocation(row.column("allocations")?.string ?? ""))
            }
        }
        let users = reserveUsers.union(settleUsers).union(holds.values.map(\.user))
        var work = try Self.loadBuckets(users, now: now, db: db)
        // Held buckets may have been emptied to zero by the hold itself: make sure they are loaded.
        try Self.loadHeldBuckets(holds, into: &work, db: db)
        if let policy, !reserveUsers.isEmpty { try self.applyGrants(reserveUsers, policy: policy, work: &work, db: db) }
        Self.expire(&work)

        var outcomes: [LedgerOutcome] = []
        outcomes.reserveCapacity(operations.count)
        // A hold settled in the same batch (both decided in memory, written behind) is never written:
        // its ledger entries and usage row say all there is, and recovery counts a usage row as the
        // reservation applied too. Inserting and then deleting it cost two b-tree writes per request.
        // With each new hold, where its reservation entries sit in `work.entries`: settled in this
        // batch, they are taken back and the settlement writes one packed row per bucket instead.
        var newHolds: [(request: ReservationRequest, held: [(bucket: String, amount: Int64)], rows: Range<Int>)?] = []
        var newHoldIndex: [String: Int] = [:]
        var usageRows: [[SQLValue]] = []
        var settled: [String] = []
        for op in operations {
            switch op {
            case .reserve(let r):
                guard r.amount > 0 else {
                    outcomes.append(.reserved(.reserved(available: work.available(r.userID))))
                    continue
                }
                var allocation = CreditAllocator.allocate(r.amount, from: work.buckets[r.userID] ?? [], now: now)
                let partial = allocation == nil
                if partial {
                    guard r.admitted else {
                        outcomes.append(.reserved(.insufficient(available: work.available(r.userID))))
                        continue
                    }
                    // Admitted in memory and maybe sent already: hold what there is; the settlement takes the rest.
                    allocation = CreditAllocator.allocate(work.available(r.userID), from: work.buckets[r.userID] ?? [], now: now) ?? []
                }
                let held = allocation ?? []
                let firstRow = work.entries.count
                for (bucket, amount) in held {
                    work.entry(r.userID, bucket: bucket, kind: .reservation, amount: -amount, request: r.id, key: Self.requestEntryKey(r.id, .reservation, bucket))
                }
                newHoldIndex[r.id] = newHolds.count
                newHolds.append((r, held, firstRow..<work.entries.count))
                // Its settlement may follow in this same batch (both decided in memory, written behind).
                holds[r.id] = (r.userID, held.map { ($0.bucket, $0.amount) })
                let available = work.available(r.userID)
                outcomes.append(.reserved(partial ? .insufficient(available: available) : .reserved(available: available)))
            case .usage(let row):
                usageRows.append(Self.usageRow(row))
                outcomes.append(.recorded)
            case .settle(let s):
                var usage = s.usage
                guard let hold = holds.removeValue(forKey: usage.id) else {
                    // Nothing held: either settled before (a retry: nothing more happens) or never
                    // reserved (the usage row is written; nothing is charged).
                    usage.credits = 0
                    let id = usage.id
                    // A settlement leaves a release or a refund; a packed one (its hold reserved in
                    // the same batch) a charge or a refund row only.
                    let before = try db.query(
                        """
                        SELECT 1 FROM ledger_entries WHERE (idempotency_key >= ? AND idempotency_key < ?)
                            OR (idempotency_key >= ? AND idempotency_key < ?) OR (idempotency_key >= ? AND idempotency_key < ?) LIMIT 1
                        """,
                        Self.keyRange(id, .release) + Self.keyRange(id, .refund) + Self.keyRange(id, .charge))
                    if before.isEmpty { usageRows.append(Self.usageRow(usage)) }
                    outcomes.append(.settled(SettlementResult(charged: 0, available: usage.userID.map { work.available($0) } ?? 0, uncovered: 0)))
                    continue
                }
                let newHold = newHoldIndex.removeValue(forKey: usage.id)
                let (charged, uncovered) = Self.settle(
                    s.kind, id: usage.id, hold: hold, work: &work, now: now, packing: newHold.flatMap { newHolds[$0]?.rows })
                usage.credits = charged
                usageRows.append(Self.usageRow(usage))
                if let i = newHold { newHolds[i] = nil } else { settled.append(usage.id) }
                outcomes.append(.settled(SettlementResult(charged: charged, available: work.available(hold.user), uncovered: uncovered)))
            }
        }
        try Self.flush(work, db: db)
        // Rows only for the holds still open (most settle in their own batch).
        let holdRows = newHolds.compactMap { hold -> [SQLValue]? in
            guard let (r, held, _) = hold else { return nil }
            return [
                .text(r.id), .text(r.requestID), .text(r.userID), .text(r.keyID), .integer(Int(held.reduce(0) { $0 + $1.amount })),
                .text(Self.encodeAllocation(held)), .text(r.model), .integer(Int(now)),
            ]
        }
        try Self.insertRows(db, "reservations", ["id", "request_id", "user_id", "key_id", "amount", "allocations", "model", "created_at"], holdRows)
        for id in settled { _ = try db.query("DELETE FROM reservations WHERE id = ?", [.text(id)]) }
        try Self.insertRows(db, "usage_records", Self.usageColumns, usageRows)
        var states: [String: LedgerUserState] = [:]
        for user in users { states[user] = LedgerUserState(available: work.available(user), nextExpiry: work.nextExpiry(user)) }
        return LedgerResult(outcomes: outcomes, users: states)
    }

    /// Releases (or refunds) a hold and takes the cost: from the held buckets first (even one that
    /// expired meanwhile), then from the live ones; what they cannot cover is returned as uncovered.
    ///
    /// `packing`: where the hold's reservation entries sit among this batch's rows, when the hold was
    /// reserved in this same batch. Those rows are taken back, and each held bucket gets one packed
    /// row (``PendingEntry/held``) that stands for its reservation, its release or refund, and its
    /// charge: a request costs the ledger one row per bucket instead of three, and the history lists
    /// the same entries (``packedEntries(_:held:)``). Balances move exactly as without packing.
    static func settle(
        _ kind: Settlement.Kind, id: String, hold: (user: String, allocation: [(String, Int64)]), work: inout LedgerWork, now: Int64,
        packing: Range<Int>? = nil
    ) -> (charged: Int64, uncovered: Int64) {
        if let packing {
            for i in packing { work.entries[i] = nil }
        }
        switch kind {
        case .refund:
            for (bucket, amount) in hold.allocation {
                let key = Self.requestEntryKey(id, .refund, bucket)
                if packing != nil {
                    work.adjust(hold.user, bucket, by: amount)
                    work.entries.append(PendingEntry(user: hold.user, bucket: bucket, kind: .refund, amount: 0, request: id, key: key, held: amount))
                } else {
                    work.entry(hold.user, bucket: bucket, kind: .refund, amount: amount, request: id, key: key)
                }
            }
            return (0, 0)
        case .charge(let cost):
            for (bucket, amount) in hold.allocation {
                if packing != nil {
                    work.adjust(hold.user, bucket, by: amount)
                } else {
                    work.entry(hold.user, bucket: bucket, kind: .release, amount: amount, request: id, key: Self.requestEntryKey(id, .release, bucket))
                }
            }
            var left = max(0, cost)
            var takes: [(String, Int64)] = []
            for (bucket, amount) in hold.allocation where left > 0 {
                let take = min(left, amount)
                takes.append((bucket, take))
                left -= take
            }
            for (bucket, take) in takes { work.adjust(hold.user, bucket, by: -take) }
            if left > 0 {
                for b in CreditAllocator.spendOrder(work.buckets[hold.user] ?? []) where left > 0 && b.balance > 0 && (b.expiresAt.map { $0 > now } ?? true) {
                    let take = min(left, b.balance)
                    takes.append((b.id, take))
                    work.adjust(hold.user, b.id, by: -take)
                    left -= take
                }
            }
            // Record one charge entry per bucket (the balances were adjusted above).
            var byBucket: [(String, Int64)] = []
            for (bucket, take) in takes {
                if let i = byBucket.firstIndex(where: { $0.0 == bucket }) { byBucket[i].1 += take } else { byBucket.append((bucket, take)) }
            }
            var charged: Int64 = 0
            // Packed: one row per held bucket, its charge (if any) included; then the charges beyond it.
            var packed: Set<String> = []
            if packing != nil {
                for (bucket, amount) in hold.allocation {
                    let take = byBucket.first(where: { $0.0 == bucket })?.1 ?? 0
                    work.entries.append(PendingEntry(
                        user: hold.user, bucket: bucket, kind: .charge, amount: -take, request: id, key: Self.requestEntryKey(id, .charge, bucket),
                        held: amount))
                    packed.insert(bucket)
                    charged += take
                }
            }
            for (bucket, take) in byBucket where take > 0 && !packed.contains(bucket) {
                work.entry(hold.user, bucket: nil, kind: .charge, amount: -take, request: id, key: Self.requestEntryKey(id, .charge, bucket), entryBucket: bucket)
                charged += take
            }
            return (charged, left)
        }
    }

    static func encodeAllocation(_ allocation: [(bucket: String, amount: Int64)]) -> String {
        allocation.map { "\($0.bucket)=\($0.amount)" }.joined(separator: ",")
    }

    static func parseAllocation(_ text: String) -> [(String, Int64)] {
        text.split(separator: ",").compactMap { part in
            let pieces = part.split(separator: "=", maxSplits: 1)
            guard pieces.count == 2, let amount = Int64(pieces[1]) else { return nil }
            return (String(pieces[0]), amount)
        }
    }

    /// Adds held buckets that `loadBuckets` skipped because the hold brought them to zero.
    static func loadHeldBuckets(_ holds: [String: (user: String, allocation: [(String, Int64)])], into work: inout LedgerWork, db: SQLiteDB.Handle) throws {
        var missing: [String: String] = [:]
        for hold in holds.values {
            for (bucket, _) in hold.allocation where !(work.buckets[hold.user] ?? []).contains(where: { $0.id == bucket }) { missing[bucket] = hold.user }
        }
        guard !missing.isEmpty else { return }
        for chunk in Array(missing.keys).chunked(500) {
            for row in try db.query(
                "SELECT id, user_id, kind, balance, expires_at, created_at FROM credit_buckets WHERE id IN (\(placeholders(chunk.count)))",
                chunk.map { .text($0) })
            {
                guard let id = row.column("id")?.string, let user = row.column("user_id")?.string else { continue }
                work.buckets[user, default: []].append(BucketBalance(
                    id: id, kind: BucketKind(rawValue: row.column("kind")?.string ?? "") ?? .topup,
                    balance: int64(row, "balance") ?? 0, expiresAt: int64(row, "expires_at"), createdAt: int64(row, "created_at") ?? 0))
            }
        }
    }

    static let usageColumns = [
        "id", "request_id", "created_at", "user_id", "key_id", "model", "provider", "upstream_model", "input_tokens", "output_tokens",
        "cached_tokens", "usage_estimated", "credits", "status", "outcome", "latency_ms", "stream", "error_code",
    ]

    static func usageRow(_ u: UsageRecord) -> [SQLValue] {
        func text(_ s: String?) -> SQLValue { s.map { .text($0) } ?? .null }
        return [
            .text(u.id), .text(u.requestID), .integer(Int(u.createdAt)), text(u.userID), text(u.keyID), .text(u.model), text(u.provider),
            text(u.upstreamModel), .integer(u.inputTokens), .integer(u.outputTokens), .integer(u.cachedTokens), .integer(u.usageEstimated ? 1 : 0),
            .integer(Int(u.credits)), .integer(u.status), .text(u.outcome), .integer(u.latencyMs), .integer(u.stream ? 1 : 0), text(u.errorCode),
        ]
    }

    static func usageRecord(_ row: SQLRow) -> UsageRecord {
        UsageRecord(
            id: row.column("id")?.string ?? "", requestID: row.column("request_id")?.string ?? "", createdAt: int64(row, "created_at") ?? 0,
            userID: row.column("user_id")?.string, keyID: row.column("key_id")?.string, model: row.column("model")?.string ?? "",
            provider: row.column("provider")?.string, upstreamModel: row.column("upstream_model")?.string,
            inputTokens: row.column("input_tokens")?.integer ?? 0, outputTokens: row.column("output_tokens")?.integer ?? 0,
            cachedTokens: row.column("cached_tokens")?.integer ?? 0, usageEstimated: row.column("usage_estimated")?.integer == 1,
            credits: int64(row, "credits") ?? 0, status: row.column("status")?.integer ?? 0, outcome: row.column("outcome")?.string ?? "",
            latencyMs: row.column("latency_ms")?.integer ?? 0, stream: row.column("stream")?.integer == 1, errorCode: row.column("error_code")?.string)
    }

    // MARK: Grants, balances, history

    public func grant(userEmail: String, amount: Int64, kind: BucketKind, note: String?, expiresAt: Int64?, idempotencyKey: String?, now: Int64) async throws -> CreditBucket {
        guard amount > 0 else { throw StoreError.invalid("the amount must be positive") }
        let source = "manual:" + (idempotencyKey ?? APIKeys.idBase62(20))
        let bucketID = try await transaction { db -> String in
            let user = try Self.ensureUser(email: userEmail, now: Int(now), db: db)
            if let row = try db.query("SELECT id FROM credit_buckets WHERE source = ?", [.text(source)]).first, let id = row.column("id")?.string {
                return id  // the same grant, retried
            }
            let id = APIKeys.generateID(prefix: "cb_")
            try Self.insertRows(db, "credit_buckets", ["id", "user_id", "kind", "granted", "balance", "expires_at", "created_at", "source", "note"], [[
                .text(id), .text(user), .text(kind.rawValue), .integer(Int(amount)), .integer(Int(amount)),
                expiresAt.map { .integer(Int($0)) } ?? .null, .integer(Int(now)), .text(source), note.map { .text($0) } ?? .null,
            ]])
            let entryKind: LedgerEntry.Kind = kind == .topup ? .topup : kind == .bonus ? .bonus : .grant
            try Self.insertRows(db, "ledger_entries", ["user_id", "bucket_id", "kind", "amount", "request_id", "idempotency_key", "created_at", "note"], [[
                .text(user), .text(id), .text(entryKind.rawValue), .integer(Int(amount)), .null, .text("grant:\(source)"), .integer(Int(now)),
                note.map { .text($0) } ?? .null,
            ]])
            return id
        }
        guard let bucket = try await bucket(id: bucketID) else { throw StoreError.unavailable("the new bucket could not be read back") }
        return bucket
    }

    func bucket(id: String) async throws -> CreditBucket? {
        try await writer.query("SELECT * FROM credit_buckets WHERE id = ?", [.text(id)]).first.map(Self.creditBucket)
    }

    static func creditBucket(_ row: SQLRow) -> CreditBucket {
        CreditBucket(
            id: row.column("id")?.string ?? "", kind: BucketKind(rawValue: row.column("kind")?.string ?? "") ?? .topup,
            granted: int64(row, "granted") ?? 0, balance: int64(row, "balance") ?? 0, expiresAt: int64(row, "expires_at"),
            createdAt: int64(row, "created_at") ?? 0, note: row.column("note")?.string)
    }

    public func creditBalance(userID: String, policy: CreditGrantPolicy, now: Int64) async throws -> CreditBalance {
        try await transaction { db in
            var work = try Self.loadBuckets([userID], now: now, db: db)
            try self.applyGrants([userID], policy: policy, work: &work, db: db)
            Self.expire(&work)
            try Self.flush(work, db: db)
            let rows = try db.query(
                "SELECT * FROM credit_buckets WHERE user_id = ? AND balance > 0 AND (expires_at IS NULL OR expires_at > ?)",
                [.text(userID), .integer(Int(now))])
            let buckets = rows.map(Self.creditBucket)
            let ordered = CreditAllocator.spendOrder(buckets.map {
                BucketBalance(id: $0.id, kind: $0.kind, balance: $0.balance, expiresAt: $0.expiresAt, createdAt: $0.createdAt)
            }).compactMap { b in buckets.first { $0.id == b.id } }
            let reserved = try db.query("SELECT COALESCE(SUM(amount), 0) AS s FROM reservations WHERE user_id = ?", [.text(userID)])
            return CreditBalance(
                available: ordered.reduce(0) { $0 + $1.balance }, reserved: Int64(reserved.first?.column("s")?.integer ?? 0), buckets: ordered)
        }
    }

    public func creditHistory(userID: String, limit: Int) async throws -> [LedgerEntry] {
        let limit = max(1, min(limit, 100_000))
        // A row lists as one entry or, packed, as up to three: `limit` rows cover `limit` entries.
        let rows = try await reader.query("SELECT * FROM ledger_entries WHERE user_id = ? ORDER BY id DESC LIMIT ?", [.text(userID), .integer(limit)])
        var entries: [LedgerEntry] = []
        for row in rows {
            let entry = LedgerEntry(
                id: Self.int64(row, "id") ?? 0, userID: row.column("user_id")?.string ?? "", bucketID: row.column("bucket_id")?.string,
                kind: LedgerEntry.Kind(rawValue: row.column("kind")?.string ?? "") ?? .charge, amount: Self.int64(row, "amount") ?? 0,
                requestID: row.column("request_id")?.string, idempotencyKey: row.column("idempotency_key")?.string ?? "",
                createdAt: Self.int64(row, "created_at") ?? 0, note: row.column("note")?.string)
            if let held = Self.int64(row, "held") {
                entries += Self.packedEntries(entry, held: held)
            } else {
                entries.append(entry)
            }
            if entries.count >= limit { break }
        }
        return Array(entries.prefix(limit))
    }

    /// How many ids a packed row of `kind` leaves free below its own: one per entry it stands for
    /// besides its own (a charge: the reservation and the release; a refund: the reservation).
    static func packedGap(_ kind: LedgerEntry.Kind) -> Int { kind == .refund ? 1 : 2 }

    /// The entries a packed row stands for, newest first, as they would have been written one by one:
    /// the reservation of `held`, its release (or refund), and the charge when there was one. Their
    /// amounts add up to the row's, so sums over rows (balances, the ledger check) are unchanged.
    static func packedEntries(_ row: LedgerEntry, held: Int64) -> [LedgerEntry] {
        let request = row.requestID ?? ""
        let bucket = row.bucketID ?? ""
        var reservation = row
        reservation.kind = .reservation
        reservation.amount = -held
        reservation.id = row.id - Int64(packedGap(row.kind))
        reservation.idempotencyKey = requestEntryKey(request, .reservation, bucket)
        if row.kind == .refund {
            var refund = row
            refund.amount = held
            return [refund, reservation]
        }
        var release = row
        release.kind = .release
        release.amount = held
        release.id = row.id - 1
        release.idempotencyKey = requestEntryKey(request, .release, bucket)
        return row.amount != 0 ? [row, release, reservation] : [release, reservation]
    }

    public func usage(_ q: UsageQuery) async throws -> [UsageRecord] {
        var conditions: [String] = []
        var binds: [SQLValue] = []
        if let u = q.userID {
            conditions.append("user_id = ?")
            binds.append(.text(u))
        }
        if let k = q.keyID {
            conditions.append("key_id = ?")
            binds.append(.text(k))
        }
        if let since = q.since {
            conditions.append("created_at >= ?")
            binds.append(.integer(Int(since)))
        }
        let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        binds.append(.integer(max(1, min(q.limit, 1_000_000))))
        // Per user, the (user_id, created_at) index orders; otherwise insertion (rowid) order is time order.
        let order = q.userID != nil ? "created_at DESC, rowid DESC" : "rowid DESC"
        return try await reader.query("SELECT * FROM usage_records \(filter) ORDER BY \(order) LIMIT ?", binds).map(Self.usageRecord)
    }

    public func openReservations() async throws -> [OpenReservation] {
        try await writer.query("SELECT * FROM reservations ORDER BY created_at, id").map { row in
            OpenReservation(
                id: row.column("id")?.string ?? "", requestID: row.column("request_id")?.string ?? "", userID: row.column("user_id")?.string ?? "", keyID: row.column("key_id")?.string ?? "",
                amount: Self.int64(row, "amount") ?? 0, model: row.column("model")?.string ?? "", createdAt: Self.int64(row, "created_at") ?? 0)
        }
    }

    // MARK: Redemption codes

    /// `SYC-` and 16 Crockford base-32 characters (80 bits) in groups of four.
    static func generateCode() -> String {
        let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
        var rng = SystemRandomNumberGenerator()
        var groups: [String] = []
        for _ in 0..<4 {
            var g = ""
            for _ in 0..<4 { g.append(alphabet[Int.random(in: 0..<32, using: &rng)]) }
            groups.append(g)
        }
        return "SYC-" + groups.joined(separator: "-")
    }

    /// Codes compare without dashes, spaces or case, and with Crockford's look-alikes folded.
    static func normalizeCode(_ code: String) -> String {
        var out = ""
        for c in code.uppercased() {
            switch c {
            case "-", " ", "\t": continue
            case "O": out.append("0")
            case "I", "L": out.append("1")
            default: out.append(c)
            }
        }
        return out
    }

    static func codeHash(_ code: String) -> String { APIKeys.hash(normalizeCode(code)).hex }

    public func createCodes(count: Int, credits: Int64, expiresAt: Int64?, now: Int64) async throws -> [CreatedCode] {
        guard (1...10_000).contains(count), credits > 0 else { throw StoreError.invalid("count must be 1–10000 and credits positive") }
        let codes = (0..<count).map { _ in CreatedCode(code: Self.generateCode(), id: APIKeys.generateID(prefix: "code_"), credits: credits, expiresAt: expiresAt) }
        try await transaction { db in
            try Self.insertRows(db, "redemption_codes", ["id", "hash", "hint", "credits", "created_at", "expires_at"], codes.map { c in
                [.text(c.id), .text(Self.codeHash(c.code)), .text(String(c.code.suffix(4))), .integer(Int(credits)), .integer(Int(now)),
                 expiresAt.map { .integer(Int($0)) } ?? .null]
            })
        }
        return codes
    }

    public func listCodes() async throws -> [CodeRecord] {
        try await reader.query("SELECT * FROM redemption_codes ORDER BY created_at DESC, id").map { row in
            CodeRecord(
                id: row.column("id")?.string ?? "", hint: row.column("hint")?.string ?? "", credits: Self.int64(row, "credits") ?? 0,
                createdAt: Self.int64(row, "created_at") ?? 0, expiresAt: Self.int64(row, "expires_at"),
                redeemedBy: row.column("redeemed_by")?.string, redeemedAt: Self.int64(row, "redeemed_at"))
        }
    }

    public func redeem(code: String, userID: String, policy: CreditGrantPolicy, now: Int64) async throws -> RedeemResult {
        let hash = Self.codeHash(code)
        return try await transaction { db -> RedeemResult in
            guard let row = try db.query("SELECT * FROM redemption_codes WHERE hash = ?", [.text(hash)]).first,
                let id = row.column("id")?.string
            else { return .unknown }
            if row.column("redeemed_at")?.integer != nil { return .alreadyRedeemed }
            if let expires = Self.int64(row, "expires_at"), expires <= now { return .expired }
            let credits = Self.int64(row, "credits") ?? 0
            _ = try db.query("UPDATE redemption_codes SET redeemed_by = ?, redeemed_at = ? WHERE id = ? AND redeemed_at IS NULL",
                                   [.text(userID), .integer(Int(now)), .text(id)])
            let bucket = APIKeys.generateID(prefix: "cb_")
            let note = "redeemed code …\(row.column("hint")?.string ?? "")"
            try Self.insertRows(db, "credit_buckets", ["id", "user_id", "kind", "granted", "balance", "expires_at", "created_at", "source", "note"], [[
                .text(bucket), .text(userID), .text(BucketKind.topup.rawValue), .integer(Int(credits)), .integer(Int(credits)), .null,
                .integer(Int(now)), .text("code:\(id)"), .text(note),
            ]])
            try Self.insertRows(db, "ledger_entries", ["user_id", "bucket_id", "kind", "amount", "request_id", "idempotency_key", "created_at", "note"], [[
                .text(userID), .text(bucket), .text(LedgerEntry.Kind.topup.rawValue), .integer(Int(credits)), .null, .text("grant:code:\(id)"),
                .integer(Int(now)), .text(note),
            ]])
            var work = try Self.loadBuckets([userID], now: now, db: db)
            try self.applyGrants([userID], policy: policy, work: &work, db: db)
            Self.expire(&work)
            try Self.flush(work, db: db)
            return .redeemed(credits: credits, available: work.available(userID))
        }
    }

    // MARK: Self-check

    public func checkLedger() async throws -> LedgerCheck {
        try await transaction { db in
            let rows = try db.query("""
                SELECT b.id AS id, b.balance AS balance, COALESCE((SELECT SUM(amount) FROM ledger_entries e WHERE e.bucket_id = b.id), 0) AS total
                FROM credit_buckets b
                """)
            var mismatched: [String] = []
            var negative: [String] = []
            for row in rows {
                let id = row.column("id")?.string ?? ""
                let balance = Self.int64(row, "balance") ?? 0
                if balance != (Self.int64(row, "total") ?? 0) { mismatched.append(id) }
                if balance < 0 { negative.append(id) }
            }
            let charged = try db.query("SELECT COALESCE(-SUM(amount), 0) AS s FROM ledger_entries WHERE kind = 'charge'").first?.column("s")?.integer ?? 0
            let usage = try db.query("SELECT COALESCE(SUM(credits), 0) AS s FROM usage_records").first?.column("s")?.integer ?? 0
            let open = try db.query("SELECT COUNT(*) AS n FROM reservations").first?.column("n")?.integer ?? 0
            return LedgerCheck(
                bucketsChecked: rows.count, mismatchedBuckets: mismatched, totalCharged: Int64(charged), totalUsageCredits: Int64(usage),
                openReservations: open, negativeBuckets: negative)
        }
    }
}

extension Array {
    func chunked(_ size: Int) -> [ArraySlice<Element>] {
        stride(from: 0, to: count, by: Swift.max(1, size)).map { self[$0..<Swift.min($0 + size, count)] }
    }
}
