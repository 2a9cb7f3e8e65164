import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SwitchyardCore
import SwitchyardStore

/// The admin API under `/admin/v1` (auth: the configured `admin_key`): users, keys, plans and live
/// counters — the same operations as the CLI. Documented in `docs/openapi/admin.yaml`; every change to
/// keys or users takes effect on the next client request.
extension Gateway {
    /// Fixed admin paths and their methods (for 405 answers).
    static let adminRouteMethods: [String: [String]] = [
        "/admin/v1/users": ["GET", "POST"],
        "/admin/v1/keys": ["GET", "POST"],
        "/admin/v1/plans": ["GET"],
        "/admin/v1/counters": ["GET"],
        "/admin/v1/cache/invalidate": ["POST"],
        "/admin/v1/usage": ["GET"],
        "/admin/v1/codes": ["GET", "POST"],
        "/admin/v1/ledger/check": ["GET"],
        "/admin/v1/deployments": ["GET"],
    ]

    func addAdminRoutes(to router: Router<GatewayContext>) {
        let admin = router.group("/admin/v1")

        // MARK: Users
        admin.get("/users") { request, _ in
            try self.authenticateAdmin(request)
            let users = try await self.store.listUsers()
            return Self.json(["object": "list", "data": .array(users.map(self.userJSON))])
        }
        admin.post("/users") { request, _ in
            try self.authenticateAdmin(request)
            let input = try await AdminInput.read(request, gateway: self, allowed: ["email", "plan"])
            let email = try input.email("email", required: true)!
            let plan = try input.planName("plan", config: self.config)
            do {
                let user = try await self.store.createUser(email: email, plan: plan)
                return Self.json(self.userJSON(user), status: .created)
            } catch StoreError.invalid(let message) {
                throw GatewayError(status: 409, category: .invalidRequest, code: "user_exists", message: message, param: "email")
            }
        }
        admin.get("/users/{user}") { request, context in
            try self.authenticateAdmin(request)
            let user = try await self.findUser(context)
            guard case .object(var obj) = self.userJSON(user) else { return Self.json(self.userJSON(user)) }
            obj["keys"] = .array(try await self.store.listKeys().filter { $0.userID == user.id }.map(\.json))
            return Self.json(.object(obj))
        }
        admin.patch("/users/{user}") { request, context in
            try self.authenticateAdmin(request)
            let user = try await self.findUser(context)
            let input = try await AdminInput.read(request, gateway: self, allowed: ["plan", "disabled"])
            var updated = user
            if input.has("plan") {
                updated = try await self.store.setPlan(email: user.email, plan: try input.planName("plan", config: self.config)) ?? updated
            }
            if let disabled = try input.bool("disabled") {
                updated = try await self.store.setDisabled(email: user.email, disabled) ?? updated
            }
            self.keyCache.invalidateAll()
            return Self.json(self.userJSON(updated))
        }

        // MARK: Keys
        admin.get("/keys") { request, _ in
            try self.authenticateAdmin(request)
            var keys = try await self.store.listKeys()
            if let email = request.uri.queryParameters.get("user") {
                keys = keys.filter { $0.userEmail == email.lowercased() || $0.userID == email }
            }
            return Self.json(["object": "list", "data": .array(keys.map(\.json))])
        }
        admin.post("/keys") { request, _ in
            try self.authenticateAdmin(request)
            let input = try await AdminInput.read(request, gateway: self, allowed: ["name", "user", "expires_at", "models", "limits"])
            guard let name = try input.string("name", maxBytes: 200) else { throw GatewayError.missingField("name") }
            let email = try input.email("user", required: false)
            let options = KeyOptions(
                expiresAt: try input.futureTime("expires_at") ?? nil, models: try input.modelList("models", config: self.config) ?? nil,
                limits: try input.limits("limits") ?? LimitValues())
            let created = try await self.store.createKey(name: name, userEmail: email, prefix: self.config.keyPrefix, options: options)
            self.keyCache.invalidateAll()
            return Self.json(created.json, status: .created)
        }
        admin.get("/keys/{id}") { request, context in
            try self.authenticateAdmin(request)
            return Self.json(try await self.findKey(context).json)
        }
        admin.patch("/keys/{id}") { request, context in
            try self.authenticateAdmin(request)
            let key = try await self.findKey(context)
            let input = try await AdminInput.read(request, gateway: self, allowed: ["name", "expires_at", "models", "limits"])
            let update = KeyUpdate(
                name: try input.string("name", maxBytes: 200), expiresAt: try input.futureTime("expires_at"),
                models: try input.modelList("models", config: self.config), limits: try input.limits("limits"))
            guard let updated = try await self.store.updateKey(id: key.id, update) else { throw Self.keyNotFound(key.id) }
            self.keyCache.invalidateAll()
            return Self.json(updated.json)
        }
        admin.post("/keys/{id}/rotate") { request, context in
            try self.authenticateAdmin(request)
            let key = try await self.findKey(context)
            let input = try await AdminInput.read(request, gateway: self, allowed: ["grace"], emptyAllowed: true)
            let grace = try input.duration("grace", max: .seconds(90 * 86_400)) ?? ConfigDuration(milliseconds: 0)
            guard !key.isRevoked else {
                throw GatewayError(status: 409, category: .invalidRequest, code: "key_revoked", message: "the key `\(key.id)` is revoked; create a new one instead")
            }
            guard let rotated = try await self.store.rotateKey(id: key.id, prefix: self.config.keyPrefix, graceMs: grace.milliseconds) else {
                throw Self.keyNotFound(key.id)
            }
            self.keyCache.invalidateAll()
            guard case .object(var obj) = rotated.json else { return Self.json(rotated.json) }
            obj["previous_secret_expires_at"] = .string(EpochClock.iso8601(EpochClock.nowMilliseconds() + grace.milliseconds))
            return Self.json(.object(obj))
        }
        admin.delete("/keys/{id}") { request, context in
            try self.authenticateAdmin(request)
            let id = context.parameters.get("id") ?? ""
            guard try await self.store.revokeKey(id: id) else { throw Self.keyNotFound(id) }
            self.keyCache.invalidateAll()
            return Self.json(["id": .string(id), "revoked": true])
        }

        // MARK: Plans
        admin.get("/plans") { request, _ in
            try self.authenticateAdmin(request)
            let users = try await self.store.listUsers()
            return Self.json(["object": "list", "data": .array(self.config.plans.map { self.planJSON($0, users: users) })])
        }
        admin.get("/plans/{name}") { request, context in
            try self.authenticateAdmin(request)
            let name = context.parameters.get("name") ?? ""
            guard let plan = self.config.plan(named: name) else {
                throw GatewayError(status: 404, category: .notFound, code: "plan_not_found",
                                   message: "no plan named `\(name)` (plans: \(self.config.plans.map(\.name).joined(separator: ", ")))")
            }
            return Self.json(self.planJSON(plan, users: try await self.store.listUsers()))
        }

        // MARK: Credits, usage, codes
        admin.get("/users/{user}/credits") { request, context in
            try self.authenticateAdmin(request)
            let user = try await self.findUser(context)
            await self.meter.sync()
            return Self.json(try await self.store.creditBalance(userID: user.id, policy: self.meter.policy, now: EpochClock.nowMilliseconds()).json)
        }
        admin.post("/users/{user}/credits") { request, context in
            try self.authenticateAdmin(request)
            let user = try await self.findUser(context)
            let input = try await AdminInput.read(request, gateway: self, allowed: ["amount", "kind", "note", "expires_at", "idempotency_key"])
            guard let amount = try input.credits("amount"), amount.micros > 0 else { throw GatewayError.missingField("amount") }
            let kind = try input.bucketKind("kind") ?? .topup
            let expires = try input.futureTime("expires_at") ?? nil
            if kind == .topup, expires != nil {
                throw GatewayError.invalidField("expires_at", "top-ups never expire; give `expires_at` only with `\"kind\": \"bonus\"`")
            }
            let bucket = try await self.store.grant(
                userEmail: user.email, amount: amount.micros, kind: kind, note: try input.string("note", maxBytes: 500), expiresAt: expires,
                idempotencyKey: try input.string("idempotency_key", maxBytes: 200), now: EpochClock.nowMilliseconds())
            self.meter.forget(user.id)
            await self.meter.sync()
            let balance = try await self.store.creditBalance(userID: user.id, policy: self.meter.policy, now: EpochClock.nowMilliseconds())
            guard case .object(var obj) = balance.json else { return Self.json(balance.json) }
            obj["granted"] = bucket.json
            return Self.json(.object(obj), status: .created)
        }
        admin.get("/users/{user}/credits/history") { request, context in
            try self.authenticateAdmin(request)
            let user = try await self.findUser(context)
            let limit = request.uri.queryParameters.get("limit").flatMap { Int($0) } ?? 100
            await self.meter.sync()
            let entries = try await self.store.creditHistory(userID: user.id, limit: limit)
            return Self.json(["object": "list", "data": .array(entries.map(\.json))])
        }
        admin.get("/usage") { request, _ in
            try self.authenticateAdmin(request)
            return Self.json(try await self.usageJSON(request))
        }
        admin.post("/codes") { request, _ in
            try self.authenticateAdmin(request)
            let input = try await AdminInput.read(request, gateway: self, allowed: ["credits", "count", "expires_at"])
            guard let credits = try input.credits("credits"), credits.micros > 0 else { throw GatewayError.missingField("credits") }
            let count = try input.int("count", range: 1...10_000) ?? 1
            let codes = try await self.store.createCodes(
                count: count, credits: credits.micros, expiresAt: try input.futureTime("expires_at") ?? nil, now: EpochClock.nowMilliseconds())
            return Self.json(["object": "list", "data": .array(codes.map(\.json))], status: .created)
        }
        admin.get("/codes") { request, _ in
            try self.authenticateAdmin(request)
            return Self.json(["object": "list", "data": .array(try await self.store.listCodes().map(\.json))])
        }
        admin.get("/ledger/check") { request, _ in
            try self.authenticateAdmin(request)
            await self.meter.sync()
            return Self.json(try await self.store.checkLedger().json)
        }

        // MARK: Counters and cache
        admin.get("/counters") { request, _ in
            try self.authenticateAdmin(request)
            return Self.json(try await self.countersJSON(request))
        }
        admin.get("/deployments") { request, _ in
            try self.authenticateAdmin(request)
            let now = EpochClock.nowMilliseconds()
            var deployments = self.allDeployments
            if let model = request.uri.queryParameters.get("model") {
                guard let route = self.models[String(model)] ?? self.patterns.first(where: { $0.name == String(model) }) else {
                    throw GatewayError.modelNotFound(String(model))
                }
                let ids = Set(route.deployments.map(\.id))
                deployments = deployments.filter { ids.contains($0.id) }
            }
            return Self.json(["object": "list", "data": .array(deployments.map { $0.json(now: now) })])
        }
        admin.post("/cache/invalidate") { request, _ in
            try self.authenticateAdmin(request)
            self.keyCache.invalidateAll()
            return Self.json(["invalidated": true])
        }
    }

