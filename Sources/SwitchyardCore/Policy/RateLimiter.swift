import Synchronization

/// One limit in force for a request: its value, the counter it is charged to, and where it comes from.
public struct AppliedLimit: Sendable, Equatable {
    public var limit: Int
    /// The counter: `user:<id>` for plan limits, `key:<id>` for per-key limits (and for keys of the
    /// service user, which are independent of each other).
    public var subject: String
    /// Where the limit comes from, for messages: "plan `free`" or "this API key".
    public var origin: String

    public init(limit: Int, subject: String, origin: String) {
        self.limit = limit
        self.subject = subject
        self.origin = origin
    }
}

/// The limits that apply to one key: each dimension from the key's own override if it has one,
/// otherwise from its user's plan.
public struct LimitPolicy: Sendable, Equatable {
    public var requestsPerMinute: AppliedLimit?
    public var requestsPerDay: AppliedLimit?
    public var concurrentRequests: AppliedLimit?
    public var tokensPerMinute: AppliedLimit?

    public init(
        requestsPerMinute: AppliedLimit? = nil, requestsPerDay: AppliedLimit? = nil,
        concurrentRequests: AppliedLimit? = nil, tokensPerMinute: AppliedLimit? = nil
    ) {
        self.requestsPerMinute = requestsPerMinute
        self.requestsPerDay = requestsPerDay
        self.concurrentRequests = concurrentRequests
        self.tokensPerMinute = tokensPerMinute
    }

    public init(plan: PlanConfig, planSubject: String, key: LimitValues, keySubject: String) {
        let planOrigin = "plan `\(plan.name)`"
        func pick(_ keyValue: Int?, _ planValue: Int?) -> AppliedLimit? {
            if let keyValue { return AppliedLimit(limit: keyValue, subject: keySubject, origin: "this API key") }
            if let planValue { return AppliedLimit(limit: planValue, subject: planSubject, origin: planOrigin) }
            return nil
        }
        requestsPerMinute = pick(key.requestsPerMinute, plan.limits.requestsPerMinute)
        requestsPerDay = pick(key.requestsPerDay, plan.limits.requestsPerDay)
        concurrentRequests = pick(key.concurrentRequests, plan.limits.concurrentRequests)
        tokensPerMinute = pick(key.tokensPerMinute, plan.limits.tokensPerMinute)
    }

    public var isUnlimited: Bool {
        requestsPerMinute == nil && requestsPerDay == nil && concurrentRequests == nil && tokensPerMinute == nil
    }
}

/// How much of a limit is left, for response headers.
public struct Quota: Sendable, Equatable {
    public var limit: Int
    public var remaining: Int
    /// When the quota next grows (epoch ms): the oldest counted request leaves the minute, or the day ends.
    public var resetAtMs: Int64

    public init(limit: Int, remaining: Int, resetAtMs: Int64) {
        self.limit = limit
        self.remaining = remaining
        self.resetAtMs = resetAtMs
    }
}

/// What the rate-limit headers of one response report.
public struct RateLimitSnapshot: Sendable, Equatable {
    /// The tightest request limit in force (per minute or per day, whichever has less left).
    public var requests: Quota?
    public var tokens: Quota?
    public var isEmpty: Bool { requests == nil && tokens == nil }
}

/// A request turned away by a limit.
public struct LimitRejection: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case requestsPerMinute = "requests_per_minute"
        case requestsPerDay = "requests_per_day"
        case concurrentRequests = "concurrent_requests"
        case tokensPerMinute = "tokens_per_minute"
    }

    public var kind: Kind
    public var limit: Int
    public var origin: String
    /// When a retry can succeed (epoch ms) and how long that is from now.
    public var resetAtMs: Int64
    public var retryAfterMs: Int64

    /// Says which limit was hit and when it resets.
    public var message: String {
        let wait = LimitRejection.describe(milliseconds: retryAfterMs)
        let requests = limit == 1 ? "1 request" : "\(limit) requests"
        switch kind {
        case .requestsPerMinute:
            return "Rate limit reached: \(requests) per minute for \(origin). Try again in \(wait) (at \(EpochClock.iso8601(resetAtMs)))."
        case .requestsPerDay:
            return "Daily limit reached: \(requests) per day for \(origin). It resets at \(EpochClock.iso8601(resetAtMs)) (in \(wait))."
        case .concurrentRequests:
            return "Concurrency limit reached: \(requests) at a time for \(origin). Retry when one of your requests in flight finishes."
        case .tokensPerMinute:
            return "Token rate limit reached: \(limit) tokens per minute for \(origin). Try again in \(wait) (at \(EpochClock.iso8601(resetAtMs)))."
        }
    }

    /// `850ms`, `12s`, `3m 20s`, `5h 2m`.
    public static func describe(milliseconds ms: Int64) -> String {
        if ms < 1000 { return "\(max(ms, 1))ms" }
        let s = (ms + 999) / 1000
        if s < 60 { return "\(s)s" }
        if s < 3600 { return s % 60 == 0 ? "\(s / 60)m" : "\(s / 60)m \(s % 60)s" }
        return "\(s / 3600)h \((s % 3600) / 60)m"
    }
}

