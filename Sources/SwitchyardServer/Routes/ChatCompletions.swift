import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import SwitchyardCore

extension Gateway {
    /// `POST /v1/chat/completions`: OpenAI Chat Completions, relayed to the model's provider.
    ///
    /// Only what routing needs is parsed (`model`, `messages`, `stream`); the body is forwarded with
    /// `model` rewritten and every other byte kept, so provider-specific parameters pass through.
    func chatCompletions(_ request: Request, context: GatewayContext) async throws -> Response {
        _ = try await authenticate(request, context: context)
        var request = request
        let body = try await collectBody(&request)
        context.log.set(bytesIn: body.readableBytes)

        let doc: ScannedObject
        do {
            doc = try ScannedObject(body, maxDepth: config.limits.maxJSONDepth)
        } catch {
            throw GatewayError.invalidJSON(error)
        }
        guard let modelMember = doc.member("model") else { throw GatewayError.missingField("model") }
        guard modelMember.kind == .string else { throw GatewayError.invalidField("model", "`model` must be a string") }
        let modelName = doc.stringValue(modelMember)
        guard let messages = doc.member("messages") else { throw GatewayError.missingField("messages") }
        guard messages.kind == .array else { throw GatewayError.invalidField("messages", "`messages` must be an array of message objects") }
        let stream: Bool
        switch doc.member("stream")?.kind {
        case .true?: stream = true
        case .false?, .null?, nil: stream = false
        default: throw GatewayError.invalidField("stream", "`stream` must be a boolean")
        }
        guard let route = models[modelName] else { throw GatewayError.modelNotFound(modelName) }
        context.log.set(model: modelName, provider: route.provider.name, upstreamModel: route.upstreamModel, stream: stream)

        let upstreamBody = doc.replacingModel(with: JSONString.literal(route.upstreamModel)) ?? body
        let upstream = try await route.provider.send(
            UpstreamRequest(
                path: "/chat/completions", body: upstreamBody, stream: stream, requestID: context.requestID,
                firstByteTimeout: config.routing.timeouts.firstByte.duration),
            logger: logger)
        context.log.set(upstreamStatus: upstream.status)

        guard (200..<300).contains(upstream.status) else {
            return try await upstreamErrorResponse(upstream, provider: route.provider, context: context)
        }
        if stream, upstream.isEventStream {
            return streamResponse(upstream, clientModel: modelName, provider: route.provider, request: request, context: context)
        }

        let full: ByteBuffer
        do {
            full = try await upstream.body.collect(upTo: config.limits.maxResponseBytes)
        } catch is UpstreamBody.BodyTooLarge {
            throw GatewayError(status: 502, category: .upstream, code: "upstream_response_too_large",
                               message: "the provider's response exceeds \(config.limits.maxResponseBytes) bytes")
        } catch {
            throw UpstreamFailure.classify(error, provider: route.provider.name)
        }
        guard let answer = try? ScannedObject(full, maxDepth: config.limits.maxJSONDepth) else {
            throw GatewayError(status: 502, category: .upstream, code: "upstream_invalid_response",
                               message: "the provider `\(route.provider.name)` returned a body that is not a JSON object")
        }
        if let usage = answer.member("usage"), usage.kind == .object {
            context.log.set(usage: TokenUsage(openAI: try? JSONValue.parse(answer.rawValue(usage))))
        }
        let bytes = answer.replacingModel(with: JSONString.literal(modelName)) ?? full
        context.log.markFirstByte()
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: bytes))
    }

    /// Collects the request body within the configured limit (413 beyond it).
    func collectBody(_ request: inout Request) async throws -> ByteBuffer {
        let limit = config.limits.maxBodyBytes
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            throw GatewayError.bodyTooLarge(limit: limit)
        }
        do {
            return try await request.collectBody(upTo: limit)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw GatewayError.bodyTooLarge(limit: limit)
        }
    }

    /// Relays an SSE stream event by event. A client that goes away cancels the upstream request at once
    /// (the inbound side of the connection is watched); an upstream that breaks mid-stream produces an
    /// error event in the OpenAI format, then a clean end.
    func streamResponse(_ upstream: UpstreamResponse, clientModel: String, provider: Provider, request: Request, context: GatewayContext) -> Response {
        let log = context.log
        log.waitForBody()
        let maxDepth = config.limits.maxJSONDepth
        let upstreamBody = upstream.body
        let providerName = provider.name
        // The inbound side is watched for the client leaving, so the connection cannot carry another
        // request afterwards: say so, or a client reusing it would lose its next request.
        let headers: HTTPFields = [
            .contentType: "text/event-stream; charset=utf-8",
            .cacheControl: "no-cache",
            .connection: "close",
            HTTPField.Name("x-accel-buffering")!: "no",
        ]
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            try await request.body.consumeWithCancellationOnInboundClose { _ in
                var relay = OpenAIStreamRelay(clientModel: clientModel, maxDepth: maxDepth)
                var iterator = upstreamBody.makeAsyncIterator()
                while true {
                    let chunk: ByteBuffer?
                    do {
                        chunk = try await iterator.next()
                    } catch {
                        if error is CancellationError || Task.isCancelled { throw CancellationError() }
                        let failure = UpstreamFailure.streamBroken(error, provider: providerName)
                        log.set(errorCode: failure.code)
                        var out = relay.finish()
                        out.writeStaticString("data: ")
                        out.writeImmutableBuffer(failure.openAIBody())
                        out.writeStaticString("\n\n")
                        try await writer.write(out)
                        break
                    }
                    guard let chunk else {
                        let tail = relay.finish()
                        if tail.readableBytes > 0 { try await writer.write(tail) }
                        break
                    }
                    let out = try relay.process(chunk)
                    if out.readableBytes > 0 {
                        log.markFirstByte()
                        try await writer.write(out)
                    }
                }
                log.set(usage: relay.usage)
                try await writer.finish(nil)
            }
        })
    }

    /// Answers an upstream error: OpenAI-shaped error bodies pass through with their status; anything
    /// else is wrapped. A provider rejecting the gateway's own credentials (401/403) becomes 502, so the
    /// client is not told its key is bad when the operator's is.
    func upstreamErrorResponse(_ upstream: UpstreamResponse, provider: Provider, context: GatewayContext) async throws -> Response {
        let raw = (try? await upstream.body.collect(upTo: 256 << 10)) ?? ByteBuffer()
        let status = upstream.status
        context.log.set(errorCode: "upstream_\(status)")
        if status == 401 || status == 403 {
            logger.warning("provider rejected the gateway's credentials", metadata: [
                "request_id": .string(context.requestID), "provider": .string(provider.name), "upstream_status": .stringConvertible(status),
            ])
            throw GatewayError(status: 502, category: .upstream, code: "upstream_auth_failed",
                               message: "the provider `\(provider.name)` rejected the gateway's credentials (HTTP \(status)); the gateway operator must check its API key")
        }
        guard (400..<600).contains(status) else {
            throw GatewayError(status: 502, category: .upstream, code: "upstream_invalid_response",
                               message: "the provider `\(provider.name)` answered with unexpected HTTP status \(status)")
        }
        var headers: HTTPFields = [.contentType: "application/json"]
        if let retry = upstream.headers.first(name: "retry-after") { headers[.retryAfter] = retry }
        if let retryMs = upstream.headers.first(name: "retry-after-ms") { headers[HTTPField.Name("retry-after-ms")!] = retryMs }
        if let parsed = try? JSONValue.parse(raw), let error = parsed["error"] {
            if let message = error["message"]?.stringValue, !message.isEmpty {
                return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: raw))
            }
            if let message = error.stringValue {
                return Response(status: .init(code: status), headers: headers,
                                body: .init(byteBuffer: Self.wrappedUpstreamError(status: status, message: message).openAIBody()))
            }
        }
        let snippet = String(buffer: raw).prefix(300)
        let message = "the provider `\(provider.name)` answered HTTP \(status)" + (snippet.isEmpty ? "" : ": \(snippet)")
        return Response(status: .init(code: status), headers: headers,
                        body: .init(byteBuffer: Self.wrappedUpstreamError(status: status, message: message).openAIBody()))
    }

    static func wrappedUpstreamError(status: Int, message: String) -> GatewayError {
        let category: GatewayError.Category
        switch status {
        case 429: category = .rateLimit
        case 400..<500: category = .invalidRequest
        default: category = .upstream
        }
        return GatewayError(status: status, category: category, code: "upstream_error", message: message)
    }
}
