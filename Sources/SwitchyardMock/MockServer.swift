import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Synchronization
import SwitchyardCore
import SwitchyardHTTP

/// What the mock saw: request counts, stream outcomes and the most recent requests (for tests).
public final class MockStats: Sendable {
    public struct Recorded: Sendable {
        public var method: String
        public var path: String
        public var headers: [(String, String)]
        public var body: ByteBuffer
    }

    struct State {
        var requests = 0
        var streamsStarted = 0
        var streamsCompleted = 0
        /// Streams whose client (the gateway) went away before the end.
        var streamsCancelled = 0
        /// Streams the mock dropped on purpose (`drop_after`).
        var streamsDropped = 0
        var activeStreams = 0
        /// Bytes of stream events written so far (to observe backpressure).
        var streamBytesSent = 0
        var recent: [Recorded] = []
        /// Requests per `x-mock-tag` header value (tests give each deployment its own tag).
        var byTag: [String: Int] = [:]
        /// Requests waiting out a `delay_ms` whose caller left before the answer (a cancelled request).
        var waitsAbandoned = 0
        /// Requests waiting out a `delay_ms` now.
        var waiting = 0
    }

    private let state = Mutex(State())
    private static let keep = 64

    public init() {}

    func record(_ r: Recorded) {
        state.withLock { s in
            s.requests += 1
            if let tag = r.headers.first(where: { $0.0.lowercased() == "x-mock-tag" })?.1 { s.byTag[tag, default: 0] += 1 }
            s.recent.append(r)
            if s.recent.count > Self.keep { s.recent.removeFirst(s.recent.count - Self.keep) }
        }
    }

    func sent(_ bytes: Int) { state.withLock { $0.streamBytesSent += bytes } }

    func streamStarted() { state.withLock { $0.streamsStarted += 1; $0.activeStreams += 1 } }
    func streamEnded(_ outcome: StreamOutcome) {
        state.withLock { s in
            s.activeStreams -= 1
            switch outcome {
            case .completed: s.streamsCompleted += 1
            case .cancelled: s.streamsCancelled += 1
            case .dropped: s.streamsDropped += 1
            }
        }
    }

    enum StreamOutcome { case completed, cancelled, dropped }

    /// Sleeps out a first-byte delay; a caller that hangs up meanwhile ends the wait (and is counted).
    func delay(_ ms: Int, channel: (any Channel)?) async throws {
        guard ms > 0 else { return }
        state.withLock { $0.waiting += 1 }
        defer { state.withLock { $0.waiting -= 1 } }
        do {
            try await ConnectionCloseWatcher.cancellingOnClose(channel) { try await LoopTimer.sleep(for: .milliseconds(ms)) }
        } catch {
            state.withLock { $0.waitsAbandoned += 1 }
            throw error
        }
    }

    public func reset() { state.withLock { $0 = State() } }

    /// The counters as JSON.
    public func countersJSON() -> JSONValue {
        state.withLock { s in
            [
                "requests": .int(s.requests), "streams_started": .int(s.streamsStarted),
                "streams_completed": .int(s.streamsCompleted), "streams_cancelled": .int(s.streamsCancelled),
                "streams_dropped": .int(s.streamsDropped), "active_streams": .int(s.activeStreams),
                "stream_bytes_sent": .int(s.streamBytesSent), "waits_abandoned": .int(s.waitsAbandoned),
                "waiting": .int(s.waiting), "by_tag": .object(Self.object(s.byTag)),
            ]
        }
    }

    static func object(_ counts: [String: Int]) -> JSONObject {
        var o = JSONObject()
        for (k, v) in counts.sorted(by: { $0.key < $1.key }) { o[k] = .int(v) }
        return o
    }

    /// The most recent requests as JSON (newest last): method, path, headers, body (parsed if JSON).
    public func recentJSON(limit: Int) -> JSONValue {
        let recent = state.withLock { Array($0.recent.suffix(limit)) }
        return .array(recent.map { r in
            var headers = JSONObject()
            for (k, v) in r.headers { headers[k.lowercased()] = .string(v) }
            let body = (try? JSONValue.parse(r.body)) ?? .string(String(buffer: r.body))
            return ["method": .string(r.method), "path": .string(r.path), "headers": .object(headers), "body": body]
        })
    }
}

/// Request context of the mock server: large bodies allowed; the connection is kept to watch it close.
public struct MockRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: (any Channel)?
    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
    public var maxUploadSize: Int { 64 << 20 }
}

