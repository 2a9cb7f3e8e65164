#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import UnixSignals
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardStore

/// Loads configuration files.
public enum ConfigLoader {
    /// Reads and decodes a YAML config file; `${VAR}` references expand from `environment`.
    public static func load(path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> GatewayConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError("cannot read config file \(path): \(error.localizedDescription)")
        }
        return try YAMLConfigDecoder(environment: environment).decode(GatewayConfig.self, from: text)
    }
}

/// Writes to stdout unbuffered, so banners reach pipes (tests, supervisors) at once.
public func writeStdout(_ text: String) {
    var text = text
    text.withUTF8 { writeFully(1, UnsafeRawBufferPointer($0)) }
}

/// `switchyard serve`: opens the store, builds the gateway, and runs it until SIGTERM/SIGINT, draining
/// in-flight requests and streams (bounded by `server.drain_timeout`) before exiting.
public enum GatewayRunner {
    public static func serve(config: GatewayConfig, demo: Bool, logger: Logger) async throws {
        var config = config
        let store = try await SQLiteStore.open(config.database, logger: logger)
        var generatedAdminKey = false
        if config.adminKey == nil && demo {
            config.adminKey = "sy-admin-" + APIKeys.randomBase62(32)
            generatedAdminKey = true
        }
        var demoKey: String?
        if demo {
            for key in try await store.listKeys() where key.name == "demo" && !key.isRevoked {
                _ = try await store.revokeKey(id: key.id)
            }
            demoKey = try await store.createKey(name: "demo", userEmail: nil, prefix: config.keyPrefix).secret
        }

        let gateway = Gateway(config: config, store: store, logger: logger)

        logger.info("client connection limit", metadata: ["max_connections": .stringConvertible(gateway.connectionBudget.limit)])
        do {
            try await gateway.prepare()
        } catch {
            await gateway.shutdown()
            throw error
        }
        let finalConfig = config
        let shownDemoKey = demoKey
        let shownGenerated = generatedAdminKey
        let app = gateway.makeApplication { channel in
            let port = channel.localAddress?.port ?? finalConfig.listen.port
            writeStdout(banner(config: finalConfig, port: port, demoKey: shownDemoKey, generatedAdminKey: shownGenerated))
        }

        var groupConfig = ServiceGroupConfiguration(
            services: [DrainingService(app: app, gateway: gateway, logger: logger)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        groupConfig.maximumGracefulShutdownDuration = config.server.drainTimeout.duration
        let group = ServiceGroup(configuration: groupConfig)
        do {
            try await group.run()
        } catch {
            // Past the drain timeout the remaining requests are cancelled; that is a normal exit.
            guard gateway.isDraining else {
                await gateway.shutdown()
                throw error
            }
            logger.warning("drain timeout reached; remaining requests were cancelled", metadata: ["error": .string("\(error)")])
        }
        await gateway.shutdown()
        logger.info("stopped")
    }

    static func banner(config: GatewayConfig, port: Int, demoKey: String?, generatedAdminKey: Bool) -> String {
        let host = config.listen.host == "0.0.0.0" ? "127.0.0.1" : config.listen.host
        let base = "http://\(host.contains(":") ? "[\(host)]" : host):\(port)"
        var lines = [
            "Switchyard \(SwitchyardVersion.current) listening on \(base)",
            "  database: \(config.database)   models: \(config.models.map(\.name).joined(separator: ", "))",
        ]
        if let admin = config.adminKey {
            lines.append(generatedAdminKey
                ? "  admin key: \(admin)   (generated for this run; set admin_key in a config file to keep one)"
                : "  admin key: configured (admin_key)")
        }
        if let demoKey {
            let model = config.models.first?.name ?? "gpt-5.1"
            lines.append("  demo key:  \(demoKey)")
            lines.append("")
            lines.append("Try it:")
            lines.append("  curl \(base)/v1/chat/completions -H 'Authorization: Bearer \(demoKey)' -H 'Content-Type: application/json' -d '{\"model\": \"\(model)\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}]}'")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// Runs the application and marks the gateway as draining the moment graceful shutdown starts
/// (so `/health/ready` fails while in-flight requests finish).
struct DrainingService<App: Service>: Service {
    let app: App
    let gateway: Gateway
    let logger: Logger

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await app.run()
        } onGracefulShutdown: {
            gateway.startDraining()
            logger.info("draining: no new connections; waiting for in-flight requests")
        }
    }
}
