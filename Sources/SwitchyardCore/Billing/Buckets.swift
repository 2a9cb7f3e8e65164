import Foundation

/// Where credits came from, which decides when they are spent and whether they expire.
public enum BucketKind: String, Sendable, Codable, CaseIterable {
    /// A plan's monthly credits: expire at the end of the billing period; spent first.
    case plan
    /// Sign-up and other bonuses: spent after plan credits.
    case bonus
    /// Purchased credits (and redeemed codes): never expire; spent last.
    case topup
}

/// One bucket's state as the allocator sees it.
public struct BucketBalance: Sendable, Equatable {
    public var id: String
    public var kind: BucketKind
    public var balance: Int64
    public var expiresAt: Int64?
    public var createdAt: Int64

    public init(id: String, kind: BucketKind, balance: Int64, expiresAt: Int64?, createdAt: Int64) {
        self.id = id
        self.kind = kind
        self.balance = balance
        self.expiresAt = expiresAt
        self.createdAt = createdAt
    }
}

public enum CreditAllocator {
    /// Spend order: plan credits first (soonest to expire first), then bonus (soonest to expire first,
    /// never-expiring last), then top-ups (oldest first).
    public static func spendOrder(_ buckets: [BucketBalance]) -> [BucketBalance] {
        func rank(_ k: BucketKind) -> Int {
            switch k {
            case .plan: return 0
            case .bonus: return 1
            case .topup: return 2
            }
        }
        return buckets.sorted { a, b in
            if rank(a.kind) != rank(b.kind) { return rank(a.kind) < rank(b.kind) }
            let ea = a.expiresAt ?? .max, eb = b.expiresAt ?? .max
            if ea != eb { return ea < eb }
            if a.createdAt != b.createdAt { return a.createdAt < b.createdAt }
            return a.id < b.id
        }
    }

    /// Splits `amount` over the buckets in spend order; nil when they hold less than `amount` in total.
    /// Only buckets live at `now` with a positive balance are used.
    public static func allocate(_ amount: Int64, from buckets: [BucketBalance], now: Int64) -> [(bucket: String, amount: Int64)]? {
        guard amount > 0 else { return [] }
        var left = amount
        var out: [(String, Int64)] = []
        for b in spendOrder(buckets) where b.balance > 0 && (b.expiresAt.map { $0 > now } ?? true) {
            let take = min(left, b.balance)
            out.append((b.id, take))
            left -= take
            if left == 0 { return out }
        }
        return nil
    }

    /// What the live buckets hold in total at `now`.
    public static func available(_ buckets: [BucketBalance], now: Int64) -> Int64 {
        buckets.reduce(0) { sum, b in b.balance > 0 && (b.expiresAt.map { $0 > now } ?? true) ? sum + b.balance : sum }
    }
}

/// Monthly billing periods anchored at the moment a user joined their plan: a user who joined on the
/// 31st renews on the last day of shorter months and on the 31st again after them.
public enum BillingPeriod {
    private static let calendar: Calendar = {
        var c = Calendar(identifier: .gregorian)
        c.timeZone = TimeZone(secondsFromGMT: 0)!
        return c
    }()

    /// The period containing `now` for a user anchored at `anchor` (both epoch ms): its start and end.
    public static func containing(_ now: Int64, anchor: Int64) -> (start: Int64, end: Int64) {
        let anchorDate = Date(timeIntervalSince1970: Double(anchor) / 1000)
        func start(_ n: Int) -> Int64 {
            guard let d = calendar.date(byAdding: .month, value: n, to: anchorDate) else { return anchor }
            return Int64((d.timeIntervalSince1970 * 1000).rounded())
        }
        guard now >= anchor else { return (anchor, start(1)) }
        // Months elapsed, then correct for day-of-month clamping.
        let comps = calendar.dateComponents([.month], from: anchorDate, to: Date(timeIntervalSince1970: Double(now) / 1000))
        var n = max(0, comps.month ?? 0)
        while n > 0, start(n) > now { n -= 1 }
        while start(n + 1) <= now { n += 1 }
        return (start(n), start(n + 1))
    }
}
