import AsyncHTTPClient
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import SwitchyardCore
import SwitchyardMock
import SwitchyardServer
import SwitchyardStore
import Testing

/// A response read whole.
struct TestResponse {
    var status: Int
    var headers: HTTPHeaders
    var body: String

    var json: JSONValue? { try? JSONValue.parse(body) }
    var errorCode: String? { json?["error"]?["code"]?.stringValue }
}

/// A server of the harness ended before it listened (its error, if it threw, is in the task group).
struct StoppedBeforeListening: Error, CustomStringConvertible {
    let server: String
    var description: String { "the \(server) stopped before it listened" }
}

/// A real gateway and a real mock upstream on free loopback ports, for end-to-end tests.
struct Harness: Sendable {
    let gatewayURL: String
    let mockURL: String
    let client: HTTPClient
    let store: SQLiteStore
    let gateway: Gateway
    let mockStats: MockStats

    static let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Starts both servers, runs `body`, and tears everything down.
    static func run(
        mock settings: MockSettings = .init(),
        configure: @Sendable (inout GatewayConfig, _ mockPort: Int) -> Void = { _, _ in },
        _ body: @Sendable (Harness) async throws -> Void
    ) async throws {
        let logger = quiet
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                let stats = MockStats()
                let engine = MockEngine(settings: settings)
                let (mockPorts, mockPortSink) = AsyncStream<Int>.makeStream()
                let mockApp = Application(
                    router: MockServer.router(engine: engine, stats: stats),
                    server: MockServer.server,
                    configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                    onServerRunning: { mockPortSink.yield($0.localAddress?.port ?? 0) },
                    logger: logger)
                // A server that stops before it listens ends its port stream, so the test fails instead of waiting forever.
                group.addTask {
                    defer { mockPortSink.finish() }
                    try await mockApp.run()
                }
                var mockIterator = mockPorts.makeAsyncIterator()
                guard let mockPort = await mockIterator.next() else { throw StoppedBeforeListening(server: "mock upstream") }

                var config = GatewayConfig(
                    listen: .init(host: "127.0.0.1", port: 0),
                    database: .sqliteMemory,
                    adminKey: "test-admin-key-0123456789",
                    providers: [
                        ProviderConfig(name: "up", type: .openai, baseURL: "http://127.0.0.1:\(mockPort)/v1", apiKey: "upstream-secret"),
                        ProviderConfig(name: "inproc", type: .mock),
                    ],
                    models: [
                        ModelConfig(name: "gpt-5.1", provider: "up", upstream: "mock-upstream-model"),
                        ModelConfig(name: "same-name", provider: "up"),
                        ModelConfig(name: "demo-mock", provider: "inproc"),
                    ])
                configure(&config, mockPort)
                let store = try await SQLiteStore.open(config.database, logger: logger)
                let gateway = Gateway(config: config, store: store, logger: logger)
                try await gateway.prepare()
                let (ports, portSink) = AsyncStream<Int>.makeStream()
                let app = gateway.makeApplication(authPollInterval: .milliseconds(100)) { portSink.yield($0.localAddress?.port ?? 0) }
                group.addTask {
                    defer { portSink.finish() }
                    try await app.run()
                }
                var iterator = ports.makeAsyncIterator()
                guard let port = await iterator.next() else {
                    group.cancelAll()
                    await gateway.shutdown()
                    throw StoppedBeforeListening(server: "gateway")
                }

                let harness = Harness(
                    gatewayURL: "http://127.0.0.1:\(port)", mockURL: "http://127.0.0.1:\(mockPort)", client: client,
                    store: store, gateway: gateway, mockStats: stats)
                do {
                    try await body(harness)
                } catch {
                    group.cancelAll()
                    await gateway.shutdown()
                    throw error
                }
                group.cancelAll()
                await gateway.shutdown()
            }
        } catch {
            try? await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }

    /// A fresh client key.
    func key(user: String? = nil) async throws -> String {
        try await store.createKey(name: "test", userEmail: user, prefix: "sy-").secret
    }

    /// POSTs and reads the whole response.
    func request(_ path: String, key: String? = nil, body: String? = nil, headers: [(String, String)] = []) async throws -> TestResponse {
        try await request(.POST, path, key: key, body: body, headers: headers)
    }

    /// Sends a request and reads the whole response.
    func request(
        _ method: HTTPMethod, _ path: String, key: String? = nil, body: String? = nil,
        headers: [(String, String)] = []
    ) async throws -> TestResponse {
        var r = HTTPClientRequest(url: gatewayURL + path)
        r.method = method
        if let key { r.headers.add(name: "authorization", value: "Bearer \(key)") }
        for (k, v) in headers { r.headers.add(name: k, value: v) }
        if let body {
            r.headers.add(name: "content-type", value: "application/json")
            r.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await client.execute(r, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 256 << 20)
        return TestResponse(status: Int(response.status.code), headers: response.headers, body: String(buffer: bytes))
    }

    /// A chat completion body.
    static func chat(model: String = "gpt-5.1", stream: Bool = false, content: String = "Hello!", extra: String = "") -> String {
        #"{"model":"\#(model)","stream":\#(stream),\#(extra)"messages":[{"role":"user","content":"\#(content)"}]}"#
    }

    /// The mock's counters.
    func mockCounters() async throws -> JSONValue {
        mockStats.countersJSON()
    }

    /// The last request the mock received.
    func lastUpstreamRequest() -> JSONValue? {
        mockStats.recentJSON(limit: 1).arrayValue?.last
    }

    /// Waits out the UTC day's last `margin`: a test that counts requests per day must not see the count
    /// reset halfway through.
    static func clearOfUTCMidnight(margin: Duration = .seconds(60)) async throws {
        let left = 86_400_000 - EpochClock.nowMilliseconds() % 86_400_000
        if left < margin.components.seconds * 1000 { try await Task.sleep(for: .milliseconds(left + 1000)) }
    }

    /// Polls `condition` until it holds or `timeout` passes (for effects that happen asynchronously).
    func eventually(timeout: Duration = .seconds(5), _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(25))
        }
        return try await condition()
    }
}

/// Splits an SSE body into the `data:` payloads.
func sseData(_ body: String) -> [String] {
    body.split(separator: "\n").compactMap { line in
        line.hasPrefix("data: ") ? String(line.dropFirst(6)) : nil
    }
}
