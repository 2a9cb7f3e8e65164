import HTTPTypes
import Hummingbird
import Logging
import ServiceLifecycle
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardStore

extension Gateway {
    /// Model access and rate limits for a model call, after the model resolved: 403
    /// `model_not_allowed` outside the key's plan or model list, 429 over a limit. An admitted request
    /// holds its concurrency slot until the request log ends (response finished or client gone).
    func admit(_ call: ClientCall, context: GatewayContext) throws(GatewayError) {
        try admit(call, log: context.log)
    }

    func admit(_ call: ClientCall, log: RequestLog) throws(GatewayError) {
        let principal = call.principal
        guard principal.allows(call.model) else { throw principal.denial(for: call.model, plans: config.plans) }
        let policy = principal.limits
        guard !policy.isUnlimited else { return }
        // Tokens are estimated from the body size at admission and corrected with the real usage at the end.
        let estimate = policy.tokensPerMinute == nil ? 0 : call.body.readableBytes / 4
        switch limiter.admit(policy, estimatedTokens: estimate) {
        case .admitted(let lease, let snapshot):
            log.set(rateLimit: snapshot, lease: lease)
        case .rejected(let rejection, let snapshot):
            log.set(rateLimit: snapshot, lease: nil)
            throw GatewayError.rateLimited(rejection)
        }
    }

    /// Checks model access only (token counting is not a model call and is not rate limited).
    func authorize(_ call: ClientCall) throws(GatewayError) {
        guard call.principal.allows(call.model) else { throw call.principal.denial(for: call.model, plans: config.plans) }
    }

    /// Applies the credit operations a previous run journaled but did not write, settles credit
    /// reservations it left open, loads today's request counts saved by an earlier run, and warns about
    /// users on plans the configuration no longer defines. Call before serving. Throws when the
    /// journal cannot be applied (the gateway must not serve on a ledger it cannot complete).
    public func prepare() async throws {
        try await meter.recoverJournal()
        await meter.recoverOpenReservations()
        do {
            let day = limiter.today
            limiter.restoreDailyCounts(try await store.dailyCounts(day: day), day: day)
        } catch {
            logger.warning("cannot read saved daily request counts; today's counts start from zero", metadata: ["error": .string("\(error)")])
        }
        do {
            let known = Set(config.plans.map(\.name))
            var orphaned: [String: Int] = [:]
            for user in try await store.listUsers() { if let plan = user.plan, !known.contains(plan) { orphaned[plan, default: 0] += 1 } }
            for (plan, count) in orphaned.sorted(by: { $0.key < $1.key }) {
                logger.warning(
                    "users are on a plan the configuration does not define; their requests are refused with 403 plan_unavailable until they are moved (switchyard users set-plan)",
                    metadata: ["plan": .string(plan), "users": .stringConvertible(count)])
            }
        } catch {
            logger.warning("cannot list users to check their plans", metadata: ["error": .string("\(error)")])
        }
    }

    /// Saves changed daily counts; what fails to save is kept for the next attempt.
    func saveDailyCounts() async {
        let counts = limiter.takeDailyCountsToSave()
        guard !counts.isEmpty else { return }
        do {
            try await store.saveDailyCounts(counts)
        } catch {
            limiter.returnUnsaved(counts)
            logger.warning("cannot save daily request counts; will retry", metadata: ["error": .string("\(error)")])
        }
    }
}

/// Saves daily request counts every second (so a restart keeps the day's quota used), runs the store's
/// housekeeping (WAL checkpoints) every second, and forgets idle rate-limit state every half minute.
struct LimiterService: Service {
    let gateway: Gateway
    let interval: Duration

    func run() async throws {
        var ticks = 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                try await cancelWhenGracefulShutdown { try await LoopTimer.sleep(for: interval) }
            } catch {
                break
            }
            await gateway.saveDailyCounts()
            await gateway.store.maintain()
            ticks += 1
            if ticks % 30 == 0 { gateway.limiter.sweep() }
            if ticks % 60 == 1 { await gateway.responseArchive.purge() }
        }
    }
}

