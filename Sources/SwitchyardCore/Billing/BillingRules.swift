/// How a request that held credits ended, as far as billing is concerned.
public enum BilledOutcome: Sendable, Equatable {
    /// The provider's answer arrived in full (whether or not the client read all of it).
    case completed
    /// Nothing reached the client: an upstream error status, a timeout, an unreachable provider, a
    /// gateway error. Platform-side failures are free.
    case failedBeforeContent
    /// The provider's stream broke after content had reached the client.
    case failedAfterContent
    /// The client disconnected before the answer was complete (and, under `charge`, the gateway could
    /// not read the provider's answer to its end).
    case clientLeft
    /// Found still open when the gateway started (it stopped without settling: a crash or kill -9).
    case interrupted
}

/// What a request is charged, and the usage its usage row records.
public struct BillingDecision: Sendable, Equatable {
    /// Give the whole hold back (nothing is charged).
    public var refund: Bool
    /// Micro-credits to charge (may exceed the hold only for `.completed`, when a provider reported more
    /// than the bounds allowed).
    public var cost: Int64
    public var usage: TokenUsage
    /// Whether `usage` is the gateway's estimate rather than the provider's report.
    public var estimated: Bool
}

/// The billing policy in one place:
/// - a completed request costs exactly what its reported usage prices at (an explicit zero is zero);
///   without a report, its estimated usage;
/// - a platform-side failure before any content reached the client is refunded in full;
/// - a stream that broke after content reached the client costs what was used (the input and the
///   output relayed so far), at most the hold;
/// - a client that left costs, under `charge`, the hold (the gateway reads the answer to its end where
///   it can, and then the request counts as completed), and under `charge_used`, what was used;
/// - a request found open after a restart costs the hold under `charge` and nothing under
///   `charge_used` (nothing used is known, and the stop was the platform's).
public enum BillingRules {
    public static func decide(
        price: ModelPrice, pricing: PricingConfig, reserved: Int64, outcome: BilledOutcome,
        reported: TokenUsage?, estimate: TokenUsage, policy: CancelledStreamPolicy
    ) -> BillingDecision {
        func exact() -> BillingDecision {
            let usage = reported ?? estimate
            return BillingDecision(refund: false, cost: CostCalculator.cost(price, usage: usage, pricing: pricing), usage: usage, estimated: reported == nil)
        }
        func used() -> BillingDecision {
            var usage = reported ?? estimate
            if reported == nil || reported!.inputTokens == 0 { usage.inputTokens = estimate.inputTokens }
            usage.outputTokens = max(reported?.outputTokens ?? 0, estimate.outputTokens)
            let cost = min(reserved, CostCalculator.cost(price, usage: usage, pricing: pricing))
            return BillingDecision(refund: false, cost: cost, usage: usage, estimated: reported == nil || usage != reported)
        }
        switch outcome {
        case .completed:
            return exact()
        case .failedBeforeContent:
            return BillingDecision(refund: true, cost: 0, usage: reported ?? TokenUsage(), estimated: false)
        case .failedAfterContent:
            return used()
        case .clientLeft:
            switch policy {
            case .charge: return BillingDecision(refund: false, cost: reserved, usage: reported ?? estimate, estimated: reported == nil)
            case .chargeUsed: return used()
            }
        case .interrupted:
            switch policy {
            case .charge: return BillingDecision(refund: false, cost: reserved, usage: TokenUsage(), estimated: true)
            case .chargeUsed: return BillingDecision(refund: true, cost: 0, usage: TokenUsage(), estimated: true)
            }
        }
    }
}
