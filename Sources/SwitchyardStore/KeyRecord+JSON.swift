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

extension CreditBucket {
    /// A bucket as shown to clients and operators: `amount` is what is left in it.
    public var json: JSONValue {
        var o: JSONObject = [
            "id": .string(id), "kind": .string(kind.rawValue), "amount": Credits(micros: balance).json,
            "granted": Credits(micros: granted).json, "created_at": .string(EpochClock.iso8601(createdAt)),
        ]
        o["expires_at"] = expiresAt.map { .string(EpochClock.iso8601($0)) } ?? .null
        o["note"] = note.map { .string($0) } ?? .null
        return .object(o)
    }
}

extension CreditBalance {
    /// `{"balance", "reserved", "buckets": [...]}`, buckets in spend order.
    public var json: JSONValue {
        [
            "object": "credit_balance", "balance": Credits(micros: available).json, "reserved": Credits(micros: reserved).json,
            "buckets": .array(buckets.map(\.json)),
        ]
    }
}

extension LedgerEntry {
    public var json: JSONValue {
        var o: JSONObject = [
            "id": .int(Int(id)), "time": .string(EpochClock.iso8601Millis(createdAt)), "kind": .string(kind.rawValue),
            "amount": Credits(micros: amount).json,
        ]
        o["bucket_id"] = bucketID.map { .string($0) } ?? .null
        o["request_id"] = requestID.map { .string($0) } ?? .null
        o["note"] = note.map { .string($0) } ?? .null
        return .object(o)
    }
}

extension UsageRecord {
    /// One usage row; `email` is the user's, when known.
    public func json(email: String?) -> JSONValue {
        var o: JSONObject = [
            "id": .string(id), "request_id": .string(requestID), "time": .string(EpochClock.iso8601Millis(createdAt)),
        ]
        o["user"] = email.map { .string($0) } ?? .null
        o["key_id"] = keyID.map { .string($0) } ?? .null
        o["model"] = .string(model)
        o["provider"] = provider.map { .string($0) } ?? .null
        o["upstream"] = upstreamModel.map { .string($0) } ?? .null
        o["input_tokens"] = .int(inputTokens)
        o["output_tokens"] = .int(outputTokens)
        o["cached_tokens"] = .int(cachedTokens)
        o["usage_estimated"] = .bool(usageEstimated)
        o["credits"] = Credits(micros: credits).json
        o["status"] = .int(status)
        o["outcome"] = .string(outcome)
        o["latency_ms"] = .int(latencyMs)
        o["stream"] = .bool(stream)
        o["error_code"] = errorCode.map { .string($0) } ?? .null
        return .object(o)
    }
}

extension CreatedCode {
    public var json: JSONValue {
        var o: JSONObject = ["id": .string(id), "code": .string(code), "credits": Credits(micros: credits).json]
        o["expires_at"] = expiresAt.map { .string(EpochClock.iso8601($0)) } ?? .null
        return .object(o)
    }
}

extension CodeRecord {
    public var json: JSONValue {
        var o: JSONObject = [
            "id": .string(id), "code_hint": .string("…" + hint), "credits": Credits(micros: credits).json,
            "created_at": .string(EpochClock.iso8601(createdAt)),
        ]
        o["expires_at"] = expiresAt.map { .string(EpochClock.iso8601($0)) } ?? .null
        o["redeemed_by"] = redeemedBy.map { .string($0) } ?? .null
        o["redeemed_at"] = redeemedAt.map { .string(EpochClock.iso8601($0)) } ?? .null
        o["status"] = .string(redeemedAt != nil ? "redeemed" : (expiresAt.map { $0 <= EpochClock.nowMilliseconds() } ?? false) ? "expired" : "active")
        return .object(o)
    }
}

extension LedgerCheck {
    public var json: JSONValue {
        [
            "consistent": .bool(isConsistent), "buckets_checked": .int(bucketsChecked),
            "mismatched_buckets": .array(mismatchedBuckets.map { .string($0) }), "negative_buckets": .array(negativeBuckets.map { .string($0) }),
            "total_charged": Credits(micros: totalCharged).json, "total_usage_credits": Credits(micros: totalUsageCredits).json,
            "open_reservations": .int(openReservations),
        ]
    }
}