extension HTTPField.Name {
    static let xRateLimitLimit = HTTPField.Name("X-RateLimit-Limit")!
    static let xRateLimitRemaining = HTTPField.Name("X-RateLimit-Remaining")!
    static let xRateLimitReset = HTTPField.Name("X-RateLimit-Reset")!
    static let openAILimitRequests = HTTPField.Name("x-ratelimit-limit-requests")!
    static let openAIRemainingRequests = HTTPField.Name("x-ratelimit-remaining-requests")!
    static let openAIResetRequests = HTTPField.Name("x-ratelimit-reset-requests")!
    static let openAILimitTokens = HTTPField.Name("x-ratelimit-limit-tokens")!
    static let openAIRemainingTokens = HTTPField.Name("x-ratelimit-remaining-tokens")!
    static let openAIResetTokens = HTTPField.Name("x-ratelimit-reset-tokens")!
    static let anthropicRequestsLimit = HTTPField.Name("anthropic-ratelimit-requests-limit")!
    static let anthropicRequestsRemaining = HTTPField.Name("anthropic-ratelimit-requests-remaining")!
    static let anthropicRequestsReset = HTTPField.Name("anthropic-ratelimit-requests-reset")!
    static let anthropicTokensLimit = HTTPField.Name("anthropic-ratelimit-tokens-limit")!
    static let anthropicTokensRemaining = HTTPField.Name("anthropic-ratelimit-tokens-remaining")!
    static let anthropicTokensReset = HTTPField.Name("anthropic-ratelimit-tokens-reset")!
}

/// The rate-limit headers clients read, in the generic form and in the dialect of the API called.
enum RateLimitHeaders {
    static func apply(_ snapshot: RateLimitSnapshot, format: WireFormat, now: Int64, to headers: inout HTTPFields) {
        var fields: [HTTPField] = []
        fields.reserveCapacity(9)
        if let q = snapshot.requests {
            fields.append(HTTPField(name: .xRateLimitLimit, value: String(q.limit)))
            fields.append(HTTPField(name: .xRateLimitRemaining, value: String(q.remaining)))
            fields.append(HTTPField(name: .xRateLimitReset, value: String((q.resetAtMs + 999) / 1000)))
            switch format {
            case .openAI, .responses:
                fields.append(HTTPField(name: .openAILimitRequests, value: String(q.limit)))
                fields.append(HTTPField(name: .openAIRemainingRequests, value: String(q.remaining)))
                fields.append(HTTPField(name: .openAIResetRequests, value: goDuration(q.resetAtMs - now)))
            case .anthropic:
                fields.append(HTTPField(name: .anthropicRequestsLimit, value: String(q.limit)))
                fields.append(HTTPField(name: .anthropicRequestsRemaining, value: String(q.remaining)))
                fields.append(HTTPField(name: .anthropicRequestsReset, value: EpochClock.iso8601((q.resetAtMs + 999) / 1000 * 1000)))
            case .gemini:
                break
            }
        }
        if let t = snapshot.tokens {
            switch format {
            case .openAI, .responses:
                fields.append(HTTPField(name: .openAILimitTokens, value: String(t.limit)))
                fields.append(HTTPField(name: .openAIRemainingTokens, value: String(t.remaining)))
                fields.append(HTTPField(name: .openAIResetTokens, value: goDuration(t.resetAtMs - now)))
            case .anthropic:
                fields.append(HTTPField(name: .anthropicTokensLimit, value: String(t.limit)))
                fields.append(HTTPField(name: .anthropicTokensRemaining, value: String(t.remaining)))
                fields.append(HTTPField(name: .anthropicTokensReset, value: EpochClock.iso8601((t.resetAtMs + 999) / 1000 * 1000)))
            case .gemini:
                break
            }
        }
        // Appended in one go: setting each through the subscript searched the fields for an earlier
        // value, nine times per answer. This is the only place that sets them, once per answer; should
        // an answer carry them already, each is set through the subscript, replacing it.
        guard let first = fields.first else { return }
        if headers[first.name] == nil {
            headers.append(contentsOf: fields)
        } else {
            for field in fields { headers[field.name] = field.value }
        }
    }

    /// A duration as OpenAI writes it: `250ms`, `1s`, `12.5s`, `6m0s`, `1h2m3s`.
    static func goDuration(_ ms: Int64) -> String {
        let ms = max(0, ms)
        if ms < 1000 { return "\(ms)ms" }
        let hours = ms / 3_600_000
        let minutes = (ms % 3_600_000) / 60_000
        let millis = ms % 60_000
        var seconds = String(millis / 1000)
        if millis % 1000 != 0 {
            var frac = String(millis % 1000)
            frac = String(repeating: "0", count: 3 - frac.count) + frac
            while frac.hasSuffix("0") { frac.removeLast() }
            seconds += "." + frac
        }
        var out = ""
        if hours > 0 { out += "\(hours)h" }
        if hours > 0 || minutes > 0 { out += "\(minutes)m" }
        return out + seconds + "s"
    }
}
