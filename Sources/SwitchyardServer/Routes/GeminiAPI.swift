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
        let read = try await readClientBody(request, context: context)
        let doc = read.doc
        guard let contents = doc.member("contents") else { throw GatewayError.missingField("contents") }
        guard contents.kind == .array else { throw GatewayError.invalidField("contents", "`contents` must be an array") }
        let call = ClientCall(
            format: .gemini, principal: read.principal, request: read.request, body: read.body, doc: doc, model: model.hasPrefix("models/") ? String(model.dropFirst(7)) : model,
            stream: action == "streamGenerateContent", forwardHeaders: [])
        if action == "countTokens" { return try await geminiCountTokens(call, context: context) }
        return try await relay(call, context: context)
    }

    func geminiCountTokens(_ call: ClientCall, context: GatewayContext) async throws -> Response {
        let target = try resolve(call.model)
        try authorize(call)
        if let deployment = target.route.pick(excluding: [], now: EpochClock.nowMilliseconds()) ?? target.route.deployments.first,
            deployment.provider.format == .gemini
        {
            context.log.set(model: call.model, provider: deployment.provider.name, upstreamModel: target.upstreamModel(deployment), stream: false)
            return try await countUpstream(call, target: target, deployment: deployment, body: call.body, context: context)
        }
        guard let object = (try? JSONValue.parse(call.body, maxDepth: config.limits.maxJSONDepth))?.objectValue else {
            throw GatewayError.invalidRequest("the request body must be a JSON object")
        }
        let decoded = try Gemini.decodeRequest(object, model: call.model, stream: false)
        return Self.json(["totalTokens": .int(TokenEstimator.estimate(decoded))])
    }

    /// Forwards a token count to the provider that serves the model (one attempt, no retries: counting
    /// is cheap to repeat and not worth a fallback's estimate).
    func countUpstream(_ call: ClientCall, target: ResolvedModel, deployment: Deployment, body: ByteBuffer, context: GatewayContext) async throws -> Response {
        guard let lease = deployment.begin(EpochClock.nowMilliseconds(), cooldown: config.routing.cooldown) else {
            throw Self.unavailable(call.model, availableAt: deployment.availableAt(EpochClock.nowMilliseconds()))
        }
        defer { lease.release() }
        var request = upstreamRequest(Attempt(target: target, deployment: deployment, lease: lease), body: body, stream: false, context: context, headers: call.forwardHeaders)
        request.operation = .countTokens
        let upstream = try await deployment.provider.send(request, logger: logger)
        context.log.set(upstreamStatus: upstream.status)
        guard (200..<300).contains(upstream.status) else {
            let raw = (try? await upstream.body.collect(upTo: 256 << 10)) ?? ByteBuffer()
            return try renderUpstreamError(status: upstream.status, headers: upstream.headers, raw: raw, provider: deployment.provider, client: call.format, context: context)
        }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: try await collect(upstream, provider: deployment.provider)))
    }
}
