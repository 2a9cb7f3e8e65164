/// The gateway's configuration, as read from YAML (see docs/configuration.md).
public struct GatewayConfig: Decodable, Sendable {
    public var listen: ListenAddress
    public var database: DatabaseLocation
    public var adminKey: String?
    public var keyPrefix: String
    public var pathPrefixes: [String]
    public var providers: [ProviderConfig]
    public var models: [ModelConfig]
    public var limits: LimitsConfig
    public var routing: RoutingConfig
    public var server: ServerConfig
    public var log: LogConfig
    public var media: MediaConfig
    /// Plans users are on; without any, everyone is on an implicit unlimited plan.
    public var plans: [PlanConfig]
    /// The plan of users created without one (and of service users).
    public var defaultPlan: String
    /// IANA time zone (or `UTC`) whose midnight resets daily request limits.
    public var dayTimeZone: String
    /// Input-token tiers for models priced by `multiplier`.
    public var pricing: PricingConfig
    public var billing: BillingConfig
    /// Responses API conversations the gateway keeps for `previous_response_id`.
    public var responses: ResponsesConfig

    /// The plan used when none are configured: every model, no limits.
    public static let unlimitedPlan = PlanConfig(name: "unlimited")

    enum CodingKeys: String, CodingKey {
        case listen, database, providers, models, limits, routing, server, log, media, plans, pricing, billing, responses
        case defaultPlan = "default_plan"
        case dayTimeZone = "day_time_zone"
        case adminKey = "admin_key"
        case keyPrefix = "key_prefix"
        case pathPrefixes = "path_prefixes"
    }

    public init(
        listen: ListenAddress = .init(host: "127.0.0.1", port: 4000),
        database: DatabaseLocation = .sqlite(path: "switchyard.db"),
        adminKey: String? = nil,
        keyPrefix: String = "sy-",
        pathPrefixes: [String] = [],
        providers: [ProviderConfig] = [],
        models: [ModelConfig] = [],
        limits: LimitsConfig = .init(),
        routing: RoutingConfig = .init(),
        server: ServerConfig = .init(),
        log: LogConfig = .init(),
        media: MediaConfig = .init(),
        plans: [PlanConfig] = [],
        defaultPlan: String? = nil,
        dayTimeZone: String = "UTC",
        pricing: PricingConfig = .init(),
        billing: BillingConfig = .init(),
        responses: ResponsesConfig = .init()
    ) {
        self.listen = listen
        self.database = database
        self.adminKey = adminKey
        self.keyPrefix = keyPrefix
        self.pathPrefixes = pathPrefixes
        self.providers = providers
        self.models = models
        self.limits = limits
        self.routing = routing
        self.server = server
        self.log = log
        self.media = media
        self.plans = plans.isEmpty ? [Self.unlimitedPlan] : plans
        self.defaultPlan = defaultPlan ?? self.plans[0].name
        self.dayTimeZone = dayTimeZone
        self.pricing = pricing
        self.billing = billing
        self.responses = responses
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = GatewayConfig()
        listen = try c.decodeIfPresent(ListenAddress.self, forKey: .listen) ?? d.listen
        database = try c.decodeIfPresent(DatabaseLocation.self, forKey: .database) ?? d.database
        adminKey = try c.decodeIfPresent(String.self, forKey: .adminKey).flatMap { $0.isEmpty ? nil : $0 }
        keyPrefix = try c.decodeIfPresent(String.self, forKey: .keyPrefix) ?? d.keyPrefix
        pathPrefixes = try c.decodeIfPresent([String].self, forKey: .pathPrefixes) ?? []
        providers = try c.decodeIfPresent([ProviderConfig].self, forKey: .providers) ?? []
        models = try c.decodeIfPresent([ModelConfig].self, forKey: .models) ?? []
        limits = try c.decodeIfPresent(LimitsConfig.self, forKey: .limits) ?? d.limits
        routing = try c.decodeIfPresent(RoutingConfig.self, forKey: .routing) ?? d.routing
        server = try c.decodeIfPresent(ServerConfig.self, forKey: .server) ?? d.server
        log = try c.decodeIfPresent(LogConfig.self, forKey: .log) ?? d.log
        media = try c.decodeIfPresent(MediaConfig.self, forKey: .media) ?? d.media
        let declared = try c.decodeIfPresent([PlanConfig].self, forKey: .plans) ?? []
        plans = declared.isEmpty ? [Self.unlimitedPlan] : declared
        let chosen = try c.decodeIfPresent(String.self, forKey: .defaultPlan)
        if chosen == nil, declared.count > 1 {
            throw ConfigValueError("default_plan is required when several plans are defined (one of: \(declared.map(\.name).joined(separator: ", ")))", at: [.key("plans")])
        }
        defaultPlan = chosen ?? plans[0].name
        dayTimeZone = try c.decodeIfPresent(String.self, forKey: .dayTimeZone) ?? "UTC"
        pricing = try c.decodeIfPresent(PricingConfig.self, forKey: .pricing) ?? .init()
        billing = try c.decodeIfPresent(BillingConfig.self, forKey: .billing) ?? .init()
        responses = try c.decodeIfPresent(ResponsesConfig.self, forKey: .responses) ?? .init()
        try validate()
    }

