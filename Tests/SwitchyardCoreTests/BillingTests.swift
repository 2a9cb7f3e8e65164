import Foundation
import NIOCore
import Testing
@testable import SwitchyardCore

@Suite("Credits and pricing")
struct BillingTests {
    @Test(arguments: [
        ("750", 750_000_000), ("1.25", 1_250_000), ("0.000125", 125), ("-3", -3_000_000), ("2.5", 2_500_000), ("0", 0), (" 7 ", 7_000_000),
    ] as [(String, Int64)])
    func parsesCreditAmountsExactly(text: String, micros: Int64) {
        #expect(Credits(parsing: text)?.micros == micros)
    }

    @Test(arguments: ["", "1.", ".5", "1.0000001", "1e3", "abc", "1,5", "--1", "99999999999999"])
    func rejectsMalformedAmounts(text: String) {
        #expect(Credits(parsing: text) == nil)
    }

    @Test func printsAmountsWithoutFloatingPoint() {
        #expect(Credits(micros: 750_000_000).description == "750")
        #expect(Credits(micros: 1_250_000).description == "1.25")
        #expect(Credits(micros: 125).description == "0.000125")
        #expect(Credits(micros: -2_500_000).description == "-2.5")
        #expect(Credits(micros: 100_000).json == .number("0.1"))
    }

    let tiers = PricingConfig(inputTiers: [
        InputTier(maxInputTokens: 16_000, credits: .credits(1)), InputTier(maxInputTokens: 32_000, credits: .credits(2)),
        InputTier(maxInputTokens: 128_000, credits: .credits(5)), InputTier(maxInputTokens: nil, credits: .credits(10)),
    ])

    @Test(arguments: [(0, 1), (1, 1), (16_000, 1), (16_001, 2), (32_000, 2), (32_001, 5), (128_000, 5), (128_001, 10), (2_000_000, 10)])
    func tiersApplyTheFirstMatchingTier(tokens: Int, credits: Int64) {
        #expect(tiers.tierCredits(inputTokens: tokens) == .credits(credits))
    }

    @Test func tierCostIsBaseTimesMultiplierAndOutputIsFree() {
        let fast = ModelPrice.tiers(multiplier: .credits(2))
        let highest = ModelPrice.tiers(multiplier: .credits(10))
        #expect(CostCalculator.cost(fast, usage: TokenUsage(inputTokens: 20_000, outputTokens: 90_000), pricing: tiers) == 4_000_000)
        #expect(CostCalculator.cost(highest, usage: TokenUsage(inputTokens: 200_000), pricing: tiers) == 100_000_000)
        let half = ModelPrice.tiers(multiplier: Credits(parsing: "0.5")!)
        #expect(CostCalculator.cost(half, usage: TokenUsage(inputTokens: 10), pricing: tiers) == 500_000)
        // An explicit zero is zero tokens: the first tier, not "unknown".
        #expect(CostCalculator.cost(fast, usage: TokenUsage(), pricing: tiers) == 2_000_000)
        #expect(CostCalculator.cost(.free, usage: TokenUsage(inputTokens: 1_000_000), pricing: tiers) == 0)
    }

    @Test func perTokenCostIsExactAndRoundsUpOnce() {
        let gpt = ModelPrice.perToken(TokenPrice(inputPerMillion: Credits(parsing: "1.25")!, outputPerMillion: .credits(10), cachedInputPerMillion: Credits(parsing: "0.125")!))
        // 1000 uncached × 1.25 µc + 1000 cached × 0.125 µc + 500 × 10 µc = 1250 + 125 + 5000
        #expect(CostCalculator.cost(gpt, usage: TokenUsage(inputTokens: 2000, outputTokens: 500, cachedInputTokens: 1000), pricing: tiers) == 6375)
        // One cached token costs 0.125 µc: rounded up to 1 µc, once per request.
        #expect(CostCalculator.cost(gpt, usage: TokenUsage(inputTokens: 1, cachedInputTokens: 1), pricing: tiers) == 1)
        #expect(CostCalculator.cost(gpt, usage: TokenUsage(), pricing: tiers) == 0)
        #expect(CostCalculator.maxCost(gpt, inputTokens: 1000, outputTokens: 100, pricing: tiers) == 1250 + 1000)
        // Absurd counts saturate instead of overflowing.
        let pricey = ModelPrice.perToken(TokenPrice(inputPerMillion: .credits(1_000_000), outputPerMillion: .credits(1_000_000)))
        #expect(CostCalculator.maxCost(pricey, inputTokens: Int.max / 2, outputTokens: 0, pricing: tiers) > 0)
    }

