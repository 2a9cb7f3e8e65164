import SwitchyardCore

/// Routing's decisions for one call, with no waiting in them: which deployment to try next and after
/// how long, and when to give up. ``Gateway/route(_:requestID:_:)`` drives it with timers and awaits;
/// a request path that runs without a task can drive the same decisions from scheduled callbacks.
///
/// The model's deployments are tried first, then each fallback's, each model with its own retries.
/// Every attempt after the first waits a full-jitter exponential backoff, at least the provider's
/// `retry-after` when the same deployment is tried again (a longer `retry-after` than
/// `routing.max_retry_wait` moves on to the next model instead). When no deployment can take the call
/// now (cooling down, or out of requests for the minute), it waits for the soonest one if that is
/// within `max_retry_wait`, at most three times per model.
struct RoutePlan {
    enum Step {
        /// Ask again after this long.
        case wait(milliseconds: Int64)
        /// Send the call to this deployment; its lease is taken. Report anything but success to ``record(_:of:)``.
        case attempt(Attempt)
        /// Nothing is left to try.
        case finished(RoutingFailure)
    }

    enum Verdict {
        /// Ask ``next(now:)`` for the next step.
        case goOn
        /// The failure is not worth another try: routing ends with it.
        case stop(RoutingFailure)
    }

    private let chain: [ResolvedModel]
    private let maxRetryWaitMs: Int64
    private let cooldown: CooldownConfig
    /// The model of `chain` being tried, and its state.
    private var link = 0
    private var tried = Set<String>()
    private var attemptsLeft: Int
    private var waits = 0
    /// Across the chain.
    private var attemptsMade = 0
    private var last: AttemptOutcome<Never>?
    private var lastDeployment: String?
    private var lastRetryAfterMs: Int64?
    private var soonest: Int64?
    /// Picked before a backoff; its lease is taken when the wait is over.
    private var afterBackoff: Deployment?

    /// `models` resolves the target's fallbacks (names not in it are skipped).
    init(target: ResolvedModel, models: [String: ModelRoute], routing: RoutingConfig) {
        var chain = [target]
        for name in target.route.fallbacks {
            if let route = models[name] { chain.append(ResolvedModel(route: route, clientModel: name)) }
        }
        self.chain = chain
        maxRetryWaitMs = routing.maxRetryWait.milliseconds
        cooldown = routing.cooldown
        attemptsLeft = 1 + target.route.retries
    }

    /// What to do next, at `now` (epoch milliseconds).
    mutating func next(now: Int64) -> Step {
        while link < chain.count {
            guard attemptsLeft > 0 else {
                nextModel()
                continue
            }
            let resolved = chain[link]
            let deployment: Deployment
            if let picked = afterBackoff {
                afterBackoff = nil
                deployment = picked
            } else {
                guard let picked = resolved.route.pick(excluding: tried, now: now) else {
                    // Everything is cooling down or out of requests for the minute: wait if it is soon.
                    let at = resolved.route.availableAt(now)
                    soonest = min(soonest ?? .max, at)
                    let wait = at - now
                    guard wait > 0, wait <= maxRetryWaitMs, waits < 3 else {
                        nextModel()
                        continue
                    }
                    waits += 1
                    return .wait(milliseconds: wait)
                }
                if attemptsMade > 0 {
                    var delay = Gateway.backoff(attempt: attemptsMade)
                    if picked.id == lastDeployment, let retryAfter = lastRetryAfterMs {
                        guard retryAfter <= maxRetryWaitMs else {
                            nextModel()
                            continue
                        }
                        delay = max(delay, retryAfter)
                    }
                    afterBackoff = picked
                    return .wait(milliseconds: delay)
                }
                deployment = picked
            }
            // No room in the deployment's or its provider's minute after all: pick again.
            guard let lease = deployment.begin(now, cooldown: cooldown) else { continue }
            tried.insert(deployment.id)
            attemptsLeft -= 1
            attemptsMade += 1
            return .attempt(Attempt(target: resolved, deployment: deployment, lease: lease))
        }
        if let last { return .finished(.attempt(last)) }
        return .finished(.unavailable(availableAt: soonest))
    }

    /// Takes how `attempt` failed: releases its lease (a retryable failure counts toward the
    /// deployment's cooldown, with the provider's `retry-after` for 429, 503 and 529) and says whether
    /// routing goes on. A status that is not retryable (400, 401, …) ends it at once.
    mutating func record(_ failure: AttemptOutcome<Never>, of attempt: Attempt) -> Verdict {
        switch failure {
        case .success(let never):
            switch never {}
        case .upstreamError(let status, let headers, _, _):
            let retryAfter = Gateway.retryAfterMs(headers)
            guard Gateway.retryableStatuses.contains(status) else {
                attempt.lease.release()
                return .stop(.attempt(failure))
            }
            attempt.lease.failed(retryAfterMs: status == 429 || status == 503 || status == 529 ? retryAfter : nil)
            attempt.lease.release()
            (last, lastDeployment, lastRetryAfterMs) = (failure, attempt.deployment.id, retryAfter)
        case .transportError:
            attempt.lease.failed()
            attempt.lease.release()
            (last, lastDeployment, lastRetryAfterMs) = (failure, attempt.deployment.id, nil)
        }
        return .goOn
    }

    private mutating func nextModel() {
        link += 1
        tried = []
        waits = 0
        afterBackoff = nil
        if link < chain.count { attemptsLeft = 1 + chain[link].route.retries }
    }
}
