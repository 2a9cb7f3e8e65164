import Hummingbird
import NIOCore
import NIOHTTP1
import SwitchyardCore

/// A catalog entry at run time: its effective configuration and the deployments that serve it.
/// An alias gets its target's deployments (shared: their health and load are the target's) with the
/// alias's own pricing, thinking and output cap where it sets them.
final class ModelRoute: Sendable {
    let config: ModelConfig
    let deployments: [Deployment]
    let strategy: RoutingStrategy
    let fallbacks: [String]
    let timeouts: TimeoutsConfig
    let retries: Int
    /// The proposers and aggregator of an ensemble.
    let ensemble: (proposers: [String], aggregator: String)?

    var name: String { config.name }

    init(config: ModelConfig, deployments: [Deployment], routing: RoutingConfig) {
        self.config = config
        self.deployments = deployments
        strategy = config.strategy
        fallbacks = config.fallbacks
        timeouts = config.timeouts.resolved(routing.timeouts)
        retries = config.retries ?? routing.retries
        if case .ensemble(let proposers, let aggregator) = config.kind {
            ensemble = (proposers, aggregator)
        } else {
            ensemble = nil
        }
    }

    /// The deployment to try next: among those that can take a request now (not cooling down, room in
    /// their own and their provider's requests per minute), preferring ones not yet tried for this
    /// request, chosen by the model's strategy. Nil when none can.
    func pick(excluding tried: Set<String>, now: Int64) -> Deployment? {
        let ready = deployments.filter { $0.availableAt(now) <= now && $0.provider.availableAt(now) <= now }
        let fresh = ready.filter { !tried.contains($0.id) }
        let candidates = fresh.isEmpty ? ready : fresh
        guard !candidates.isEmpty else { return nil }
        switch strategy {
        case .ordered:
            return candidates[0]
        case .weighted:
            return Self.weighted(candidates)
        case .leastBusy:
            let least = candidates.map(\.inFlight).min()!
            return Self.weighted(candidates.filter { $0.inFlight == least })
        case .lowestLatency:
            // Deployments without a measurement yet are tried first, so every one gets measured.
            let unmeasured = candidates.filter { $0.latencyMs == nil }
            if !unmeasured.isEmpty { return Self.weighted(unmeasured) }
            return candidates.min { ($0.latencyMs ?? 0) < ($1.latencyMs ?? 0) }
        }
    }

    /// When the soonest of this model's deployments can take a request again (epoch ms).
    func availableAt(_ now: Int64) -> Int64 {
        deployments.map { max($0.availableAt(now), $0.provider.availableAt(now)) }.min() ?? now
    }

    static func weighted(_ candidates: [Deployment]) -> Deployment {
        let total = candidates.reduce(0) { $0 + $1.weight }
        var rng = IDRandom()
        var r = Int.random(in: 0..<max(1, total), using: &rng)
        for d in candidates {
            if r < d.weight { return d }
            r -= d.weight
        }
        return candidates[candidates.count - 1]
    }
}

/// Where one request goes: the route, and the name the client used (a wildcard entry sends it upstream).
struct ResolvedModel: Sendable {
    let route: ModelRoute
    let clientModel: String

    /// The upstream id on `deployment`.
    func upstreamModel(_ deployment: Deployment) -> String { deployment.upstream ?? clientModel }
}

/// One attempt at a deployment.
struct Attempt: Sendable {
    let target: ResolvedModel
    let deployment: Deployment
    let lease: DeploymentLease

    var route: ModelRoute { target.route }
    var provider: Provider { deployment.provider }
    var upstreamModel: String { target.upstreamModel(deployment) }
    var clientModel: String { target.clientModel }
}

