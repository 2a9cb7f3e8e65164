import Logging
import NIOCore
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardStore
import Synchronization

/// The gateway's side of the credit ledger: reservations before dispatch, settlements after, and
/// usage rows for every model call, each written through group commit so concurrent requests share
/// transactions.
final class CreditMeter: Sendable {
    let store: any CreditStore
    let policy: CreditGrantPolicy
    let pricing: PricingConfig
    let cancelledStreams: CancelledStreamPolicy
    let logger: Logger
    /// Reservations, settlements and usage rows share one queue, so a busy gateway writes them in few
    /// transactions (each one page write per table and index, however many requests it carries).
    private let ledger: GroupCommit<LedgerOperation, LedgerOutcome>
    /// Usage rows written in the background and not yet committed (so shutdown can wait for them).
    private let pendingUsage = Atomic<Int>(0)
    /// Usage rows waiting for their window to end (`record`).
    private let usageBuffer = Mutex<[UsageRecord]>([])
    /// How long a usage row may wait to share a transaction: the WAL syncer's interval, so what a
    /// crash can take back is no more than what a power loss already could.
    let usageWindow: Duration = .milliseconds(20)

    init(store: any CreditStore, config: GatewayConfig, logger: Logger) {
        self.store = store
        self.logger = logger
        let policy = CreditGrantPolicy(config: config)
        self.policy = policy
        pricing = config.pricing
        cancelledStreams = config.billing.cancelledStreams
        ledger = GroupCommit { batch in try await store.apply(batch, policy: policy, now: EpochClock.nowMilliseconds()) }
    }

    func reserve(_ request: ReservationRequest) async throws -> ReservationResult {
        guard case .reserved(let result) = try await ledger.submit(.reserve(request)) else { throw GroupCommitError.missingResult }
        return result
    }

    func settle(_ settlement: Settlement) async throws -> SettlementResult {
        guard case .settled(let result) = try await ledger.submit(.settle(settlement)) else { throw GroupCommitError.missingResult }
        return result
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
        LoopTimer.after(usageWindow) { Task { await self.writeBufferedUsage() } }
    }

    /// Writes the buffered usage rows now.
    func writeBufferedUsage() async {
        let rows = usageBuffer.withLock { rows in
            defer { rows.removeAll(keepingCapacity: true) }
            return rows
        }
        guard !rows.isEmpty else { return }
        do {
            try await store.recordUsage(rows)
        } catch {
            logger.warning("cannot write usage rows", metadata: [
                "request_ids": .string(rows.map(\.requestID).joined(separator: ",")), "error": .string("\(error)"),
            ])
        }
        pendingUsage.subtract(rows.count, ordering: .relaxed)
    }

    /// Writes the buffered usage rows and waits (up to `timeout`) for those in flight to be committed.
    func flush(timeout: Duration = .seconds(5)) async {
        await writeBufferedUsage()
        let deadline = ContinuousClock.now + timeout
        while pendingUsage.load(ordering: .relaxed) > 0, ContinuousClock.now < deadline {
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
        let settlement = settlement(outcome, reported: reported, outputEstimate: outputEstimate, status: status, errorCode: errorCode)
        let meter = self.meter
        for attempt in 0..<5 {
            do {
                // A request whose client left may run in a cancelled task; the ledger write must not be cancelled.
                let result = Task.isCancelled ? try await Task { try await meter.settle(settlement) }.value : try await meter.settle(settlement)
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

