import Logging
import NIOCore
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardStore
import Synchronization

/// The gateway's side of the credit ledger: reservations before dispatch, settlements after, and
/// usage rows for every model call.
///
/// The gateway is the one process that spends its database's credits (docs/operations.md), so it keeps
/// each user's spendable balance in memory and decides reservations and settlements there: a decision
/// is appended to the ledger journal (one `write`, durable against a crash of the process from then on)
/// and written to the database with the others of the next `writeDelay`, in one transaction, off the
/// request path. The database stays the ledger of record: every batch reports the users' balances as
/// it left them, and memory starts again from those (so credits granted by another process, the CLI,
/// show up with the next batch). What memory cannot decide goes to the database on the request path,
/// in order with everything queued before it: a user not seen since the start, a balance that looks
/// too small (a grant may have arrived), a balance whose bucket expires, a settlement that costs more
/// than its hold.
final class CreditMeter: Sendable {
    let store: any CreditStore
    let policy: CreditGrantPolicy
    let pricing: PricingConfig
    let cancelledStreams: CancelledStreamPolicy
    let logger: Logger
    /// How long decided operations wait to share a transaction; zero writes each on the request path.
    let writeDelay: Duration
    /// How long before a bucket's expiry memory stops spending from it (ms): the write delay and then
    /// some, for the batch that writes the hold (the database holds nothing from an expired bucket).
    let expiryMargin: Int64
    /// Where decided operations wait for the database (nil for a database in memory).
    let journal: LedgerJournal?
    /// What a previous process left in the journal (applied by ``recoverJournal()``).
    private let leftover: Mutex<LedgerJournal.Leftover?>
    private let state = Mutex(LedgerState())
    /// Operations per transaction at most.
    let maxBatch = 512
    /// How long a batch written behind may take before the store is asked to expedite it: the
    /// batches run at a low priority where the store can (SQLite: the idle scheduling class), which on
    /// saturated CPUs can starve them; a batch still running this long after it started, while new
    /// decisions queue behind it, is expedited (nanoseconds).
    static let lateAfter: UInt64 = 10_000_000

    /// Whether work written behind that started at `start` (uptime, ns) runs past ``lateAfter``.
    private static func late(since start: UInt64) -> Bool { NIODeadline.now().uptimeNanoseconds &- start >= lateAfter }
    /// Usage rows written in the background and not yet committed (so shutdown can wait for them).
    private let pendingUsage = Atomic<Int>(0)
    /// When the usage rows being written left their buffer (uptime, ns; 0 when none are).
    private let usageWriteStarted = Atomic<UInt64>(0)
    /// Usage rows waiting for their window to end (`record`).
    private let usageBuffer = Mutex<[UsageRecord]>([])
    /// How long a usage row may wait to share a transaction: the WAL syncer's interval, so what a
    /// crash can take back is no more than what a power loss already could.
    let usageWindow: Duration = .milliseconds(20)

    /// A user's spendable credits as memory knows them.
    private struct UserCredit {
        /// As the last batch that touched the user left them in the database.
        var stored: Int64
        /// What operations queued since then take (negative) or give back.
        var pending: Int64 = 0
        /// When `stored` stops being good (a bucket expires), ms since the epoch.
        var validUntil: Int64
        /// Decided operations of the user still queued (the entry is kept while there are any).
        var queued = 0

        var available: Int64 { stored + pending }
    }

    private struct Queued {
        /// Nil for a barrier (``sync()``).
        var op: LedgerOperation?
        /// Someone on the request path waiting for the database's answer.
        var waiter: CheckedContinuation<LedgerOutcome?, any Error>?
        var segment: Int?
        var user: String?
        /// Added to the user's `pending` when queued; taken off once written.
        var effect: Int64 = 0
    }

    private struct LedgerState {
        var users: [String: UserCredit] = [:]
        /// Per user, queued operations the database decides: memory decides no reservation of the
        /// user until they are written (their effect on the balance is not known before).
        var undecided: [String: Int] = [:]
        var queue: [Queued] = []
        /// Queued operations someone waits for.
        var waiting = 0
        var running = false
        /// When the batch being written was taken from the queue (uptime, ns), and whether it was
        /// expedited since (see ``lateAfter``).
        var batchTaken: UInt64 = 0
        var expedited = false
        var timerArmed = false
        var failures = 0
    }

