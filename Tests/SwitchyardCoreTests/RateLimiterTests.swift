import Synchronization
import SwitchyardCore
import Testing

/// A clock the test moves by hand.
final class ManualClock: Sendable {
    private let value: Atomic<Int64>
    init(_ start: Int64) { value = Atomic(start) }
    var now: Int64 { value.load(ordering: .relaxed) }
    func set(_ t: Int64) { value.store(t, ordering: .relaxed) }
    func advance(_ ms: Int64) { value.add(ms, ordering: .relaxed) }
}

/// 2026-11-21T10:00:00Z
let noon: Int64 = EpochClock.parseISO8601("2026-11-21T10:00:00Z")!

func policy(rpm: Int? = nil, rpd: Int? = nil, concurrency: Int? = nil, tpm: Int? = nil, subject: String = "user:u1") -> LimitPolicy {
    LimitPolicy(
        plan: PlanConfig(name: "free", limits: LimitValues(requestsPerMinute: rpm, requestsPerDay: rpd, concurrentRequests: concurrency, tokensPerMinute: tpm)),
        planSubject: subject, key: LimitValues(), keySubject: "key:k1")
}

extension Admission {
    var lease: LimitLease? { if case .admitted(let l, _) = self { return l } else { return nil } }
    var admitted: Bool { if case .admitted = self { return true } else { return false } }
    var rejection: LimitRejection? { if case .rejected(let r, _) = self { return r } else { return nil } }
    var snapshot: RateLimitSnapshot {
        switch self {
        case .admitted(_, let s), .rejected(_, let s): return s
        }
    }
}

@Suite("Rate windows")
struct RequestWindowTests {
    @Test func slidingLogAllowsExactlyTheLimitInAnyWindow() {
        var w = RequestWindow(limit: 3)
        for t: Int64 in [0, 10_000, 20_000] {
            #expect(w.check(now: t).allowed)
            w.record(now: t)
        }
        let refused = w.check(now: 30_000)
        #expect(!refused.allowed && refused.resetAtMs == 60_000)
        #expect(!w.check(now: 59_999).allowed)
        // The first request leaves the window at exactly 60 s.
        #expect(w.check(now: 60_000).allowed)
    }

    @Test func noDoubleBurstAroundAFixedWindowBoundary() {
        // A fixed window would allow 3 at 0:59 and 3 more at 1:01; a sliding window allows none more.
        var w = RequestWindow(limit: 3)
        for _ in 0..<3 {
            #expect(w.check(now: 59_000).allowed)
            w.record(now: 59_000)
        }
        #expect(!w.check(now: 61_000).allowed)
        #expect(w.check(now: 61_000).resetAtMs == 119_000)
        #expect(w.check(now: 119_000).allowed)
    }

    @Test func rememberedTimestampsStayBounded() {
        // Steady traffic under the limit must not grow the log without bound (it compacts).
        var w = RequestWindow(limit: 100, windowMs: 1000)
        for i in 0..<100_000 {
            let t = Int64(i) * 20
            #expect(w.check(now: t).allowed)
            w.record(now: t)
        }
        // Timestamps after 1,999,000 (exclusive): 1,999,020 … 1,999,980.
        #expect(w.used(now: 2_000_000) == 49)
    }

    @Test func changingTheLimitKeepsWhatWasCounted() {
        var w = RequestWindow(limit: 5)
        for t: Int64 in 0..<4 { w.record(now: t) }
        w.limit = 3
        #expect(!w.check(now: 10).allowed)
        w.limit = 20_000  // switches to the counter representation
        #expect(w.used(now: 10) == 4)
        w.limit = 5
        #expect(w.used(now: 10) == 4)
        #expect(w.check(now: 10).allowed)
    }

    @Test func largeLimitsUseABoundedCounterThatStillSlides() {
        var w = RequestWindow(limit: 20_000)
        for _ in 0..<20_000 { w.record(now: 30_000) }
        #expect(!w.check(now: 59_999).allowed)
        // Unlike a fixed window, the count does not drop to zero at the boundary...
        #expect(!w.check(now: 60_001).allowed)
        // ...but fades as the older window slides out (assuming its requests were spread evenly).
        let later = w.check(now: 90_000)
        #expect(later.allowed && later.remaining == 9_999)
        #expect(w.check(now: 120_000).remaining == 19_999)
    }
}