    /// `GET /admin/v1/usage?user=&key=&since=&limit=`: one row per request, newest first.
    func usageJSON(_ request: Request) async throws -> JSONValue {
        let users = try await store.listUsers()
        var query = UsageQuery(limit: request.uri.queryParameters.get("limit").flatMap { Int($0) } ?? 1000)
        if let ref = request.uri.queryParameters.get("user").map({ String($0) }) {
            guard let user = users.first(where: { $0.email == ref.lowercased() || $0.id == ref }) else {
                throw GatewayError(status: 404, category: .notFound, code: "user_not_found", message: "no user `\(ref)`")
            }
            query.userID = user.id
        }
        query.keyID = request.uri.queryParameters.get("key").map { String($0) }
        if let since = request.uri.queryParameters.get("since").map({ String($0) }) {
            guard let ms = EpochClock.parseISO8601(since) else {
                throw GatewayError.invalidRequest("`since` must be an ISO 8601 date or time such as 2026-11-01", param: "since")
            }
            query.since = ms
        }
        let emails = Dictionary(users.map { ($0.id, $0.email) }, uniquingKeysWith: { a, _ in a })
        // Rows of the last few milliseconds may still be queued or buffered (`CreditMeter.record`).
        await meter.sync()
        await meter.writeBufferedUsage()
        let rows = try await store.usage(query)
        return ["object": "list", "data": .array(rows.map { $0.json(email: $0.userID.flatMap { emails[$0] }) })]
    }