/// The outcome of ``RateLimiter/admit(_:estimatedTokens:)``.
public enum Admission: Sendable {
    /// Let through. The lease (nil when nothing needs releasing) must be released when the response ends.
    case admitted(LimitLease?, RateLimitSnapshot)
    case rejected(LimitRejection, RateLimitSnapshot)
}

/// A concurrency slot and a token estimate held by a request in flight. Released exactly once: by
/// ``release(actualTokens:)`` when the response ends, or by deinit if the request was dropped.
public final class LimitLease: Sendable {
    let limiter: RateLimiter
    let concurrencySubject: String?
    let tokenSubject: String?
    let estimatedTokens: Int
    let admittedAtMs: Int64
    private let released = Atomic<Bool>(false)

    init(limiter: RateLimiter, concurrencySubject: String?, tokenSubject: String?, estimatedTokens: Int, admittedAtMs: Int64) {
        self.limiter = limiter
        self.concurrencySubject = concurrencySubject
        self.tokenSubject = tokenSubject
        self.estimatedTokens = estimatedTokens
        self.admittedAtMs = admittedAtMs
    }

    /// Gives the slot back; `actualTokens` (input + output) replaces the admission estimate.
    public func release(actualTokens: Int?) {
        guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
        limiter.release(self, actualTokens: actualTokens)
    }

    deinit { release(actualTokens: nil) }
}

/// Live counters of one subject, for the admin API.
public struct SubjectCounters: Sendable, Equatable {
    public var subject: String
    public var requestsLastMinute: Int
    public var requestsToday: Int
    public var inFlight: Int
    public var tokensLastMinute: Int
}

/// Requests per minute (sliding log), per day (calendar day in the configured zone), in flight, and
/// tokens per minute, per subject. Every check and update for one request happens under one lock, so
/// parallel requests can never jointly pass a limit: the N+1st of any burst is refused.
public final class RateLimiter: Sendable {
    struct SubjectState {
        var minute: RequestWindow?
        var tokens: TokenWindow?
        var inFlight = 0

        mutating func checkMinute(limit: Int, now: Int64) -> WindowCheck {
            if minute == nil { minute = RequestWindow(limit: limit) }
            if minute!.limit != limit { minute!.limit = limit }
            return minute!.check(now: now)
        }

        /// Adds (or corrects) tokens in place: a window copied out and written back would copy both of
        /// its arrays on every request.
        mutating func addTokens(_ count: Int, now: Int64) {
            if tokens == nil { tokens = TokenWindow() }
            tokens!.add(count, now: now)
        }
    }

    struct State {
        var subjects: [String: SubjectState] = [:]
        var day: DayClock.Day
        /// Requests counted today, by subject.
        var daily: [String: Int] = [:]
        /// Subjects whose daily count changed since the last ``takeDailyCountsToSave()``.
        var dirty: Set<String> = []
        /// Counts of days that ended before they were saved.
        var unsaved: [(subject: String, day: Int64, count: Int)] = []
    }

    private let state: Mutex<State>
    private let clock: DayClock
    private let now: @Sendable () -> Int64

    public init(clock: DayClock = .utc, now: @escaping @Sendable () -> Int64 = { EpochClock.nowMilliseconds() }) {
        self.clock = clock
        self.now = now
        state = Mutex(State(day: clock.day(containing: now())))
    }

    /// The current day in the configured zone.
    public var currentDay: DayClock.Day {
        let t = now()
        return state.withLock { s in
            roll(&s, t)
            return s.day
        }
    }

    /// The current day's index in the configured zone.
    public var today: Int64 { currentDay.index }

