import SwitchyardCore

extension SQLiteStore {
    public func saveResponse(id: String, keyID: String, model: String, items: String, createdAt: Int64, expiresAt: Int64) async throws {
        _ = try await writer.query(
            "INSERT OR REPLACE INTO stored_responses (id, key_id, model, created_at, expires_at, items) VALUES (?, ?, ?, ?, ?, ?)",
            [.text(id), .text(keyID), .text(model), .integer(Int(createdAt)), .integer(Int(expiresAt)), .text(items)])
    }

    public func loadResponse(id: String, keyID: String, now: Int64) async throws -> String? {
        try await reader.query(
            "SELECT items FROM stored_responses WHERE id = ? AND key_id = ? AND expires_at > ?", [.text(id), .text(keyID), .integer(Int(now))]
        ).first?.column("items")?.string
    }

    public func purgeResponses(now: Int64) async throws -> Int {
        let before = try await writer.query("SELECT count(*) AS n FROM stored_responses WHERE expires_at <= ?", [.integer(Int(now))]).first?.column("n")?.integer ?? 0
        guard before > 0 else { return 0 }
        _ = try await writer.query("DELETE FROM stored_responses WHERE expires_at <= ?", [.integer(Int(now))])
        return before
    }
}