@Suite("Rate limiter")
struct RateLimiterTests {
    @Test func allLimitsAreCheckedBeforeAnyIsCounted() {
        let clock = ManualClock(noon)
        let limiter = RateLimiter(now: { clock.now })
        let p = policy(rpm: 5, rpd: 3)
        for _ in 0..<3 { #expect(limiter.admit(p).admitted) }
        let r = limiter.admit(p).rejection
        #expect(r?.kind == .requestsPerDay)
        #expect(r?.resetAtMs == EpochClock.parseISO8601("2026-11-22T00:00:00Z"))
        // The refused request did not use up a minute slot.
        #expect(limiter.counters().first?.requestsLastMinute == 3)
    }

    @Test func rejectionNamesTheLimitTheOriginAndTheReset() {
        let clock = ManualClock(noon)
        let limiter = RateLimiter(now: { clock.now })
        let p = policy(rpm: 2)
        _ = limiter.admit(p)
        clock.advance(15_000)
        _ = limiter.admit(p)
        clock.advance(5_000)
        let r = try! #require(limiter.admit(p).rejection)
        #expect(r.kind == .requestsPerMinute && r.retryAfterMs == 40_000)
        #expect(r.message.contains("2 requests per minute") && r.message.contains("plan `free`"))
        #expect(r.message.contains("40s") && r.message.contains("2026-11-21T10:01:00Z"))
        let e = GatewayError.rateLimited(r)
        #expect(e.status == 429 && e.code == "rate_limit_exceeded" && e.retryAfterSeconds == 40 && e.retryAfterMs == 40_000)
    }

    @Test func whenSeveralLimitsAreHitTheLatestResetIsReported() {
        let clock = ManualClock(noon)
        let limiter = RateLimiter(now: { clock.now })
        let p = policy(rpm: 1, rpd: 1)
        _ = limiter.admit(p)
        #expect(limiter.admit(p).rejection?.kind == .requestsPerDay)
    }

    @Test func concurrencySlotsComeBackOnReleaseAndOnDeinit() {
        let limiter = RateLimiter()
        let p = policy(concurrency: 2)
        let a = limiter.admit(p).lease
        var b = limiter.admit(p).lease
        #expect(a != nil && b != nil)
        let refused = limiter.admit(p)
        #expect(refused.rejection?.kind == .concurrentRequests)
        #expect(refused.rejection?.retryAfterMs == 1000)
        a?.release(actualTokens: nil)
        a?.release(actualTokens: nil)  // twice is harmless
        let c = limiter.admit(p).lease
        #expect(c != nil)
        #expect(!limiter.admit(p).admitted)
        b = nil  // a dropped request (an exception, a crash of its task) gives its slot back
        _ = b
        #expect(limiter.admit(p).admitted)
        withExtendedLifetime(c) {}
    }

    @Test func perKeyOverridesAreCountedPerKey() {
        let limiter = RateLimiter()
        let plan = PlanConfig(name: "pro", limits: LimitValues(requestsPerMinute: 2, requestsPerDay: 100))
        let own = LimitPolicy(plan: plan, planSubject: "user:u1", key: LimitValues(requestsPerMinute: 1), keySubject: "key:k1")
        let shared = LimitPolicy(plan: plan, planSubject: "user:u1", key: LimitValues(), keySubject: "key:k2")
        #expect(own.requestsPerMinute == AppliedLimit(limit: 1, subject: "key:k1", origin: "this API key"))
        #expect(own.requestsPerDay == AppliedLimit(limit: 100, subject: "user:u1", origin: "plan `pro`"))
        #expect(limiter.admit(own).admitted)
        #expect(limiter.admit(own).rejection?.origin == "this API key")
        // The other key still has the user's two requests per minute.
        #expect(limiter.admit(shared).admitted)
        #expect(limiter.admit(shared).admitted)
        #expect(!limiter.admit(shared).admitted)
    }

    @Test func dailyLimitResetsAtMidnightInTheConfiguredZone() throws {
        // Tokyo is UTC+9: its day starts at 15:00 UTC.
        let clock = ManualClock(EpochClock.parseISO8601("2026-11-21T14:59:00Z")!)
        let limiter = RateLimiter(clock: try #require(DayClock(identifier: "Asia/Tokyo")), now: { clock.now })
        let p = policy(rpd: 2)
        #expect(limiter.admit(p).admitted)
        #expect(limiter.admit(p).admitted)
        let r = try #require(limiter.admit(p).rejection)
        #expect(r.resetAtMs == EpochClock.parseISO8601("2026-11-21T15:00:00Z"))
        #expect(r.message.contains("2 requests per day"))
        clock.set(EpochClock.parseISO8601("2026-11-21T15:00:00Z")!)
        #expect(limiter.admit(p).admitted)
        #expect(limiter.admit(p).admitted)
        #expect(!limiter.admit(p).admitted)
    }

    @Test func dailyCountsAreSavedAndRestored() {
        let clock = ManualClock(noon)
        let first = RateLimiter(now: { clock.now })
        let p = policy(rpd: 3)
        _ = first.admit(p)
        _ = first.admit(p)
        let saved = first.takeDailyCountsToSave()
        #expect(saved.count == 1 && saved[0].subject == "user:u1" && saved[0].count == 2 && saved[0].day == first.today)
        #expect(first.takeDailyCountsToSave().isEmpty)  // nothing changed since

        // A restarted gateway continues the day where the last one stopped.
        let second = RateLimiter(now: { clock.now })
        second.restoreDailyCounts(["user:u1": 2], day: second.today)
        #expect(second.admit(p).admitted)
        #expect(!second.admit(p).admitted)
        // Counts of another day are ignored.
        let third = RateLimiter(now: { clock.now })
        third.restoreDailyCounts(["user:u1": 3], day: third.today - 1)
        #expect(third.admit(p).admitted)
    }

    @Test func countsOfADayThatEndedBeforeSavingAreStillSaved() {
        let clock = ManualClock(EpochClock.parseISO8601("2026-11-21T23:59:59Z")!)
        let limiter = RateLimiter(now: { clock.now })
        let day = limiter.today
        _ = limiter.admit(policy(rpd: 10))
        clock.advance(2000)
        _ = limiter.admit(policy(rpd: 10))
        let saved = limiter.takeDailyCountsToSave().sorted { $0.day < $1.day }
        #expect(saved.map(\.day) == [day, day + 1] && saved.map(\.count) == [1, 1])
        limiter.returnUnsaved(saved)
        #expect(limiter.takeDailyCountsToSave().count == 2)
    }

    @Test func tokensPerMinuteUsesTheEstimateThenTheActualUsage() {
        let clock = ManualClock(noon)
        let limiter = RateLimiter(now: { clock.now })
        let p = policy(tpm: 1000)
        let lease = limiter.admit(p, estimatedTokens: 900).lease
        #expect(limiter.peek(p).tokens?.remaining == 100)
        lease?.release(actualTokens: 300)
        #expect(limiter.peek(p).tokens?.remaining == 700)
        let big = limiter.admit(p, estimatedTokens: 800).lease
        big?.release(actualTokens: 1200)
        let r = limiter.admit(p, estimatedTokens: 10).rejection
        #expect(r?.kind == .tokensPerMinute)
        clock.advance(61_000)
        #expect(limiter.admit(p, estimatedTokens: 10).admitted)
    }

    @Test func snapshotReportsTheTightestRequestLimit() {
        let clock = ManualClock(noon)
        let limiter = RateLimiter(now: { clock.now })
        let p = policy(rpm: 10, rpd: 3)
        let first = limiter.admit(p).snapshot
        #expect(first.requests == Quota(limit: 3, remaining: 2, resetAtMs: EpochClock.parseISO8601("2026-11-22T00:00:00Z")!))
        let roomy = policy(rpm: 2, rpd: 100, subject: "user:u2")
        let s = limiter.admit(roomy).snapshot
        #expect(s.requests == Quota(limit: 2, remaining: 1, resetAtMs: noon + 60_000))
        // A peek counts nothing.
        #expect(limiter.peek(roomy).requests?.remaining == 1)
        #expect(limiter.peek(roomy).requests?.remaining == 1)
        #expect(limiter.peek(policy(rpm: 5, subject: "user:fresh")).requests == Quota(limit: 5, remaining: 5, resetAtMs: noon + 60_000))
    }

    @Test func parallelCallersNeverJointlyPassALimit() async {
        let limiter = RateLimiter()
        let p = policy(rpm: 37, rpd: 1000, concurrency: 1000)
        let admitted = ManualClock(0)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    for _ in 0..<100 {
                        if case .admitted(let lease, _) = limiter.admit(p) {
                            admitted.advance(1)
                            lease?.release(actualTokens: nil)
                        }
                    }
                }
            }
        }
        #expect(admitted.now == 37)
    }

    @Test func idleSubjectsAreForgotten() {
        let clock = ManualClock(noon)
        let limiter = RateLimiter(now: { clock.now })
        let held = limiter.admit(policy(rpm: 5, concurrency: 3, subject: "user:busy")).lease
        _ = limiter.admit(policy(rpm: 5, subject: "user:idle"))
        _ = limiter.admit(policy(rpm: 5, rpd: 10, subject: "user:daily"))
        #expect(limiter.counters().map(\.subject) == ["user:busy", "user:daily", "user:idle"])
        clock.advance(61_000)
        limiter.sweep()
        // The idle user's state is forgotten; today's counts and the busy user's slot remain.
        let counters = limiter.counters()
        #expect(counters.map(\.subject) == ["user:busy", "user:daily"])
        #expect(counters.first { $0.subject == "user:busy" }?.inFlight == 1)
        #expect(counters.first { $0.subject == "user:daily" }?.requestsToday == 1)
        withExtendedLifetime(held) {}
    }
}