    /// Whether `name` can appear in a model list (of a plan or a key): a catalog name, a name a
    /// wildcard catalog entry serves, or a `*` pattern.
    public func knowsModel(_ name: String) -> Bool {
        name.contains("*") || models.contains { $0.matches(name) }
    }

    /// The plan named `name`, if it exists.
    public func plan(named name: String) -> PlanConfig? { plans.first { $0.name == name } }

    /// Cross-field checks; errors point at the offending entry.
    public func validate() throws {
        var planNames = Set<String>()
        for (i, plan) in plans.enumerated() {
            guard planNames.insert(plan.name).inserted else {
                throw ConfigValueError("duplicate plan name `\(plan.name)`", at: [.key("plans"), .index(i), .key("name")])
            }
            for (j, m) in plan.models.enumerated() where !knowsModel(m) {
                throw ConfigValueError("plan `\(plan.name)` lists model `\(m)`, which is not in the catalog", at: [.key("plans"), .index(i), .key("models"), .index(j)])
            }
        }
        guard planNames.contains(defaultPlan) else {
            throw ConfigValueError("default_plan `\(defaultPlan)` is not a defined plan (plans: \(plans.map(\.name).joined(separator: ", ")))", key: "default_plan")
        }
        for (i, model) in models.enumerated() where model.multiplier != nil && pricing.inputTiers.isEmpty {
            throw ConfigValueError(
                "model `\(model.name)` has a multiplier but `pricing.input_tiers` is not configured",
                at: [.key("models"), .index(i), .key("multiplier")])
        }
        guard DayClock(identifier: dayTimeZone) != nil else {
            throw ConfigValueError("day_time_zone `\(dayTimeZone)` is not a known time zone (use an IANA name such as Europe/Berlin, or UTC)", key: "day_time_zone")
        }
        if let adminKey, adminKey.utf8.count < 16 {
            throw ConfigValueError("admin_key must be at least 16 characters", key: "admin_key")
        }
        guard keyPrefix.utf8.count <= 16, keyPrefix.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
            throw ConfigValueError("key_prefix may hold up to 16 letters, digits, `-` or `_`", key: "key_prefix")
        }
        for (i, prefix) in pathPrefixes.enumerated() {
            let reserved = ["/v1", "/admin", "/health", "/api/v1"]
            guard prefix.hasPrefix("/"), !prefix.hasSuffix("/"), !prefix.contains("//"), !prefix.contains("?"),
                !reserved.contains(where: { prefix == $0 || prefix.hasPrefix($0 + "/") })
            else {
                throw ConfigValueError(
                    "a path prefix starts with `/`, has no trailing `/` and is not under /v1, /admin or /health (e.g. `/api/proxy`)",
                    at: [.key("path_prefixes"), .index(i)])
            }
        }
        var providerNames = Set<String>()
        for (i, provider) in providers.enumerated() {
            guard providerNames.insert(provider.name).inserted else {
                throw ConfigValueError("duplicate provider name `\(provider.name)`", at: [.key("providers"), .index(i), .key("name")])
            }
        }
        var modelNames = Set<String>()
        for (i, model) in models.enumerated() {
            guard modelNames.insert(model.name).inserted else {
                throw ConfigValueError("duplicate model name `\(model.name)`", at: [.key("models"), .index(i), .key("name")])
            }
            for (j, deployment) in model.deployments.enumerated() where !providerNames.contains(deployment.provider) {
                let known = providers.map(\.name).joined(separator: ", ")
                let at: [ConfigValueError.Component] = model.deployments.count == 1
                    ? [.key("models"), .index(i), .key("provider")] : [.key("models"), .index(i), .key("deployments"), .index(j), .key("provider")]
                throw ConfigValueError(
                    "model `\(model.name)` names provider `\(deployment.provider)`, which is not defined (providers: \(known.isEmpty ? "none" : known))", at: at)
            }
        }
        // References between models: fallbacks, aliases and ensembles name real, non-virtual models.
        let byName = Dictionary(models.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        func servable(_ name: String, by model: ModelConfig, at path: [ConfigValueError.Component], role: String) throws {
            guard let target = byName[name], !target.isPattern else {
                throw ConfigValueError("model `\(model.name)` names `\(name)` as its \(role), which is not a model in the catalog", at: path)
            }
            guard name != model.name else { throw ConfigValueError("model `\(model.name)` cannot be its own \(role)", at: path) }
            switch target.kind {
            case .deployments: break
            case .alias: throw ConfigValueError("`\(name)` is an alias; name the model it stands for as the \(role) of `\(model.name)`", at: path)
            case .ensemble: throw ConfigValueError("`\(name)` is an ensemble, which cannot be the \(role) of `\(model.name)`", at: path)
            }
        }
        for (i, model) in models.enumerated() {
            if model.isPattern, model.kind != .deployments {
                throw ConfigValueError("a wildcard entry is served by deployments, not as an alias or ensemble", at: [.key("models"), .index(i), .key("name")])
            }
            for (j, f) in model.fallbacks.enumerated() {
                try servable(f, by: model, at: [.key("models"), .index(i), .key("fallbacks"), .index(j)], role: "fallback")
            }
            switch model.kind {
            case .deployments: break
            case .alias(let target): try servable(target, by: model, at: [.key("models"), .index(i), .key("alias_of")], role: "alias target")
            case .ensemble(let proposers, let aggregator):
                for (j, p) in proposers.enumerated() {
                    try servable(p, by: model, at: [.key("models"), .index(i), .key("proposers"), .index(j)], role: "proposer")
                }
                try servable(aggregator, by: model, at: [.key("models"), .index(i), .key("aggregator")], role: "aggregator")
            }
        }
    }

