import SwitchyardCore

/// What the store needs to know about plans to grant their credits: per plan, the monthly and the
/// one-time sign-up amount (µc), and the plan of users without one.
public struct CreditGrantPolicy: Sendable, Equatable {
    public struct Grants: Sendable, Equatable {
        public var monthly: Int64
        public var signup: Int64

        public init(monthly: Int64, signup: Int64) {
            self.monthly = monthly
            self.signup = signup
        }
    }

    public var defaultPlan: String
    public var plans: [String: Grants]

    public init(defaultPlan: String, plans: [String: Grants]) {
        self.defaultPlan = defaultPlan
        self.plans = plans
    }

    public init(config: GatewayConfig) {
        defaultPlan = config.defaultPlan
        var plans: [String: Grants] = [:]
        for p in config.plans {
            plans[p.name] = Grants(monthly: p.monthlyCredits?.micros ?? 0, signup: p.signupCredits?.micros ?? 0)
        }
        self.plans = plans
    }

    /// Whether any plan grants credits (if not, grant checks can be skipped).
    public var grantsAnything: Bool { plans.values.contains { $0.monthly > 0 || $0.signup > 0 } }
}

/// A request's hold on credits, asked for before it is sent upstream.
public struct ReservationRequest: Sendable {
    /// The request's unique id (never a client-chosen one): the ledger's idempotency keys derive from it.
    public var id: String
    /// The id the client saw in `x-request-id`.
    public var requestID: String
    public var userID: String
    public var keyID: String
    /// The most the request can cost (µc, > 0).
    public var amount: Int64
    public var model: String
    /// Already admitted by the gateway against the balance it holds in memory (and possibly sent
    /// upstream): the store holds what the buckets have even when that is less than `amount`, and
    /// answers `.insufficient` for such a partial hold. The settlement then takes the rest from the
    /// live buckets, or reports it uncovered.
    public var admitted: Bool

    public init(id: String, requestID: String? = nil, userID: String, keyID: String, amount: Int64, model: String, admitted: Bool = false) {
        self.id = id
        self.requestID = requestID ?? id
        self.userID = userID
        self.keyID = keyID
        self.amount = amount
        self.model = model
        self.admitted = admitted
    }
}

public enum ReservationResult: Sendable, Equatable {
    /// Held; `available` is what the user has left to spend after the hold.
    case reserved(available: Int64)
    case insufficient(available: Int64)
}

/// One request as the usage log records it (successful or not).
public struct UsageRecord: Sendable, Equatable {
    /// Unique per request (the ledger's key for it).
    public var id: String
    /// The id the client saw in `x-request-id` (its own when it sent one).
    public var requestID: String
    public var createdAt: Int64
    public var userID: String?
    public var keyID: String?
    public var model: String
    public var provider: String?
    public var upstreamModel: String?
    public var inputTokens: Int
    public var outputTokens: Int
    public var cachedTokens: Int
    /// Whether the token counts are the gateway's estimate (the provider reported none).
    public var usageEstimated: Bool
    /// Credits charged (µc).
    public var credits: Int64
    public var status: Int
    /// `ok`, `client_closed`, `error`, `interrupted` (settled after a restart).
    public var outcome: String
    public var latencyMs: Int
    public var stream: Bool
    public var errorCode: String?

    public init(
        id: String, requestID: String, createdAt: Int64, userID: String?, keyID: String?, model: String, provider: String? = nil,
        upstreamModel: String? = nil, inputTokens: Int = 0, outputTokens: Int = 0, cachedTokens: Int = 0,
        usageEstimated: Bool = false, credits: Int64 = 0, status: Int, outcome: String, latencyMs: Int = 0, stream: Bool = false,
        errorCode: String? = nil
    ) {
        self.id = id
        self.requestID = requestID
        self.createdAt = createdAt
        self.userID = userID
        self.keyID = keyID
        self.model = model
        self.provider = provider
        self.upstreamModel = upstreamModel
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.cachedTokens = cachedTokens
        self.usageEstimated = usageEstimated
        self.credits = credits
        self.status = status
        self.outcome = outcome
        self.latencyMs = latencyMs
        self.stream = stream
        self.errorCode = errorCode
    }
}

