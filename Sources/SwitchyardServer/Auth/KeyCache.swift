import Hummingbird
import Logging
import ServiceLifecycle
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardStore
import Synchronization

/// In-memory cache of key lookups, so a key used recently costs no database round trip. Entries are
/// ``Principal``s: the key with its plan and limits already resolved.
///
/// Entries are dropped whenever the store's auth generation moves (a key created, revoked or rotated,
/// in this process or another), checked by ``AuthGenerationWatcher`` and by ``invalidateAll()`` for
/// changes made in-process. A lookup that raced with an invalidation is not cached.
public final class KeyCache: Sendable {
    private struct State {
        var epoch: UInt64 = 0
        var entries: [KeyHash: Principal?] = [:]
        var misses = 0
    }

    private let state = Mutex(State())
    private let store: any KeyStore
    private let build: @Sendable (KeyRecord) -> Principal
    /// Unknown hashes remembered at most, so a flood of random keys cannot grow memory without bound.
    private let maxNegativeEntries = 10_000

    init(store: any KeyStore, build: @escaping @Sendable (KeyRecord) -> Principal) {
        self.store = store
        self.build = build
    }

    /// The caller for a key hash (revoked keys included), or nil for an unknown key.
    func lookup(_ hash: KeyHash) async throws -> Principal? {
        let (hit, epoch) = state.withLock { s in (s.entries[hash], s.epoch) }
        if let hit { return hit }
        let record = try await store.lookupKey(hash: hash).map(build)
        state.withLock { s in
            guard s.epoch == epoch else { return }
            if record == nil {
                if s.misses >= maxNegativeEntries {
                    s.entries = s.entries.filter { $0.value != nil }
                    s.misses = 0
                }
                s.misses += 1
            }
            s.entries[hash] = .some(record)
        }
        return record
    }

    /// The cached answer for a key hash, without asking the store: `.some(nil)` for a key known to be
    /// unknown, nil when the hash is not cached.
    func cached(_ hash: KeyHash) -> Principal?? {
        state.withLock { $0.entries[hash] }
    }

    /// Drops every entry (after any change to keys).
    public func invalidateAll() {
        state.withLock { s in
            s.epoch &+= 1
            s.entries.removeAll(keepingCapacity: true)
            s.misses = 0
        }
    }
}

/// Polls the store's auth generation and clears the key cache when another process changed keys.
struct AuthGenerationWatcher: Service {
    let store: any KeyStore
    let cache: KeyCache
    let interval: Duration
    let logger: Logger

    func run() async throws {
        var last = (try? await store.authGeneration()) ?? 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                try await cancelWhenGracefulShutdown { try await LoopTimer.sleep(for: interval) }
            } catch {
                return
            }
            do {
                let current = try await store.authGeneration()
                if current != last {
                    last = current
                    cache.invalidateAll()
                }
            } catch {
                logger.warning("cannot read auth generation", metadata: ["error": .string("\(error)")])
            }
        }
    }
}

/// Finds and checks the client's key.
struct Authenticator: Sendable {
    let cache: KeyCache

    /// The key presented: `Authorization: Bearer KEY`, `x-api-key: KEY`, or (Gemini clients)
    /// `x-goog-api-key: KEY` / `?key=KEY`.
    static func credential(_ headers: HTTPFieldsView) throws(GatewayError) -> Substring {
        if let auth = headers.authorization {
            let trimmed = auth.drop(while: { $0 == " " })
            if trimmed.count > 7, trimmed.prefix(7).lowercased() == "bearer " {
                let token = trimmed.dropFirst(7).drop(while: { $0 == " " })
                if !token.isEmpty { return token }
            }
            if headers.apiKey == nil {
                throw GatewayError(
                    status: 401, category: .authentication, code: "invalid_api_key",
                    message: "malformed Authorization header: expected `Authorization: Bearer KEY`")
            }
        }
        if let key = headers.apiKey, !key.isEmpty { return Substring(key) }
        if let key = headers.googAPIKey, !key.isEmpty { return Substring(key) }
        if let key = headers.queryKey, !key.isEmpty { return Substring(key) }
        throw GatewayError.missingKey
    }

    /// The caller behind the presented key, after the checks of ``Principal/check(now:)``.
    func authenticate(_ headers: HTTPFieldsView) async throws -> Principal {
        let presented = try Self.credential(headers)
        guard APIKeys.isPlausible(presented) else { throw GatewayError.invalidKey }
        let record: Principal?
        do {
            record = try await cache.lookup(APIKeys.hash(presented))
        } catch {
            throw GatewayError(status: 503, category: .unavailable, code: "store_unavailable", message: "the key store is unavailable; retry shortly", retryAfterSeconds: 1)
        }
        guard let record else { throw GatewayError.invalidKey }
        try record.check(now: EpochClock.nowMilliseconds())
        return record
    }
}

/// The request values authentication reads.
struct HTTPFieldsView {
    var authorization: String?
    var apiKey: String?
    var googAPIKey: String?
    var queryKey: String?

    init(authorization: String?, apiKey: String?, googAPIKey: String? = nil, queryKey: String? = nil) {
        self.authorization = authorization
        self.apiKey = apiKey
        self.googAPIKey = googAPIKey
        self.queryKey = queryKey
    }

    init(_ request: Request) {
        self.init(headers: request.headers, queryKey: request.uri.queryParameters.get("key"))
    }

    /// The three credential headers in one pass over the fields, each as `headers[name]` reads it
    /// (repeated fields joined with ", "). Three subscripts cost three searches and a joined string each,
    /// on every request.
    init(headers: HTTPFields, queryKey: String? = nil) {
        self.queryKey = queryKey
        for field in headers {
            switch field.name {
            case .authorization: authorization = authorization.map { $0 + ", " + field.value } ?? field.value
            case .xAPIKey: apiKey = apiKey.map { $0 + ", " + field.value } ?? field.value
            case .xGoogAPIKey: googAPIKey = googAPIKey.map { $0 + ", " + field.value } ?? field.value
            default: break
            }
        }
    }
}
