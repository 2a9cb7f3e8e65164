import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
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
        subcommands: [Serve.self, MockUpstream.self, Keys.self, Users.self, Plans.self, CreditsCommand.self, UsageCommand.self, CodesCommand.self])
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

/// Installs the log handler once per process. The long-running commands (`serve`, `mock-upstream`)
/// log through a writer thread (`background`) and flush it as they exit; the others write directly.
func bootstrapLogging(_ log: LogConfig, level override: Logger.Level? = nil, background: Bool = false) -> (Logger, LogWriter?) {
    let level = override ?? Logger.Level(rawValue: log.level) ?? .info
    let format: SwitchyardLogHandler.Format = log.format == .json ? .json : .text
    let writer = background
        ? LogWriter(capacity: log.buffer.bytes) { SwitchyardLogHandler.droppedNotice($0, format: format) }
        : nil
    LoggingSystem.bootstrap { label in SwitchyardLogHandler(label: label, level: level, format: format, writer: writer) }
    return (Logger(label: "switchyard"), writer)
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
        let (logger, writer) = bootstrapLogging(config.log, background: true)
        defer { writer?.flush() }
        runTasksOnEventLoops()
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
            delay_ms, chunk_delay_ms, chunks, drop_after, words, tool_calls, usage=none, cached_tokens, stamp_events. \
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
        let (base, writer) = bootstrapLogging(config.log, level: .warning, background: true)
        defer { writer?.flush() }
        var logger = base
        logger[metadataKey: "component"] = "mock-upstream"
        runTasksOnEventLoops()
        let settings = MockSettings(latencyMs: latencyMs, chunkDelayMs: chunkDelayMs, chunks: chunks, requiredKey: requireKey)
        let host = self.host
        try await MockServer.run(host: host, port: port, settings: settings, logger: logger) { port in
            writeStdout("mock-upstream listening on http://\(host):\(port)\n")
        }
    }
}

/// Makes SwiftNIO's event loops Swift Concurrency's global executor, so request handlers and the
/// network I/O they await run on the same threads instead of hopping between the cooperative pool and
/// the event loops for every read and write (each hop is a thread wake-up). Only the long-running
/// commands call it; `SWITCHYARD_TASKS_ON_EVENT_LOOPS=0` turns it off.
func runTasksOnEventLoops() {
    if let n = ProcessInfo.processInfo.environment["SWITCHYARD_EVENT_LOOPS"].flatMap(Int.init), n > 0 {
        NIOSingletons.groupLoopCountSuggestion = n
    }
    guard ProcessInfo.processInfo.environment["SWITCHYARD_TASKS_ON_EVENT_LOOPS"] != "0" else { return }
    NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
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