/// How a reserved request ends.
public struct Settlement: Sendable {
    public enum Kind: Sendable, Equatable {
        /// Charge `cost` (µc): the hold is released and the cost taken, from the held buckets first.
        case charge(cost: Int64)
        /// The request failed on the platform's side: the whole hold goes back.
        case refund
    }

    public var kind: Kind
    /// The usage row to write; its `credits` is set to what was actually charged.
    public var usage: UsageRecord

    public init(_ kind: Kind, usage: UsageRecord) {
        self.kind = kind
        self.usage = usage
    }
}

public struct SettlementResult: Sendable, Equatable {
    public var charged: Int64
    /// What the user has left to spend afterwards.
    public var available: Int64
    /// Cost the user's credits could not cover (only when a provider reported more than the reservation's
    /// bounds and the balance was spent meanwhile).
    public var uncovered: Int64

    public init(charged: Int64, available: Int64, uncovered: Int64) {
        self.charged = charged
        self.available = available
        self.uncovered = uncovered
    }
}

/// One credit bucket as shown to users and operators.
public struct CreditBucket: Sendable, Equatable {
    public var id: String
    public var kind: BucketKind
    public var granted: Int64
    public var balance: Int64
    public var expiresAt: Int64?
    public var createdAt: Int64
    public var note: String?
}

/// A user's credits: the live buckets in spend order, and what requests in flight hold.
public struct CreditBalance: Sendable, Equatable {
    public var available: Int64
    public var reserved: Int64
    public var buckets: [CreditBucket]
}

/// One ledger entry.
public struct LedgerEntry: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case grant, topup, bonus, reservation, release, charge, refund, expiry
    }

    public var id: Int64
    public var userID: String
    public var bucketID: String?
    public var kind: Kind
    public var amount: Int64
    public var requestID: String?
    public var idempotencyKey: String
    public var createdAt: Int64
    public var note: String?
}

/// A reservation still open (its request has not been settled).
public struct OpenReservation: Sendable, Equatable {
    public var id: String
    public var requestID: String
    public var userID: String
    public var keyID: String
    public var amount: Int64
    public var model: String
    public var createdAt: Int64
}

/// The ledger's self-check: every bucket's cached balance equals the sum of its entries, and charges
/// equal the credits of the usage rows.
public struct LedgerCheck: Sendable, Equatable {
    public var bucketsChecked: Int
    public var mismatchedBuckets: [String]
    public var totalCharged: Int64
    public var totalUsageCredits: Int64
    public var openReservations: Int
    public var negativeBuckets: [String]

    public var isConsistent: Bool { mismatchedBuckets.isEmpty && totalCharged == totalUsageCredits && negativeBuckets.isEmpty }
}

public struct UsageQuery: Sendable {
    public var userID: String?
    public var keyID: String?
    public var since: Int64?
    public var limit: Int

    public init(userID: String? = nil, keyID: String? = nil, since: Int64? = nil, limit: Int = 1000) {
        self.userID = userID
        self.keyID = keyID
        self.since = since
        self.limit = limit
    }
}

/// A batch of redemption codes just created; the codes are shown once.
public struct CreatedCode: Sendable, Equatable {
    public var code: String
    public var id: String
    public var credits: Int64
    public var expiresAt: Int64?
}

public struct CodeRecord: Sendable, Equatable {
    public var id: String
    public var hint: String
    public var credits: Int64
    public var createdAt: Int64
    public var expiresAt: Int64?
    public var redeemedBy: String?
    public var redeemedAt: Int64?
}

public enum RedeemResult: Sendable, Equatable {
    case redeemed(credits: Int64, available: Int64)
    case unknown
    case alreadyRedeemed
    case expired
}

/// One ledger write; batches of them share a transaction.
public enum LedgerOperation: Sendable {
    case reserve(ReservationRequest)
    case settle(Settlement)
    case usage(UsageRecord)
}

public enum LedgerOutcome: Sendable {
    case reserved(ReservationResult)
    case settled(SettlementResult)
    case recorded
}

/// A user's credits as a committed batch left them, for a gateway that decides in memory until the next batch.
public struct LedgerUserState: Sendable, Equatable {
    /// What the live buckets hold (holds already taken out).
    public var available: Int64
    /// When the first live bucket with credits in it expires (ms since the epoch): `available` is
    /// only good until then.
    public var nextExpiry: Int64?