@Suite("Day clock and time parsing")
struct DayClockTests {
    @Test func daysFollowTheZoneIncludingDaylightSavingChanges() throws {
        let berlin = try #require(DayClock(identifier: "Europe/Berlin"))
        // 2026-03-29 has 23 hours in Berlin (clocks go forward).
        let day = berlin.day(containing: EpochClock.parseISO8601("2026-03-29T12:00:00Z")!)
        #expect(day.startMs == EpochClock.parseISO8601("2026-03-28T23:00:00Z"))
        #expect(day.endMs - day.startMs == 23 * 3_600_000)
        let utc = DayClock.utc.day(containing: noon)
        #expect(utc.startMs == EpochClock.parseISO8601("2026-11-21"))
        #expect(utc.index == utc.startMs / 86_400_000)
        #expect(DayClock(identifier: "Mars/Olympus") == nil)
    }

    @Test(arguments: [
        ("2026-12-31", "2026-12-31T00:00:00Z"),
        ("2026-12-31T18:30:00Z", "2026-12-31T18:30:00Z"),
        ("2026-12-31T18:30:00.250Z", "2026-12-31T18:30:00Z"),
        ("2026-12-31T18:30:00+02:00", "2026-12-31T16:30:00Z"),
        ("2026-12-31T18:30-05:30", "2027-01-01T00:00:00Z"),
        ("1969-12-31T23:59:59Z", "1969-12-31T23:59:59Z"),
    ])
    func parsesISO8601(text: String, expected: String) throws {
        let ms = try #require(EpochClock.parseISO8601(text))
        #expect(EpochClock.iso8601(ms) == expected)
    }

    @Test(arguments: ["", "2026", "2026-13-01", "2026-12-31T18:30:00", "2026-12-31T25:00:00Z", "2026-12-31Tnoon", "2026-12-31T18:30:00.Z", "2026-12-31T18:30:00Zjunk"])
    func rejectsMalformedTimes(text: String) {
        #expect(EpochClock.parseISO8601(text) == nil)
    }
}