    static func keyNotFound(_ id: String) -> GatewayError {
        GatewayError(status: 404, category: .notFound, code: "key_not_found", message: "no key with id `\(id)`")
    }

    func findKey(_ context: GatewayContext) async throws -> KeyRecord {
        let id = context.parameters.get("id") ?? ""
        guard let key = try await store.key(id: id) else { throw Self.keyNotFound(id) }
        return key
    }

    /// The user named in the path, by email (percent-encoded or not) or by id.
    func findUser(_ context: GatewayContext) async throws -> UserRecord {
        let raw = context.parameters.get("user") ?? ""
        let ref = raw.removingPercentEncoding ?? raw
        let found: UserRecord?
        if ref.hasPrefix("usr_") {
            found = try await store.listUsers().first { $0.id == ref }
        } else {
            found = try await store.user(email: ref)
        }
        guard let found else {
            throw GatewayError(status: 404, category: .notFound, code: "user_not_found", message: "no user `\(ref)`")
        }
        return found
    }

    func userJSON(_ user: UserRecord) -> JSONValue { user.json(config: config) }

    func planJSON(_ plan: PlanConfig, users: [UserRecord]) -> JSONValue {
        let count = users.filter { ($0.plan ?? config.defaultPlan) == plan.name }.count
        return [
            "name": .string(plan.name), "models": .array(plan.models.map { .string($0) }), "limits": plan.limits.json,
            "default": .bool(plan.name == config.defaultPlan), "users": .int(count),
        ]
    }

