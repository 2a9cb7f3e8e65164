import SwitchyardCore

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
    /// Creates a key; when `userEmail` is given the key belongs to that user (created if new).
    func createKey(name: String, userEmail: String?, prefix: String) async throws -> CreatedKey
    /// All keys, newest first.
    func listKeys() async throws -> [KeyRecord]
    /// Revokes a key; false if no such key. Revoking twice is not an error.
    func revokeKey(id: String) async throws -> Bool
    /// The key whose secret hashes to `hash`, revoked or not; nil if none.
    func lookupKey(hash: KeyHash) async throws -> KeyRecord?
    /// A counter bumped by every change that affects authentication, in this process or another
    /// (the CLI, another replica): caches compare it to know when to drop their entries.
    func authGeneration() async throws -> Int64
}

/// The gateway's whole persistent state.
public protocol GatewayStore: KeyStore {
    /// Checks the database answers (for readiness probes).
    func ping() async throws
    /// Closes connections; the store is unusable afterwards.
    func close() async
}