    /// The catalog used by `serve --demo` without a config file: the built-in mock provider serving
    /// a few familiar model names, so the gateway works with no provider account.
    public static func demo() -> GatewayConfig {
        var config = GatewayConfig()
        config.database = .sqlite(path: "switchyard.db")
        config.providers = [ProviderConfig(name: "mock", type: .mock)]
        config.models = ["gpt-5.1", "gpt-5.1-codex", "claude-sonnet-4-6", "claude-haiku-4-5", "gemini-3.1-pro", "mock-fast"].map {
            ModelConfig(name: $0, provider: "mock", upstream: $0)
        } + [ModelConfig(name: "claude-*", provider: "mock")]
        // A plan with limits, so the rate-limit headers show on the first curl.
        config.plans = [PlanConfig(name: "demo", limits: LimitValues(requestsPerMinute: 600, requestsPerDay: 100_000, concurrentRequests: 50))]
        config.defaultPlan = "demo"
        return config
    }
}

/// Where the gateway keeps its state.
public enum DatabaseLocation: Decodable, Sendable, Equatable, CustomStringConvertible {
    case sqlite(path: String)
    case sqliteMemory

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let parsed = Self.parse(text) else {
            throw ConfigValueError("expected `sqlite:PATH` or `sqlite::memory:`, found `\(text)` (PostgreSQL arrives in a later release)")
        }
        self = parsed
    }

    public static func parse(_ text: String) -> DatabaseLocation? {
        if text == "sqlite::memory:" || text == ":memory:" { return .sqliteMemory }
        if text.hasPrefix("sqlite://") { return path(String(text.dropFirst("sqlite://".count))) }
        if text.hasPrefix("sqlite:") { return path(String(text.dropFirst("sqlite:".count))) }
        return nil
    }

    private static func path(_ p: String) -> DatabaseLocation? { p.isEmpty ? nil : .sqlite(path: p) }

    public var description: String {
        switch self {
        case .sqlite(let path): return "sqlite:\(path)"
        case .sqliteMemory: return "sqlite::memory:"
        }
    }
}