    /// Checks every limit in `policy` and, if all pass, counts the request against each at once.
    public func admit(_ policy: LimitPolicy, estimatedTokens: Int = 0) -> Admission {
        let t = now()
        return state.withLock { s -> Admission in
            roll(&s, t)
            var rejection: LimitRejection?
            func refuse(_ r: LimitRejection) {
                if rejection == nil || r.resetAtMs > rejection!.resetAtMs { rejection = r }
            }
            var minuteCheck: WindowCheck?
            if let l = policy.requestsPerMinute {
                // Mutated in place: copying the state out would copy its timestamp log on every request.
                let c = s.subjects[l.subject, default: SubjectState()].checkMinute(limit: l.limit, now: t)
                minuteCheck = c
                if !c.allowed { refuse(.init(kind: .requestsPerMinute, limit: l.limit, origin: l.origin, resetAtMs: c.resetAtMs, retryAfterMs: max(1, c.resetAtMs - t))) }
            }
            if let l = policy.requestsPerDay, (s.daily[l.subject] ?? 0) >= l.limit {
                refuse(.init(kind: .requestsPerDay, limit: l.limit, origin: l.origin, resetAtMs: s.day.endMs, retryAfterMs: max(1, s.day.endMs - t)))
            }
            if let l = policy.concurrentRequests, (s.subjects[l.subject]?.inFlight ?? 0) >= l.limit {
                refuse(.init(kind: .concurrentRequests, limit: l.limit, origin: l.origin, resetAtMs: t + 1000, retryAfterMs: 1000))
            }
            if let l = policy.tokensPerMinute, let w = s.subjects[l.subject]?.tokens, w.used(now: t) >= l.limit {
                let reset = w.resetAt(now: t)
                refuse(.init(kind: .tokensPerMinute, limit: l.limit, origin: l.origin, resetAtMs: reset, retryAfterMs: max(1, reset - t)))
            }
            if let rejection {
                return .rejected(rejection, snapshot(&s, policy, t, minuteCheck: nil))
            }
            // Everything fits: count the request everywhere at once.
            if let l = policy.requestsPerMinute { s.subjects[l.subject]!.minute!.record(now: t) }
            if let l = policy.requestsPerDay {
                s.daily[l.subject, default: 0] += 1
                s.dirty.insert(l.subject)
            }
            if let l = policy.concurrentRequests { s.subjects[l.subject, default: SubjectState()].inFlight += 1 }
            if let l = policy.tokensPerMinute, estimatedTokens > 0 {
                s.subjects[l.subject, default: SubjectState()].addTokens(estimatedTokens, now: t)
            }
            let snap = snapshot(&s, policy, t, minuteCheck: minuteCheck)
            guard policy.concurrentRequests != nil || policy.tokensPerMinute != nil else { return .admitted(nil, snap) }
            let lease = LimitLease(
                limiter: self, concurrencySubject: policy.concurrentRequests?.subject, tokenSubject: policy.tokensPerMinute?.subject,
                estimatedTokens: policy.tokensPerMinute == nil ? 0 : estimatedTokens, admittedAtMs: t)
            return .admitted(lease, snap)
        }
    }

    /// The headers' view of `policy` without counting anything (responses that are not model calls).
    public func peek(_ policy: LimitPolicy) -> RateLimitSnapshot {
        let t = now()
        return state.withLock { s in
            roll(&s, t)
            return snapshot(&s, policy, t, minuteCheck: nil)
        }
    }

    func release(_ lease: LimitLease, actualTokens: Int?) {
        let t = now()
        state.withLock { s in
            if let subject = lease.concurrencySubject, s.subjects[subject] != nil {
                s.subjects[subject]!.inFlight = max(0, s.subjects[subject]!.inFlight - 1)
            }
            if let subject = lease.tokenSubject, let actual = actualTokens, actual != lease.estimatedTokens {
                s.subjects[subject, default: SubjectState()].addTokens(actual - lease.estimatedTokens, now: t)
            }
        }
    }

