/// The SQLite schema, as ordered migrations. Never edit an applied migration: add a new one.
/// Times are epoch milliseconds (INTEGER), money integer micro-credits, so PostgreSQL can mirror it.
enum SQLiteMigrations {
    struct Migration {
        var version: Int
        var name: String
        var statements: [String]
    }

    static let all: [Migration] = [
        Migration(version: 1, name: "keys and users", statements: [
            """
            CREATE TABLE meta (
                key TEXT PRIMARY KEY,
                value INTEGER NOT NULL
            )
            """,
            "INSERT INTO meta (key, value) VALUES ('auth_generation', 1)",
            """
            CREATE TABLE users (
                id TEXT PRIMARY KEY,
                email TEXT NOT NULL UNIQUE,
                created_at INTEGER NOT NULL
            )
            """,
            """
            CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                user_id TEXT REFERENCES users(id),
                prefix TEXT NOT NULL,
                last4 TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                revoked_at INTEGER
            )
            """,
            "CREATE INDEX api_keys_user ON api_keys(user_id)",
            // One key record may have several secrets (rotation with a grace period); only hashes are kept.
            """
            CREATE TABLE key_secrets (
                hash TEXT PRIMARY KEY,
                key_id TEXT NOT NULL REFERENCES api_keys(id),
                created_at INTEGER NOT NULL,
                expires_at INTEGER
            )
            """,
            "CREATE INDEX key_secrets_key ON key_secrets(key_id)",
        ]),
        Migration(version: 2, name: "plans, key options, daily counters", statements: [
            // NULL plan: the configured default plan. kind: 'person' or 'service'.
            "ALTER TABLE users ADD COLUMN plan TEXT",
            "ALTER TABLE users ADD COLUMN disabled_at INTEGER",
            "ALTER TABLE users ADD COLUMN kind TEXT NOT NULL DEFAULT 'person'",
            "ALTER TABLE api_keys ADD COLUMN expires_at INTEGER",
            // JSON array of model names/patterns this key may use (NULL: whatever the plan allows).
            "ALTER TABLE api_keys ADD COLUMN models TEXT",
            // JSON object of limits that replace the plan's for this key.
            "ALTER TABLE api_keys ADD COLUMN limits TEXT",
            // Keys created before users existed belong to the service user.
            "INSERT OR IGNORE INTO users (id, email, created_at, kind) SELECT 'usr_service', 'service@switchyard.local', COALESCE(MIN(created_at), 0), 'service' FROM api_keys WHERE user_id IS NULL HAVING COUNT(*) > 0",
            "UPDATE api_keys SET user_id = 'usr_service' WHERE user_id IS NULL",
            """
            CREATE TABLE daily_counts (
                subject TEXT NOT NULL,
                day INTEGER NOT NULL,
                count INTEGER NOT NULL,
                PRIMARY KEY (subject, day)
            )
            """,
        ]),
    ]
}