    init(store: any CreditStore, config: GatewayConfig, logger: Logger) {
        self.store = store
        self.logger = logger
        let policy = CreditGrantPolicy(config: config)
        self.policy = policy
        pricing = config.pricing
        cancelledStreams = config.billing.cancelledStreams
        writeDelay = config.billing.ledgerWriteDelay.duration
        expiryMargin = config.billing.ledgerWriteDelay.milliseconds + 10_000
        if let prefix = store.ledgerJournalPrefix {
            let found = LedgerJournal.replay(prefix: prefix)
            leftover = Mutex(found.segments.isEmpty ? nil : found)
            journal = LedgerJournal(prefix: prefix, firstSegment: found.nextSegment)
        } else {
            leftover = Mutex(nil)
            journal = nil
        }
    }

    private var decidesInMemory: Bool { writeDelay > .zero }



    // MARK: Reserve and settle

    func reserve(_ request: ReservationRequest) async throws -> ReservationResult {
        if decidesInMemory, let decided = reserveInMemory(request) { return decided }
        guard case .reserved(let result) = try await submitAndWait(.reserve(request), user: request.userID) else { throw StoreError.unavailable("a ledger operation produced no result") }
        return result
    }

    /// Settles a hold of `reserved`: in memory when it costs no more than the hold.
    func settle(_ settlement: Settlement, reserved: Int64) async throws -> SettlementResult {
        if decidesInMemory, let decided = settleInMemory(settlement, reserved: reserved) { return decided }
        guard case .settled(let result) = try await submitAndWait(.settle(settlement), user: settlement.usage.userID) else { throw StoreError.unavailable("a ledger operation produced no result") }
        return result
    }

    /// The reservation decided in memory, at once; nil when only the database can decide it (then
    /// ``reserve(_:)``). For callers that must not wait: the request path served from the event loop.
    func reserveImmediately(_ request: ReservationRequest) -> ReservationResult? {
        decidesInMemory ? reserveInMemory(request) : nil
    }

    /// The settlement decided in memory, at once; nil when only the database can decide it.
    func settleImmediately(_ settlement: Settlement, reserved: Int64) -> SettlementResult? {
        decidesInMemory ? settleInMemory(settlement, reserved: reserved) : nil
    }

    private func reserveInMemory(_ request: ReservationRequest) -> ReservationResult? {
        guard request.amount > 0 else { return nil }
        var admitted = request
        admitted.admitted = true
        let now = EpochClock.nowMilliseconds()
        let (decided, next) = state.withLock { s -> (ReservationResult?, Queueing) in
            // The batch that writes the hold runs later than now: a bucket must outlive it.
            guard var user = s.users[request.userID], now + expiryMargin < user.validUntil, user.available >= request.amount,
                  s.undecided[request.userID] == nil
            else { return (nil, .none) }
            guard let next = Self.queue(.reserve(admitted), user: request.userID, effect: -request.amount, journal: journal, &s) else { return (nil, .none) }
            user.pending -= request.amount
            user.queued += 1
            s.users[request.userID] = user
            return (.reserved(available: user.available), next)
        }
        follow(next)
        return decided
    }

    private func settleInMemory(_ settlement: Settlement, reserved: Int64) -> SettlementResult? {
        let charged: Int64
        switch settlement.kind {
        case .refund: charged = 0
        case .charge(let cost):
            guard cost <= reserved else { return nil }
            charged = max(0, cost)
        }
        guard let userID = settlement.usage.userID else { return nil }
        let (decided, next) = state.withLock { s -> (SettlementResult?, Queueing) in
            guard var user = s.users[userID] else { return (nil, .none) }
            guard let next = Self.queue(.settle(settlement), user: userID, effect: reserved - charged, journal: journal, &s) else { return (nil, .none) }
            user.pending += reserved - charged
            user.queued += 1
            s.users[userID] = user
            return (SettlementResult(charged: charged, available: user.available, uncovered: 0), next)
        }
        follow(next)
        return decided
    }

