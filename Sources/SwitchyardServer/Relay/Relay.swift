import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Synchronization
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardStore

/// A client request after its head was parsed: which API it speaks and what it asks for.
struct ClientCall: Sendable {
    let format: WireFormat
    /// Who is calling: key, plan, limits.
    let principal: Principal
    /// The request (its body already collected; its inbound side is watched while streaming).
    let request: Request
    let body: ByteBuffer
    let doc: ScannedObject
    /// The model the client asked for (Gemini: from the URL).
    let model: String
    let stream: Bool
    /// Client headers a same-format provider should receive (`anthropic-version`, `anthropic-beta`).
    let forwardHeaders: [(String, String)]
    /// Responses clients: where the finished response is kept for `previous_response_id`.
    var recorder: ResponseRecorder? = nil
    /// What the provider is asked to do (`/responses/compact` is a non-generating call).
    var operation: UpstreamRequest.Operation = .generate
}

extension Gateway {
    /// The request path after parsing: route the model (with retries, fallbacks and, for streams that
    /// wait long, heartbeats), then either pass the bytes through (same format) or translate through the
    /// canonical model (different formats).
    func relay(_ call: ClientCall, context: GatewayContext) async throws -> Response {
        context.log.markModelCall(model: call.model)
        let target = try resolve(call.model)
        context.log.set(model: call.model, provider: target.route.deployments.first?.provider.name ?? "", upstreamModel: "", stream: call.stream)
        try admit(call, context: context)
        let work = { @Sendable () async throws -> Response in
            if target.route.ensemble != nil { return try await self.ensemble(call, target: target, context: context) }
            return try await self.dispatch(call, target: target, context: context)
        }
        let watched = { @Sendable () async throws -> Response in
            if self.drainsOnLeave(target) {
                // Billed in full even if the client leaves: the request goes on so its exact cost is
                // known; only the client's concurrency slot is freed at once.
                let log = context.log
                return try await ConnectionCloseWatcher.watching(context.channel, onClose: { log.clientLeft() }, work)
            }
            // A client that leaves while the provider works cancels the upstream request at once (and
            // so frees its concurrency slot); streams are watched again while their body is written.
            return try await ConnectionCloseWatcher.cancellingOnClose(context.channel, work)
        }
        if call.stream, config.routing.heartbeat.milliseconds > 0 {
            return try await withHeartbeats(call, target: target, context: context, watched)
        }
        return try await watched()
    }

    /// Whether a departed client's request keeps running to learn its cost (`cancelled_streams: charge`
    /// on a priced model) rather than being cancelled.
    func drainsOnLeave(_ target: ResolvedModel) -> Bool {
        meter.cancelledStreams == .charge && !target.route.config.pricing.isFree
    }

    func upstreamRequest(_ attempt: Attempt, body: ByteBuffer, stream: Bool, context: GatewayContext, headers: [(String, String)] = []) -> UpstreamRequest {
        upstreamRequest(attempt, body: body, stream: stream, requestID: context.requestID, headers: headers)
    }

    func upstreamRequest(_ attempt: Attempt, body: ByteBuffer, stream: Bool, requestID: String, headers: [(String, String)] = []) -> UpstreamRequest {
        UpstreamRequest(
            model: attempt.upstreamModel, body: body, stream: stream, requestID: requestID,
            firstByteTimeout: attempt.route.timeouts.firstByte.duration, headers: headers, timeouts: attempt.route.timeouts,
            apiKey: attempt.deployment.apiKey)
    }

    /// One attempt at a deployment, in the right direction for its provider's format.
    func attempt(_ call: ClientCall, _ attempt: Attempt, context: GatewayContext) async throws -> AttemptResult {
        context.log.set(model: call.model, provider: attempt.provider.name, upstreamModel: attempt.upstreamModel, stream: call.stream)
        if attempt.provider.format == call.format {
            return try await passthrough(call, attempt: attempt, context: context)
        }
        guard call.operation == .generate else {
            throw GatewayError.invalidRequest(
                "`/responses/compact` needs a model served through the OpenAI Responses API; the provider `\(attempt.provider.name)` is not",
                code: "unsupported_operation", param: "model")
        }
        return try await translate(call, attempt: attempt, context: context)
    }

    // MARK: Same format

