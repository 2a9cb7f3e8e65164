import HTTPTypes
import Hummingbird
import NIOCore
import SwitchyardCore
import SwitchyardStore

extension Gateway {
    /// `GET /v1/credits`: the caller's own balance, with its buckets in spend order.
    func creditsBalance(_ request: Request, context: GatewayContext) async throws -> Response {
        let principal = try await authenticate(request, context: context)
        // Reservations and settlements decided in memory go to the database first.
        await meter.sync()
        let balance = try await store.creditBalance(userID: principal.key.userID ?? "usr_service", policy: meter.policy, now: EpochClock.nowMilliseconds())
        return Self.json(balance.json)
    }

    /// `POST /v1/credits/redeem {"code": "…"}`: turns a redemption code into never-expiring credits,
    /// exactly once. Attempts are limited to 10 a minute per key, so codes cannot be guessed.
    func redeemCode(_ request: Request, context: GatewayContext) async throws -> Response {
        let principal = try await authenticate(request, context: context)
        var request = request
        let body = try await collectBody(&request)
        guard let object = (try? JSONValue.parse(body, maxDepth: config.limits.maxJSONDepth))?.objectValue else {
            throw GatewayError.invalidRequest("the body must be a JSON object such as {\"code\": \"SYC-…\"}")
        }
        guard let code = object["code"]?.stringValue, !code.isEmpty, code.utf8.count <= 64 else {
            throw GatewayError.invalidField("code", "`code` must be the redemption code, a string")
        }
        let attempts = LimitPolicy(requestsPerMinute: AppliedLimit(limit: 10, subject: "redeem:\(principal.key.id)", origin: "code redemption"))
        if case .rejected(let rejection, _) = limiter.admit(attempts) { throw GatewayError.rateLimited(rejection) }
        let result = try await store.redeem(
            code: code, userID: principal.key.userID ?? "usr_service", policy: meter.policy, now: EpochClock.nowMilliseconds())
        switch result {
        case .redeemed(let credits, let available):
            meter.forget(principal.key.userID ?? "usr_service")
            return Self.json(["redeemed": Credits(micros: credits).json, "balance": Credits(micros: available).json])
        case .unknown:
            throw GatewayError(status: 404, category: .notFound, code: "invalid_code", message: "no such redemption code", param: "code")
        case .alreadyRedeemed:
            throw GatewayError(status: 409, category: .invalidRequest, code: "code_already_redeemed", message: "this code has already been redeemed", param: "code")
        case .expired:
            throw GatewayError(status: 410, category: .invalidRequest, code: "code_expired", message: "this code has expired", param: "code")
        }
    }
}