    /// What the caller of ``queue(_:user:effect:journal:_:)`` does once it let go of the state's lock.
    private enum Queueing {
        case none
        /// Arm the write timer.
        case arm
        /// Ask the store to expedite the batch being written: it runs late (``lateAfter``).
        case expedite
    }

    /// Journals and queues a decided operation; nil when the journal cannot take it (the caller then
    /// goes to the database).
    private static func queue(_ op: LedgerOperation, user: String, effect: Int64, journal: LedgerJournal?, _ s: inout LedgerState) -> Queueing? {
        var segment: Int?
        if let journal {
            guard let written = journal.append(op) else { return nil }
            segment = written
        }
        s.queue.append(Queued(op: op, segment: segment, user: user, effect: effect))
        if s.running {
            guard !s.expedited, late(since: s.batchTaken) else { return Queueing.none }
            s.expedited = true
            return .expedite
        }
        guard !s.timerArmed else { return Queueing.none }
        s.timerArmed = true
        return .arm
    }

    private func follow(_ next: Queueing) {
        switch next {
        case .none: break
        case .arm: armTimer()
        case .expedite: store.expediteBackgroundWrites()
        }
    }

    /// After `delay` (the write delay by default), drains the queue unless a drain runs already.
    private func armTimer(after delay: Duration? = nil) {
        LoopTimer.after(delay ?? writeDelay) {
            let start = self.state.withLock { s -> Bool in
                s.timerArmed = false
                guard !s.running, !s.queue.isEmpty else { return false }
                s.running = true
                return true
            }
            if start { Task { await self.drain() } }
        }
    }