/// `switchyard mock-upstream`: the fake provider over HTTP, speaking the providers' wire formats.
public enum MockServer {
    /// Builds the mock's router. Routes: OpenAI `POST /v1/chat/completions` and `POST /v1/responses` (+ `/compact`)
    /// (also without `/v1`), Anthropic
    /// `POST /v1/messages` and `/v1/messages/count_tokens`, Gemini `POST /{v1,v1beta}/models/{model}:{generateContent,
    /// streamGenerateContent,countTokens}`, `GET /v1/models`, `GET /mock/stats`, `GET /mock/requests?limit=N`,
    /// `POST /mock/reset`.
    public static func router(engine: MockEngine, stats: MockStats) -> Router<MockRequestContext> {
        let router = Router(context: MockRequestContext.self)

        @Sendable func chat(_ request: Request, _ context: MockRequestContext) async throws -> Response {
            var request = request
            let body = try await request.collectBody(upTo: context.maxUploadSize)
            let headerList = request.headers.map { ($0.name.canonicalName, $0.value) }
            stats.record(.init(method: request.method.rawValue, path: request.uri.path, headers: headerList, body: body))
            if let required = engine.settings.requiredKey, !Self.authorized(request.headers, key: required) {
                return respond(MockEngine.openAIError(status: 401, message: "Incorrect API key provided.", type: "invalid_request_error", code: "invalid_api_key"), stats: stats, channel: context.channel)
            }
            let directives = MockDirectives.pairs(fromHeaders: headerList.map { (name: $0.0, value: $0.1) })
            let plan = engine.chatCompletion(body: body, headerDirectives: directives)
            try await stats.delay(plan.firstByteDelayMs, channel: context.channel)
            return respond(plan, stats: stats, channel: context.channel)
        }
        router.post("/v1/chat/completions", use: chat)
        router.post("/chat/completions", use: chat)


        /// Records the request and checks the key; returns the body, or an error plan.
        @Sendable func admit(_ request: inout Request, _ context: MockRequestContext, error: (Int, String) -> MockPlan) async throws -> (ByteBuffer, [String: String], MockPlan?) {
            let body = try await request.collectBody(upTo: context.maxUploadSize)
            let headerList = request.headers.map { ($0.name.canonicalName, $0.value) }
            stats.record(.init(method: request.method.rawValue, path: request.uri.path, headers: headerList, body: body))
            var headers: [String: String] = [:]
            for (k, v) in headerList { headers[k.lowercased()] = v }
            if let required = engine.settings.requiredKey, !Self.authorized(request.headers, key: required) {
                return (body, headers, error(401, "invalid x-api-key"))
            }
            return (body, headers, nil)
        }

        @Sendable func responses(_ request: Request, _ context: MockRequestContext) async throws -> Response {
            var request = request
            let (body, headers, failure) = try await admit(&request, context) { status, _ in
                MockEngine.openAIError(status: status, message: "Incorrect API key provided.", type: "invalid_request_error", code: "invalid_api_key")
            }
            let plan = failure ?? (request.uri.path.hasSuffix("/compact")
                ? engine.compact(body: body)
                : engine.responses(body: body, headerDirectives: MockDirectives.pairs(fromHeaders: headers.map { (name: $0.key, value: $0.value) })))
            try await stats.delay(plan.firstByteDelayMs, channel: context.channel)
            return respond(plan, stats: stats, channel: context.channel)
        }
        router.post("/v1/responses", use: responses)
        router.post("/responses", use: responses)
        router.post("/v1/responses/compact", use: responses)
        router.post("/responses/compact", use: responses)

        router.post("/v1/messages") { request, context -> Response in
            var request = request
            let (body, headers, failure) = try await admit(&request, context) { MockEngine.anthropicError(status: $0, message: $1) }
            let plan = failure ?? engine.messages(body: body, headers: headers, headerDirectives: MockDirectives.pairs(fromHeaders: headers.map { (name: $0.key, value: $0.value) }))
            try await stats.delay(plan.firstByteDelayMs, channel: context.channel)
            return respond(plan, stats: stats, channel: context.channel)
        }
        router.post("/v1/messages/count_tokens") { request, context -> Response in
            var request = request
            let (body, _, failure) = try await admit(&request, context) { MockEngine.anthropicError(status: $0, message: $1) }
            return respond(failure ?? engine.countTokens(anthropic: body), stats: stats, channel: context.channel)
        }
        @Sendable func gemini(_ request: Request, _ context: MockRequestContext) async throws -> Response {
            var request = request
            let (body, headers, failure) = try await admit(&request, context) { status, _ in MockEngine.geminiError(status: status == 401 ? 400 : status, message: "API key not valid. Please pass a valid API key. (API_KEY_INVALID)") }
            if let failure { return respond(failure, stats: stats, channel: context.channel) }
            let target = context.parameters.get("target") ?? ""
            guard let colon = target.lastIndex(of: ":") else { return respond(MockEngine.geminiError(status: 404, message: "not found"), stats: stats, channel: context.channel) }
            let model = String(target[..<colon])
            let directives = MockDirectives.pairs(fromHeaders: headers.map { (name: $0.key, value: $0.value) })
            let plan: MockPlan
            switch target[target.index(after: colon)...] {
            case "generateContent": plan = engine.generateContent(body: body, model: model, stream: false, headerDirectives: directives)
            case "streamGenerateContent":
                guard request.uri.queryParameters.get("alt") == "sse" else {
                    return respond(MockEngine.geminiError(status: 400, message: "this mock streams only with alt=sse"), stats: stats, channel: context.channel)
                }
                plan = engine.generateContent(body: body, model: model, stream: true, headerDirectives: directives)
            case "countTokens": plan = engine.countTokens(gemini: body, model: model)
            default: plan = MockEngine.geminiError(status: 404, message: "unknown method")
            }
            try await stats.delay(plan.firstByteDelayMs, channel: context.channel)
            return respond(plan, stats: stats, channel: context.channel)
        }
        router.post("/v1beta/models/{target}", use: gemini)
        router.post("/v1/models/{target}", use: gemini)

        router.get("/v1/models") { _, _ -> Response in
            let models: JSONValue = ["object": "list", "data": .array(["mock-fast", "gpt-5.1", "claude-sonnet-4-6"].map {
                ["id": .string($0), "object": "model", "created": 1_767_225_600, "owned_by": "mock"]
            })]
            return json(models)
        }
        router.get("/mock/stats") { _, _ in json(stats.countersJSON()) }
        router.get("/mock/requests") { request, _ in
            let limit = request.uri.queryParameters.get("limit", as: Int.self) ?? 10
            return json(stats.recentJSON(limit: max(1, min(64, limit))))
        }
        router.post("/mock/reset") { _, _ in
            stats.reset()
            return json(["ok": true])
        }
        return router
    }

