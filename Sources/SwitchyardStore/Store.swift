import SwitchyardCore

/// A user: who keys belong to, on which plan.
public struct UserRecord: Sendable, Equatable {
    public var id: String
    public var email: String
    /// The plan name; nil means the configured default plan.
    public var plan: String?
    public var disabledAt: Int64?
    /// `person`, or `service` for the user that owns keys created without one.
    public var kind: String
    public var createdAt: Int64

    public init(id: String, email: String, plan: String?, disabledAt: Int64?, kind: String, createdAt: Int64) {
        self.id = id
        self.email = email
        self.plan = plan
        self.disabledAt = disabledAt
        self.kind = kind
        self.createdAt = createdAt
    }

    public var isDisabled: Bool { disabledAt != nil }
}

/// What a key may do beyond its user's plan.
public struct KeyOptions: Sendable, Equatable {
    public var expiresAt: Int64?
    /// Model names or patterns this key may use (nil: whatever the plan allows).
    public var models: [String]?
    /// Limits that replace the plan's for this key (counted per key).
    public var limits: LimitValues

    public init(expiresAt: Int64? = nil, models: [String]? = nil, limits: LimitValues = .init()) {
        self.expiresAt = expiresAt
        self.models = models
        self.limits = limits
    }
}

/// An API key as stored: everything but the secret, which exists only as a hash.
public struct KeyRecord: Sendable, Equatable {
    public var id: String
    public var name: String
    public var userID: String?
    public var userEmail: String?
    /// The key prefix (e.g. `sy-`) and last four characters, for display: `sy-…a1B2`.
    public var prefix: String
    public var last4: String
    public var createdAt: Int64
    public var revokedAt: Int64?
    public var options: KeyOptions = .init()
    /// The owner's plan (nil: the default plan) and whether the owner is disabled.
    public var userPlan: String?
    public var userDisabledAt: Int64?
    /// The owner's kind: `person`, or `service` (keys created without a user; each counted on its own).
    public var userKind: String = "person"
    /// When the presented secret stops working (a rotated-out secret in its grace period).
    public var secretExpiresAt: Int64?

    public init(id: String, name: String, userID: String?, userEmail: String?, prefix: String, last4: String, createdAt: Int64, revokedAt: Int64?) {
        self.id = id
        self.name = name
        self.userID = userID
        self.userEmail = userEmail
        self.prefix = prefix
        self.last4 = last4
        self.createdAt = createdAt
        self.revokedAt = revokedAt
    }

    public var isRevoked: Bool { revokedAt != nil }
    /// How the key is shown in lists.
    public var redacted: String { "\(prefix)…\(last4)" }
}

/// A change to a key's options; nil fields are left alone.
public struct KeyUpdate: Sendable {
    public var name: String?
    public var expiresAt: Int64??
    public var models: [String]??
    public var limits: LimitValues?

    public init(name: String? = nil, expiresAt: Int64?? = nil, models: [String]?? = nil, limits: LimitValues? = nil) {
        self.name = name
        self.expiresAt = expiresAt
        self.models = models
        self.limits = limits
    }
}

/// A key just created: its record and the secret, which is shown once and never stored.
public struct CreatedKey: Sendable {
    public var record: KeyRecord
    public var secret: String
}

/// Errors the store reports to callers.
public enum StoreError: Error, Sendable, Equatable, CustomStringConvertible {
    case notFound(String)
    case invalid(String)
    case unavailable(String)

    public var description: String {
        switch self {
        case .notFound(let m), .invalid(let m), .unavailable(let m): return m
        }
    }
}

/// Keys and the users they belong to.
public protocol KeyStore: Sendable {
    /// Creates a key; when `userEmail` is given the key belongs to that user (created if new), otherwise
    /// to the service user.
    func createKey(name: String, userEmail: String?, prefix: String, options: KeyOptions) async throws -> CreatedKey
    /// All keys, newest first.
    func listKeys() async throws -> [KeyRecord]
    /// One key by id.
    func key(id: String) async throws -> KeyRecord?
    /// Revokes a key; false if no such key. Revoking twice is not an error.
    func revokeKey(id: String) async throws -> Bool
    /// Issues a new secret for a key; earlier secrets keep working for `graceMs` more (0: stop now).
    func rotateKey(id: String, prefix: String, graceMs: Int64) async throws -> CreatedKey?
    /// Changes a key's name, expiry, model list or limits; nil if no such key.
    func updateKey(id: String, _ update: KeyUpdate) async throws -> KeyRecord?
    /// The key whose secret hashes to `hash`, revoked or not; nil if none.
    func lookupKey(hash: KeyHash) async throws -> KeyRecord?
    /// A counter bumped by every change that affects authentication, in this process or another
    /// (the CLI, another replica): caches compare it to know when to drop their entries.
    func authGeneration() async throws -> Int64
}

/// Users and their plans.
public protocol UserStore: Sendable {
    /// Creates a user; throws ``StoreError/invalid(_:)`` if the email is taken.
    func createUser(email: String, plan: String?) async throws -> UserRecord
    func listUsers() async throws -> [UserRecord]
    func user(email: String) async throws -> UserRecord?
    /// Sets a user's plan (nil: the default plan); nil if no such user.
    func setPlan(email: String, plan: String?) async throws -> UserRecord?
    /// Disables or re-enables a user; nil if no such user.
    func setDisabled(email: String, _ disabled: Bool) async throws -> UserRecord?
}

/// Daily request counts, kept so a restart does not hand out a second day's quota.
public protocol CounterStore: Sendable {
    /// Counts recorded for `day` (days since the epoch in the configured time zone), by subject.
    func dailyCounts(day: Int64) async throws -> [String: Int]
    /// Saves counts (replacing earlier values for the same subject and day).
    func saveDailyCounts(_ counts: [(subject: String, day: Int64, count: Int)]) async throws
}

/// Responses API conversations kept for `previous_response_id`.
public protocol ResponseStore: Sendable {
    /// Saves a response: `items` is the JSON array of the conversation's input items followed by the
    /// response's output items.
    func saveResponse(id: String, keyID: String, model: String, items: String, createdAt: Int64, expiresAt: Int64) async throws
    /// The items of a response `keyID` stored and that has not expired; nil otherwise.
    func loadResponse(id: String, keyID: String, now: Int64) async throws -> String?
    /// Deletes expired responses; returns how many.
    func purgeResponses(now: Int64) async throws -> Int
}

/// The gateway's whole persistent state.
public protocol GatewayStore: KeyStore, UserStore, CounterStore, CreditStore, ResponseStore {
    /// Housekeeping the gateway runs every second (SQLite: a WAL checkpoint off the write path).
    func maintain() async
    /// Checks the database answers (for readiness probes).
    func ping() async throws
    /// Closes connections; the store is unusable afterwards.
    func close() async
}

extension KeyStore {
    /// Creates a key with no expiry, model list or limits of its own.
    public func createKey(name: String, userEmail: String?, prefix: String) async throws -> CreatedKey {
        try await createKey(name: name, userEmail: userEmail, prefix: prefix, options: KeyOptions())
    }
}
