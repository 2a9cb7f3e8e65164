/// Where one copy of a model is served: a provider, the id it knows the model by, and how much traffic
/// it takes.
public struct DeploymentConfig: Decodable, Sendable, Equatable {
    public var provider: String
    /// The id sent upstream; defaults to the catalog name (for a wildcard entry: the name the client sent).
    public var upstream: String?
    /// Share of traffic under the `weighted` strategy (relative to the model's other deployments).
    public var weight: Int
    /// A key of its own, instead of the provider's.
    public var apiKey: String?
    /// Requests per minute this deployment may receive (beside its provider's own limit).
    public var requestsPerMinute: Int?

    enum CodingKeys: String, CodingKey {
        case provider, upstream, weight
        case apiKey = "api_key"
        case requestsPerMinute = "requests_per_minute"
    }

    public init(provider: String, upstream: String? = nil, weight: Int = 1, apiKey: String? = nil, requestsPerMinute: Int? = nil) {
        self.provider = provider
        self.upstream = upstream
        self.weight = weight
        self.apiKey = apiKey
        self.requestsPerMinute = requestsPerMinute
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        provider = try c.decode(String.self, forKey: .provider)
        upstream = try c.decodeIfPresent(String.self, forKey: .upstream)
        weight = try c.decodeIfPresent(Int.self, forKey: .weight) ?? 1
        apiKey = try c.decodeIfPresent(String.self, forKey: .apiKey).flatMap { $0.isEmpty ? nil : $0 }
        requestsPerMinute = try c.decodeIfPresent(Int.self, forKey: .requestsPerMinute)
        guard weight >= 1, weight <= 1_000_000 else { throw ConfigValueError("weight must be 1–1000000", key: "weight") }
        if let r = requestsPerMinute, r < 1 { throw ConfigValueError("requests_per_minute must be at least 1", key: "requests_per_minute") }
    }
}

/// How a model's deployments share its traffic.
public enum RoutingStrategy: String, Decodable, Sendable, CaseIterable {
    /// At random, in proportion to the deployments' weights.
    case weighted
    /// The deployment with the fewest requests in flight.
    case leastBusy = "least_busy"
    /// The deployment with the lowest recent time to first byte.
    case lowestLatency = "lowest_latency"
    /// The first healthy deployment in the order listed.
    case ordered

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let strategy = Self(rawValue: text) else {
            throw ConfigValueError("unknown strategy `\(text)`; expected one of \(Self.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        self = strategy
    }
}

/// Timeouts a model sets for itself; those left out come from `routing.timeouts`.
public struct TimeoutOverrides: Decodable, Sendable, Equatable {
    public var connect: ConfigDuration?
    public var firstByte: ConfigDuration?
    public var idle: ConfigDuration?

    enum CodingKeys: String, CodingKey {
        case connect, idle
        case firstByte = "first_byte"
    }

    public init(connect: ConfigDuration? = nil, firstByte: ConfigDuration? = nil, idle: ConfigDuration? = nil) {
        self.connect = connect
        self.firstByte = firstByte
        self.idle = idle
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        connect = try c.decodeIfPresent(ConfigDuration.self, forKey: .connect)
        firstByte = try c.decodeIfPresent(ConfigDuration.self, forKey: .firstByte)
        idle = try c.decodeIfPresent(ConfigDuration.self, forKey: .idle)
        for (key, value) in [("connect", connect), ("first_byte", firstByte), ("idle", idle)] where (value?.milliseconds ?? 1) <= 0 {
            throw ConfigValueError("\(key) must be positive", key: key)
        }
    }

    /// These overrides on top of `defaults`.
    public func resolved(_ defaults: TimeoutsConfig) -> TimeoutsConfig {
        TimeoutsConfig(connect: connect ?? defaults.connect, firstByte: firstByte ?? defaults.firstByte, idle: idle ?? defaults.idle)
    }
}

/// A model in the catalog: the name clients send, and how it is served — by one or several
/// deployments, as another model under a second name (`alias_of`), or by a stack of models
/// (`type: ensemble`).
public struct ModelConfig: Decodable, Sendable {
    public enum Kind: Sendable, Equatable {
        /// Served by `deployments`.
        case deployments
        /// Another catalog model under this name.
        case alias(String)
        /// The proposers answer in parallel; the aggregator writes the final answer from their drafts.
        case ensemble(proposers: [String], aggregator: String)
    }

