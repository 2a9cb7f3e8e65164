import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardServer
import SwitchyardStore

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list, rotate, update and revoke API keys.",
        discussion: "Changes reach a running gateway on its next request (it is notified, and polls the database as a fallback).",
        subcommands: [Create.self, List.self, Show.self, Rotate.self, Update.self, Revoke.self])

    /// Limits a key can carry instead of its plan's.
    struct LimitOptions: ParsableArguments {
        @Option(name: .customLong("rpm"), help: ArgumentHelp("Requests per minute for this key (replaces the plan's).", valueName: "n"))
        var requestsPerMinute: Int?
        @Option(name: .customLong("rpd"), help: ArgumentHelp("Requests per day for this key.", valueName: "n"))
        var requestsPerDay: Int?
        @Option(name: .customLong("concurrency"), help: ArgumentHelp("Requests in flight at once for this key.", valueName: "n"))
        var concurrentRequests: Int?
        @Option(name: .customLong("tpm"), help: ArgumentHelp("Tokens per minute for this key.", valueName: "n"))
        var tokensPerMinute: Int?

        var values: LimitValues {
            LimitValues(requestsPerMinute: requestsPerMinute, requestsPerDay: requestsPerDay, concurrentRequests: concurrentRequests, tokensPerMinute: tokensPerMinute)
        }

        func validate() throws {
            for (flag, v) in [("--rpm", requestsPerMinute), ("--rpd", requestsPerDay), ("--concurrency", concurrentRequests), ("--tpm", tokensPerMinute)] {
                if let v, v < 1 { throw ValidationError("\(flag) must be at least 1") }
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a key. The secret is printed once, as the last line.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "A name to recognise the key by.") var name: String
        @Option(help: ArgumentHelp("The user (email) the key belongs to; created on the default plan if new. Without it the key belongs to the service user.", valueName: "email"))
        var user: String?
        @Option(help: ArgumentHelp("When the key stops working: a date or time (2026-12-31, 2026-12-31T18:00:00Z) or a duration from now (30d, 12h).", valueName: "when"))
        var expires: String?
        @Option(help: ArgumentHelp("Comma-separated models (or patterns) this key may use, within its plan.", valueName: "list"))
        var models: String?
        @OptionGroup var limits: LimitOptions
        @Flag(help: "Print a JSON object with at least `id` and `key`.") var json = false

        func validate() throws {
            guard !name.isEmpty, name.utf8.count <= 200 else { throw ValidationError("--name must be 1–200 bytes") }
            if let user { try validateEmail(user, flag: "--user") }
        }

        func run() async throws {
            let config = try global.load()
            let options = KeyOptions(
                expiresAt: try expires.map { try parseExpiry($0) }, models: try models.map { try parseModels($0, config: config) },
                limits: limits.values)
            try await withStore(config) { store in
                let created = try await store.createKey(name: name, userEmail: user, prefix: config.keyPrefix, options: options)
                await GatewayNotifier.invalidateAuthCache(config: config)
                if json {
                    writeStdout(created.json.jsonString + "\n")
                } else {
                    let owner = created.record.userEmail.map { " for \($0)" } ?? ""
                    writeStdout("Created key \(created.record.id) (\(name))\(owner). Save the secret now; it is not shown again:\n\(created.secret)\n")
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys (secrets are never shown).")
        @OptionGroup var global: GlobalOptions
        @Option(help: ArgumentHelp("Only the keys of this user.", valueName: "email")) var user: String?
        @Flag(help: "Print a JSON array.") var json = false

        func run() async throws {
            let config = try global.load()
            try await withStore(config) { store in
                var keys = try await store.listKeys()
                if let user { keys = keys.filter { $0.userEmail == user.lowercased() } }
                if json {
                    writeStdout(JSONValue.array(keys.map(\.json)).jsonString + "\n")
                    return
                }
                var rows = [["ID", "NAME", "USER", "KEY", "CREATED", "EXPIRES", "STATUS"]]
                for k in keys {
                    rows.append([
                        k.id, k.name, k.userEmail ?? "-", k.redacted, EpochClock.iso8601(k.createdAt),
                        k.options.expiresAt.map(EpochClock.iso8601) ?? "-", k.json["status"]?.stringValue ?? "",
                    ])
                }
                writeStdout(table(rows))
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one key: owner, expiry, model list and limits.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The key id (see `keys list`).") var id: String
        @Flag(help: "Print a JSON object.") var json = false

        func run() async throws {
            let config = try global.load()
            try await withStore(config) { store in
                guard let key = try await store.key(id: id) else { throw ValidationError("no key with id \(id)") }
                writeStdout(json ? key.json.jsonString + "\n" : describe(key, config: config))
            }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a new secret for a key; the old one keeps working for the grace period.",
            discussion: "The key keeps its id, owner, expiry, model list and limits. The new secret is printed once, as the last line.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The key id (see `keys list`).") var id: String
        @Option(help: ArgumentHelp("How long the old secret keeps working (e.g. 24h, 30m; default 0: it stops at once). At most 90d.", valueName: "duration"))
        var grace: String = "0s"
        @Flag(help: "Print a JSON object with `id`, `key` and `previous_secret_expires_at`.") var json = false

        func run() async throws {
            guard let duration = ConfigDuration.parse(grace), duration <= .seconds(90 * 86_400) else {
                throw ValidationError("--grace expects a duration such as 24h or 30m, at most 90d; got \(grace)")
            }
            let config = try global.load()
            try await withStore(config) { store in
                guard let existing = try await store.key(id: id) else { throw ValidationError("no key with id \(id)") }
                guard !existing.isRevoked else { throw ValidationError("key \(id) is revoked; create a new one instead") }
                guard let rotated = try await store.rotateKey(id: id, prefix: config.keyPrefix, graceMs: duration.milliseconds) else {
                    throw ValidationError("no key with id \(id)")
                }
                await GatewayNotifier.invalidateAuthCache(config: config)
                let until = EpochClock.iso8601(EpochClock.nowMilliseconds() + duration.milliseconds)
                if json {
                    guard case .object(var obj) = rotated.json else { return }
                    obj["previous_secret_expires_at"] = .string(until)
                    writeStdout(JSONValue.object(obj).jsonString + "\n")
                } else {
                    let old = duration.milliseconds == 0 ? "The old secret no longer works." : "The old secret works until \(until)."
                    writeStdout("Rotated key \(id). \(old) Save the new secret now; it is not shown again:\n\(rotated.secret)\n")
                }
            }
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a key's name, expiry, model list or limits.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The key id (see `keys list`).") var id: String
        @Option(help: "A new name.") var name: String?
        @Option(help: ArgumentHelp("A new expiry: a date or time, or a duration from now (30d).", valueName: "when")) var expires: String?
        @Flag(name: .customLong("no-expiry"), help: "Remove the expiry.") var noExpiry = false
        @Option(help: ArgumentHelp("Comma-separated models (or patterns) this key may use.", valueName: "list")) var models: String?
        @Flag(name: .customLong("all-models"), help: "Remove the key's model list (the plan decides).") var allModels = false
        @OptionGroup var limits: LimitOptions
        @Flag(name: .customLong("plan-limits"), help: "Drop the key's own limits (the plan's apply); given limit options are then added.")
        var planLimits = false

        func validate() throws {
            if expires != nil && noExpiry { throw ValidationError("--expires and --no-expiry exclude each other") }
            if models != nil && allModels { throw ValidationError("--models and --all-models exclude each other") }
            if let name, name.isEmpty || name.utf8.count > 200 { throw ValidationError("--name must be 1–200 bytes") }
        }

        func run() async throws {
            let config = try global.load()
            var update = KeyUpdate(name: name)
            if noExpiry { update.expiresAt = .some(nil) } else if let expires { update.expiresAt = .some(try parseExpiry(expires)) }
            if allModels { update.models = .some(nil) } else if let models { update.models = .some(try parseModels(models, config: config)) }
            try await withStore(config) { store in
                guard let existing = try await store.key(id: id) else { throw ValidationError("no key with id \(id)") }
                let given = limits.values
                if planLimits || !given.isEmpty {
                    var merged = planLimits ? LimitValues() : existing.options.limits
                    if let v = given.requestsPerMinute { merged.requestsPerMinute = v }
                    if let v = given.requestsPerDay { merged.requestsPerDay = v }
                    if let v = given.concurrentRequests { merged.concurrentRequests = v }
                    if let v = given.tokensPerMinute { merged.tokensPerMinute = v }
                    update.limits = merged
                }
                guard let updated = try await store.updateKey(id: id, update) else { throw ValidationError("no key with id \(id)") }
                await GatewayNotifier.invalidateAuthCache(config: config)
                writeStdout("Updated key \(id).\n" + describe(updated, config: config))
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key. A running gateway refuses it from the next request on.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The key id (see `keys list`).") var id: String

        func run() async throws {
            let config = try global.load()
            try await withStore(config) { store in
                guard try await store.revokeKey(id: id) else { throw ValidationError("no key with id \(id)") }
                await GatewayNotifier.invalidateAuthCache(config: config)
                writeStdout("Revoked \(id)\n")
            }
        }
    }
}

/// An expiry given on the command line: an ISO 8601 date or time, or a duration from now.
func parseExpiry(_ text: String) throws -> Int64 {
    let now = EpochClock.nowMilliseconds()
    let at: Int64
    if let ms = EpochClock.parseISO8601(text) {
        at = ms
    } else if let d = ConfigDuration.parse(text), d.milliseconds > 0, !text.allSatisfy(\.isNumber) {
        at = now + d.milliseconds
    } else {
        throw ValidationError("--expires expects a date or time (2026-12-31, 2026-12-31T18:00:00Z) or a duration such as 30d; got \(text)")
    }
    guard at > now else { throw ValidationError("--expires must be in the future (\(EpochClock.iso8601(at)) has passed)") }
    return at
}

/// A comma-separated model list, each entry a catalog name or pattern.
func parseModels(_ text: String, config: GatewayConfig) throws -> [String] {
    let names = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    guard !names.isEmpty else { throw ValidationError("--models needs at least one model name") }
    for name in names where !config.knowsModel(name) {
        throw ValidationError("`\(name)` is not a model in the catalog (models: \(config.models.map(\.name).joined(separator: ", ")))")
    }
    return names
}

func validateEmail(_ email: String, flag: String) throws {
    let parts = email.split(separator: "@", omittingEmptySubsequences: false)
    guard email.utf8.count <= 254, parts.count == 2, !parts[0].isEmpty, parts[1].contains("."), !email.contains(where: \.isWhitespace) else {
        throw ValidationError("\(flag) must be an email address, got \(email)")
    }
}

/// A key as lines of `field: value`.
func describe(_ key: KeyRecord, config: GatewayConfig) -> String {
    let limits = key.options.limits
    func limit(_ v: Int?) -> String { v.map(String.init) ?? "plan's" }
    let rows: [[String]] = [
        ["id:", key.id], ["name:", key.name], ["key:", key.redacted], ["user:", key.userEmail ?? "-"],
        ["plan:", key.userPlan ?? config.defaultPlan], ["status:", key.json["status"]?.stringValue ?? ""],
        ["created:", EpochClock.iso8601(key.createdAt)], ["expires:", key.options.expiresAt.map(EpochClock.iso8601) ?? "never"],
        ["models:", key.options.models?.joined(separator: ", ") ?? "all of the plan's"],
        ["requests/minute:", limit(limits.requestsPerMinute)], ["requests/day:", limit(limits.requestsPerDay)],
        ["concurrent:", limit(limits.concurrentRequests)], ["tokens/minute:", limit(limits.tokensPerMinute)],
    ]
    return table(rows)
}
