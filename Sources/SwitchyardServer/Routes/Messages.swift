import HTTPTypes
import Hummingbird
import NIOCore
import SwitchyardCore

extension HTTPField.Name {
    static let anthropicVersion = HTTPField.Name("anthropic-version")!
    static let anthropicBeta = HTTPField.Name("anthropic-beta")!
}

extension Gateway {
    /// `POST /v1/messages`: Anthropic Messages, for every model whatever its provider. A query string
    /// (`?beta=true`) is ignored; `anthropic-version` and `anthropic-beta` go unchanged to Anthropic.
    func messages(_ request: Request, context: GatewayContext) async throws -> Response {
        let call = try await anthropicCall(request, context: context)
        return try await relay(call, context: context)
    }

    func anthropicCall(_ request: Request, context: GatewayContext) async throws -> ClientCall {
        let read = try await readClientBody(request, context: context)
        let (request, doc) = (read.request, read.doc)
        let model = try requireString(doc, "model")
        guard let messages = doc.member("messages") else { throw GatewayError.missingField("messages") }
        guard messages.kind == .array else { throw GatewayError.invalidField("messages", "messages: Input should be a valid list") }
        var forward: [(String, String)] = []
        if let v = request.headers[.anthropicVersion] { forward.append(("anthropic-version", v)) }
        // Every beta flag travels as sent: new Claude Code versions add flags faster than any list.
        let betas = request.headers[values: .anthropicBeta].joined(separator: ",")
        if !betas.isEmpty { forward.append(("anthropic-beta", betas)) }
        return ClientCall(format: .anthropic, principal: read.principal, request: request, body: read.body, doc: doc, model: model, stream: try streamFlag(doc), forwardHeaders: forward)
    }

    /// `POST /v1/messages/count_tokens`: forwarded to Anthropic models; estimated locally for the others
    /// (see ``TokenEstimator``), never billed.
    func countTokens(_ request: Request, context: GatewayContext) async throws -> Response {
        let call = try await anthropicCall(request, context: context)
        let target = try resolve(call.model)
        try authorize(call)
        // Counted by the first ready deployment when it is an Anthropic one; estimated locally otherwise.
        if let deployment = target.route.pick(excluding: [], now: EpochClock.nowMilliseconds()) ?? target.route.deployments.first,
            deployment.provider.format == .anthropic
        {
            let upstreamModel = target.upstreamModel(deployment)
            context.log.set(model: call.model, provider: deployment.provider.name, upstreamModel: upstreamModel, stream: false)
            var editor = call.doc.editor()
            if let m = call.doc.member("model") { editor.replaceValue(of: m, with: JSONString.literal(upstreamModel)) }
            let upstream = try await countUpstream(call, target: target, deployment: deployment, body: editor.result(), context: context)
            return upstream
        }
        guard let object = (try? JSONValue.parse(call.body, maxDepth: config.limits.maxJSONDepth))?.objectValue else {
            throw GatewayError.invalidRequest("the request body must be a JSON object")
        }
        let decoded = try AnthropicMessages.decodeRequest(object)
        return Self.json(["input_tokens": .int(TokenEstimator.estimate(decoded))])
    }
}
