import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardServer
import SwitchyardStore

struct CreditsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "credits",
        abstract: "Grant credits and show balances and the ledger.",
        discussion: "Amounts are decimal credits (at most six decimals). A running gateway sees grants on its next request.",
        subcommands: [Grant.self, Show.self, History.self, Check.self])

    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add credits to a user's account.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The user's email address.") var email: String
        @Argument(help: "Credits to add, e.g. 150 or 2.5.") var amount: String
        @Option(help: "topup (never expires, spent last) or bonus (spent before top-ups).") var kind: String = "topup"
        @Option(help: "A note kept in the ledger.") var note: String?
        @Option(help: ArgumentHelp("Bonus only: when the credits expire (date, time, or duration such as 30d).", valueName: "when"))
        var expires: String?
        @Option(name: .customLong("idempotency-key"), help: "Makes a retried grant harmless: the same key grants once.") var idempotencyKey: String?
        @Flag(help: "Print the balance after the grant as JSON.") var json = false

        func run() async throws {
            guard let credits = Credits(parsing: amount), credits.micros > 0 else {
                throw ValidationError("AMOUNT must be a positive number of credits such as 150 or 2.5 (at most 6 decimals); got \(amount)")
            }
            guard let bucketKind = BucketKind(rawValue: kind), bucketKind != .plan else { throw ValidationError("--kind must be topup or bonus") }
            if bucketKind == .topup, expires != nil { throw ValidationError("top-ups never expire; --expires goes with --kind bonus") }
            let expiresAt = try expires.map { try parseExpiry($0) }
            let config = try global.load()
            try await withStore(config) { store in
                guard let user = try await store.user(email: email) else { throw ValidationError("no user \(email) (create it with `switchyard users create`)") }
                let now = EpochClock.nowMilliseconds()
                _ = try await store.grant(
                    userEmail: user.email, amount: credits.micros, kind: bucketKind, note: note, expiresAt: expiresAt, idempotencyKey: idempotencyKey, now: now)
                let balance = try await store.creditBalance(userID: user.id, policy: CreditGrantPolicy(config: config), now: now)
                writeStdout(json ? balance.json.jsonString + "\n" : "Granted \(credits) credits (\(bucketKind.rawValue)) to \(user.email). Balance: \(Credits(micros: balance.available)).\n")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A user's balance and credit buckets (in spend order).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The user's email address.") var email: String
        @Flag(help: "Print JSON: `balance` (a number), `reserved`, and `buckets` with kind, amount and expiry.") var json = false

        func run() async throws {
            let config = try global.load()
            try await withStore(config) { store in
                guard let user = try await store.user(email: email) else { throw ValidationError("no user \(email)") }
                let balance = try await store.creditBalance(userID: user.id, policy: CreditGrantPolicy(config: config), now: EpochClock.nowMilliseconds())
                if json {
                    writeStdout(balance.json.jsonString + "\n")
                    return
                }
                var text = "\(user.email): \(Credits(micros: balance.available)) credits"
                if balance.reserved > 0 { text += " (\(Credits(micros: balance.reserved)) held by requests in flight)" }
                text += "\n\n"
                var rows = [["BUCKET", "KIND", "AMOUNT", "GRANTED", "EXPIRES", "NOTE"]]
                for b in balance.buckets {
                    rows.append([
                        b.id, b.kind.rawValue, Credits(micros: b.balance).description, Credits(micros: b.granted).description,
                        b.expiresAt.map(EpochClock.iso8601) ?? "never", b.note ?? "",
                    ])
                }
                writeStdout(text + table(rows))
            }
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A user's ledger entries, newest first.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The user's email address.") var email: String
        @Option(help: "How many entries.") var limit: Int = 100
        @Flag(help: "Print a JSON array.") var json = false

        func run() async throws {
            let config = try global.load()
            try await withStore(config) { store in
                guard let user = try await store.user(email: email) else { throw ValidationError("no user \(email)") }
                let entries = try await store.creditHistory(userID: user.id, limit: limit)
                if json {
                    writeStdout(JSONValue.array(entries.map(\.json)).jsonString + "\n")
                    return
                }
                var rows = [["TIME", "KIND", "AMOUNT", "BUCKET", "REQUEST", "NOTE"]]
                for e in entries {
                    rows.append([EpochClock.iso8601(e.createdAt), e.kind.rawValue, Credits(micros: e.amount).description, e.bucketID ?? "-", e.requestID ?? "-", e.note ?? ""])
                }
                writeStdout(table(rows))
            }
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify the ledger: every balance equals the sum of its entries, and charges equal the usage log.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let config = try global.load()
            try await withStore(config) { store in
                let check = try await store.checkLedger()
                if json {
                    writeStdout(check.json.jsonString + "\n")
                } else {
                    writeStdout("""
                        \(check.isConsistent ? "consistent" : "INCONSISTENT"): \(check.bucketsChecked) buckets, \
                        charged \(Credits(micros: check.totalCharged)) = usage \(Credits(micros: check.totalUsageCredits)), \
                        \(check.openReservations) open reservations\
                        \(check.mismatchedBuckets.isEmpty ? "" : "; mismatched: " + check.mismatchedBuckets.joined(separator: ", "))\
                        \(check.negativeBuckets.isEmpty ? "" : "; negative: " + check.negativeBuckets.joined(separator: ", "))

                        """)
                }
                if !check.isConsistent { throw ExitCode(1) }
            }
        }
    }
}

struct UsageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "usage", abstract: "The usage log: one row per model request, newest first.")
    @OptionGroup var global: GlobalOptions
    @Option(help: ArgumentHelp("Only this user's requests.", valueName: "email")) var user: String?
    @Option(help: ArgumentHelp("Only this key's requests.", valueName: "id")) var key: String?
    @Option(help: ArgumentHelp("Only requests at or after this date or time (2026-11-01, 2026-11-01T12:00:00Z).", valueName: "date"))
    var since: String?
    @Option(help: "At most this many rows.") var limit: Int = 1000
    @Flag(help: "Print a JSON array: time, key id, model, upstream, tokens in/out/cached, credits, status, latency, request id.") var json = false

    func run() async throws {
        let config = try global.load()
        var query = UsageQuery(limit: limit)
        if let since {
            guard let ms = EpochClock.parseISO8601(since) else { throw ValidationError("--since expects a date or time such as 2026-11-01; got \(since)") }
            query.since = ms
        }
        query.keyID = key
        try await withStore(config) { store in
            let users = try await store.listUsers()
            if let user {
                guard let found = users.first(where: { $0.email == user.lowercased() }) else { throw ValidationError("no user \(user)") }
                query.userID = found.id
            }
            let emails = Dictionary(users.map { ($0.id, $0.email) }, uniquingKeysWith: { a, _ in a })
            let rows = try await store.usage(query)
            if json {
                writeStdout(JSONValue.array(rows.map { $0.json(email: $0.userID.flatMap { emails[$0] }) }).jsonString + "\n")
                return
            }
            var table_ = [["TIME", "USER", "MODEL", "IN", "OUT", "CACHED", "CREDITS", "STATUS", "OUTCOME", "MS", "REQUEST"]]
            for r in rows {
                table_.append([
                    EpochClock.iso8601(r.createdAt), r.userID.flatMap { emails[$0] } ?? "-", r.model, String(r.inputTokens) + (r.usageEstimated ? "~" : ""),
                    String(r.outputTokens), String(r.cachedTokens), Credits(micros: r.credits).description, String(r.status), r.outcome,
                    String(r.latencyMs), r.requestID,
                ])
            }
            writeStdout(table(table_))
        }
    }
}

