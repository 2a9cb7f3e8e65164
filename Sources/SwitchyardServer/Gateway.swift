import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Synchronization
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardStore

/// The running gateway: configuration, catalog, providers, key cache and store, and the routes over them.
///
/// The request path reads top to bottom in the route handlers (`Routes/`): authenticate → collect body
/// → head parse → resolve model → forward → relay → log.
public final class Gateway: Sendable {
    public let config: GatewayConfig
    let store: any GatewayStore
    let keyCache: KeyCache
    let authenticator: Authenticator
    /// Requests per minute/day, concurrency and tokens per minute, per user or key.
    let limiter: RateLimiter
    /// The credit ledger's request side: reservations, settlements, usage rows.
    let meter: CreditMeter
    let providers: [String: Provider]
    let models: [String: ModelRoute]
    /// Wildcard entries, tried in order after exact names.
    let patterns: [ModelRoute]
    /// Catalog order, for `/v1/models` (exact names only).
    let modelOrder: [ModelRoute]
    /// Reasoning kept for OpenAI-format clients, which cannot carry thinking signatures between turns.
    let reasoningCache = ReasoningCache()
    /// Client connections the process can carry with its descriptor limit (`server.max_connections` caps it).
    public let connectionBudget: ConnectionBudget
    /// Responses API conversations kept for `previous_response_id`.
    let responseArchive: ResponseArchive
    /// Fetches image and document URLs for providers that need inline data.
    let mediaFetcher: MediaFetcher
    let logger: Logger
    /// `created` timestamp reported for catalog models (seconds).
    let catalogCreated: Int
    private let drainingFlag = Atomic<Bool>(false)