    public init(available: Int64, nextExpiry: Int64?) {
        self.available = available
        self.nextExpiry = nextExpiry
    }
}

/// What a batch of ledger operations did: one outcome per operation, in order, and the state of every
/// user the batch touched after it.
public struct LedgerResult: Sendable {
    public var outcomes: [LedgerOutcome]
    public var users: [String: LedgerUserState]

    public init(outcomes: [LedgerOutcome], users: [String: LedgerUserState]) {
        self.outcomes = outcomes
        self.users = users
    }
}

/// Which requests a ledger already knows (for replaying a journal of operations, some of which were
/// written before the process stopped).
public struct AppliedRequests: Sendable, Equatable {
    /// Requests whose reservation was written (held now, or settled since).
    public var reserved: Set<String>
    /// Requests whose usage row was written (settled, or recorded without a hold).
    public var settled: Set<String>

    public init(reserved: Set<String>, settled: Set<String>) {
        self.reserved = reserved
        self.settled = settled
    }
}

/// The credit ledger: append-only entries with idempotency keys; bucket balances are a cache of their sums.
public protocol CreditStore: Sendable {
    /// Runs reservations, settlements and usage rows in order, in one transaction (durable on return).
    /// `policy` applies due plan grants for the users who reserve. `waiting` says whether a request
    /// waits for the batch: then it may run on the caller's thread (no hop); a batch written behind
    /// the requests runs where it holds up none of them.
    func apply(_ operations: [LedgerOperation], policy: CreditGrantPolicy?, now: Int64, waiting: Bool) async throws -> LedgerResult
    /// Of `ids` (request ids as reservations and usage rows carry them), those already written.
    func appliedRequests(_ ids: [String]) async throws -> AppliedRequests
    /// Where the gateway keeps its journal of ledger operations not yet applied (a path prefix beside
    /// the database; segments are `<prefix>.<n>`). Nil for a database that does not survive the process.
    var ledgerJournalPrefix: String? { get }
    /// Holds credits for requests about to be sent (durable when this returns). Applies due plan
    /// grants and expiries first.
    func reserve(_ requests: [ReservationRequest], policy: CreditGrantPolicy, now: Int64) async throws -> [ReservationResult]
    /// Settles reserved requests and writes their usage rows; a request settled twice is charged once.
    func settle(_ settlements: [Settlement], now: Int64) async throws -> [SettlementResult]
    /// Writes usage rows of requests that held no credits (free models, refused requests).
    func recordUsage(_ rows: [UsageRecord]) async throws
    /// Adds credits to a user's account (created if new); `idempotencyKey` makes a retry harmless.
    func grant(userEmail: String, amount: Int64, kind: BucketKind, note: String?, expiresAt: Int64?, idempotencyKey: String?, now: Int64) async throws -> CreditBucket
    /// The user's balance (applying due grants and expiries first).
    func creditBalance(userID: String, policy: CreditGrantPolicy, now: Int64) async throws -> CreditBalance
    /// Ledger entries of a user, newest first.
    func creditHistory(userID: String, limit: Int) async throws -> [LedgerEntry]
    func usage(_ query: UsageQuery) async throws -> [UsageRecord]
    /// Reservations whose requests were never settled (a crash), oldest first.
    func openReservations() async throws -> [OpenReservation]
    func createCodes(count: Int, credits: Int64, expiresAt: Int64?, now: Int64) async throws -> [CreatedCode]
    func listCodes() async throws -> [CodeRecord]
    /// Redeems a code into a top-up for the user, exactly once.
    func redeem(code: String, userID: String, policy: CreditGrantPolicy, now: Int64) async throws -> RedeemResult
    /// Recomputes every balance from the entries and compares.
    func checkLedger() async throws -> LedgerCheck
    /// Gives a written-behind batch (`apply` with `waiting: false`) that runs late the CPU it needs:
    /// stores that run such batches at a low priority raise it. From any thread, without waiting.
    func expediteBackgroundWrites()
}

extension CreditStore {
    public func expediteBackgroundWrites() {}

    /// ``apply(_:policy:now:waiting:)`` for a caller that waits for the batch.
    public func apply(_ operations: [LedgerOperation], policy: CreditGrantPolicy?, now: Int64) async throws -> LedgerResult {
        try await apply(operations, policy: policy, now: now, waiting: true)
    }
}