    func countersJSON(_ request: Request) async throws -> JSONValue {
        let users = try await store.listUsers()
        let emails = Dictionary(users.map { ($0.id, $0.email) }, uniquingKeysWith: { a, _ in a })
        var rows = limiter.counters()
        if let ref = request.uri.queryParameters.get("user").map({ String($0) }) {
            guard let user = users.first(where: { $0.email == ref.lowercased() || $0.id == ref }) else {
                throw GatewayError(status: 404, category: .notFound, code: "user_not_found", message: "no user `\(ref)`")
            }
            let keyIDs = Set(try await store.listKeys().filter { $0.userID == user.id }.map { "key:\($0.id)" })
            rows = rows.filter { $0.subject == "user:\(user.id)" || keyIDs.contains($0.subject) }
        }
        if let key = request.uri.queryParameters.get("key").map({ String($0) }) {
            rows = rows.filter { $0.subject == "key:\(key)" }
        }
        let day = limiter.currentDay
        let data: [JSONValue] = rows.map { c in
            var o: JSONObject = [
                "subject": .string(c.subject), "requests_last_minute": .int(c.requestsLastMinute),
                "requests_today": .int(c.requestsToday), "in_flight": .int(c.inFlight), "tokens_last_minute": .int(c.tokensLastMinute),
            ]
            if c.subject.hasPrefix("user:") {
                let id = String(c.subject.dropFirst(5))
                o["user"] = emails[id].map { .string($0) } ?? .null
                o["key_id"] = .null
            } else {
                o["user"] = .null
                o["key_id"] = .string(String(c.subject.dropFirst(4)))
            }
            return .object(o)
        }
        return [
            "object": "list", "day_time_zone": .string(config.dayTimeZone),
            "day_started_at": .string(EpochClock.iso8601(day.startMs)), "day_ends_at": .string(EpochClock.iso8601(day.endMs)),
            "data": .array(data),
        ]
    }

