/// What a limit check found.
public struct WindowCheck: Sendable, Equatable {
    public var allowed: Bool
    /// Requests left after this one (when allowed) or now (when not).
    public var remaining: Int
    /// When the next slot frees up (epoch ms).
    public var resetAtMs: Int64
}

/// Requests in a sliding window: at most `limit` in any `window` milliseconds — no fixed window that lets
/// 2× the limit through around its boundary. Exact (a log of timestamps) for limits up to
/// ``exactLimit``; above that a sliding-window counter (two fixed windows, the older weighted by how
/// much of it still overlaps), which bounds memory and is exact when the older window's requests were
/// spread evenly (a burst late in it is let out of the window early).
public struct RequestWindow: Sendable {
    public static let exactLimit = 10_000

    private enum Storage: Sendable {
        /// Timestamps in order; `times[head...]` are inside the window.
        case log(times: [Int64], head: Int)
        case counter(windowStart: Int64, current: Int, previous: Int)
    }

    private var storage: Storage
    /// The limit; may change (a plan change) without losing what was counted.
    public var limit: Int {
        didSet { if (limit <= Self.exactLimit) != (oldValue <= Self.exactLimit) { convert() } }
    }
    public let windowMs: Int64

    public init(limit: Int, windowMs: Int64 = 60_000) {
        self.limit = limit
        self.windowMs = windowMs
        storage = limit <= Self.exactLimit ? .log(times: [], head: 0) : .counter(windowStart: 0, current: 0, previous: 0)
    }

    /// Switches between the exact log and the counter when the limit crosses ``exactLimit``, keeping the count.
    private mutating func convert() {
        switch storage {
        case .log(let times, let head):
            let kept = Array(times[head...])
            storage = .counter(windowStart: kept.first ?? 0, current: kept.count, previous: 0)
        case .counter(let start, let current, _):
            // Spread what was counted over the current window's start: conservative (frees at window end).
            storage = .log(times: Array(repeating: start, count: min(current, limit)), head: 0)
        }
    }

    /// Checks whether one more request fits at `now`, without recording it.
    public mutating func check(now: Int64) -> WindowCheck {
        switch storage {
        case .log(var times, var head):
            // Drop timestamps that left the window.
            while head < times.count, times[head] <= now - windowMs { head += 1 }
            if head == times.count, head > 0 {
                times.removeAll(keepingCapacity: true)
                head = 0
            }
            storage = .log(times: times, head: head)
            let count = times.count - head
            if count < limit {
                let oldest = count > 0 ? times[head] : now
                return WindowCheck(allowed: true, remaining: limit - count - 1, resetAtMs: oldest + windowMs)
            }
            // The slot frees when the request `limit` places from the end leaves the window.
            return WindowCheck(allowed: false, remaining: 0, resetAtMs: times[times.count - limit] + windowMs)
        case .counter(var start, var current, var previous):
            if now >= start + windowMs {
                let windows = (now - start) / windowMs
                previous = windows == 1 ? current : 0
                current = 0
                start += windows * windowMs
                storage = .counter(windowStart: start, current: current, previous: previous)
            }
            let overlap = Double(start + windowMs - now) / Double(windowMs)
            let estimate = Int((Double(previous) * overlap).rounded(.up)) + current
            let reset = start + windowMs
            if estimate < limit { return WindowCheck(allowed: true, remaining: limit - estimate - 1, resetAtMs: reset) }
            // When will the weighted older window have shrunk enough?
            let needed = Double(estimate - limit + 1)
            let wait = previous > 0 ? Int64((needed / Double(previous)) * Double(windowMs)) : (reset - now)
            return WindowCheck(allowed: false, remaining: 0, resetAtMs: now + max(1, min(wait, reset - now + windowMs)))
        }
    }

    /// Records a request at `now` (after a successful ``check(now:)``).
    public mutating func record(now: Int64) {
        switch storage {
        case .log(var times, var head):
            storage = .log(times: [], head: 0)  // keep `times` uniquely referenced while it changes
            // Compact once the expired prefix is at least half the array: amortised O(1) per request.
            if head > 0, head * 2 >= times.count {
                times.removeFirst(head)
                head = 0
            }
            times.append(now)
            storage = .log(times: times, head: head)
        case .counter(let start, let current, let previous):
            storage = .counter(windowStart: start == 0 ? now - now % windowMs : start, current: current + 1, previous: previous)
        }
    }

    /// Requests counted in the window right now.
    public mutating func used(now: Int64) -> Int {
        let c = check(now: now)
        return c.allowed ? limit - c.remaining - 1 : limit
    }

    /// Whether nothing is counted any more (the window can be forgotten).
    public mutating func isIdle(now: Int64) -> Bool { used(now: now) == 0 }
}

/// Tokens in the last minute, in one-second buckets.
public struct TokenWindow: Sendable {
    private var buckets = [Int](repeating: 0, count: 60)
    private var bucketSecond = [Int64](repeating: -1, count: 60)

    public init() {}

    /// Tokens recorded in the 60 seconds up to `now`.
    public func used(now: Int64) -> Int {
        let second = now / 1000
        var total = 0
        for i in 0..<60 where bucketSecond[i] > second - 60 && bucketSecond[i] <= second { total += buckets[i] }
        return total
    }

    /// Adds (or, with a negative count, corrects) tokens at `now`.
    public mutating func add(_ tokens: Int, now: Int64) {
        let second = now / 1000
        let i = Int(second % 60)
        if bucketSecond[i] != second {
            bucketSecond[i] = second
            buckets[i] = 0
        }
        buckets[i] += tokens
    }

    /// When the oldest counted second leaves the window (epoch ms).
    public func resetAt(now: Int64) -> Int64 {
        let second = now / 1000
        var oldest = second
        for s in bucketSecond where s > second - 60 && s < oldest { oldest = s }
        return (oldest + 60) * 1000
    }
}