/// What the provider's wire format is.
public enum ProviderType: String, Decodable, Sendable, CaseIterable {
    /// OpenAI Chat Completions, or any OpenAI-compatible server (vLLM, Ollama, DeepSeek, Qwen, …).
    case openai
    /// Anthropic Messages (`base_url` as the Anthropic SDK takes it, e.g. `https://api.anthropic.com`).
    case anthropic
    /// Google Gemini `generateContent` (`base_url` e.g. `https://generativelanguage.googleapis.com`).
    case gemini
    /// Replies generated in-process by the built-in fake provider (demos and load tests), OpenAI format.
    case mock
    /// OpenAI Responses (`POST {base_url}/responses`), for models OpenAI serves only there (codex models).
    case openaiResponses = "openai-responses"

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = ProviderType(rawValue: text) else {
            throw ConfigValueError("unknown provider type `\(text)`; expected one of \(Self.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        self = value
    }

    /// The wire format requests to this provider use.
    public var wireFormat: WireFormat {
        switch self {
        case .openai, .mock: return .openAI
        case .anthropic: return .anthropic
        case .gemini: return .gemini
        case .openaiResponses: return .responses
        }
    }
}

/// One upstream provider account.
public struct ProviderConfig: Decodable, Sendable {
    public var name: String
    public var type: ProviderType
    /// Base URL as the provider's own SDK takes it, e.g. `https://api.openai.com/v1`.
    public var baseURL: String
    public var apiKey: String?
    /// Extra headers sent with every upstream request (e.g. `OpenAI-Organization`).
    public var headers: [String: String]
    /// Upper bound on pooled keep-alive connections to this provider.
    public var maxConnections: Int
    /// For `openai` providers: which field carries the output cap in translated requests. OpenAI's own
    /// API takes only `max_completion_tokens` for newer models; many compatible servers only `max_tokens`.
    /// Defaults to `max_completion_tokens` for api.openai.com and `max_tokens` elsewhere.
    public var maxTokensField: OpenAIChat.MaxTokensField
    /// Requests per minute this provider (this account) may receive, across all its deployments.
    public var requestsPerMinute: Int?

    enum CodingKeys: String, CodingKey {
        case name, type, headers
        case requestsPerMinute = "requests_per_minute"
        case baseURL = "base_url"
        case apiKey = "api_key"
        case maxConnections = "max_connections"
        case maxTokensField = "max_tokens_field"
    }

    public init(name: String, type: ProviderType, baseURL: String = "", apiKey: String? = nil, headers: [String: String] = [:], maxConnections: Int = 512) {
        self.name = name
        self.type = type
        self.baseURL = Self.normalize(baseURL, type: type)
        self.apiKey = apiKey
        self.headers = headers
        self.maxConnections = maxConnections
        self.maxTokensField = Self.defaultMaxTokensField(baseURL)
    }