    /// The id clients send. May contain `*` wildcards (`claude-haiku-*`), matched after exact names, so
    /// model ids a tool picks on its own (Claude Code's background calls) still route.
    public var name: String
    public var kind: Kind
    /// Where the model is served (`provider` and `upstream` are the one-deployment shorthand).
    public var deployments: [DeploymentConfig]
    public var strategy: RoutingStrategy
    /// Other catalog models tried, in order, when every deployment of this one fails.
    public var fallbacks: [String]
    /// This model's own timeouts (the rest from `routing.timeouts`).
    public var timeouts: TimeoutOverrides
    /// Retries on other (or the same) deployments before giving up or falling back; default `routing.retries`.
    public var retries: Int?
    /// Thinking applied upstream when the client did not ask for any (e.g. `{budget_tokens: 8000}` makes
    /// a `claude-sonnet-4-6-thinking` catalog name think).
    public var thinking: Reasoning?
    /// Output cap used when the client gives none (Anthropic requires one). Default 8192.
    public var maxTokens: Int?
    /// Tier pricing: credits = the input tier's credits × multiplier.
    public var multiplier: Credits?
    /// Per-token pricing instead of tiers.
    public var price: TokenPrice?

    /// The provider of the first deployment (nil for aliases and ensembles).
    public var provider: String? { deployments.first?.provider }
    /// The upstream id of a single-deployment model.
    public var upstream: String? { deployments.count == 1 ? deployments[0].upstream : nil }

    enum CodingKeys: String, CodingKey {
        case name, provider, upstream, deployments, strategy, fallbacks, timeouts, retries, type, proposers, aggregator, thinking, multiplier, price
        case aliasOf = "alias_of"
        case maxTokens = "max_tokens"
    }

    enum ThinkingKeys: String, CodingKey {
        case type, effort
        case budgetTokens = "budget_tokens"
    }

    /// A model served by one deployment.
    public init(
        name: String, provider: String, upstream: String? = nil, thinking: Reasoning? = nil, maxTokens: Int? = nil,
        multiplier: Credits? = nil, price: TokenPrice? = nil
    ) {
        self.init(name: name, deployments: [DeploymentConfig(provider: provider, upstream: upstream)], thinking: thinking, maxTokens: maxTokens,
                  multiplier: multiplier, price: price)
    }

    /// A model served by several deployments (or, with `kind`, an alias or an ensemble).
    public init(
        name: String, kind: Kind = .deployments, deployments: [DeploymentConfig] = [], strategy: RoutingStrategy = .weighted,
        fallbacks: [String] = [], timeouts: TimeoutOverrides = .init(), retries: Int? = nil, thinking: Reasoning? = nil, maxTokens: Int? = nil,
        multiplier: Credits? = nil, price: TokenPrice? = nil
    ) {
        self.name = name
        self.kind = kind
        self.deployments = deployments
        self.strategy = strategy
        self.fallbacks = fallbacks
        self.timeouts = timeouts
        self.retries = retries
        self.thinking = thinking
        self.maxTokens = maxTokens
        self.multiplier = multiplier
        self.price = price
    }