    func passthrough(_ call: ClientCall, attempt: Attempt, context: GatewayContext) async throws -> AttemptResult {
        let (body, injectedUsage) = try passthroughBody(call, attempt: attempt)
        let ticket = try await reserveCredits(call, attempt: attempt, upstreamBody: body, context: context)
        let upstream: UpstreamResponse
        do {
            var request = upstreamRequest(attempt, body: body, stream: call.stream, context: context, headers: call.forwardHeaders)
            request.operation = call.operation
            upstream = try await attempt.provider.send(request, logger: logger)
        } catch {
            if error.code == "client_closed" { throw CancellationError() }
            return .transportError(error)
        }
        context.log.set(upstreamStatus: upstream.status)
        guard (200..<300).contains(upstream.status) else { return await failedAttempt(upstream, provider: attempt.provider) }
        attempt.lease.succeeded()
        context.log.set(deploymentLease: attempt.lease)
        if call.stream, upstream.isEventStream {
            let relay = PassthroughStreamRelay(
                format: call.format, clientModel: call.model, maxDepth: config.limits.maxJSONDepth, dropUsageChunk: injectedUsage)
            let recorder = call.recorder
            return .success(streamResponse(upstream, processor: relay, call: call, provider: attempt.provider, context: context) { finished in
                recorder?.record(finished.finalResponse)
            })
        }
        return try await passthroughAnswer(upstream, call: call, attempt: attempt, ticket: ticket, context: context)
    }