    /// Queues `op` behind everything decided before it and waits for the database's answer.
    private func submitAndWait(_ op: LedgerOperation?, user: String?) async throws -> LedgerOutcome? {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<LedgerOutcome?, any Error>) in
            let start = state.withLock { s -> Bool in
                s.queue.append(Queued(op: op, waiter: c, user: user))
                s.waiting += 1
                if let user { s.undecided[user, default: 0] += 1 }
                guard !s.running else { return false }
                s.running = true
                return true
            }
            if start {
                Task { await self.drain() }
            } else {
                // It waits behind the batch being written, which nobody waited for until now.
                store.expediteBackgroundWrites()
            }
        }
    }

    /// Waits until everything decided so far is in the database (readers of the ledger call it first).
    func sync() async {
        do {
            _ = try await submitAndWait(nil, user: nil)
        } catch {
            logger.warning("cannot write the ledger's queued operations before a read", metadata: ["error": .string("\(error)")])
        }
    }

    /// Makes the next reservation of `userID` ask the database (after credits were granted in this process).
    func forget(_ userID: String) {
        state.withLock { s in s.users[userID]?.validUntil = 0 }
    }

    /// Writes queued operations, a batch per transaction, until none is waited for; the rest wait for the timer.
    private func drain() async {
        while true {
            let batch = state.withLock { s -> [Queued] in
                let n = min(maxBatch, s.queue.count)
                let b: [Queued]
                if n == s.queue.count {
                    // The usual case: the whole queue leaves as it is, no element copied (each copy
                    // retains every string of its operation).
                    b = s.queue
                    s.queue = []
                    s.queue.reserveCapacity(n)
                } else {
                    b = Array(s.queue.prefix(n))
                    s.queue.removeFirst(n)
                }
                s.waiting -= b.reduce(0) { $0 + ($1.waiter == nil ? 0 : 1) }
                s.batchTaken = NIODeadline.now().uptimeNanoseconds
                s.expedited = false
                return b
            }
            let ops = batch.compactMap(\.op)
            let result: LedgerResult
            do {
                result = ops.isEmpty
                    ? LedgerResult(outcomes: [], users: [:])
                    : try await store.apply(ops, policy: policy, now: EpochClock.nowMilliseconds(), waiting: batch.contains { $0.waiter != nil })
            } catch {
                failed(batch, error)
                return
            }
            applied(batch, result)
            let (goOn, arm) = state.withLock { s -> (Bool, Bool) in
                s.failures = 0
                if s.queue.isEmpty || s.waiting == 0 {
                    s.running = false
                    guard !s.queue.isEmpty, !s.timerArmed else { return (false, false) }
                    s.timerArmed = true
                    return (false, true)
                }
                return (true, false)
            }
            if arm { armTimer() }
            if !goOn { return }
        }
    }

    /// Takes a written batch's effects off the users' pending amounts, starts them again from what the
    /// database reports, and answers who waits.
    private func applied(_ batch: [Queued], _ result: LedgerResult) {
        state.withLock { s in
            Self.dequeued(batch, &s)
            for (id, stored) in result.users {
                let validUntil = stored.nextExpiry ?? .max
                if var user = s.users[id] {
                    user.stored = stored.available
                    user.validUntil = validUntil
                    s.users[id] = user
                } else {
                    s.users[id] = UserCredit(stored: stored.available, validUntil: validUntil)
                }
            }
            if s.users.count > 200_000 { s.users = s.users.filter { $0.value.queued > 0 } }
        }
        // The loops read single fields of the batch's elements: a whole `Queued` copied out would retain
        // and release every string of its operation.
        if let journal {
            var bySegment: [Int: Int] = [:]
            for i in batch.indices { if let segment = batch[i].segment { bySegment[segment, default: 0] += 1 } }
            for (segment, count) in bySegment { journal.applied(segment: segment, count: count) }
        }
        var next = result.outcomes.makeIterator()
        for i in batch.indices {
            let outcome = batch[i].op == nil ? nil : next.next()
            if let waiter = batch[i].waiter {
                waiter.resume(returning: outcome)
            } else if let outcome, outcome.needsNote {
                noteDecidedOutcome(batch[i], outcome)
            }
        }
    }

    /// Takes written (or failed) operations off the users' queued counts; decided ones' effects too.
    private static func dequeued(_ batch: [Queued], _ s: inout LedgerState) {
        for i in batch.indices {
            guard let u = batch[i].user else { continue }
            if batch[i].waiter != nil {
                let left = (s.undecided[u] ?? 1) - 1
                s.undecided[u] = left > 0 ? left : nil
            } else if var user = s.users[u] {
                // Read and written back, not changed through `s.users[u]?.…`: that goes through the
                // dictionary's modify coroutines, which allocate their frames (two mallocs per operation).
                user.pending -= batch[i].effect
                user.queued -= 1
                s.users[u] = user
            }
        }
    }

    /// A decision memory made that the database could not fully back (a balance spent meanwhile by a
    /// bucket's expiry or another process): logged; the settlement charges what the balance has.
    private func noteDecidedOutcome(_ q: Queued, _ outcome: LedgerOutcome) {
        switch (q.op, outcome) {
        case (.reserve(let r)?, .reserved(.insufficient(let available))):
            logger.warning("a reservation decided in memory was more than the database could hold; the rest is charged when the request settles", metadata: [
                "request_id": .string(r.requestID), "user_id": .string(r.userID), "available_credits": .string(Credits(micros: available).description),
            ])
        case (.settle(let settlement)?, .settled(let result)) where result.uncovered > 0:
            logger.warning("a request cost more than its reservation and the balance could not cover the rest", metadata: [
                "request_id": .string(settlement.usage.requestID), "uncovered_credits": .string(Credits(micros: result.uncovered).description),
            ])
        default: break
        }
    }

    /// A batch that could not be written: who waits gets the error; decided operations (journaled, so
    /// safe) go back to the front of the queue and are retried after a pause.
    private func failed(_ batch: [Queued], _ error: any Error) {
        let retry = batch.filter { $0.waiter == nil && $0.op != nil }
        let failures = state.withLock { s -> Int in
            Self.dequeued(batch.filter { $0.waiter != nil }, &s)
            s.queue.insert(contentsOf: retry, at: 0)
            s.failures += 1
            s.running = false
            s.timerArmed = true
            return s.failures
        }
        for q in batch { q.waiter?.resume(throwing: error) }
        if failures == 1 || failures % 50 == 0 {
            logger.error("cannot write the credit ledger; decided operations stay journaled and are retried", metadata: [
                "operations": .stringConvertible(retry.count), "attempts": .stringConvertible(failures), "error": .string("\(error)"),
            ])
        }
        armTimer(after: .milliseconds(min(5_000, 50 << min(failures, 7))))
    }

    /// Applies what a previous process journaled and did not write to the database (a crash or
    /// `kill -9`), skipping what it did write; then deletes those segments. Call before serving.
    /// Throws when the journal cannot be applied (after a few attempts): serving then, or settling the
    /// previous run's open holds, would spend or charge credits the journal says otherwise about.
    func recoverJournal() async throws {
        guard let found = leftover.withLock({ $0 }), let prefix = store.ledgerJournalPrefix else { return }
        var attempt = 0
        while true {
            do {
                let (applied, skipped) = try await apply(found.operations)
                leftover.withLock { $0 = nil }
                LedgerJournal.remove(prefix: prefix, segments: found.segments)
                logger.warning("applied credit ledger operations the previous run had journaled but not written", metadata: [
                    "operations": .stringConvertible(applied), "already_written": .stringConvertible(skipped),
                    "unreadable_lines": .stringConvertible(found.unreadable),
                ])
                return
            } catch {
                attempt += 1
                guard attempt < 4 else {
                    logger.error("cannot apply the credit ledger's journal; it is kept for the next start", metadata: [
                        "segments": .string(found.segments.map { "\(prefix).\($0)" }.joined(separator: ",")), "error": .string("\(error)"),
                    ])
                    throw StoreError.unavailable("cannot apply the credit ledger's journal (\(prefix).*): \(error)")
                }
                try? await LoopTimer.sleep(for: .milliseconds(200 << attempt))
            }
        }
    }

    /// Writes journaled operations the database does not have yet, in order; returns how many were
    /// written and how many skipped.
    private func apply(_ ops: [LedgerOperation]) async throws -> (Int, Int) {
        func id(_ op: LedgerOperation) -> String {
            switch op {
            case .reserve(let r): r.id
            case .settle(let s): s.usage.id
            case .usage(let u): u.id
            }
        }
        let known = try await store.appliedRequests(ops.map(id))
        let missing = ops.filter { op in
            if case .reserve = op { return !known.reserved.contains(id(op)) }
            return !known.settled.contains(id(op))
        }
        var start = 0
        while start < missing.count {
            let end = min(missing.count, start + maxBatch)
            _ = try await store.apply(Array(missing[start..<end]), policy: policy, now: EpochClock.nowMilliseconds())
            start = end
        }
        return (missing.count, ops.count - missing.count)
    }

    /// Writes the usage row of a request that held no credits, in the background. Rows wait up to
    /// `usageWindow` and are written together: one transaction for all the rows of the window, where
    /// each row was a task and a transaction of its own (at one connection, where no two rows meet in
    /// a group commit). They carry no credits; readers in the gateway (`/admin/v1/usage`) flush first.
    func record(_ row: UsageRecord) {
        pendingUsage.add(1, ordering: .relaxed)
        let first = usageBuffer.withLock { rows in
            rows.append(row)
            return rows.count == 1
        }
        guard first else { return }
        // A window's rows written behind at a low priority, still running when the next window opens
        // and past ``lateAfter``: as for the ledger's batches, the store expedites it.
        let started = usageWriteStarted.load(ordering: .relaxed)
        if started != 0, Self.late(since: started) { store.expediteBackgroundWrites() }
        LoopTimer.after(usageWindow) { Task { await self.writeBufferedUsage() } }
    }

    /// Writes the buffered usage rows now.
    func writeBufferedUsage() async {
        let rows = usageBuffer.withLock { rows in
            defer { rows.removeAll(keepingCapacity: true) }
            return rows
        }
        guard !rows.isEmpty else { return }
        usageWriteStarted.store(NIODeadline.now().uptimeNanoseconds, ordering: .relaxed)
        defer { usageWriteStarted.store(0, ordering: .relaxed) }
        do {
            try await store.recordUsage(rows)
        } catch {
            logger.warning("cannot write usage rows", metadata: [
                "request_ids": .string(rows.map(\.requestID).joined(separator: ",")), "error": .string("\(error)"),
            ])
        }
        pendingUsage.subtract(rows.count, ordering: .relaxed)
    }

    /// Writes the buffered usage rows and the queued ledger operations, and waits (up to `timeout`)
    /// for usage rows in flight to be committed.
    func flush(timeout: Duration = .seconds(5)) async {
        await sync()
        await writeBufferedUsage()
        let deadline = ContinuousClock.now + timeout
        while pendingUsage.load(ordering: .relaxed) > 0, ContinuousClock.now < deadline {
            store.expediteBackgroundWrites()
            try? await LoopTimer.sleep(for: .milliseconds(5))
        }
    }

    /// Settles reservations left open by a previous run that stopped without settling them (a crash or
    /// kill -9), per `billing.cancelled_streams`: `charge` charges the hold, `charge_used` refunds it.
    func recoverOpenReservations() async {
        let open: [OpenReservation]
        do {
            open = try await store.openReservations()
        } catch {
            logger.error("cannot read open credit reservations", metadata: ["error": .string("\(error)")])
            return
        }
        guard !open.isEmpty else { return }
        var settled: [Settlement] = []
        for r in open {
            let decision = BillingRules.decide(
                price: .free, pricing: pricing, reserved: r.amount, outcome: .interrupted, reported: nil, estimate: TokenUsage(),
                policy: cancelledStreams)
            let usage = UsageRecord(
                id: r.id, requestID: r.requestID, createdAt: r.createdAt, userID: r.userID, keyID: r.keyID, model: r.model,
                usageEstimated: true, status: 0, outcome: "interrupted", errorCode: "gateway_restart")
            settled.append(Settlement(decision.refund ? .refund : .charge(cost: decision.cost), usage: usage))
        }
        do {
            let results = try await store.settle(settled, now: EpochClock.nowMilliseconds())
            let charged = results.reduce(Int64(0)) { $0 + $1.charged }
            logger.warning(
                "settled credit reservations left open by the previous run",
                metadata: [
                    "reservations": .stringConvertible(open.count), "policy": .string(cancelledStreams.rawValue),
                    "charged_credits": .string(Credits(micros: charged).description),
                ])
        } catch {
            logger.error("cannot settle open credit reservations", metadata: ["error": .string("\(error)")])
        }
    }
}

