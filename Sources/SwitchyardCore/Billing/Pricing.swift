/// One input-token tier: requests with at most `maxInputTokens` input tokens cost `credits` (times the
/// model's multiplier). The last tier has no maximum.
public struct InputTier: Decodable, Sendable, Equatable {
    public var maxInputTokens: Int?
    public var credits: Credits

    enum CodingKeys: String, CodingKey {
        case maxInputTokens = "max_input_tokens"
        case credits
    }

    public init(maxInputTokens: Int?, credits: Credits) {
        self.maxInputTokens = maxInputTokens
        self.credits = credits
    }
}

/// `pricing:`: the tiers models with a `multiplier` are charged by.
public struct PricingConfig: Decodable, Sendable, Equatable {
    public var inputTiers: [InputTier]

    enum CodingKeys: String, CodingKey { case inputTiers = "input_tiers" }

    public init(inputTiers: [InputTier] = []) { self.inputTiers = inputTiers }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        inputTiers = try c.decodeIfPresent([InputTier].self, forKey: .inputTiers) ?? []
        var previous = -1
        for (i, tier) in inputTiers.enumerated() {
            let path: [ConfigValueError.Component] = [.key("input_tiers"), .index(i)]
            if let max = tier.maxInputTokens {
                guard max > previous, max >= 0 else {
                    throw ConfigValueError("max_input_tokens must grow from tier to tier", at: path + [.key("max_input_tokens")])
                }
                previous = max
            } else if i != inputTiers.count - 1 {
                throw ConfigValueError("only the last tier may leave out max_input_tokens", at: path)
            }
        }
        if let last = inputTiers.last, last.maxInputTokens != nil {
            throw ConfigValueError("the last tier must leave out max_input_tokens, so every request has a price", at: [.key("input_tiers"), .index(inputTiers.count - 1)])
        }
    }

    /// The base credits for a request with `inputTokens` input tokens (the first tier that fits).
    public func tierCredits(inputTokens: Int) -> Credits {
        for tier in inputTiers where tier.maxInputTokens.map({ inputTokens <= $0 }) ?? true { return tier.credits }
        return inputTiers.last?.credits ?? .zero
    }
}

/// Per-token prices, in credits per million tokens.
public struct TokenPrice: Decodable, Sendable, Equatable {
    public var inputPerMillion: Credits
    public var outputPerMillion: Credits
    /// Cache reads; defaults to the input price.
    public var cachedInputPerMillion: Credits

    enum CodingKeys: String, CodingKey {
        case inputPerMillion = "input_per_million"
        case outputPerMillion = "output_per_million"
        case cachedInputPerMillion = "cached_input_per_million"
    }

    public init(inputPerMillion: Credits, outputPerMillion: Credits, cachedInputPerMillion: Credits? = nil) {
        self.inputPerMillion = inputPerMillion
        self.outputPerMillion = outputPerMillion
        self.cachedInputPerMillion = cachedInputPerMillion ?? inputPerMillion
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let input = try c.decode(Credits.self, forKey: .inputPerMillion)
        self.init(
            inputPerMillion: input, outputPerMillion: try c.decode(Credits.self, forKey: .outputPerMillion),
            cachedInputPerMillion: try c.decodeIfPresent(Credits.self, forKey: .cachedInputPerMillion))
    }
}

/// How one model is charged.
public enum ModelPrice: Sendable, Equatable {
    /// Neither `multiplier` nor `price`: costs nothing.
    case free
    /// Tier credits (by input tokens) × multiplier; output is free.
    case tiers(multiplier: Credits)
    case perToken(TokenPrice)

    public var isFree: Bool { self == .free }
}

/// What a client disconnect costs (`billing.cancelled_streams`).
public enum CancelledStreamPolicy: String, Decodable, Sendable {
    /// The request is charged in full: the gateway keeps reading the provider's answer to learn the
    /// exact usage, or charges the reservation when it cannot.
    case charge
    /// The provider request is cancelled at once and only what was used is charged: the input and the
    /// output produced until the disconnect.
    case chargeUsed = "charge_used"
}

/// `billing:`.
public struct BillingConfig: Decodable, Sendable, Equatable {
    public var cancelledStreams: CancelledStreamPolicy
    /// How long reservations and settlements decided in memory wait (journaled) before they are
    /// written to the database together; 0 decides every one in a database transaction on the request path.
    public var ledgerWriteDelay: ConfigDuration

    public static let defaultLedgerWriteDelay = ConfigDuration(milliseconds: 5)

    enum CodingKeys: String, CodingKey {
        case cancelledStreams = "cancelled_streams"
        case ledgerWriteDelay = "ledger_write_delay"
    }

    public init(cancelledStreams: CancelledStreamPolicy = .charge, ledgerWriteDelay: ConfigDuration = Self.defaultLedgerWriteDelay) {
        self.cancelledStreams = cancelledStreams
        self.ledgerWriteDelay = ledgerWriteDelay
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        cancelledStreams = try c.decodeIfPresent(CancelledStreamPolicy.self, forKey: .cancelledStreams) ?? .charge
        ledgerWriteDelay = try c.decodeIfPresent(ConfigDuration.self, forKey: .ledgerWriteDelay) ?? Self.defaultLedgerWriteDelay
        guard ledgerWriteDelay <= .init(milliseconds: 3_600_000) else {
            throw ConfigValueError("ledger_write_delay must be at most 1h", at: [.key("ledger_write_delay")])
        }
    }
}

/// Costs in micro-credits.
public enum CostCalculator {
    /// The exact cost of a request from the usage its provider reported. An explicit zero is zero.
    public static func cost(_ price: ModelPrice, usage: TokenUsage, pricing: PricingConfig) -> Int64 {
        switch price {
        case .free:
            return 0
        case .tiers(let multiplier):
            let base = pricing.tierCredits(inputTokens: max(0, usage.inputTokens)).micros
            return Credits.multiply(base, byFactor: multiplier.micros)
        case .perToken(let p):
            let cached = min(max(0, usage.cachedInputTokens), max(0, usage.inputTokens))
            let uncached = max(0, usage.inputTokens) - cached
            return perToken(p, uncached: uncached, cached: cached, output: max(0, usage.outputTokens))
        }
    }

    /// The most a request can cost: `inputTokens` and `outputTokens` are upper bounds.
    public static func maxCost(_ price: ModelPrice, inputTokens: Int, outputTokens: Int, pricing: PricingConfig) -> Int64 {
        switch price {
        case .free: return 0
        case .tiers: return cost(price, usage: TokenUsage(inputTokens: inputTokens), pricing: pricing)
        case .perToken(let p): return perToken(p, uncached: inputTokens, cached: 0, output: outputTokens)
        }
    }

    static func perToken(_ p: TokenPrice, uncached: Int, cached: Int, output: Int) -> Int64 {
        // Prices are µc per million tokens, so the sum is exact in millionths of a µc; round up once.
        let raw = Int128(uncached) * Int128(p.inputPerMillion.micros) + Int128(cached) * Int128(p.cachedInputPerMillion.micros)
            + Int128(output) * Int128(p.outputPerMillion.micros)
        let (q, r) = raw.quotientAndRemainder(dividingBy: 1_000_000)
        let micros = r > 0 ? q + 1 : q
        return micros > Int128(Int64.max / 4) ? Int64.max / 4 : Int64(micros)
    }
}