    /// Checks the admin key in constant time (SHA-256 of both sides compared without early exit).
    func authenticateAdmin(_ request: Request) throws {
        guard let adminKey = config.adminKey else {
            throw GatewayError(status: 403, category: .permission, code: "admin_disabled",
                               message: "the admin API is disabled: set `admin_key` in the configuration")
        }
        let presented = try Authenticator.credential(HTTPFieldsView(authorization: request.headers[.authorization], apiKey: request.headers[.xAPIKey]))
        guard APIKeys.isPlausible(presented), APIKeys.hash(presented).constantTimeEquals(APIKeys.hash(adminKey)) else {
            throw GatewayError(status: 401, category: .authentication, code: "invalid_admin_key", message: "invalid admin key")
        }
    }

    static func isPlausibleEmail(_ s: String) -> Bool {
        let parts = s.split(separator: "@", omittingEmptySubsequences: false)
        return s.utf8.count <= 254 && parts.count == 2 && !parts[0].isEmpty && parts[1].contains(".")
            && !s.contains(where: { $0.isWhitespace })
    }
}

/// A JSON object body of an admin request, read field by field with clear 400s: unknown fields,
/// wrong types and bad values are named.
struct AdminInput {
    let object: JSONObject

    static func read(_ request: Request, gateway: Gateway, allowed: Set<String>, emptyAllowed: Bool = false) async throws -> AdminInput {
        var request = request
        let body = try await gateway.collectBody(&request)
        if emptyAllowed, body.readableBytes == 0 { return AdminInput(object: [:]) }
        guard let value = try? JSONValue.parse(body, maxDepth: gateway.config.limits.maxJSONDepth), let object = value.objectValue else {
            throw GatewayError.invalidRequest("the body must be a JSON object")
        }
        for key in object.keys where !allowed.contains(key) {
            throw GatewayError.invalidRequest("unknown field `\(key)` (allowed: \(allowed.sorted().joined(separator: ", ")))", code: "unknown_field", param: key)
        }
        return AdminInput(object: object)
    }

    func has(_ key: String) -> Bool { object[key] != nil }

    func string(_ key: String, maxBytes: Int) throws(GatewayError) -> String? {
        guard let v = object[key], !v.isNull else { return nil }
        guard let s = v.stringValue, !s.isEmpty, s.utf8.count <= maxBytes else {
            throw GatewayError.invalidField(key, "`\(key)` must be a non-empty string of at most \(maxBytes) bytes")
        }
        return s
    }

    func email(_ key: String, required: Bool) throws(GatewayError) -> String? {
        guard let v = object[key], !v.isNull else {
            if required { throw GatewayError.missingField(key) }
            return nil
        }
        guard let e = v.stringValue, Gateway.isPlausibleEmail(e) else { throw GatewayError.invalidField(key, "`\(key)` must be an email address") }
        return e
    }

    func bool(_ key: String) throws(GatewayError) -> Bool? {
        guard let v = object[key] else { return nil }
        guard let b = v.boolValue else { throw GatewayError.invalidField(key, "`\(key)` must be true or false") }
        return b
    }

    /// A plan name that must exist (null: the default plan).
    func planName(_ key: String, config: GatewayConfig) throws(GatewayError) -> String? {
        guard let v = object[key], !v.isNull else { return nil }
        guard let name = v.stringValue else { throw GatewayError.invalidField(key, "`\(key)` must be a plan name or null") }
        guard config.plan(named: name) != nil else {
            throw GatewayError.invalidRequest(
                "no plan named `\(name)` (plans: \(config.plans.map(\.name).joined(separator: ", ")))", code: "unknown_plan", param: key)
        }
        return name
    }

    /// A future time: absent → nil (leave alone), null → .some(nil) (clear), string → its epoch ms.
    func futureTime(_ key: String) throws(GatewayError) -> Int64?? {
        guard let v = object[key] else { return nil }
        if v.isNull { return .some(nil) }
        guard let text = v.stringValue, let ms = EpochClock.parseISO8601(text) else {
            throw GatewayError.invalidField(key, "`\(key)` must be an ISO 8601 time such as 2026-12-31T00:00:00Z (or null for none)")
        }
        guard ms > EpochClock.nowMilliseconds() else { throw GatewayError.invalidField(key, "`\(key)` must be in the future") }
        return .some(ms)
    }

