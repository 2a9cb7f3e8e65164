/// Request limits; nil means unlimited.
public struct LimitValues: Sendable, Equatable, Codable {
    public var requestsPerMinute: Int?
    public var requestsPerDay: Int?
    public var concurrentRequests: Int?
    public var tokensPerMinute: Int?

    public init(requestsPerMinute: Int? = nil, requestsPerDay: Int? = nil, concurrentRequests: Int? = nil, tokensPerMinute: Int? = nil) {
        self.requestsPerMinute = requestsPerMinute
        self.requestsPerDay = requestsPerDay
        self.concurrentRequests = concurrentRequests
        self.tokensPerMinute = tokensPerMinute
    }

    enum CodingKeys: String, CodingKey {
        case requestsPerMinute = "requests_per_minute"
        case requestsPerDay = "requests_per_day"
        case concurrentRequests = "concurrent_requests"
        case tokensPerMinute = "tokens_per_minute"
    }

    public var isEmpty: Bool { requestsPerMinute == nil && requestsPerDay == nil && concurrentRequests == nil && tokensPerMinute == nil }

    /// Checks every value is positive; `path` locates errors.
    public func validate(at path: [ConfigValueError.Component] = []) throws {
        for (key, value) in [("requests_per_minute", requestsPerMinute), ("requests_per_day", requestsPerDay),
                             ("concurrent_requests", concurrentRequests), ("tokens_per_minute", tokensPerMinute)] {
            if let v = value, v < 1 { throw ConfigValueError("\(key) must be at least 1 (leave it out for no limit)", at: path + [.key(key)]) }
        }
    }
}

/// A plan: which models its users may call and how fast.
public struct PlanConfig: Decodable, Sendable {
    public var name: String
    /// Catalog model names or `*` patterns; `["*"]` allows every model.
    public var models: [String]
    public var limits: LimitValues
    /// Granted at the start of each monthly billing period; expire at its end.
    public var monthlyCredits: Credits?
    /// Granted once, the first time a user joins the plan (a bonus that does not expire).
    public var signupCredits: Credits?

    enum CodingKeys: String, CodingKey { case name, models }

    public init(name: String, models: [String] = ["*"], limits: LimitValues = .init(), monthlyCredits: Credits? = nil, signupCredits: Credits? = nil) {
        self.name = name
        self.models = models
        self.limits = limits
        self.monthlyCredits = monthlyCredits
        self.signupCredits = signupCredits
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: AnyKey.self)
        let allowed: Set<String> = [
            "name", "models", "requests_per_minute", "requests_per_day", "concurrent_requests", "tokens_per_minute",
            "monthly_credits", "signup_credits",
        ]
        for key in c.allKeys where !allowed.contains(key.stringValue) {
            throw ConfigValueError("unknown key `\(key.stringValue)`", key: key.stringValue)
        }
        name = try c.decode(String.self, forKey: AnyKey("name"))
        models = try c.decodeIfPresent([String].self, forKey: AnyKey("models")) ?? ["*"]
        limits = LimitValues(
            requestsPerMinute: try c.decodeIfPresent(Int.self, forKey: AnyKey("requests_per_minute")),
            requestsPerDay: try c.decodeIfPresent(Int.self, forKey: AnyKey("requests_per_day")),
            concurrentRequests: try c.decodeIfPresent(Int.self, forKey: AnyKey("concurrent_requests")),
            tokensPerMinute: try c.decodeIfPresent(Int.self, forKey: AnyKey("tokens_per_minute")))
        monthlyCredits = try c.decodeIfPresent(Credits.self, forKey: AnyKey("monthly_credits"))
        signupCredits = try c.decodeIfPresent(Credits.self, forKey: AnyKey("signup_credits"))
        guard !name.isEmpty else { throw ConfigValueError("plan name must not be empty", key: "name") }
        try limits.validate()
    }

    /// Whether this plan lets its users call `model`.
    public func allows(_ model: String) -> Bool { Self.list(models, allows: model) }

    /// Whether a list of model names and `*` patterns includes `model`.
    public static func list(_ list: [String], allows model: String) -> Bool {
        list.contains { $0 == "*" || $0 == model || ModelConfig.glob($0, model) }
    }
}

/// A coding key for any string (used where extra keys are checked by hand).
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
