import ArgumentParser
import Foundation
import Logging
import SwitchyardCore
import SwitchyardMock
import SwitchyardServer
import SwitchyardStore

@main
struct Switchyard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchyard",
        abstract: "One API key, every model: a self-hostable LLM API gateway.",
        version: SwitchyardVersion.current,
        subcommands: [Serve.self, MockUpstream.self, Keys.self])
}

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Configuration file (YAML).", discussion: "Defaults to $SWITCHYARD_CONFIG.", valueName: "file"))
    var config: String?

    var configPath: String? { config ?? ProcessInfo.processInfo.environment["SWITCHYARD_CONFIG"] }

    /// The configuration: the file if one is named, otherwise the built-in defaults.
    func load(orDefault fallback: GatewayConfig = GatewayConfig()) throws -> GatewayConfig {
        guard let path = configPath else { return fallback }
        return try ConfigLoader.load(path: path)
    }
}

/// Installs the log handler once per process.
func bootstrapLogging(_ log: LogConfig, level override: Logger.Level? = nil) -> Logger {
    let level = override ?? Logger.Level(rawValue: log.level) ?? .info
    let format: SwitchyardLogHandler.Format = log.format == .json ? .json : .text
    LoggingSystem.bootstrap { label in SwitchyardLogHandler(label: label, level: level, format: format) }
    return Logger(label: "switchyard")
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the gateway.",
        discussion: """
            With --demo and no config file, serves a demo catalog from the built-in mock provider (no provider \
            account needed) on 127.0.0.1:4000 with the SQLite database switchyard.db, and prints an admin key, a \
            demo API key and a curl line to try.
            """)

    @OptionGroup var global: GlobalOptions
    @Flag(help: "Create a fresh demo key (and, without a config file, serve the built-in demo catalog).")
    var demo = false
    @Option(help: ArgumentHelp("Override the listen address (host:port; port 0 picks a free port).", valueName: "host:port"))
    var listen: String?

    func run() async throws {
        guard global.configPath != nil || demo else {
            throw ValidationError("no configuration: pass --config FILE, set SWITCHYARD_CONFIG, or run with --demo")
        }
        var config = try global.load(orDefault: .demo())
        if let listen {
            guard let address = ListenAddress.parse(listen) else { throw ValidationError("--listen expects host:port, got \(listen)") }
            config.listen = address
        }
        let logger = bootstrapLogging(config.log)
        try await GatewayRunner.serve(config: config, demo: demo, logger: logger)
    }
}

struct MockUpstream: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mock-upstream",
        abstract: "Run the fake provider: OpenAI-format replies, streams, tool calls, usage and fault injection.",
        discussion: """
            Per request, faults and shapes are chosen with x-mock-* headers, a "mock" object in the JSON body, or a \
            [[mock status=503 delay_ms=200]] marker in the last user message. Keys: status, message, retry_after, \
            delay_ms, chunk_delay_ms, chunks, drop_after, words, tool_calls, usage=none, cached_tokens. \
            GET /mock/stats and /mock/requests show what it saw.
            """)

    @OptionGroup var global: GlobalOptions
    @Option(help: "Port to listen on (0 picks a free port; the chosen one is printed).") var port: Int = 8090
    @Option(help: "Address to bind.") var host: String = "127.0.0.1"
    @Option(name: .customLong("latency-ms"), help: "Delay before the response head, in milliseconds.") var latencyMs: Int = 0
    @Option(name: .customLong("chunk-delay-ms"), help: "Delay between stream chunks, in milliseconds.") var chunkDelayMs: Int = 0
    @Option(help: "Content chunks per streamed reply.") var chunks: Int = 8
    @Option(name: .customLong("require-key"), help: "Reject requests that do not carry this API key.") var requireKey: String?

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0–65535") }
        guard latencyMs >= 0, chunkDelayMs >= 0 else { throw ValidationError("delays must not be negative") }
        guard chunks >= 1 else { throw ValidationError("--chunks must be at least 1") }
    }

    func run() async throws {
        let config = try global.load()
        var logger = bootstrapLogging(config.log, level: .warning)
        logger[metadataKey: "component"] = "mock-upstream"
        let settings = MockSettings(latencyMs: latencyMs, chunkDelayMs: chunkDelayMs, chunks: chunks, requiredKey: requireKey)
        let host = self.host
        try await MockServer.run(host: host, port: port, settings: settings, logger: logger) { port in
            writeStdout("mock-upstream listening on http://\(host):\(port)\n")
        }
    }
}

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list and revoke API keys.",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a key. The secret is printed once, as the last line.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "A name to recognise the key by.") var name: String
        @Option(help: ArgumentHelp("The user (email) the key belongs to; created if new.", valueName: "email")) var user: String?
        @Flag(help: "Print a JSON object with at least `id` and `key`.") var json = false

        func validate() throws {
            guard !name.isEmpty, name.utf8.count <= 200 else { throw ValidationError("--name must be 1–200 bytes") }
            if let user, !(user.contains("@") && !user.hasPrefix("@") && !user.hasSuffix("@")) {
                throw ValidationError("--user must be an email address")
            }
        }

        func run() async throws {
            let config = try global.load()
            try await withStore(config) { store in
                let created = try await store.createKey(name: name, userEmail: user, prefix: config.keyPrefix)
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
        @Flag(help: "Print a JSON array.") var json = false

        func run() async throws {
            let config = try global.load()
            try await withStore(config) { store in
                let keys = try await store.listKeys()
                if json {
                    writeStdout(JSONValue.array(keys.map(\.json)).jsonString + "\n")
                    return
                }
                var rows = [["ID", "NAME", "USER", "KEY", "CREATED", "STATUS"]]
                for k in keys {
                    rows.append([k.id, k.name, k.userEmail ?? "-", k.redacted, EpochClock.iso8601(k.createdAt), k.isRevoked ? "revoked" : "active"])
                }
                writeStdout(table(rows))
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a key. A running gateway stops accepting it within a quarter of a second.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The key id (see `keys list`).") var id: String

        func run() async throws {
            let config = try global.load()
            try await withStore(config) { store in
                guard try await store.revokeKey(id: id) else { throw ValidationError("no key with id \(id)") }
                writeStdout("Revoked \(id)\n")
            }
        }
    }
}

/// Opens the configured store for a CLI command and closes it afterwards.
func withStore(_ config: GatewayConfig, _ body: (SQLiteStore) async throws -> Void) async throws {
    var logger = Logger(label: "switchyard")
    logger.logLevel = .warning
    let store = try await SQLiteStore.open(config.database, logger: logger)
    do {
        try await body(store)
    } catch {
        await store.close()
        throw error
    }
    await store.close()
}

/// Left-aligned columns.
func table(_ rows: [[String]]) -> String {
    guard let first = rows.first else { return "" }
    var widths = Array(repeating: 0, count: first.count)
    for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
    return rows.map { row in
        row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i] + 2, withPad: " ", startingAt: 0) }.joined()
    }.joined(separator: "\n") + "\n"
}
