import ArgumentParser
import SwitchyardCore
import SwitchyardServer
import SwitchyardStore

struct Users: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create and list users, move them between plans, disable and enable them.",
        discussion: "A user's plan decides which models their keys may call and how fast. Changes reach a running gateway on its next request.",
        subcommands: [Create.self, List.self, Show.self, SetPlan.self, Disable.self, Enable.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a user.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The user's email address.") var email: String
        @Option(help: ArgumentHelp("The plan (default: the configured default_plan).", valueName: "name")) var plan: String?
        @Flag(help: "Print a JSON object.") var json = false

        func validate() throws { try validateEmail(email, flag: "EMAIL") }

        func run() async throws {
            let config = try global.load()
            if let plan { try requirePlan(plan, config: config) }
            try await withStore(config) { store in
                let user: UserRecord
                do {
                    user = try await store.createUser(email: email, plan: plan)
                } catch StoreError.invalid(let message) {
                    throw ValidationError(message)
                }
                writeStdout(json ? user.json(config: config).jsonString + "\n"
                    : "Created user \(user.email) (\(user.id)) on plan \(user.plan ?? config.defaultPlan).\n")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List users with their plans.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print a JSON array.") var json = false

        func run() async throws {
            let config = try global.load()
            try await withStore(config) { store in
                let users = try await store.listUsers()
                if json {
                    writeStdout(JSONValue.array(users.map { $0.json(config: config) }).jsonString + "\n")
                    return
                }
                var rows = [["ID", "EMAIL", "PLAN", "KIND", "CREATED", "STATUS"]]
                for u in users {
                    let plan = u.plan ?? config.defaultPlan
                    rows.append([
                        u.id, u.email, config.plan(named: plan) == nil ? "\(plan) (undefined!)" : plan, u.kind,
                        EpochClock.iso8601(u.createdAt), u.isDisabled ? "disabled" : "active",
                    ])
                }
                writeStdout(table(rows))
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a user, their plan's limits and their keys.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The user's email address.") var email: String
        @Flag(help: "Print a JSON object (the user with a `keys` array).") var json = false

        func run() async throws {
            let config = try global.load()
            try await withStore(config) { store in
                guard let user = try await store.user(email: email) else { throw ValidationError("no user \(email)") }
                let keys = try await store.listKeys().filter { $0.userID == user.id }
                if json {
                    guard case .object(var obj) = user.json(config: config) else { return }
                    obj["keys"] = .array(keys.map(\.json))
                    writeStdout(JSONValue.object(obj).jsonString + "\n")
                    return
                }
                let planName = user.plan ?? config.defaultPlan
                var text = table([
                    ["id:", user.id], ["email:", user.email], ["status:", user.isDisabled ? "disabled" : "active"],
                    ["plan:", planName + (user.plan == nil ? " (default)" : "")],
                    ["limits:", config.plan(named: planName).map { describeLimits($0.limits) } ?? "plan not defined: requests are refused"],
                    ["models:", config.plan(named: planName)?.models.joined(separator: ", ") ?? "-"],
                ])
                text += "\n"
                var rows = [["KEY ID", "NAME", "KEY", "STATUS"]]
                for k in keys { rows.append([k.id, k.name, k.redacted, k.json["status"]?.stringValue ?? ""]) }
                writeStdout(text + table(rows))
            }
        }
    }

    struct SetPlan: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set-plan", abstract: "Move a user to another plan (effective on their next request).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The user's email address.") var email: String
        @Argument(help: "A plan defined in the configuration.") var plan: String

        func run() async throws {
            let config = try global.load()
            try requirePlan(plan, config: config)
            try await withStore(config) { store in
                guard try await store.setPlan(email: email, plan: plan) != nil else { throw ValidationError("no user \(email)") }
                await GatewayNotifier.invalidateAuthCache(config: config)
                writeStdout("\(email.lowercased()) is now on plan \(plan).\n")
            }
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a user: every key of theirs is refused (403 account_disabled) until enabled.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The user's email address.") var email: String

        func run() async throws {
            let config = try global.load()
            try await withStore(config) { store in
                guard try await store.setDisabled(email: email, true) != nil else { throw ValidationError("no user \(email)") }
                await GatewayNotifier.invalidateAuthCache(config: config)
                writeStdout("Disabled \(email.lowercased()).\n")
            }
        }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enable a disabled user again.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The user's email address.") var email: String

        func run() async throws {
            let config = try global.load()
            try await withStore(config) { store in
                guard try await store.setDisabled(email: email, false) != nil else { throw ValidationError("no user \(email)") }
                await GatewayNotifier.invalidateAuthCache(config: config)
                writeStdout("Enabled \(email.lowercased()).\n")
            }
        }
    }
}

struct Plans: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the plans defined in the configuration.",
        subcommands: [List.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List plans with their models and limits.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print a JSON array.") var json = false

        func run() async throws {
            let config = try global.load()
            if json {
                let plans: [JSONValue] = config.plans.map { p in
                    ["name": .string(p.name), "models": .array(p.models.map { .string($0) }), "limits": p.limits.json, "default": .bool(p.name == config.defaultPlan)]
                }
                writeStdout(JSONValue.array(plans).jsonString + "\n")
                return
            }
            var rows = [["PLAN", "MODELS", "LIMITS"]]
            for p in config.plans {
                rows.append([p.name + (p.name == config.defaultPlan ? " (default)" : ""), p.models.joined(separator: ", "), describeLimits(p.limits)])
            }
            writeStdout(table(rows))
        }
    }
}

func requirePlan(_ name: String, config: GatewayConfig) throws {
    guard config.plan(named: name) != nil else {
        throw ValidationError("no plan named \(name) in the configuration (plans: \(config.plans.map(\.name).joined(separator: ", ")))")
    }
}

func describeLimits(_ l: LimitValues) -> String {
    var parts: [String] = []
    if let v = l.requestsPerMinute { parts.append("\(v)/min") }
    if let v = l.requestsPerDay { parts.append("\(v)/day") }
    if let v = l.concurrentRequests { parts.append("\(v) concurrent") }
    if let v = l.tokensPerMinute { parts.append("\(v) tokens/min") }
    return parts.isEmpty ? "unlimited" : parts.joined(separator: ", ")
}