    public init(config: GatewayConfig, store: any GatewayStore, logger: Logger) {
        self.config = config
        self.store = store
        self.logger = logger
        keyCache = KeyCache(store: store) { record in Principal(key: record, config: config) }
        authenticator = Authenticator(cache: keyCache)
        limiter = RateLimiter(clock: DayClock(identifier: config.dayTimeZone) ?? .utc)
        meter = CreditMeter(store: store, config: config, logger: logger)
        responseArchive = ResponseArchive(store: store, retention: config.responses.retention, logger: logger)
        let fitted = ConnectionBudget.fromDescriptorLimit()
        connectionBudget = config.server.maxConnections.map { ConnectionBudget(limit: min($0, fitted.budget.limit)) } ?? fitted.budget
        var providers: [String: Provider] = [:]
        for p in config.providers { providers[p.name] = Provider(config: p) }
        self.providers = providers
        // Deployments first (aliases share their target's), then aliases and ensembles over them.
        var built: [String: ModelRoute] = [:]
        var order: [ModelRoute] = []
        var patterns: [ModelRoute] = []
        for m in config.models where m.kind == .deployments {
            let timeouts = m.timeouts.resolved(config.routing.timeouts)
            let deployments = m.deployments.enumerated().compactMap { i, d -> Deployment? in
                guard let provider = providers[d.provider] else { return nil }  // validated at config load
                let coolsDown = m.deployments.count > 1 || !m.fallbacks.isEmpty
                return Deployment(model: m.name, index: i, config: d, provider: provider, timeouts: timeouts, coolsDown: coolsDown)
            }
            built[m.name] = ModelRoute(config: m, deployments: deployments, routing: config.routing)
        }
        for m in config.models {
            let route: ModelRoute
            switch m.kind {
            case .deployments:
                route = built[m.name]!
            case .alias(let targetName):
                guard let target = built[targetName] else { continue }
                var effective = target.config
                effective.name = m.name
                effective.kind = m.kind
                if m.multiplier != nil || m.price != nil {
                    effective.multiplier = m.multiplier
                    effective.price = m.price
                }
                if let t = m.thinking { effective.thinking = t }
                if let mt = m.maxTokens { effective.maxTokens = mt }
                if !m.fallbacks.isEmpty { effective.fallbacks = m.fallbacks }
                route = ModelRoute(config: effective, deployments: target.deployments, routing: config.routing)
            case .ensemble:
                route = ModelRoute(config: m, deployments: [], routing: config.routing)
            }
            if m.isPattern { patterns.append(route) } else { order.append(route) }
        }
        modelOrder = order
        self.patterns = patterns
        models = Dictionary(order.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        mediaFetcher = MediaFetcher(config: config.media, logger: logger)
        catalogCreated = Int(EpochClock.nowMilliseconds() / 1000)
    }

    /// The catalog entry serving `model` (exact name first, then wildcard patterns in order).
    func resolve(_ model: String) throws(GatewayError) -> ResolvedModel {
        if let route = models[model] { return ResolvedModel(route: route, clientModel: model) }
        if let route = patterns.first(where: { $0.config.matches(model) }) { return ResolvedModel(route: route, clientModel: model) }
        throw GatewayError.modelNotFound(model)
    }

    /// Every deployment, for the admin API.
    var allDeployments: [Deployment] {
        var seen = Set<String>()
        return (modelOrder + patterns).flatMap(\.deployments).filter { seen.insert($0.id).inserted }
    }

    /// Whether SIGTERM has started draining (readiness then fails so load balancers stop sending).
    public var isDraining: Bool { drainingFlag.load(ordering: .relaxed) }
    func startDraining() { drainingFlag.store(true, ordering: .relaxed) }

    /// The key cache, for callers that change keys in-process.
    public var keys: KeyCache { keyCache }

    /// Every path prefix client routes are served under: the root, `/api`, and the configured ones.
    var clientPrefixes: [String] {
        var seen = Set<String>()
        return (["", "/api"] + config.pathPrefixes).filter { seen.insert($0).inserted }
    }

    /// The router: client API routes under every prefix, health probes, and the error/log middleware.
    public func buildRouter() -> Router<GatewayContext> {
        let router = Router(context: GatewayContext.self)
        var methods: [String: [String]] = [:]
        for prefix in clientPrefixes {
            methods["\(prefix)/v1/chat/completions"] = ["POST"]
            methods["\(prefix)/v1/responses"] = ["POST"]
            methods["\(prefix)/v1/responses/compact"] = ["POST"]
            methods["\(prefix)/v1/messages"] = ["POST"]
            methods["\(prefix)/v1/messages/count_tokens"] = ["POST"]
            methods["\(prefix)/v1/models"] = ["GET"]
            methods["\(prefix)/v1beta/models"] = ["GET"]
            methods["\(prefix)/v1/credits"] = ["GET"]
            methods["\(prefix)/v1/credits/redeem"] = ["POST"]
        }
        methods.merge(Self.adminRouteMethods) { a, _ in a }
        router.middlewares.add(GatewayMiddleware(logger: logger, routeMethods: methods, limiter: limiter, meter: meter))
        for prefix in clientPrefixes {
            router.post("\(prefix)/v1/chat/completions") { request, context in
                try await self.chatCompletions(request, context: context)
            }
            router.get("\(prefix)/v1/models") { request, context in
                try await self.listModels(request, context: context)
            }
            router.post("\(prefix)/v1/responses") { request, context in
                try await self.responses(request, context: context)
            }
            router.post("\(prefix)/v1/responses/compact") { request, context in
                try await self.compactResponse(request, context: context)
            }
            router.post("\(prefix)/v1/messages") { request, context in
                try await self.messages(request, context: context)
            }
            router.post("\(prefix)/v1/messages/count_tokens") { request, context in
                try await self.countTokens(request, context: context)
            }
            for version in ["v1", "v1beta"] {
                router.post("\(prefix)/\(version)/models/{target}") { request, context in
                    try await self.geminiAction(request, context: context)
                }
            }
            router.get("\(prefix)/v1beta/models") { request, context in
                try await self.listModels(request, context: context, format: .gemini)
            }
            router.get("\(prefix)/v1/credits") { request, context in
                try await self.creditsBalance(request, context: context)
            }
            router.post("\(prefix)/v1/credits/redeem") { request, context in
                try await self.redeemCode(request, context: context)
            }
        }
        addAdminRoutes(to: router)
        router.get("/health/live") { _, _ in Self.json(["status": "ok"]) }
        router.get("/health/ready") { _, _ in await self.readiness() }
        router.get("/") { _, _ in Self.json(["name": "switchyard", "version": .string(SwitchyardVersion.current)]) }
        router.head("/") { _, _ in Response(status: .ok) }
        return router
    }

    /// Authenticates the request's key, recording the caller in the request log (access log line and
    /// rate-limit headers).
    func authenticate(_ request: Request, context: GatewayContext) async throws -> Principal {
        let principal = try await authenticator.authenticate(HTTPFieldsView(request))
        context.log.set(principal: principal)
        return principal
    }

    func readiness() async -> Response {
        if isDraining { return Self.json(["status": "draining"], status: .serviceUnavailable) }
        do {
            try await store.ping()
            return Self.json(["status": "ready"])
        } catch {
            return Self.json(["status": "database unavailable"], status: .serviceUnavailable)
        }
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: value.jsonBuffer))
    }

    /// The HTTP application serving this gateway on `config.listen`, with its background services.
    /// `authPollInterval` is how often key changes made by other processes (the CLI) are picked up.
    public func makeApplication(
        authPollInterval: Duration? = nil,
        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
    ) -> GatewayApplication<RouterResponder<GatewayContext>> {
        GatewayApplication(
            responder: buildRouter().buildResponder(),
            http1: .init(
                // The connection's close watcher is driven by `GatewayConnection`, outside the pipeline.
                additionalChannelHandlers: [ConnectionLimiter(budget: self.connectionBudget)],
                idleTimeout: .milliseconds(config.server.idleTimeout.milliseconds),
                httpDecoderConfiguration: .init(
                    maxHeaderFieldSize: config.limits.maxHeaderBytes, maxHeaderListSize: config.limits.maxHeaderBytes,
                    maxHeaderFieldCount: 256)),
            maxBodyBytes: config.limits.maxBodyBytes,
            host: config.listen.host, port: config.listen.port, backlog: 4096,
            services: [
                AuthGenerationWatcher(store: store, cache: keyCache, interval: authPollInterval ?? config.server.authPollInterval.duration, logger: logger),
                LimiterService(gateway: self, interval: .seconds(1)),
            ],
            logger: logger,
            running: onServerRunning,
            direct: LoopPassthrough(gateway: self))
    }

    /// Releases upstream connection pools and the store (after the server has stopped).
    public func shutdown() async {
        await saveDailyCounts()
        await meter.flush()
        await meter.journal?.close()
        await closeClients()
        await store.close()
    }

    /// Releases the upstream and media HTTP clients.
    func closeClients() async {
        for provider in providers.values { await provider.shutdown() }
        await mediaFetcher.shutdown()
    }
}
