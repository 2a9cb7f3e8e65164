import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardStore

/// What one attempt produced, for any kind of result.
enum AttemptOutcome<T: Sendable>: Sendable {
    case success(T)
    /// The provider answered an error status (its body kept for the client if this was the last try).
    case upstreamError(status: Int, headers: HTTPHeaders, body: ByteBuffer, provider: Provider)
    /// No answer: unreachable, timed out, or no connection available.
    case transportError(GatewayError)
}

typealias AttemptResult = AttemptOutcome<Response>

/// How routing ended when no attempt succeeded.
enum RoutingFailure: Error, Sendable {
    /// The last attempt's failure (or a non-retryable one).
    case attempt(AttemptOutcome<Never>)
    /// Nothing could be tried: every deployment is cooling down or at its limit until `availableAt`.
    case unavailable(availableAt: Int64?)
}

extension Gateway {
    /// Statuses worth another try (elsewhere, or later): rate limits, server errors, overload.
    static let retryableStatuses: Set<Int> = [429, 500, 502, 503, 504, 529]

    /// The client's call to a model, through its deployments and fallbacks (see ``route(_:context:_:)``);
    /// the final failure is answered in the client's format and any credits held are refunded.
    func dispatch(_ call: ClientCall, target: ResolvedModel, context: GatewayContext) async throws -> Response {
        switch try await route(target, requestID: context.requestID, { try await self.attempt(call, $0, context: context) }) {
        case .success(let response): return response
        case .failure(let failure): return try await respond(to: failure, call: call, context: context)
        }
    }

    /// Tries `target`'s deployments, then its fallbacks, until one answers (``RoutePlan`` decides
    /// what to try and when). Every attempt happens before anything reaches the client. A retryable
    /// failure (no connection, a timeout, 429, 5xx, 529) counts toward the deployment's cooldown and
    /// moves on after a backoff; any other error ends routing at once.
    func route<T: Sendable>(
        _ target: ResolvedModel, requestID: String, _ perform: (Attempt) async throws -> AttemptOutcome<T>
    ) async throws -> Result<T, RoutingFailure> {
        var plan = RoutePlan(target: target, models: models, routing: config.routing)
        while true {
            switch plan.next(now: EpochClock.nowMilliseconds()) {
            case .wait(let milliseconds):
                try await LoopTimer.sleep(for: .milliseconds(milliseconds))
            case .finished(let failure):
                return .failure(failure)
            case .attempt(let attempt):
                let failure: AttemptOutcome<Never>
                switch try await perform(attempt) {
                case .success(let value):
                    return .success(value)
                case .upstreamError(let status, let headers, let body, let provider):
                    failure = .upstreamError(status: status, headers: headers, body: body, provider: provider)
                case .transportError(let error):
                    failure = .transportError(error)
                }
                if case .stop(let end) = plan.record(failure, of: attempt) { return .failure(end) }
                switch failure {
                case .upstreamError(let status, _, _, _):
                    logger.info("retrying after an upstream error", metadata: [
                        "request_id": .string(requestID), "deployment": .string(attempt.deployment.id), "upstream_status": .stringConvertible(status),
                    ])
                case .transportError(let error):
                    logger.info("retrying after a transport error", metadata: [
                        "request_id": .string(requestID), "deployment": .string(attempt.deployment.id), "error": .string(error.code),
                    ])
                case .success: break
                }
            }
        }
    }

    /// The client's answer when routing failed: the provider's error in the client's format, the
    /// transport error, or 503 with `Retry-After` when nothing could be tried. Nothing reached the
    /// client, so any credits held are refunded.
    func respond(to failure: RoutingFailure, call: ClientCall, context: GatewayContext) async throws -> Response {
        switch failure {
        case .attempt(.transportError(let error)):
            throw error
        case .attempt(.upstreamError(let status, let headers, let raw, let provider)):
            if let ticket = context.log.ticket,
                let settled = await ticket.settle(.failedBeforeContent, reported: nil, status: status, errorCode: "upstream_\(status)")
            {
                context.log.set(creditsCharged: settled.charged, remaining: settled.available)
            }
            return try renderUpstreamError(status: status, headers: headers, raw: raw, provider: provider, client: call.format, context: context)
        case .unavailable(let at):
            throw Self.unavailable(call.model, availableAt: at)
        }
    }

    static func unavailable(_ model: String, availableAt: Int64?) -> GatewayError {
        let now = EpochClock.nowMilliseconds()
        let retryMs = max(1, (availableAt ?? now + 1000) - now)
        var error = GatewayError(
            status: 503, category: .unavailable, code: "no_deployment_available",
            message: "every deployment of `\(model)` is cooling down or at its request limit; retry in \(LimitRejection.describe(milliseconds: retryMs))",
            retryAfterSeconds: Int((retryMs + 999) / 1000))
        error.retryAfterMs = retryMs
        return error
    }

    /// A routing failure as a thrown error (for calls the client does not see directly: an ensemble's proposers).
    static func error(_ failure: RoutingFailure, model: String) -> GatewayError {
        switch failure {
        case .attempt(.transportError(let e)): return e
        case .attempt(.upstreamError(let status, _, let raw, let provider)):
            return UpstreamErrors.parse(raw, status: status, format: provider.format, provider: provider.name)
        case .unavailable(let at): return unavailable(model, availableAt: at)
        }
    }

    /// Full-jitter exponential backoff: up to 100 ms × 2ⁿ⁻¹, at most 2 s.
    static func backoff(attempt n: Int) -> Int64 {
        let ceiling = min(2000, 100 << min(max(0, n - 1), 10))
        var rng = IDRandom()
        return Int64.random(in: 0...Int64(ceiling), using: &rng)
    }

    /// A provider's `retry-after-ms`, or `retry-after` in seconds.
    static func retryAfterMs(_ headers: HTTPHeaders) -> Int64? {
        if let ms = headers.first(name: "retry-after-ms").flatMap({ Double($0) }), ms >= 0, ms.isFinite { return Int64(ms) }
        if let s = headers.first(name: "retry-after").flatMap({ Double($0.filter { $0 != " " }) }), s >= 0, s.isFinite {
            return Int64(s * 1000)
        }
        return nil
    }
}