    static func defaultMaxTokensField(_ baseURL: String) -> OpenAIChat.MaxTokensField {
        UpstreamURL(baseURL).map { $0.host == "api.openai.com" || $0.host.hasSuffix(".openai.azure.com") } == true ? .maxCompletionTokens : .maxTokens
    }

    /// Base URLs as each provider's SDK takes them; a `/v1` given for Anthropic is tolerated.
    static func normalize(_ baseURL: String, type: ProviderType) -> String {
        guard let url = UpstreamURL(baseURL) else { return baseURL }
        var n = url.normalized
        if type == .anthropic, n.hasSuffix("/v1") { n.removeLast(3) }
        return n
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        type = try c.decode(ProviderType.self, forKey: .type)
        baseURL = try c.decodeIfPresent(String.self, forKey: .baseURL) ?? ""
        apiKey = try c.decodeIfPresent(String.self, forKey: .apiKey).flatMap { $0.isEmpty ? nil : $0 }
        headers = try c.decodeIfPresent([String: String].self, forKey: .headers) ?? [:]
        maxConnections = try c.decodeIfPresent(Int.self, forKey: .maxConnections) ?? 512
        requestsPerMinute = try c.decodeIfPresent(Int.self, forKey: .requestsPerMinute)
        if let r = requestsPerMinute, r < 1 { throw ConfigValueError("requests_per_minute must be at least 1", key: "requests_per_minute") }
        guard !name.isEmpty else { throw ConfigValueError("provider name must not be empty", key: "name") }
        guard maxConnections > 0 else { throw ConfigValueError("max_connections must be positive", key: "max_connections") }
        if type != .mock {
            guard !baseURL.isEmpty else { throw ConfigValueError("base_url is required for provider type \(type.rawValue)", at: []) }
            guard let url = UpstreamURL(baseURL) else {
                throw ConfigValueError("base_url must be an http:// or https:// URL with a host, found `\(baseURL)`", key: "base_url")
            }
            baseURL = Self.normalize(url.normalized, type: type)
        }
        if let field = try c.decodeIfPresent(String.self, forKey: .maxTokensField) {
            guard let f = OpenAIChat.MaxTokensField(rawValue: field) else {
                throw ConfigValueError("max_tokens_field must be max_tokens or max_completion_tokens", key: "max_tokens_field")
            }
            maxTokensField = f
        } else {
            maxTokensField = Self.defaultMaxTokensField(baseURL)
        }
        for (name, value) in headers {
            guard !name.isEmpty, name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") }),
                !value.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D })
            else {
                throw ConfigValueError("invalid header `\(name)`", key: "headers")
            }
        }
    }
}

extension ModelConfig {
    /// Whether `name` is a wildcard pattern.
    public var isPattern: Bool { name.contains("*") }

    /// Whether a client's model id matches this entry.
    public func matches(_ model: String) -> Bool {
        isPattern ? Self.glob(name, model) : name == model
    }

    /// `*` matches any run of characters (including none).
    static func glob(_ pattern: String, _ text: String) -> Bool {
        let p = Array(pattern.utf8), t = Array(text.utf8)
        var pi = 0, ti = 0, star = -1, mark = 0
        while ti < t.count {
            if pi < p.count, p[pi] == UInt8(ascii: "*") {
                star = pi
                mark = ti
                pi += 1
            } else if pi < p.count, p[pi] == t[ti] {
                pi += 1
                ti += 1
            } else if star >= 0 {
                pi = star + 1
                mark += 1
                ti = mark
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }
}

/// Fetching media (image URLs) for providers that need the bytes inline (Gemini).
public struct MediaConfig: Decodable, Sendable {
    public var fetchTimeout: ConfigDuration
    public var maxBytes: Int
    /// Whether URLs may point at loopback, private or link-local addresses (off: no SSRF through
    /// image URLs given by clients).
    public var allowPrivateNetworks: Bool

    enum CodingKeys: String, CodingKey {
        case fetchTimeout = "fetch_timeout"
        case maxBytes = "max_size"
        case allowPrivateNetworks = "allow_private_networks"
    }

    public init(fetchTimeout: ConfigDuration = .seconds(10), maxBytes: Int = 20 << 20, allowPrivateNetworks: Bool = false) {
        self.fetchTimeout = fetchTimeout
        self.maxBytes = maxBytes
        self.allowPrivateNetworks = allowPrivateNetworks
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = MediaConfig()
        fetchTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .fetchTimeout) ?? d.fetchTimeout
        maxBytes = try c.decodeIfPresent(ByteSize.self, forKey: .maxBytes)?.bytes ?? d.maxBytes
        allowPrivateNetworks = try c.decodeIfPresent(Bool.self, forKey: .allowPrivateNetworks) ?? false
    }
}

/// Limits that protect the gateway from oversized or hostile input.
public struct LimitsConfig: Decodable, Sendable {
    public var maxBodyBytes: Int
    public var maxHeaderBytes: Int
    public var maxJSONDepth: Int
    /// Largest upstream response body the gateway buffers (non-streaming responses).
    public var maxResponseBytes: Int