    /// A model list: absent → nil, null → .some(nil) (whatever the plan allows), array → names that
    /// must be in the catalog (or `*` patterns).
    func modelList(_ key: String, config: GatewayConfig) throws(GatewayError) -> [String]?? {
        guard let v = object[key] else { return nil }
        if v.isNull { return .some(nil) }
        guard let items = v.arrayValue, !items.isEmpty, items.count <= 1000 else {
            throw GatewayError.invalidField(key, "`\(key)` must be a non-empty array of model names (or null for every model of the plan)")
        }
        var out: [String] = []
        for item in items {
            guard let name = item.stringValue, !name.isEmpty, name.utf8.count <= 200 else {
                throw GatewayError.invalidField(key, "`\(key)` must contain model names (strings)")
            }
            guard config.knowsModel(name) else {
                throw GatewayError.invalidRequest("`\(name)` is not a model in the catalog", code: "unknown_model", param: key)
            }
            out.append(name)
        }
        return .some(out)
    }

    /// Per-key limits: absent → nil (leave alone), null or {} → none of its own.
    func limits(_ key: String) throws(GatewayError) -> LimitValues? {
        guard let v = object[key] else { return nil }
        if v.isNull { return LimitValues() }
        guard let obj = v.objectValue else { throw GatewayError.invalidField(key, "`\(key)` must be an object such as {\"requests_per_minute\": 60}") }
        var out = LimitValues()
        for (name, value) in obj {
            if value.isNull { continue }
            guard let n = value.intValue, n >= 1, n <= 1_000_000_000 else {
                throw GatewayError.invalidField(key, "`\(key).\(name)` must be a positive integer (or null for the plan's)")
            }
            switch name {
            case "requests_per_minute": out.requestsPerMinute = n
            case "requests_per_day": out.requestsPerDay = n
            case "concurrent_requests": out.concurrentRequests = n
            case "tokens_per_minute": out.tokensPerMinute = n
            default:
                throw GatewayError.invalidRequest(
                    "unknown limit `\(name)` (limits: requests_per_minute, requests_per_day, concurrent_requests, tokens_per_minute)",
                    code: "unknown_field", param: key)
            }
        }
        return out
    }

    /// An amount of credits: a JSON number or a decimal string (at most six decimals).
    func credits(_ key: String) throws(GatewayError) -> Credits? {
        guard let v = object[key], !v.isNull else { return nil }
        let text: String?
        if case .number(let n) = v { text = n } else { text = v.stringValue }
        guard let text, let amount = Credits(parsing: text), amount.micros >= 0 else {
            throw GatewayError.invalidField(key, "`\(key)` must be an amount of credits such as 150 or 2.5 (at most 6 decimals)")
        }
        return amount
    }

    func bucketKind(_ key: String) throws(GatewayError) -> BucketKind? {
        guard let v = object[key], !v.isNull else { return nil }
        guard let s = v.stringValue, let kind = BucketKind(rawValue: s), kind != .plan else {
            throw GatewayError.invalidField(key, "`\(key)` must be \"topup\" or \"bonus\"")
        }
        return kind
    }

    func int(_ key: String, range: ClosedRange<Int>) throws(GatewayError) -> Int? {
        guard let v = object[key], !v.isNull else { return nil }
        guard let n = v.intValue, range.contains(n) else { throw GatewayError.invalidField(key, "`\(key)` must be an integer from \(range.lowerBound) to \(range.upperBound)") }
        return n
    }

    /// A duration such as "24h" or a number of seconds.
    func duration(_ key: String, max: ConfigDuration) throws(GatewayError) -> ConfigDuration? {
        guard let v = object[key], !v.isNull else { return nil }
        let parsed: ConfigDuration?
        if let n = v.doubleValue, n >= 0, n.isFinite { parsed = ConfigDuration(milliseconds: Int64(n * 1000)) } else { parsed = v.stringValue.flatMap(ConfigDuration.parse) }
        guard let parsed else { throw GatewayError.invalidField(key, "`\(key)` must be a duration such as \"24h\" or a number of seconds") }
        guard parsed <= max else { throw GatewayError.invalidField(key, "`\(key)` must be at most \(max)") }
        return parsed
    }
}
