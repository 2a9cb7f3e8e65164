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
        Migration(version: 3, name: "credit ledger, usage log, redemption codes", statements: [
            // When the user joined their current plan: monthly periods are anchored here (NULL: created_at).
            "ALTER TABLE users ADD COLUMN plan_since INTEGER",
            // Credits by origin. `balance` caches the sum of the bucket's ledger entries; `source` makes
            // each grant happen once (monthly:<user>:<plan>:<period start>, signup:<user>:<plan>, …).
            """
            CREATE TABLE credit_buckets (
                id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL REFERENCES users(id),
                kind TEXT NOT NULL,
                granted INTEGER NOT NULL,
                balance INTEGER NOT NULL,
                expires_at INTEGER,
                created_at INTEGER NOT NULL,
                source TEXT NOT NULL UNIQUE,
                note TEXT
            )
            """,
            "CREATE INDEX credit_buckets_user ON credit_buckets(user_id)",
            // Append-only. Amounts in micro-credits, signed as they move the bucket's balance.
            """
            CREATE TABLE ledger_entries (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                user_id TEXT NOT NULL,
                bucket_id TEXT,
                kind TEXT NOT NULL,
                amount INTEGER NOT NULL,
                request_id TEXT,
                idempotency_key TEXT NOT NULL UNIQUE,
                created_at INTEGER NOT NULL,
                note TEXT
            )
            """,
            "CREATE INDEX ledger_entries_user ON ledger_entries(user_id, id)",
            // Holds of requests in flight; a row disappears when its request is settled.
            """
            CREATE TABLE reservations (
                id TEXT PRIMARY KEY,
                request_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                key_id TEXT NOT NULL,
                amount INTEGER NOT NULL,
                allocations TEXT NOT NULL,
                model TEXT NOT NULL,
                created_at INTEGER NOT NULL
            ) WITHOUT ROWID
            """,
            """
            CREATE TABLE usage_records (
                id TEXT NOT NULL,
                request_id TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                user_id TEXT,
                key_id TEXT,
                model TEXT NOT NULL,
                provider TEXT,
                upstream_model TEXT,
                input_tokens INTEGER NOT NULL,
                output_tokens INTEGER NOT NULL,
                cached_tokens INTEGER NOT NULL,
                usage_estimated INTEGER NOT NULL,
                credits INTEGER NOT NULL,
                status INTEGER NOT NULL,
                outcome TEXT NOT NULL,
                latency_ms INTEGER NOT NULL,
                stream INTEGER NOT NULL,
                error_code TEXT
            )
            """,
            // Rows arrive in time order (rowid order); only per-user queries need an index. Every index
            // here is a page rewritten per write batch, so there are as few as the queries need.
            "CREATE INDEX usage_records_user_time ON usage_records(user_id, created_at)",
            // Codes are secrets: only their hash is kept, with the last four characters for display.
            """
            CREATE TABLE redemption_codes (
                id TEXT PRIMARY KEY,
                hash TEXT NOT NULL UNIQUE,
                hint TEXT NOT NULL,
                credits INTEGER NOT NULL,
                created_at INTEGER NOT NULL,
                expires_at INTEGER,
                redeemed_by TEXT,
                redeemed_at INTEGER
            )
            """,
        ]),
        Migration(version: 4, name: "stored Responses API responses", statements: [
            // A response and the conversation that led to it, as Responses input items, so a later
            // request can continue it with `previous_response_id`. Only the key that created it may.
            """
            CREATE TABLE stored_responses (
                id TEXT PRIMARY KEY,
                key_id TEXT NOT NULL,
                model TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                items TEXT NOT NULL
            )
            """,
            "CREATE INDEX stored_responses_expiry ON stored_responses(expires_at)",
        ]),
        Migration(version: 5, name: "ledger entry ids without AUTOINCREMENT", statements: [
            // AUTOINCREMENT made every entry also update `sqlite_sequence` (another B-tree write per
            // entry, another page per commit). Entries are never deleted, so the largest id stays in the
            // table and plain rowids (largest + 1) keep ids increasing in the order entries were written.
            // Ids are kept as they were.
            """
            CREATE TABLE ledger_entries_v5 (
                id INTEGER PRIMARY KEY,
                user_id TEXT NOT NULL,
                bucket_id TEXT,
                kind TEXT NOT NULL,
                amount INTEGER NOT NULL,
                request_id TEXT,
                idempotency_key TEXT NOT NULL UNIQUE,
                created_at INTEGER NOT NULL,
                note TEXT
            )
            """,
            """
            INSERT INTO ledger_entries_v5 (id, user_id, bucket_id, kind, amount, request_id, idempotency_key, created_at, note)
            SELECT id, user_id, bucket_id, kind, amount, request_id, idempotency_key, created_at, note FROM ledger_entries ORDER BY id
            """,
            "DROP TABLE ledger_entries",
            "ALTER TABLE ledger_entries_v5 RENAME TO ledger_entries",
            "CREATE INDEX ledger_entries_user ON ledger_entries(user_id, id)",
        ]),
        Migration(version: 6, name: "packed ledger rows", statements: [
            // A hold reserved and settled in the same write-behind batch is stored as one row per
            // bucket, `held` its reserved amount; the history lists it as the entries it stands for
            // (SQLiteStore.packedEntries). NULL on every other row.
            "ALTER TABLE ledger_entries ADD COLUMN held INTEGER",
        ]),
    ]
}
