import SwitchyardCore

extension LimitValues {
    /// The limits as JSON, omitting unlimited ones.
    public var json: JSONValue {
        var o = JSONObject()
        if let v = requestsPerMinute { o["requests_per_minute"] = .int(v) }
        if let v = requestsPerDay { o["requests_per_day"] = .int(v) }
        if let v = concurrentRequests { o["concurrent_requests"] = .int(v) }
        if let v = tokensPerMinute { o["tokens_per_minute"] = .int(v) }
        return .object(o)
    }
}

extension KeyRecord {
    /// The key as shown by `keys list --json` and the admin API (never the secret).
    public var json: JSONValue {
        var obj: JSONObject = [
            "id": .string(id), "name": .string(name), "key_hint": .string(redacted),
            "created_at": .string(EpochClock.iso8601(createdAt)),
        ]
        obj["user"] = userEmail.map { .string($0) } ?? .null
        obj["revoked_at"] = revokedAt.map { .string(EpochClock.iso8601($0)) } ?? .null
        obj["expires_at"] = options.expiresAt.map { .string(EpochClock.iso8601($0)) } ?? .null
        obj["models"] = options.models.map { .array($0.map { .string($0) }) } ?? .null
        obj["limits"] = options.limits.json
        let now = EpochClock.nowMilliseconds()
        obj["status"] = .string(isRevoked ? "revoked" : (options.expiresAt.map { $0 <= now } ?? false) ? "expired" : "active")
        return .object(obj)
    }
}

extension CreatedKey {
    /// The new key including its secret, shown exactly once.
    public var json: JSONValue {
        guard case .object(var obj) = record.json else { return record.json }
        obj["key"] = .string(secret)
        return .object(obj)
    }
}

extension UserRecord {
    /// The user as shown by `users list --json` and the admin API: `plan` is the effective plan (the
    /// configured default when none was set), `plan_defined` whether the configuration still has it.
    public func json(config: GatewayConfig) -> JSONValue {
        let effective = plan ?? config.defaultPlan
        var obj: JSONObject = [
            "id": .string(id), "email": .string(email), "plan": .string(effective), "kind": .string(kind),
            "plan_defined": .bool(config.plan(named: effective) != nil), "created_at": .string(EpochClock.iso8601(createdAt)),
        ]
        obj["disabled_at"] = disabledAt.map { .string(EpochClock.iso8601($0)) } ?? .null
        obj["status"] = .string(isDisabled ? "disabled" : "active")
        return .object(obj)
    }
}