    /// A non-streamed passthrough answer: read in full, the model name put back, usage taken for the
    /// bill. Its own function, so the streaming path's frame does not carry the answer's values.
    @inline(never)
    private func passthroughAnswer(
        _ upstream: UpstreamResponse, call: ClientCall, attempt: Attempt, ticket: CreditTicket?, context: GatewayContext
    ) async throws -> AttemptResult {
        let full = try await collect(upstream, provider: attempt.provider)
        let (bytes, usage) = try passthroughAnswer(full, format: call.format, model: call.model, provider: attempt.provider)
        if call.format == .responses { call.recorder?.record(bytes) }
        context.log.set(usage: usage)
        await settleCompleted(ticket, usage: usage, answerBytes: full.readableBytes, context: context)
        context.log.markFirstByte()
        return .success(Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: bytes)))
    }

    /// A complete same-format answer with the model the client asked for put back, and the usage it
    /// reports; 502 when it is not a JSON object.
    func passthroughAnswer(_ full: ByteBuffer, format: WireFormat, model: String, provider: Provider) throws(GatewayError) -> (ByteBuffer, TokenUsage?) {
        guard let answer = try? ScannedObject(full, maxDepth: config.limits.maxJSONDepth) else {
            throw UpstreamFailure.notJSONObject(provider: provider.name)
        }
        let literal = JSONString.literal(model)
        var bytes = full
        var usage: TokenUsage?
        switch format {
        case .openAI:
            if let u = answer.object("usage") { usage = TokenUsage(openAI: u) }
            bytes = answer.replacingModel(with: literal) ?? full
        case .responses:
            if let u = answer.member("usage"), u.kind == .object { usage = OpenAIResponses.usage(try? JSONValue.parse(answer.rawValue(u))) }
            bytes = answer.replacingModel(with: literal) ?? full
        case .anthropic:
            if let u = answer.member("usage") { usage = AnthropicMessages.usage(try? JSONValue.parse(answer.rawValue(u))) }
            bytes = answer.replacingModel(with: literal) ?? full
        case .gemini:
            if let u = answer.member("usageMetadata") { usage = Gemini.usage(try? JSONValue.parse(answer.rawValue(u))) }
            if let m = answer.member("modelVersion"), m.kind == .string {
                var editor = answer.editor()
                editor.replaceValue(of: m, with: literal)
                bytes = editor.result()
            }
        }
        return (bytes, usage)
    }

    /// The client's bytes with the upstream model spliced in and the model's defaults applied where the
    /// client said nothing; every other byte is kept. Returns whether OpenAI usage was requested on the
    /// client's behalf (its chunk is then dropped from the client's stream).
    func passthroughBody(_ call: ClientCall, attempt: Attempt) throws -> (ByteBuffer, Bool) {
        let doc = call.doc
        let target = attempt.target
        let thinking = target.route.config.thinking
        switch call.format {
        case .openAI:
            var editor = doc.editor()
            if let m = doc.member("model") { editor.replaceValue(of: m, with: JSONString.literal(attempt.upstreamModel)) }
            var injected = false
            if call.stream {
                // The gateway always needs usage; the client's stream only gets the chunk if it asked.
                if let so = doc.member("stream_options"), so.kind == .object, var obj = (try? JSONValue.parse(doc.rawValue(so)))?.objectValue {
                    if obj["include_usage"]?.boolValue != true {
                        obj["include_usage"] = true
                        editor.replaceValue(of: so, with: JSONValue.object(obj).jsonString)
                        injected = true
                    }
                } else {
                    if let so = doc.member("stream_options") { editor.remove(so) }
                    editor.append(key: "stream_options", rawJSON: #"{"include_usage":true}"#)
                    injected = true
                }
            }
            if let thinking, doc.member("reasoning_effort") == nil, let effort = thinking.effort {
                editor.append(key: "reasoning_effort", rawJSON: JSONString.literal(effort))
            }
            if let cap = injectedOutputCap(target), doc.member("max_tokens") == nil, doc.member("max_completion_tokens") == nil {
                editor.append(key: attempt.provider.maxTokensField.rawValue, rawJSON: String(cap))
            }
            return (editor.result(), injected)
        case .responses:
            var editor = doc.editor()
            if let m = doc.member("model") { editor.replaceValue(of: m, with: JSONString.literal(attempt.upstreamModel)) }
            guard call.operation == .generate else { return (editor.result(), false) }
            if let thinking, doc.member("reasoning") == nil, let effort = thinking.effort {
                editor.append(key: "reasoning", rawJSON: #"{"effort":\#(JSONString.literal(effort)),"summary":"auto"}"#)
            }
            if let cap = injectedOutputCap(target), doc.member("max_output_tokens") == nil {
                editor.append(key: "max_output_tokens", rawJSON: String(cap))
            }
            return (editor.result(), false)
        case .anthropic:
            var editor = doc.editor()
            if let m = doc.member("model") { editor.replaceValue(of: m, with: JSONString.literal(attempt.upstreamModel)) }
            let defaultMax = target.route.config.maxTokens ?? 8192
            var maxTokens = doc.member("max_tokens").flatMap { Int(String(buffer: doc.rawValue($0))) }
            if doc.member("thinking") == nil, let budget = thinking?.budgetTokens {
                editor.append(key: "thinking", rawJSON: #"{"type":"enabled","budget_tokens":\#(max(1024, budget))}"#)
                for key: StaticString in ["temperature", "top_k"] { if let m = doc.member(key) { editor.remove(m) } }
                if let current = maxTokens, current <= budget, let m = doc.member("max_tokens") {
                    maxTokens = budget + min(defaultMax, 8192)
                    editor.replaceValue(of: m, with: String(maxTokens!))
                } else if maxTokens == nil {
                    maxTokens = max(defaultMax, budget + 4096)
                }
            }
            if doc.member("max_tokens") == nil { editor.append(key: "max_tokens", rawJSON: String(maxTokens ?? defaultMax)) }
            return (editor.result(), false)
        case .gemini:
            // The model is in the URL; only a thinking default and an output cap may be added.
            let cap = injectedOutputCap(target)
            guard thinking != nil || cap != nil, var body = (try? JSONValue.parse(call.body))?.objectValue else { return (call.body, false) }
            var g = body["generationConfig"]?.objectValue ?? body["generation_config"]?.objectValue ?? [:]
            var changed = false
            if let thinking, g["thinkingConfig"] == nil, g["thinking_config"] == nil {
                switch thinking {
                case .disabled: g["thinkingConfig"] = ["thinkingBudget": 0]
                default: g["thinkingConfig"] = ["thinkingBudget": .int(thinking.budgetTokens ?? 8192), "includeThoughts": true]
                }
                changed = true
            }
            if let cap, g["maxOutputTokens"] == nil, g["max_output_tokens"] == nil {
                g["maxOutputTokens"] = .int(cap)
                changed = true
            }
            guard changed else { return (call.body, false) }
            body["generation_config"] = nil
            body["generationConfig"] = .object(g)
            return (JSONValue.object(body).jsonBuffer, false)
        }
    }

    // MARK: Different formats

    func translate(_ call: ClientCall, attempt: Attempt, context: GatewayContext) async throws -> AttemptResult {
        guard let object = (try? JSONValue.parse(call.body, maxDepth: config.limits.maxJSONDepth))?.objectValue else {
            throw GatewayError.invalidRequest("the request body must be a JSON object")
        }
        let request = try Translator.decodeRequest(call.format, object, model: call.model, stream: call.stream)
        return try await translate(call, request: request, attempt: attempt, context: context)
    }

    /// A client's canonical request as it goes to `attempt`'s provider: the output cap a priced model
    /// needs, the reasoning an OpenAI client could not carry between turns, the model's thinking default.
    func translatedRequest(_ request: ChatRequest, client: WireFormat, attempt: Attempt) -> ChatRequest {
        var request = request
        if request.maxTokens == nil, let cap = injectedOutputCap(attempt.target) { request.maxTokens = cap }
        if client == .openAI { reasoningCache.restore(&request) }
        if request.reasoning == nil { request.reasoning = attempt.route.config.thinking }
        return request
    }

    /// `request` in the attempt's provider format: the model's default thinking applied (an ensemble's
    /// proposers come here without ``translatedRequest(_:client:attempt:)``), media the provider cannot
    /// fetch itself inlined, the upstream model id and output cap set.
    func encodeUpstream(_ request: inout ChatRequest, attempt: Attempt) async throws -> ByteBuffer {
        let provider = attempt.provider
        if request.reasoning == nil { request.reasoning = attempt.route.config.thinking }
        let (images, documents) = Self.inlinedMedia(provider.format)
        if images || documents { try await mediaFetcher.inline(&request, images: images, documents: documents) }
        return try encodeUpstreamBody(request, attempt: attempt)
    }

    /// Which media URLs a provider format cannot fetch itself, so the gateway inlines them.
    static func inlinedMedia(_ format: WireFormat) -> (images: Bool, documents: Bool) {
        switch format {
        case .gemini: return (true, true)
        case .openAI: return (false, true)
        case .anthropic, .responses: return (false, false)
        }
    }

    /// The translated request's bytes for `attempt`'s provider, its media already inlined.
    func encodeUpstreamBody(_ request: ChatRequest, attempt: Attempt) throws -> ByteBuffer {
        let provider = attempt.provider
        let encoded = try Translator.encodeRequest(
            provider.format, request, upstreamModel: attempt.upstreamModel,
            options: .init(maxTokensField: provider.maxTokensField, defaultMaxTokens: attempt.route.config.maxTokens ?? 8192))
        return JSONValue.object(encoded).jsonBuffer
    }

    /// Sends a canonical request to `attempt`'s provider and answers in the client's format.
    /// `usageExtra` is added to the usage reported and billed (an ensemble's proposers).
    func translate(_ call: ClientCall, request: ChatRequest, attempt: Attempt, context: GatewayContext, usageExtra: TokenUsage? = nil) async throws -> AttemptResult {
        let provider = attempt.provider
        var request = translatedRequest(request, client: call.format, attempt: attempt)
        let body = try await encodeUpstream(&request, attempt: attempt)
        let ticket = try await reserveCredits(call, attempt: attempt, upstreamBody: body, context: context)
        let upstream: UpstreamResponse
        do {
            upstream = try await provider.send(upstreamRequest(attempt, body: body, stream: call.stream, context: context), logger: logger)
        } catch {
            if error.code == "client_closed" { throw CancellationError() }
            return .transportError(error)
        }
        context.log.set(upstreamStatus: upstream.status)
        guard (200..<300).contains(upstream.status) else { return await failedAttempt(upstream, provider: provider) }
        attempt.lease.succeeded()
        context.log.set(deploymentLease: attempt.lease)
        let created = Int(EpochClock.nowMilliseconds() / 1000)
        if call.stream, upstream.isEventStream {
            var stream = TranslatingStream(from: provider.format, to: call.format, request: request, clientModel: call.model, created: created)
            stream.usageExtra = usageExtra
            let cache = call.format == .openAI ? reasoningCache : nil
            let recorder = call.recorder
            return .success(streamResponse(upstream, processor: stream, call: call, provider: provider, context: context) { finished in
                cache?.store(finished.accumulator.content)
                recorder?.record(finished.finalResponse)
            })
        }
        let full = try await collect(upstream, provider: provider)
        guard let answerObject = (try? JSONValue.parse(full, maxDepth: config.limits.maxJSONDepth))?.objectValue else {
            throw UpstreamFailure.notJSONObject(provider: provider.name)
        }
        var answer = try Translator.decodeResponse(provider.format, answerObject, request: request)
        if let extra = usageExtra { answer.usage = (answer.usage ?? TokenUsage()) + extra }
        context.log.set(usage: answer.usage)
        await settleCompleted(ticket, usage: answer.usage, answerBytes: full.readableBytes, context: context)
        if call.format == .openAI { reasoningCache.store(answer.content) }
        let out = Translator.encodeResponse(call.format, answer, model: call.model, created: created)
        call.recorder?.record(JSONValue.object(out))
        context.log.markFirstByte()
        return .success(Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: JSONValue.object(out).jsonBuffer)))
    }

    // MARK: Shared pieces

    /// Collects a non-streamed upstream body within the configured limit.
    func collect(_ upstream: UpstreamResponse, provider: Provider) async throws -> ByteBuffer {
        do {
            return try await upstream.body.collect(upTo: config.limits.maxResponseBytes)
        } catch is UpstreamBody.BodyTooLarge {
            throw UpstreamFailure.tooLarge(limit: config.limits.maxResponseBytes)
        } catch {
            throw UpstreamFailure.classify(error, provider: provider.name)
        }
    }

    /// Relays a stream chunk by chunk through `processor`. A client that goes away cancels the upstream
    /// request at once (``ConnectionCloseWatcher``; the connection stays reusable) — unless the request is
    /// billed in full (`cancelled_streams: charge`), in which case the gateway stops writing but reads the
    /// provider's stream to its end to learn the exact cost. An upstream that breaks mid-stream produces
    /// an error event in the client's format, then a clean end. A metered stream is settled when it
    /// ends and closes with an SSE comment saying what it cost: `: credits charged=… remaining=…`.
    func streamResponse<P: StreamProcessor>(
        _ upstream: UpstreamResponse, processor: P, call: ClientCall, provider: Provider, context: GatewayContext,
        onComplete: @escaping @Sendable (P) -> Void
    ) -> Response {
        let log = context.log
        log.waitForBody()
        let upstreamBody = upstream.body
        let providerName = provider.name
        let channel = context.channel
        let ticket = log.ticket
        let drain = ticket != nil && meter.cancelledStreams == .charge
        let headers: HTTPFields = [
            .contentType: "text/event-stream; charset=utf-8",
            .cacheControl: "no-cache",
            HTTPField.Name("x-accel-buffering")!: "no",
        ]
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            let relay = StreamRelay(
                processor: processor, upstream: upstreamBody, providerName: providerName, log: log, ticket: ticket, drain: drain,
                onComplete: onComplete)
            if drain {
                try await ConnectionCloseWatcher.watching(channel, onClose: { relay.gone.set(); log.clientLeft() }) { try await relay.run(&writer) }
            } else {
                try await ConnectionCloseWatcher.cancellingOnClose(channel) { try await relay.run(&writer) }
            }
        })
    }

    /// Reads a provider's error answer (bounded) for the retry decision, and for the client if it is the last.
    func failedAttempt(_ upstream: UpstreamResponse, provider: Provider) async -> AttemptResult {
        let raw = (try? await upstream.body.collect(upTo: 256 << 10)) ?? ByteBuffer()
        return .upstreamError(status: upstream.status, headers: upstream.headers, body: raw, provider: provider)
    }

    /// Answers an upstream error in the client's format. Same-format error bodies pass through with
    /// their status; others are re-rendered keeping status and message. A provider rejecting the
    /// gateway's own credentials becomes 502, so the client is not told its key is bad when the
    /// operator's is.
    func renderUpstreamError(status: Int, headers upstreamHeaders: HTTPHeaders, raw: ByteBuffer, provider: Provider, client: WireFormat, context: GatewayContext) throws -> Response {
        try upstreamErrorAnswer(
            status: status, headers: upstreamHeaders, raw: raw, provider: provider, client: client, log: context.log, requestID: context.requestID
        ).response
    }

    func upstreamErrorAnswer(
        status: Int, headers upstreamHeaders: HTTPHeaders, raw: ByteBuffer, provider: Provider, client: WireFormat, log: RequestLog, requestID: String
    ) throws(GatewayError) -> Answer {
        log.set(upstreamStatus: status)
        log.set(errorCode: "upstream_\(status)")
        if UpstreamErrors.isCredentialFailure(raw, status: status, format: provider.format) {
            logger.warning("provider rejected the gateway's credentials", metadata: [
                "request_id": .string(requestID), "provider": .string(provider.name), "upstream_status": .stringConvertible(status),
            ])
            throw GatewayError(status: 502, category: .upstream, code: "upstream_auth_failed",
                               message: "the provider `\(provider.name)` rejected the gateway's credentials (HTTP \(status)); the gateway operator must check its API key")
        }
        guard (400..<600).contains(status) else {
            throw GatewayError(status: 502, category: .upstream, code: "upstream_invalid_response",
                               message: "the provider `\(provider.name)` answered with unexpected HTTP status \(status)")
        }
        var headers: HTTPFields = [.contentType: "application/json"]
        if let retry = upstreamHeaders.first(name: "retry-after") { headers[.retryAfter] = retry }
        if let retryMs = upstreamHeaders.first(name: "retry-after-ms") { headers[.retryAfterMs] = retryMs }
        if provider.format == client, Self.isWellFormedError(raw, format: client) {
            return Answer(status: status, headers: headers, body: raw)
        }
        var error = UpstreamErrors.parse(raw, status: status, format: provider.format, provider: provider.name)
        error.status = UpstreamErrors.clientStatus(status, client: client)
        return Answer(status: error.status, headers: headers, body: Translator.errorBody(client, error, requestID: requestID))
    }

    static func isWellFormedError(_ raw: ByteBuffer, format: WireFormat) -> Bool {
        guard let v = try? JSONValue.parse(raw) else { return false }
        switch format {
        case .openAI, .responses: return v["error"]?["message"]?.stringValue?.isEmpty == false
        case .anthropic: return v["type"]?.stringValue == "error" && v["error"]?["message"]?.stringValue != nil
        case .gemini: return v["error"]?["message"]?.stringValue != nil
        }
    }
}