/// One request's hold on credits, settled exactly once: by the handler when the answer is complete,
/// by the stream loop when the stream ends or breaks, by the error path when the request fails, or,
/// as a last resort, when the request's log ends.
final class CreditTicket: Sendable {
    let meter: CreditMeter
    let id: String
    let requestID: String
    let userID: String
    let keyID: String
    let model: String
    let provider: String
    let upstreamModel: String
    let stream: Bool
    let price: ModelPrice
    let reserved: Int64
    /// Rough input tokens (body bytes ÷ 4), for when the provider reports nothing.
    let inputEstimate: Int
    let start = ContinuousClock.now
    private let settled = Atomic<Bool>(false)

    init(
        meter: CreditMeter, id: String, requestID: String, userID: String, keyID: String, model: String, provider: String,
        upstreamModel: String, stream: Bool, price: ModelPrice, reserved: Int64, inputEstimate: Int
    ) {
        self.meter = meter
        self.id = id
        self.requestID = requestID
        self.userID = userID
        self.keyID = keyID
        self.model = model
        self.provider = provider
        self.upstreamModel = upstreamModel
        self.stream = stream
        self.price = price
        self.reserved = reserved
        self.inputEstimate = inputEstimate
    }

    var isSettled: Bool { settled.load(ordering: .acquiring) }