    enum CodingKeys: String, CodingKey {
        case maxBodyBytes = "max_body_size"
        case maxHeaderBytes = "max_header_size"
        case maxJSONDepth = "max_json_depth"
        case maxResponseBytes = "max_response_size"
    }

    public init(maxBodyBytes: Int = 32 << 20, maxHeaderBytes: Int = 64 << 10, maxJSONDepth: Int = 64, maxResponseBytes: Int = 64 << 20) {
        self.maxBodyBytes = maxBodyBytes
        self.maxHeaderBytes = maxHeaderBytes
        self.maxJSONDepth = maxJSONDepth
        self.maxResponseBytes = maxResponseBytes
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = LimitsConfig()
        maxBodyBytes = try c.decodeIfPresent(ByteSize.self, forKey: .maxBodyBytes)?.bytes ?? d.maxBodyBytes
        maxHeaderBytes = try c.decodeIfPresent(ByteSize.self, forKey: .maxHeaderBytes)?.bytes ?? d.maxHeaderBytes
        maxJSONDepth = try c.decodeIfPresent(Int.self, forKey: .maxJSONDepth) ?? d.maxJSONDepth
        maxResponseBytes = try c.decodeIfPresent(ByteSize.self, forKey: .maxResponseBytes)?.bytes ?? d.maxResponseBytes
        guard maxBodyBytes >= 1024 else { throw ConfigValueError("max_body_size must be at least 1KB", key: "max_body_size") }
        guard maxHeaderBytes >= 4096 else { throw ConfigValueError("max_header_size must be at least 4KB", key: "max_header_size") }
        guard (2...1024).contains(maxJSONDepth) else { throw ConfigValueError("max_json_depth must be between 2 and 1024", key: "max_json_depth") }
    }
}

/// How upstream requests are made.
public struct RoutingConfig: Decodable, Sendable {
    public var timeouts: TimeoutsConfig
    /// Further attempts (on other deployments where there are any) after a retryable failure.
    public var retries: Int
    public var cooldown: CooldownConfig
    /// How often a stream still waiting for its provider's first byte gets a keep-alive (`: ping`,
    /// Anthropic's `event: ping`); 0 turns heartbeats off.
    public var heartbeat: ConfigDuration
    /// The longest the gateway waits before a retry (for an upstream's `retry-after`, or for a
    /// deployment to come out of cooldown); beyond it the client gets the error and its own Retry-After.
    public var maxRetryWait: ConfigDuration

    enum CodingKeys: String, CodingKey {
        case timeouts, retries, cooldown, heartbeat
        case maxRetryWait = "max_retry_wait"
    }