/// Whether a streaming client has gone (set from the connection watcher or a failed write).
/// One stream being relayed (see ``Gateway/streamResponse(_:processor:call:provider:context:onComplete:)``).
/// Its state lives here rather than in the relaying task's frames, and the rare endings (a broken
/// upstream, an oversized event, a client that left) run in functions of their own: a task keeps the
/// stack memory of its deepest moment for as long as it lives, and an open stream's task lives as long
/// as the stream, so the loop that runs for the stream's whole life keeps a frame of a few hundred bytes.
final class StreamRelay<P: StreamProcessor>: @unchecked Sendable {
    // Unchecked: `run` is the only user of the mutable state, on one task; `gone` is atomic.
    private var processor: P
    private var iterator: UpstreamBody.AsyncIterator
    private let providerName: String
    private let log: RequestLog
    private let ticket: CreditTicket?
    /// Billed in full: a client that leaves stops the writing, not the reading.
    private let drain: Bool
    private let onComplete: @Sendable (P) -> Void
    let gone = ClientGone()

    init(
        processor: P, upstream: UpstreamBody, providerName: String, log: RequestLog, ticket: CreditTicket?, drain: Bool,
        onComplete: @escaping @Sendable (P) -> Void
    ) {
        self.processor = processor
        iterator = upstream.makeAsyncIterator()
        self.providerName = providerName
        self.log = log
        self.ticket = ticket
        self.drain = drain
        self.onComplete = onComplete
    }