    /// Settles the hold for `outcome` (the first call wins; later calls return nil). Settlement failures
    /// are retried; if the database stays unavailable the hold stays open and is settled at the next start.
    @discardableResult
    func settle(_ outcome: BilledOutcome, reported: TokenUsage?, outputEstimate: Int = 0, status: Int, errorCode: String? = nil) async -> SettlementResult? {
        guard !settled.exchange(true, ordering: .acquiringAndReleasing) else { return nil }
        return await write(settlement(outcome, reported: reported, outputEstimate: outputEstimate, status: status, errorCode: errorCode))
    }

    /// What ``settleImmediately(_:reported:outputEstimate:status:errorCode:later:)`` did.
    enum Immediate {
        /// Settled now (nil: settled before, by another path).
        case settled(SettlementResult?)
        /// Only the database can decide: `later` gets the result from a task of its own.
        case pending
    }

    /// ``settle(_:reported:outputEstimate:status:errorCode:)`` for a caller that must not wait (the
    /// request path served from the event loop): decided in memory when the meter can, which is the
    /// usual case; otherwise written from a task that hands the result to `later`.
    func settleImmediately(
        _ outcome: BilledOutcome, reported: TokenUsage?, outputEstimate: Int = 0, status: Int, errorCode: String? = nil,
        later: @escaping @Sendable (SettlementResult?) -> Void
    ) -> Immediate {
        guard !settled.exchange(true, ordering: .acquiringAndReleasing) else { return .settled(nil) }
        let settlement = settlement(outcome, reported: reported, outputEstimate: outputEstimate, status: status, errorCode: errorCode)
        if let result = meter.settleImmediately(settlement, reserved: reserved) {
            if result.uncovered > 0 { logUncovered(result) }
            return .settled(result)
        }
        Task { later(await self.write(settlement)) }
        return .pending
    }

