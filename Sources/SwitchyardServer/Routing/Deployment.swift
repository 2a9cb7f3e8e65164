import Synchronization
import SwitchyardCore

/// One deployment of a catalog model at run time: where it goes, and how it has been doing.
final class Deployment: Sendable {
    struct State {
        var consecutiveFailures = 0
        /// Skipped until this time (epoch ms): after `cooldown.failures` failures in a row, or for an
        /// upstream's `retry-after`.
        var coolingUntil: Int64 = 0
        var inFlight = 0
        var minute: RequestWindow?
        /// Time to first byte, exponentially weighted (ms); nil before the first success.
        var latencyMs: Double?
        /// The last outcomes: (time, succeeded, time to first byte in ms).
        var recent: [(at: Int64, ok: Bool, ms: Double)] = []
        var requests = 0
        var failures = 0
    }

    /// `model#index` (as listed), for the admin API and logs.
    let id: String
    let model: String
    let index: Int
    let provider: Provider
    /// The upstream id; nil sends the name the client used.
    let upstream: String?
    let weight: Int
    /// A key of the deployment's own, sent instead of the provider's.
    let apiKey: String?
    let requestsPerMinute: Int?
    let timeouts: TimeoutsConfig
    /// Whether the deployment is ever skipped (cooldown, an upstream's `retry-after`): only when its
    /// model has somewhere else to go, another deployment or a fallback. A lone deployment keeps
    /// being tried, so its callers get the provider's own answer rather than a 503 from the gateway.
    let coolsDown: Bool
    private let state = Mutex(State())

    init(model: String, index: Int, config: DeploymentConfig, provider: Provider, timeouts: TimeoutsConfig, coolsDown: Bool) {
        self.model = model
        self.index = index
        id = "\(model)#\(index)"
        self.provider = provider
        upstream = config.upstream
        weight = config.weight
        apiKey = config.apiKey
        requestsPerMinute = config.requestsPerMinute
        self.timeouts = timeouts
        self.coolsDown = coolsDown
        if let rpm = config.requestsPerMinute { state.withLock { $0.minute = RequestWindow(limit: rpm) } }
    }

    /// When the deployment can take a request again (epoch ms); `now` or earlier when it can now.
    func availableAt(_ now: Int64) -> Int64 {
        state.withLock { s in
            var at = max(now, s.coolingUntil)
            if s.minute != nil {
                let c = s.minute!.check(now: now)
                if !c.allowed { at = max(at, c.resetAtMs) }
            }
            return at
        }
    }

    var inFlight: Int { state.withLock { $0.inFlight } }
    var latencyMs: Double? { state.withLock { $0.latencyMs } }

    /// Counts a request that is about to be sent (its share of the deployment's and the provider's
    /// requests per minute, and one more in flight). False when either limit has no room.
    func begin(_ now: Int64, cooldown: CooldownConfig) -> DeploymentLease? {
        guard provider.admit(now) else { return nil }
        let ok = state.withLock { s -> Bool in
            if s.minute != nil {
                guard s.minute!.check(now: now).allowed else { return false }
                s.minute!.record(now: now)
            }
            s.inFlight += 1
            s.requests += 1
            return true
        }
        return ok ? DeploymentLease(self, start: ContinuousClock.now, cooldown: cooldown) : nil
    }

    /// Records how an attempt went: a success (with its time to first byte), a failure that counts
    /// toward cooldown, and an upstream's `retry-after` (the deployment is skipped that long).
    fileprivate func record(ok: Bool, ttfbMs: Double?, retryAfterMs: Int64?, cooldown: CooldownConfig) {
        let now = EpochClock.nowMilliseconds()
        state.withLock { s in
            s.recent.append((now, ok, ttfbMs ?? 0))
            if s.recent.count > 200 { s.recent.removeFirst(s.recent.count - 200) }
            if ok {
                s.consecutiveFailures = 0
                if let ms = ttfbMs { s.latencyMs = s.latencyMs.map { $0 * 0.8 + ms * 0.2 } ?? ms }
            } else {
                s.failures += 1
                s.consecutiveFailures += 1
                if coolsDown, s.consecutiveFailures >= cooldown.failures {
                    s.coolingUntil = max(s.coolingUntil, now + cooldown.duration.milliseconds)
                    s.consecutiveFailures = 0
                }
            }
            if coolsDown, let retryAfterMs { s.coolingUntil = max(s.coolingUntil, now + retryAfterMs) }
        }
    }