    func run(_ writer: inout any ResponseBodyWriter) async throws {
        let result: SettlementResult?
        do {
            while true {
                let chunk: ByteBuffer?
                do {
                    chunk = try await iterator.next()
                } catch {
                    result = try await upstreamBroke(error, &writer)
                    break
                }
                guard let chunk else {
                    result = try await upstreamEnded(&writer)
                    break
                }
                let out: ByteBuffer
                do {
                    out = try processor.process(chunk)
                } catch {
                    result = try await eventTooLarge(&writer)
                    break
                }
                if out.readableBytes > 0 {
                    log.markFirstByte()
                    try await write(out, &writer)
                }
            }
        } catch {
            // The client left (a failed write, or the watcher cancelled the task).
            try await clientLeft(error)
        }
        try await finish(result, &writer)
    }

    private func write(_ bytes: ByteBuffer, _ writer: inout any ResponseBodyWriter) async throws {
        guard bytes.readableBytes > 0, !gone.value else { return }
        do {
            try await writer.write(bytes)
        } catch {
            // The client is gone. Billed in full: keep reading to learn the cost; otherwise stop.
            guard drain, !(error is CancellationError) else { throw error }
            gone.set()
            log.clientLeft()
        }
    }

    /// Settles in a task of its own: the settlement's frames (with the ledger's transaction, when it runs
    /// inline) are freed when that task ends, where in this one they would stay in its slabs for the rest
    /// of the connection's life — and a keep-alive connection's next stream would carry them.
    @inline(never)
    private func settle(_ outcome: BilledOutcome, errorCode: String? = nil) async -> SettlementResult? {
        guard let ticket else { return nil }
        let usage = processor.usage
        let estimate = (processor.outputChars + 3) / 4
        return await Task { await ticket.settle(outcome, reported: usage, outputEstimate: estimate, status: 200, errorCode: errorCode) }.value
    }