    /// Writes a claimed settlement, retrying while the database is unavailable.
    private func write(_ settlement: Settlement) async -> SettlementResult? {
        let meter = self.meter
        let reserved = self.reserved
        for attempt in 0..<5 {
            do {
                // A request whose client left may run in a cancelled task; the ledger write must not be cancelled.
                let result = Task.isCancelled
                    ? try await Task { try await meter.settle(settlement, reserved: reserved) }.value : try await meter.settle(settlement, reserved: reserved)
                if result.uncovered > 0 { logUncovered(result) }
                return result
            } catch {
                logRetry(attempt: attempt, error)
                try? await Task { try await LoopTimer.sleep(for: .milliseconds(50 << attempt)) }.value
            }
        }
        meter.logger.error("credits left reserved; they are settled at the next start", metadata: ["request_id": .string(requestID)])
        return nil
    }

    // The pieces of `settle` that do not wait stay out of its frame: a stream's task keeps the frames of
    // its deepest moment, and the settlement at a stream's end is one.

    /// What to write for `outcome`: the charge or refund, and the usage row.
    @inline(never)
    private func settlement(_ outcome: BilledOutcome, reported: TokenUsage?, outputEstimate: Int, status: Int, errorCode: String?) -> Settlement {
        let estimate = TokenUsage(inputTokens: inputEstimate, outputTokens: outputEstimate)
        let decision = BillingRules.decide(
            price: price, pricing: meter.pricing, reserved: reserved, outcome: outcome, reported: reported, estimate: estimate,
            policy: meter.cancelledStreams)
        let outcomeName: String
        switch outcome {
        case .completed: outcomeName = "ok"
        case .failedBeforeContent, .failedAfterContent: outcomeName = "error"
        case .clientLeft: outcomeName = "client_closed"
        case .interrupted: outcomeName = "interrupted"
        }
        let elapsed = ContinuousClock.now - start
        let usage = UsageRecord(
            id: id, requestID: requestID, createdAt: EpochClock.nowMilliseconds() - Int64(elapsed.nanoseconds / 1_000_000), userID: userID,
            keyID: keyID, model: model, provider: provider, upstreamModel: upstreamModel, inputTokens: decision.usage.inputTokens,
            outputTokens: decision.usage.outputTokens, cachedTokens: decision.usage.cachedInputTokens, usageEstimated: decision.estimated,
            status: status, outcome: outcomeName, latencyMs: Int(elapsed.nanoseconds / 1_000_000), stream: stream, errorCode: errorCode)
        return Settlement(decision.refund ? .refund : .charge(cost: decision.cost), usage: usage)
    }

    @inline(never)
    private func logUncovered(_ result: SettlementResult) {
        meter.logger.warning("a request cost more than its reservation and the balance could not cover the rest", metadata: [
            "request_id": .string(requestID), "uncovered_credits": .string(Credits(micros: result.uncovered).description),
        ])
    }

    @inline(never)
    private func logRetry(attempt: Int, _ error: any Error) {
        meter.logger.warning("cannot settle credits; retrying", metadata: ["request_id": .string(requestID), "attempt": .stringConvertible(attempt + 1), "error": .string("\(error)")])
    }
}


extension LedgerOutcome {
    /// Whether a decision memory made came out otherwise in the database (``CreditMeter`` logs those).
    fileprivate var needsNote: Bool {
        switch self {
        case .reserved(.insufficient): true
        case .settled(let result): result.uncovered > 0
        default: false
        }
    }
}
