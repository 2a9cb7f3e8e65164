import SwitchyardCore

extension KeyRecord {
    /// The key as shown by `keys list --json` and the admin API (never the secret).
    public var json: JSONValue {
        var obj: JSONObject = [
            "id": .string(id), "name": .string(name), "key_hint": .string(redacted),
            "created_at": .string(EpochClock.iso8601(createdAt)),
        ]
        obj["user"] = userEmail.map { .string($0) } ?? .null
        obj["revoked_at"] = revokedAt.map { .string(EpochClock.iso8601($0)) } ?? .null
        obj["status"] = .string(isRevoked ? "revoked" : "active")
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