    public init(
        timeouts: TimeoutsConfig = .init(), retries: Int = 2, cooldown: CooldownConfig = .init(), heartbeat: ConfigDuration = .seconds(15),
        maxRetryWait: ConfigDuration = .seconds(10)
    ) {
        self.timeouts = timeouts
        self.retries = retries
        self.cooldown = cooldown
        self.heartbeat = heartbeat
        self.maxRetryWait = maxRetryWait
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = RoutingConfig()
        timeouts = try c.decodeIfPresent(TimeoutsConfig.self, forKey: .timeouts) ?? d.timeouts
        retries = try c.decodeIfPresent(Int.self, forKey: .retries) ?? d.retries
        cooldown = try c.decodeIfPresent(CooldownConfig.self, forKey: .cooldown) ?? d.cooldown
        heartbeat = try c.decodeIfPresent(ConfigDuration.self, forKey: .heartbeat) ?? d.heartbeat
        maxRetryWait = try c.decodeIfPresent(ConfigDuration.self, forKey: .maxRetryWait) ?? d.maxRetryWait
        guard (0...10).contains(retries) else { throw ConfigValueError("retries must be 0–10", key: "retries") }
    }
}

/// Taking a failing deployment out of rotation for a while.
public struct CooldownConfig: Decodable, Sendable {
    /// Consecutive failures that start a cooldown.
    public var failures: Int
    /// How long the deployment is skipped.
    public var duration: ConfigDuration

    enum CodingKeys: String, CodingKey {
        case failures
        case duration = "for"
    }

    public init(failures: Int = 3, duration: ConfigDuration = .seconds(30)) {
        self.failures = failures
        self.duration = duration
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        failures = try c.decodeIfPresent(Int.self, forKey: .failures) ?? 3
        duration = try c.decodeIfPresent(ConfigDuration.self, forKey: .duration) ?? .seconds(30)
        guard failures >= 1 else { throw ConfigValueError("failures must be at least 1", key: "failures") }
    }
}

/// Upstream timeouts: connecting, waiting for the response head, and the idle gap between body chunks.
public struct TimeoutsConfig: Decodable, Sendable {
    public var connect: ConfigDuration
    public var firstByte: ConfigDuration
    public var idle: ConfigDuration

    enum CodingKeys: String, CodingKey {
        case connect, idle
        case firstByte = "first_byte"
    }

    public init(connect: ConfigDuration = .seconds(5), firstByte: ConfigDuration = .seconds(120), idle: ConfigDuration = .seconds(120)) {
        self.connect = connect
        self.firstByte = firstByte
        self.idle = idle
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = TimeoutsConfig()
        connect = try c.decodeIfPresent(ConfigDuration.self, forKey: .connect) ?? d.connect
        firstByte = try c.decodeIfPresent(ConfigDuration.self, forKey: .firstByte) ?? d.firstByte
        idle = try c.decodeIfPresent(ConfigDuration.self, forKey: .idle) ?? d.idle
        for (key, value) in [("connect", connect), ("first_byte", firstByte), ("idle", idle)] where value.milliseconds <= 0 {
            throw ConfigValueError("\(key) must be positive", key: key)
        }
    }
}

/// HTTP server behaviour.
public struct ServerConfig: Decodable, Sendable {
    /// How long SIGTERM waits for in-flight requests and streams before cancelling them.
    public var drainTimeout: ConfigDuration
    /// Keep-alive connections idle this long are closed.
    public var idleTimeout: ConfigDuration
    /// How often the database is asked whether keys, users or plans changed in another process (the
    /// CLI notifies a running gateway directly; this is the fallback).
    public var authPollInterval: ConfigDuration
    /// Most client connections open at once (beyond it new ones are closed); default and ceiling: what
    /// the process's file-descriptor limit can carry, two descriptors per connection.
    public var maxConnections: Int?

    enum CodingKeys: String, CodingKey {
        case drainTimeout = "drain_timeout"
        case idleTimeout = "idle_timeout"
        case authPollInterval = "auth_poll_interval"
        case maxConnections = "max_connections"
    }