    private func snapshot(_ s: inout State, _ policy: LimitPolicy, _ t: Int64, minuteCheck: WindowCheck?) -> RateLimitSnapshot {
        var out = RateLimitSnapshot()
        var minute: Quota?
        if let l = policy.requestsPerMinute {
            if let c = minuteCheck {
                minute = Quota(limit: l.limit, remaining: c.remaining, resetAtMs: c.resetAtMs)
            } else if var w = s.subjects[l.subject]?.minute {
                let c = w.check(now: t)
                s.subjects[l.subject]!.minute = w
                // `check` reports what is left after one more request; a peek reports what is left now.
                minute = Quota(limit: l.limit, remaining: c.allowed ? c.remaining + 1 : 0, resetAtMs: c.resetAtMs)
            } else {
                minute = Quota(limit: l.limit, remaining: l.limit, resetAtMs: t + 60_000)
            }
        }
        var day: Quota?
        if let l = policy.requestsPerDay {
            day = Quota(limit: l.limit, remaining: max(0, l.limit - (s.daily[l.subject] ?? 0)), resetAtMs: s.day.endMs)
        }
        // The tighter of the two (fewer left; on a tie the smaller limit; on a full tie the minute's).
        if let m = minute, let d = day {
            out.requests = d.remaining < m.remaining || (d.remaining == m.remaining && d.limit < m.limit) ? d : m
        } else {
            out.requests = minute ?? day
        }
        if let l = policy.tokensPerMinute {
            let w = s.subjects[l.subject]?.tokens
            let used = w?.used(now: t) ?? 0
            out.tokens = Quota(limit: l.limit, remaining: min(l.limit, max(0, l.limit - used)), resetAtMs: w?.resetAt(now: t) ?? t + 60_000)
        }
        return out
    }

    /// Moves to a new day when the clock has passed midnight (or jumped back across it).
    private func roll(_ s: inout State, _ t: Int64) {
        guard t >= s.day.endMs || t < s.day.startMs else { return }
        for subject in s.dirty { s.unsaved.append((subject, s.day.index, s.daily[subject] ?? 0)) }
        s.dirty.removeAll()
        s.daily.removeAll()
        s.day = clock.day(containing: t)
    }

    // MARK: Persistence of daily counts

    /// Daily counts changed since the last call (including days that ended meanwhile), to be saved.
    public func takeDailyCountsToSave() -> [(subject: String, day: Int64, count: Int)] {
        let t = now()
        return state.withLock { s in
            roll(&s, t)
            var out = s.unsaved
            s.unsaved.removeAll()
            for subject in s.dirty { out.append((subject, s.day.index, s.daily[subject] ?? 0)) }
            s.dirty.removeAll()
            return out
        }
    }

    /// Puts back counts that could not be saved, so the next save retries them.
    public func returnUnsaved(_ counts: [(subject: String, day: Int64, count: Int)]) {
        state.withLock { s in
            for c in counts {
                if c.day == s.day.index { s.dirty.insert(c.subject) } else { s.unsaved.append(c) }
            }
        }
    }

    /// Restores today's counts saved by an earlier run (a restart must not hand out a second day's quota).
    public func restoreDailyCounts(_ counts: [String: Int], day: Int64) {
        let t = now()
        state.withLock { s in
            roll(&s, t)
            guard day == s.day.index else { return }
            for (subject, count) in counts { s.daily[subject] = max(s.daily[subject] ?? 0, count) }
        }
    }

    // MARK: Inspection and housekeeping

    /// Live counters of every subject with anything counted, sorted by subject.
    public func counters() -> [SubjectCounters] {
        let t = now()
        return state.withLock { s in
            roll(&s, t)
            var out: [SubjectCounters] = []
            for subject in Set(s.subjects.keys).union(s.daily.keys).sorted() {
                var minute = 0
                if var w = s.subjects[subject]?.minute {
                    minute = w.used(now: t)
                    s.subjects[subject]!.minute = w
                }
                let sub = s.subjects[subject]
                out.append(SubjectCounters(
                    subject: subject, requestsLastMinute: minute, requestsToday: s.daily[subject] ?? 0,
                    inFlight: sub?.inFlight ?? 0, tokensLastMinute: max(0, sub?.tokens?.used(now: t) ?? 0)))
            }
            return out
        }
    }

    /// Forgets subjects with nothing in flight and nothing counted in the last minute (bounded memory).
    public func sweep() {
        let t = now()
        state.withLock { s in
            roll(&s, t)
            s.subjects = s.subjects.filter { _, sub in
                if sub.inFlight > 0 { return true }
                if var w = sub.minute, !w.isIdle(now: t) { return true }
                if let tokens = sub.tokens, tokens.used(now: t) > 0 { return true }
                return false
            }
        }
    }
}