    /// The HTTP/1 server the mock runs on (with the connection-close watcher installed).
    public static var server: HTTPServerBuilder { .http1(configuration: .init(additionalChannelHandlers: [ConnectionCloseWatcher()])) }

    static func authorized(_ headers: HTTPFields, key: String) -> Bool {
        var presented: String?
        if let auth = headers[.authorization], auth.hasPrefix("Bearer ") { presented = String(auth.dropFirst(7)) }
        if presented == nil { presented = headers[HTTPField.Name("x-api-key")!] }
        if presented == nil { presented = headers[HTTPField.Name("x-goog-api-key")!] }
        guard let presented else { return false }
        return APIKeys.hash(presented).constantTimeEquals(APIKeys.hash(key))
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: value.jsonBuffer))
    }

    /// Turns a plan into a response; stream events are written one by one, `chunkDelayMs` apart. A client
    /// that goes away mid-stream is noticed at once (``ConnectionCloseWatcher``), like a real provider.
    static func respond(_ plan: MockPlan, stats: MockStats, channel: (any Channel)?) -> Response {
        var headers = HTTPFields()
        for (name, value) in plan.headers {
            if let n = HTTPField.Name(name) { headers[n] = value }
        }
        headers[HTTPField.Name("x-request-id")!] = "req_mock_" + APIKeys.idBase62(12)
        switch plan.body {
        case .full(let buffer):
            return Response(status: .init(code: plan.status), headers: headers, body: .init(byteBuffer: buffer))
        case .events(let events, let delay, let dropAfter):
            let stamp = plan.stampEvents
            let body = ResponseBody { writer in
                stats.streamStarted()
                do {
                    try await ConnectionCloseWatcher.cancellingOnClose(channel) {
                        for i in 0..<events.count {
                            if let dropAfter, i >= dropAfter { throw MockDropped() }
                            if i > 0, delay > 0 { try await LoopTimer.sleep(for: .milliseconds(delay)) }
                            let event = stamp ? stamped(events[i]) : events[i]
                            try await writer.write(event)
                            stats.sent(event.readableBytes)
                        }
                        try await writer.finish(nil)
                    }
                    stats.streamEnded(.completed)
                } catch is MockDropped {
                    stats.streamEnded(.dropped)
                    throw MockDropped()
                } catch {
                    stats.streamEnded(.cancelled)
                    throw error
                }
            }
            return Response(status: .init(code: plan.status), headers: headers, body: body)
        }
    }

    /// `data: {"mock_sent_us":<wall clock µs>,...` for a `data: {` event; other events unchanged.
    static func stamped(_ event: ByteBuffer) -> ByteBuffer {
        let prefix = Array("data: {".utf8)
        guard event.readableBytes > prefix.count + 1,
              event.readableBytesView.starts(with: prefix),
              event.readableBytesView.dropFirst(prefix.count).first != UInt8(ascii: "}") else { return event }
        var out = ByteBuffer()
        out.reserveCapacity(event.readableBytes + 32)
        out.writeBytes(prefix)
        out.writeString("\"mock_sent_us\":\(EpochClock.nowMicroseconds()),")
        out.writeBytes(event.readableBytesView.dropFirst(prefix.count))
        return out
    }

    /// Runs the mock on `host:port` until the task is cancelled or the process is signalled.
    public static func run(host: String, port: Int, settings: MockSettings, logger: Logger, onRunning: (@Sendable (Int) async -> Void)? = nil) async throws {
        let engine = MockEngine(settings: settings)
        let stats = MockStats()
        let app = Application(
            router: router(engine: engine, stats: stats),
            server: server,
            configuration: .init(address: .hostname(host, port: port), serverName: nil, backlog: 4096),
            onServerRunning: { channel in await onRunning?(channel.localAddress?.port ?? port) },
            logger: logger)
        try await app.runService()
    }
}

/// Thrown to abort a stream mid-way, as a provider whose connection drops would.
struct MockDropped: Error {}