    /// The outcome of a stream that ended early: nothing relayed, something relayed, or a client that left.
    private func earlyEnd(contentBefore: Bool) -> BilledOutcome {
        gone.value ? .clientLeft : contentBefore ? .failedAfterContent : .failedBeforeContent
    }

    @inline(never)
    private func upstreamBroke(_ error: any Error, _ writer: inout any ResponseBodyWriter) async throws -> SettlementResult? {
        if error is CancellationError || Task.isCancelled { throw CancellationError() }
        let failure = UpstreamFailure.streamBroken(error, provider: providerName)
        log.set(errorCode: failure.code)
        log.deploymentFailed()
        let hadContent = processor.outputChars > 0
        try await write(processor.fail(failure), &writer)
        return await settle(earlyEnd(contentBefore: hadContent), errorCode: failure.code)
    }

    @inline(never)
    private func upstreamEnded(_ writer: inout any ResponseBodyWriter) async throws -> SettlementResult? {
        try await write(lastEvents(), &writer)
        let (outcome, errorCode) = endOutcome()
        return await settle(outcome, errorCode: errorCode)
    }

    /// The processor's closing events, rendered outside `upstreamEnded`'s frame (inlined, the rendering's
    /// locals made that frame 2.6 KB, kept by every connection whose stream ended).
    @inline(never)
    private func lastEvents() -> ByteBuffer { processor.finish() }