    fileprivate func release() {
        state.withLock { $0.inFlight = max(0, $0.inFlight - 1) }
    }

    /// The deployment as `GET /admin/v1/deployments` shows it.
    func json(now: Int64) -> JSONValue {
        let s = state.withLock { $0 }
        let window = s.recent.filter { $0.at > now - 300_000 }
        let errors = window.filter { !$0.ok }.count
        var o: JSONObject = [
            "id": .string(id), "model": .string(model), "provider": .string(provider.name), "weight": .int(weight),
            "state": .string(s.coolingUntil > now ? "cooling_down" : "healthy"), "in_flight": .int(s.inFlight),
            "requests": .int(s.requests), "failures": .int(s.failures), "consecutive_failures": .int(s.consecutiveFailures),
            "recent_requests": .int(window.count),
        ]
        o["upstream"] = upstream.map { .string($0) } ?? .null
        o["cooling_until"] = s.coolingUntil > now ? .string(EpochClock.iso8601(s.coolingUntil)) : .null
        o["error_rate"] = window.isEmpty ? .null : .number(String(format2(Double(errors) / Double(window.count))))
        o["latency_ms"] = s.latencyMs.map { .int(Int($0.rounded())) } ?? .null
        o["requests_per_minute"] = requestsPerMinute.map { .int($0) } ?? .null
        if var minute = s.minute {
            let c = minute.check(now: now)
            o["requests_last_minute"] = .int(c.allowed ? minute.limit - c.remaining - 1 : minute.limit)
        } else {
            o["requests_last_minute"] = .null
        }
        return .object(o)
    }

    private func format2(_ v: Double) -> String {
        let hundredths = Int((v * 100).rounded())
        return "\(hundredths / 100).\(hundredths % 100 < 10 ? "0" : "")\(hundredths % 100)"
    }
}

/// A request in flight on a deployment. Its outcome is recorded once (at the response head, or as a
/// failure); it stops counting as in flight once, when the response has ended.
final class DeploymentLease: Sendable {
    let deployment: Deployment
    let start: ContinuousClock.Instant
    let cooldown: CooldownConfig
    private let recorded = Atomic<Bool>(false)
    private let released = Atomic<Bool>(false)

    init(_ deployment: Deployment, start: ContinuousClock.Instant, cooldown: CooldownConfig) {
        self.deployment = deployment
        self.start = start
        self.cooldown = cooldown
    }

    /// The attempt succeeded (the provider's response head arrived with a 2xx).
    func succeeded() {
        guard !recorded.exchange(true, ordering: .acquiringAndReleasing) else { return }
        deployment.record(ok: true, ttfbMs: Double((ContinuousClock.now - start).nanoseconds) / 1_000_000, retryAfterMs: nil, cooldown: cooldown)
    }

    /// The attempt failed in a way that is the deployment's (a retryable status, no answer); a stream
    /// that breaks after a successful head counts as a failure too.
    func failed(retryAfterMs: Int64? = nil) {
        recorded.store(true, ordering: .releasing)
        deployment.record(ok: false, ttfbMs: nil, retryAfterMs: retryAfterMs, cooldown: cooldown)
    }

    /// The response has ended (or the attempt was abandoned): no longer in flight.
    func release() {
        guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
        deployment.release()
    }

    deinit { release() }
}
