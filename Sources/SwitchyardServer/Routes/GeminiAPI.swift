import HTTPTypes
import Hummingbird
import NIOCore
import SwitchyardCore

extension Gateway {
    /// `POST /{v1,v1beta}/models/{model}:{generateContent|streamGenerateContent|countTokens}`: Gemini's
    /// native API, for every model whatever its provider. Streams are answered as SSE (`alt=sse`).
    func geminiAction(_ request: Request, context: GatewayContext) async throws -> Response {
        guard let target = context.parameters.get("target"), let colon = target.lastIndex(of: ":") else {
            throw GatewayError.routeNotFound(request.method.rawValue, request.uri.path)
        }
        let model = String(target[..<colon])
        let action = String(target[target.index(after: colon)...])
        guard ["generateContent", "streamGenerateContent", "countTokens"].contains(action) else {
            throw GatewayError.routeNotFound(request.method.rawValue, request.uri.path)
        }
        let principal = try await authenticate(request, context: context)
        var request = request
        let body = try await collectBody(&request)
        context.log.set(bytesIn: body.readableBytes)
        let doc = try scan(body)
        guard let contents = doc.member("contents") else { throw GatewayError.missingField("contents") }
        guard contents.kind == .array else { throw GatewayError.invalidField("contents", "`contents` must be an array") }
        let call = ClientCall(
            format: .gemini, principal: principal, request: request, body: body, doc: doc, model: model.hasPrefix("models/") ? String(model.dropFirst(7)) : model,
            stream: action == "streamGenerateContent", forwardHeaders: [])
        if action == "countTokens" { return try await geminiCountTokens(call, context: context) }
        return try await relay(call, context: context)
    }

    func geminiCountTokens(_ call: ClientCall, context: GatewayContext) async throws -> Response {
        let target = try resolve(call.model)
        context.log.set(model: call.model, provider: target.provider.name, upstreamModel: target.upstreamModel, stream: false)
        try authorize(call)
        if target.provider.format == .gemini {
            var upstreamCall = upstreamRequest(target, body: call.body, stream: false, context: context)
            upstreamCall.operation = .countTokens
            let upstream = try await target.provider.send(upstreamCall, logger: logger)
            context.log.set(upstreamStatus: upstream.status)
            guard (200..<300).contains(upstream.status) else {
                return try await upstreamErrorResponse(upstream, provider: target.provider, client: .gemini, context: context)
            }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: try await collect(upstream, provider: target.provider)))
        }
        guard let object = (try? JSONValue.parse(call.body, maxDepth: config.limits.maxJSONDepth))?.objectValue else {
            throw GatewayError.invalidRequest("the request body must be a JSON object")
        }
        let decoded = try Gemini.decodeRequest(object, model: call.model, stream: false)
        return Self.json(["totalTokens": .int(TokenEstimator.estimate(decoded))])
    }
}