    @inline(never)
    private func endOutcome() -> (BilledOutcome, String?) {
        processor.completed ? (.completed, nil) : (earlyEnd(contentBefore: processor.outputChars > 0), "upstream_stream_error")
    }

    @inline(never)
    private func eventTooLarge(_ writer: inout any ResponseBodyWriter) async throws -> SettlementResult? {
        let failure = UpstreamFailure.eventTooLarge(provider: providerName)
        log.set(errorCode: failure.code)
        let hadContent = processor.outputChars > 0
        try await write(processor.fail(failure), &writer)
        return await settle(earlyEnd(contentBefore: hadContent), errorCode: failure.code)
    }

    @inline(never)
    private func clientLeft(_ error: any Error) async throws -> Never {
        _ = await settle(.clientLeft, errorCode: "client_closed")
        throw error
    }

    @inline(never)
    private func finish(_ result: SettlementResult?, _ writer: inout any ResponseBodyWriter) async throws {
        if let trailer = complete(result) { try await write(trailer, &writer) }
        if !gone.value { try await writer.finish(nil) }
    }

    /// Logs the usage, runs the completion hook and renders the credit trailer, outside `finish`'s frame.
    @inline(never)
    private func complete(_ result: SettlementResult?) -> ByteBuffer? {
        log.set(usage: processor.usage)
        onComplete(processor)
        return result.map(CreditHeaders.trailer)
    }
}

final class ClientGone: Sendable {
    private let flag = Atomic<Bool>(false)
    var value: Bool { flag.load(ordering: .acquiring) }
    func set() { flag.store(true, ordering: .releasing) }
}