struct CodesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "codes", abstract: "Redemption codes: credits a user claims once with POST /v1/credits/redeem.",
        subcommands: [Create.self, List.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create codes. They are printed once; only their hashes are stored.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Credits each code is worth.") var credits: String
        @Option(help: "How many codes.") var count: Int = 1
        @Option(help: ArgumentHelp("When unredeemed codes stop working (date, time, or duration such as 30d).", valueName: "when")) var expires: String?
        @Flag(help: "Print a JSON array of objects with `code`, `id`, `credits`, `expires_at`.") var json = false

        func run() async throws {
            guard let amount = Credits(parsing: credits), amount.micros > 0 else { throw ValidationError("--credits must be a positive amount; got \(credits)") }
            guard (1...10_000).contains(count) else { throw ValidationError("--count must be 1–10000") }
            let expiresAt = try expires.map { try parseExpiry($0) }
            let config = try global.load()
            try await withStore(config) { store in
                let codes = try await store.createCodes(count: count, credits: amount.micros, expiresAt: expiresAt, now: EpochClock.nowMilliseconds())
                if json {
                    writeStdout(JSONValue.array(codes.map(\.json)).jsonString + "\n")
                } else {
                    writeStdout(codes.map(\.code).joined(separator: "\n") + "\n")
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List codes (their last four characters) and who redeemed them.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print a JSON array.") var json = false

        func run() async throws {
            let config = try global.load()
            try await withStore(config) { store in
                let codes = try await store.listCodes()
                if json {
                    writeStdout(JSONValue.array(codes.map(\.json)).jsonString + "\n")
                    return
                }
                var rows = [["ID", "CODE", "CREDITS", "EXPIRES", "STATUS"]]
                for c in codes {
                    rows.append([c.id, "…" + c.hint, Credits(micros: c.credits).description, c.expiresAt.map(EpochClock.iso8601) ?? "never", c.json["status"]?.stringValue ?? ""])
                }
                writeStdout(table(rows))
            }
        }
    }
}