    /// How requests to this model are charged.
    public var pricing: ModelPrice {
        if let price { return .perToken(price) }
        if let multiplier { return .tiers(multiplier: multiplier) }
        return .free
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        guard !name.isEmpty, name.utf8.count <= 256 else { throw ConfigValueError("model name must be 1–256 characters", key: "name") }
        let type = try c.decodeIfPresent(String.self, forKey: .type) ?? "standard"
        let aliasOf = try c.decodeIfPresent(String.self, forKey: .aliasOf)
        let provider = try c.decodeIfPresent(String.self, forKey: .provider)
        let listed = try c.decodeIfPresent([DeploymentConfig].self, forKey: .deployments)
        let hasProposers = c.contains(.proposers) || c.contains(.aggregator)
        switch type {
        case "ensemble":
            guard aliasOf == nil, provider == nil, listed == nil else {
                throw ConfigValueError("an ensemble is served by its proposers and aggregator: leave out provider, deployments and alias_of", key: "type")
            }
            let proposers = try c.decodeIfPresent([String].self, forKey: .proposers) ?? []
            guard !proposers.isEmpty else { throw ConfigValueError("an ensemble needs `proposers` (one or more catalog models)", key: "proposers") }
            guard let aggregator = try c.decodeIfPresent(String.self, forKey: .aggregator) else {
                throw ConfigValueError("an ensemble needs an `aggregator` (a catalog model)", key: "aggregator")
            }
            kind = .ensemble(proposers: proposers, aggregator: aggregator)
            deployments = []
        case "standard":
            guard !hasProposers else { throw ConfigValueError("`proposers` and `aggregator` go with `type: ensemble`", key: c.contains(.proposers) ? "proposers" : "aggregator") }
            if let aliasOf {
                guard provider == nil, listed == nil, !c.contains(.upstream) else {
                    throw ConfigValueError("an alias is served as its target: leave out provider, upstream and deployments", key: "alias_of")
                }
                kind = .alias(aliasOf)
                deployments = []
            } else if let provider {
                guard listed == nil else { throw ConfigValueError("give either `provider` (one deployment) or `deployments`, not both", key: "deployments") }
                kind = .deployments
                deployments = [DeploymentConfig(provider: provider, upstream: try c.decodeIfPresent(String.self, forKey: .upstream))]
            } else if let listed {
                guard !listed.isEmpty else { throw ConfigValueError("`deployments` must list at least one deployment", key: "deployments") }
                guard !c.contains(.upstream) else { throw ConfigValueError("with `deployments`, each deployment names its own `upstream`", key: "upstream") }
                kind = .deployments
                deployments = listed
            } else {
                throw ConfigValueError("a model needs `provider`, `deployments`, `alias_of` or `type: ensemble`", key: "provider")
            }
        default:
            throw ConfigValueError("type must be standard or ensemble, found `\(type)`", key: "type")
        }
        strategy = try c.decodeIfPresent(RoutingStrategy.self, forKey: .strategy) ?? .weighted
        fallbacks = try c.decodeIfPresent([String].self, forKey: .fallbacks) ?? []
        timeouts = try c.decodeIfPresent(TimeoutOverrides.self, forKey: .timeouts) ?? .init()
        retries = try c.decodeIfPresent(Int.self, forKey: .retries)
        if let r = retries, !(0...10).contains(r) { throw ConfigValueError("retries must be 0–10", key: "retries") }
        maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens)
        multiplier = try c.decodeIfPresent(Credits.self, forKey: .multiplier)
        price = try c.decodeIfPresent(TokenPrice.self, forKey: .price)
        if multiplier != nil, price != nil {
            throw ConfigValueError("a model is priced either by `multiplier` (input tiers) or by `price` (per token), not both", key: "price")
        }
        if let m = maxTokens, m < 1 { throw ConfigValueError("max_tokens must be positive", key: "max_tokens") }
        if c.contains(.thinking) {
            let t = try c.nestedContainer(keyedBy: ThinkingKeys.self, forKey: .thinking)
            let type = try t.decodeIfPresent(String.self, forKey: .type)
            if let budget = try t.decodeIfPresent(Int.self, forKey: .budgetTokens) {
                guard budget >= 1024 else { throw ConfigValueError("thinking.budget_tokens must be at least 1024", at: [.key("thinking"), .key("budget_tokens")]) }
                thinking = .budget(budget)
            } else if let effort = try t.decodeIfPresent(String.self, forKey: .effort) {
                thinking = .effort(effort)
            } else if type == "disabled" {
                thinking = .disabled
            } else if type == "enabled" || type == "adaptive" {
                thinking = .effort("medium")
            } else {
                throw ConfigValueError("thinking needs budget_tokens, effort, or type: disabled", key: "thinking")
            }
        } else {
            thinking = nil
        }
    }
}
