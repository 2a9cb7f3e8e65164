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
        let principal = try await authenticate(request, context: context)
        var request = request
        let body = try await collectBody(&request)
        context.log.set(bytesIn: body.readableBytes)
        let doc = try scan(body)
        let model = try requireString(doc, "model")
        guard let messages = doc.member("messages") else { throw GatewayError.missingField("messages") }
        guard messages.kind == .array else { throw GatewayError.invalidField("messages", "messages: Input should be a valid list") }
        var forward: [(String, String)] = []
        if let v = request.headers[.anthropicVersion] { forward.append(("anthropic-version", v)) }
        // Every beta flag travels as sent: new Claude Code versions add flags faster than any list.
        let betas = request.headers[values: .anthropicBeta].joined(separator: ",")
        if !betas.isEmpty { forward.append(("anthropic-beta", betas)) }
        return ClientCall(format: .anthropic, principal: principal, request: request, body: body, doc: doc, model: model, stream: try streamFlag(doc), forwardHeaders: forward)
    }

    /// `POST /v1/messages/count_tokens`: forwarded to Anthropic models; estimated locally for the others
    /// (see ``TokenEstimator``), never billed.
    func countTokens(_ request: Request, context: GatewayContext) async throws -> Response {
        let call = try await anthropicCall(request, context: context)
        let target = try resolve(call.model)
        context.log.set(model: call.model, provider: target.provider.name, upstreamModel: target.upstreamModel, stream: false)
        try authorize(call)
        if target.provider.format == .anthropic {
            var editor = call.doc.editor()
            if let m = call.doc.member("model") { editor.replaceValue(of: m, with: JSONString.literal(target.upstreamModel)) }
            var upstreamCall = upstreamRequest(target, body: editor.result(), stream: false, context: context, headers: call.forwardHeaders)
            upstreamCall.operation = .countTokens
            let upstream = try await target.provider.send(upstreamCall, logger: logger)
            context.log.set(upstreamStatus: upstream.status)
            guard (200..<300).contains(upstream.status) else {
                return try await upstreamErrorResponse(upstream, provider: target.provider, client: .anthropic, context: context)
            }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: try await collect(upstream, provider: target.provider)))
        }
        guard let object = (try? JSONValue.parse(call.body, maxDepth: config.limits.maxJSONDepth))?.objectValue else {
            throw GatewayError.invalidRequest("the request body must be a JSON object")
        }
        let decoded = try AnthropicMessages.decodeRequest(object)
        return Self.json(["input_tokens": .int(TokenEstimator.estimate(decoded))])
    }
}