    @Test func spendOrderIsPlanThenBonusThenTopUp() {
        let now: Int64 = 1_000
        let buckets = [
            BucketBalance(id: "topup-old", kind: .topup, balance: 5, expiresAt: nil, createdAt: 1),
            BucketBalance(id: "bonus-forever", kind: .bonus, balance: 5, expiresAt: nil, createdAt: 1),
            BucketBalance(id: "plan-late", kind: .plan, balance: 5, expiresAt: 9_000, createdAt: 2),
            BucketBalance(id: "topup-new", kind: .topup, balance: 5, expiresAt: nil, createdAt: 2),
            BucketBalance(id: "plan-soon", kind: .plan, balance: 5, expiresAt: 5_000, createdAt: 3),
            BucketBalance(id: "bonus-soon", kind: .bonus, balance: 5, expiresAt: 2_000, createdAt: 3),
            BucketBalance(id: "plan-expired", kind: .plan, balance: 5, expiresAt: 500, createdAt: 0),
            BucketBalance(id: "empty", kind: .plan, balance: 0, expiresAt: 3_000, createdAt: 0),
        ]
        #expect(CreditAllocator.spendOrder(buckets).map(\.id).prefix(7) == [
            "plan-expired", "empty", "plan-soon", "plan-late", "bonus-soon", "bonus-forever", "topup-old",
        ])
        let split = CreditAllocator.allocate(17, from: buckets, now: now)
        #expect(split?.map(\.bucket) == ["plan-soon", "plan-late", "bonus-soon", "bonus-forever"])
        #expect(split?.map(\.amount) == [5, 5, 5, 2])
        #expect(CreditAllocator.available(buckets, now: now) == 30)
        #expect(CreditAllocator.allocate(31, from: buckets, now: now) == nil)
    }

    @Test func monthlyPeriodsClampToMonthEnds() throws {
        let anchor = try #require(EpochClock.parseISO8601("2026-01-31T10:00:00Z"))
        func period(_ at: String) -> (String, String) {
            let p = BillingPeriod.containing(EpochClock.parseISO8601(at)!, anchor: anchor)
            return (EpochClock.iso8601(p.start), EpochClock.iso8601(p.end))
        }
        #expect(period("2026-01-31T10:00:00Z") == ("2026-01-31T10:00:00Z", "2026-02-28T10:00:00Z"))
        #expect(period("2026-02-28T09:59:59Z") == ("2026-01-31T10:00:00Z", "2026-02-28T10:00:00Z"))
        #expect(period("2026-03-15T00:00:00Z") == ("2026-02-28T10:00:00Z", "2026-03-31T10:00:00Z"))
        #expect(period("2026-04-30T10:00:00Z") == ("2026-04-30T10:00:00Z", "2026-05-31T10:00:00Z"))
        #expect(period("2027-02-01T00:00:00Z") == ("2027-01-31T10:00:00Z", "2027-02-28T10:00:00Z"))
    }

    @Test func inputBoundsCoverTextAndAddMediaAllowances() {
        let text = ByteBuffer(string: #"{"model":"m","messages":[{"role":"user","content":"hello there"}]}"#)
        #expect(UsageBounds.inputTokens(text) == text.readableBytes + UsageBounds.framingTokens)
        let image = ByteBuffer(string: #"{"messages":[{"role":"user","content":[{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}"#)
        #expect(UsageBounds.mediaParts(image) == (1, 0))
        let doc = ByteBuffer(string: #"{"messages":[{"role":"user","content":[{"type":"document","source":{"type":"url","url":"https://x/y.pdf"}}]}]}"#)
        #expect(UsageBounds.mediaParts(doc) == (0, 1))
        let gemini = ByteBuffer(string: #"{"contents":[{"parts":[{"inlineData":{"mimeType":"image/png","data":"AA=="}},{"fileData":{"fileUri":"gs://x"}}]}]}"#)
        #expect(UsageBounds.mediaParts(gemini) == (1, 1))
        // The word alone, as text, is not a part.
        let plain = ByteBuffer(string: #"{"messages":[{"role":"user","content":"image"}]}"#)
        #expect(UsageBounds.mediaParts(plain) == (0, 0))
    }

    @Test func outputCapsAreReadPerFormat() {
        #expect(UsageBounds.outputCap(ByteBuffer(string: #"{"max_completion_tokens":300,"max_tokens":10}"#), format: .openAI) == (300, 0))
        #expect(UsageBounds.outputCap(ByteBuffer(string: #"{"messages":[]}"#), format: .openAI) == (nil, 0))
        #expect(UsageBounds.outputCap(ByteBuffer(string: #"{"max_tokens":4096}"#), format: .anthropic) == (4096, 0))
        let gemini = #"{"generationConfig":{"maxOutputTokens":1000,"thinkingConfig":{"thinkingBudget":2048}}}"#
        #expect(UsageBounds.outputCap(ByteBuffer(string: gemini), format: .gemini) == (1000, 2048))
        #expect(UsageBounds.outputCap(ByteBuffer(string: #"{"contents":[]}"#), format: .gemini) == (nil, UsageBounds.geminiDynamicThinking))
    }

    @Test func billingRules() {
        let price = ModelPrice.perToken(TokenPrice(inputPerMillion: .credits(1), outputPerMillion: .credits(4)))
        let reported = TokenUsage(inputTokens: 1000, outputTokens: 100)
        let estimate = TokenUsage(inputTokens: 900, outputTokens: 50)
        func decide(_ outcome: BilledOutcome, _ reported: TokenUsage?, _ policy: CancelledStreamPolicy = .charge) -> BillingDecision {
            BillingRules.decide(price: price, pricing: tiers, reserved: 10_000, outcome: outcome, reported: reported, estimate: estimate, policy: policy)
        }
        #expect(decide(.completed, reported) == BillingDecision(refund: false, cost: 1400, usage: reported, estimated: false))
        #expect(decide(.completed, nil) == BillingDecision(refund: false, cost: 1100, usage: estimate, estimated: true))
        #expect(decide(.completed, TokenUsage()).cost == 0, "an explicit zero is zero")
        #expect(decide(.failedBeforeContent, reported).refund)
        #expect(decide(.failedAfterContent, TokenUsage(inputTokens: 1000, outputTokens: 1)).cost == 1000 + 50 * 4)
        #expect(decide(.clientLeft, nil, .charge).cost == 10_000, "under `charge`, a departed client pays the hold")
        #expect(decide(.clientLeft, nil, .chargeUsed).cost == 900 + 200)
        #expect(decide(.interrupted, nil, .charge).cost == 10_000)
        #expect(decide(.interrupted, nil, .chargeUsed).refund)
        // "Used" never exceeds the hold.
        let capped = BillingRules.decide(price: price, pricing: tiers, reserved: 500, outcome: .failedAfterContent, reported: reported, estimate: estimate, policy: .charge)
        #expect(capped.cost == 500)
    }
}

@Suite("Billing configuration")
struct BillingConfigTests {
    func load(_ yaml: String) throws -> GatewayConfig { try YAMLConfigDecoder(environment: [:]).decode(GatewayConfig.self, from: yaml) }
    func error(_ yaml: String) -> ConfigError? {
        do {
            _ = try load(yaml)
            return nil
        } catch {
            return error as? ConfigError
        }
    }

    let yaml = """
        providers: [{name: p, type: mock}]
        pricing:
          input_tiers:
            - {max_input_tokens: 16000, credits: 1}
            - {max_input_tokens: 32000, credits: 2}
            - {max_input_tokens: 128000, credits: 5}
            - {credits: 10}
        models:
          - {name: omni-fast, provider: p, multiplier: 2}
          - {name: gpt-5.1, provider: p, price: {input_per_million: 1.25, output_per_million: 10, cached_input_per_million: 0.125}}
          - {name: free-model, provider: p}
        plans:
          - {name: pro, monthly_credits: 750, signup_credits: 0}
          - {name: free, signup_credits: 100}
        default_plan: free
        billing:
          cancelled_streams: charge_used
        """

    @Test func decodesTheDocumentedShape() throws {
        let c = try load(yaml)
        #expect(c.pricing.inputTiers.count == 4 && c.pricing.inputTiers[3].maxInputTokens == nil)
        #expect(c.models[0].pricing == .tiers(multiplier: .credits(2)))
        #expect(c.models[1].pricing == .perToken(TokenPrice(inputPerMillion: Credits(parsing: "1.25")!, outputPerMillion: .credits(10), cachedInputPerMillion: Credits(parsing: "0.125")!)))
        #expect(c.models[2].pricing == .free)
        #expect(c.plan(named: "pro")?.monthlyCredits == .credits(750) && c.plan(named: "free")?.signupCredits == .credits(100))
        #expect(c.billing.cancelledStreams == .chargeUsed)
        #expect(try load("").billing.cancelledStreams == .charge)
    }

    @Test func mistakesAreNamed() {
        #expect(error(yaml.replacingOccurrences(of: "multiplier: 2}", with: "multiplier: 2, price: {input_per_million: 1, output_per_million: 1}}"))?.message.contains("not both") == true)
        #expect(error(yaml.replacingOccurrences(of: "- {credits: 10}", with: "- {max_input_tokens: 999999, credits: 10}"))?.message.contains("last tier") == true)
        #expect(error(yaml.replacingOccurrences(of: "{max_input_tokens: 32000", with: "{max_input_tokens: 100"))?.message.contains("grow") == true)
        #expect(error(yaml.replacingOccurrences(of: "monthly_credits: 750", with: "monthly_credits: 7.5000001"))?.message.contains("at most 6 decimals") == true)
        #expect(error(yaml.replacingOccurrences(of: "cancelled_streams: charge_used", with: "cancelled_streams: refund")) != nil)
        let noTiers = yaml.replacingOccurrences(of: "pricing:\n  input_tiers:\n    - {max_input_tokens: 16000, credits: 1}\n    - {max_input_tokens: 32000, credits: 2}\n    - {max_input_tokens: 128000, credits: 5}\n    - {credits: 10}\n", with: "")
        #expect(error(noTiers)?.message.contains("pricing.input_tiers") == true)
        #expect(error(yaml.replacingOccurrences(of: "multiplier: 2", with: "multiplier: -2"))?.message.contains("negative") == true)
    }
}