    public init(drainTimeout: ConfigDuration = .seconds(30), idleTimeout: ConfigDuration = .seconds(300), authPollInterval: ConfigDuration = .init(milliseconds: 100)) {
        self.drainTimeout = drainTimeout
        self.idleTimeout = idleTimeout
        self.authPollInterval = authPollInterval
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = ServerConfig()
        drainTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .drainTimeout) ?? d.drainTimeout
        idleTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .idleTimeout) ?? d.idleTimeout
        authPollInterval = try c.decodeIfPresent(ConfigDuration.self, forKey: .authPollInterval) ?? d.authPollInterval
        maxConnections = try c.decodeIfPresent(Int.self, forKey: .maxConnections)
        if let m = maxConnections, m < 1 { throw ConfigValueError("max_connections must be at least 1", key: "max_connections") }
        guard authPollInterval.milliseconds >= 10 else {
            throw ConfigValueError("auth_poll_interval must be at least 10ms", key: "auth_poll_interval")
        }
    }
}

/// Log output.
public struct LogConfig: Decodable, Sendable {
    public enum Format: String, Decodable, Sendable { case json, text }
    public var level: String
    public var format: Format
    /// Log lines the server holds while stderr does not take them (a slow or stalled reader); lines
    /// beyond it are dropped and counted rather than blocking the requests that log them.
    public var buffer: ByteSize

    enum CodingKeys: String, CodingKey { case level, format, buffer }

    public static let defaultBuffer = ByteSize(bytes: 4 << 20)

    public init(level: String = "info", format: Format = .json, buffer: ByteSize = LogConfig.defaultBuffer) {
        self.level = level
        self.format = format
        self.buffer = buffer
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        level = try c.decodeIfPresent(String.self, forKey: .level) ?? "info"
        let formatText = try c.decodeIfPresent(String.self, forKey: .format) ?? "json"
        guard let f = Format(rawValue: formatText) else { throw ConfigValueError("log format must be json or text", key: "format") }
        format = f
        let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
        guard levels.contains(level) else {
            throw ConfigValueError("log level must be one of \(levels.joined(separator: ", "))", key: "level")
        }
        buffer = try c.decodeIfPresent(ByteSize.self, forKey: .buffer) ?? Self.defaultBuffer
        guard buffer.bytes >= 4096 else { throw ConfigValueError("log buffer must be at least 4KB", key: "buffer") }
    }
}

/// A parsed upstream base URL.
public struct UpstreamURL: Sendable, Equatable {
    public var scheme: String
    public var host: String
    public var port: Int?
    public var path: String

    public init?(_ text: String) {
        let lower = text.lowercased()
        if lower.hasPrefix("https://") {
            scheme = "https"
        } else if lower.hasPrefix("http://") {
            scheme = "http"
        } else {
            return nil
        }
        let rest = text.dropFirst(scheme.count + 3)
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        guard !authority.isEmpty, !authority.contains("@") else { return nil }
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { return nil }
                port = p
            } else {
                guard after.isEmpty else { return nil }
                port = nil
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let p = Int(authority[authority.index(after: colon)...]), (1...65535).contains(p) else { return nil }
            port = p
        } else {
            host = String(authority)
            port = nil
        }
        guard !host.isEmpty else { return nil }
        var p = String(rest[authorityEnd...])
        guard !p.contains("?"), !p.contains("#") else { return nil }
        while p.hasSuffix("/") { p.removeLast() }
        path = p
    }

    /// The URL without a trailing slash.
    public var normalized: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return "\(scheme)://\(h)\(port.map { ":\($0)" } ?? "")\(path)"
    }
}

/// `responses:` — how long the gateway keeps Responses API conversations (`store` not false) for
/// `previous_response_id`; `0s` keeps none (such requests then get a clear 400).
public struct ResponsesConfig: Decodable, Sendable, Equatable {
    public var retention: ConfigDuration

    enum CodingKeys: String, CodingKey { case retention }

    public init(retention: ConfigDuration = .seconds(30 * 86_400)) { self.retention = retention }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        retention = try c.decodeIfPresent(ConfigDuration.self, forKey: .retention) ?? .seconds(30 * 86_400)
        guard retention.milliseconds >= 0 else { throw ConfigValueError("retention must not be negative", key: "retention") }
    }
}
