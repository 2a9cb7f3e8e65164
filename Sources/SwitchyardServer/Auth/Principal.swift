import SwitchyardCore
import SwitchyardStore

/// An authenticated caller: the key, its owner's plan and the limits in force. Built once per cached
/// key, so the request path does no plan lookups or string building.
final class Principal: Sendable {
    let key: KeyRecord
    /// The owner's plan name (their own, or the default).
    let planName: String
    /// The plan; nil when the owner is on a plan the configuration no longer defines.
    let plan: PlanConfig?
    let limits: LimitPolicy

    init(key: KeyRecord, config: GatewayConfig) {
        self.key = key
        planName = key.userPlan ?? config.defaultPlan
        plan = config.plan(named: planName)
        // Plan limits are shared by all keys of a person; keys of the service user stand alone.
        let keySubject = "key:\(key.id)"
        let planSubject = key.userKind == "service" || key.userID == nil ? keySubject : "user:\(key.userID!)"
        limits = LimitPolicy(plan: plan ?? PlanConfig(name: planName), planSubject: planSubject, key: key.options.limits, keySubject: keySubject)
    }

    /// Whether this key may call the catalog model `model`: its plan includes it and, when the key has
    /// its own model list, so does that list.
    func allows(_ model: String) -> Bool {
        guard let plan, plan.allows(model) else { return false }
        guard let list = key.options.models else { return true }
        return PlanConfig.list(list, allows: model)
    }

    /// The checks every request makes after finding the key: not revoked, not expired, secret not
    /// rotated out, owner enabled, plan still defined.
    func check(now: Int64) throws(GatewayError) {
        if key.isRevoked {
            throw GatewayError(status: 401, category: .authentication, code: "invalid_api_key", message: "this API key has been revoked")
        }
        if let end = key.secretExpiresAt, end <= now {
            throw GatewayError(
                status: 401, category: .authentication, code: "key_rotated",
                message: "this API key was rotated and its old secret stopped working at \(EpochClock.iso8601(end)); use the new secret")
        }
        if let end = key.options.expiresAt, end <= now {
            throw GatewayError(
                status: 401, category: .authentication, code: "key_expired",
                message: "this API key expired at \(EpochClock.iso8601(end)); ask for a new key")
        }
        if key.userDisabledAt != nil {
            throw GatewayError(
                status: 403, category: .permission, code: "account_disabled",
                message: "the account \(key.userEmail ?? "owning this key") is disabled; contact the gateway operator")
        }
        if plan == nil {
            throw GatewayError(
                status: 403, category: .permission, code: "plan_unavailable",
                message: "your account is on the plan `\(planName)`, which this gateway no longer offers; ask the operator to move it to another plan")
        }
    }

    /// 403 `model_not_allowed` for a model this key may not call, naming the plans that include it.
    func denial(for model: String, plans: [PlanConfig]) -> GatewayError {
        var message: String
        if let plan, !plan.allows(model) {
            message = "the model `\(model)` is not included in your plan `\(plan.name)`"
            let offering = plans.filter { $0.allows(model) }.map { "`\($0.name)`" }
            switch offering.count {
            case 0: message += "; no plan on this gateway includes it"
            case 1: message += "; it is available on the plan \(offering[0])"
            default: message += "; it is available on the plans \(offering.dropLast().joined(separator: ", ")) and \(offering.last!)"
            }
        } else {
            let list = (key.options.models ?? []).map { "`\($0)`" }.joined(separator: ", ")
            message = "this API key may only use the models \(list); `\(model)` is not among them (your plan `\(planName)` includes it: ask for a key without this restriction)"
        }
        return GatewayError(status: 403, category: .permission, code: "model_not_allowed", message: message, param: "model")
    }
}
