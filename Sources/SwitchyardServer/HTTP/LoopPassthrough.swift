import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import SwitchyardCore
import SwitchyardStore

/// The common model calls served on the client connection's event loop, with no task: an OpenAI Chat
/// Completions or Anthropic Messages request, streamed or not, whose model's deployments (and
/// fallbacks' deployments) are all HTTP providers, from a caller whose key is in the key cache. A
/// provider of another format gets the call translated (``Translator``, ``TranslatingStream``) unless
/// the request has media URLs that provider cannot fetch itself (the gateway's fetch is async: those
/// calls take the task path).
///
/// It makes the same decisions as the task path (``Gateway/chatCompletions(_:context:)`` or
/// ``Gateway/messages(_:context:)`` → ``Gateway/relay(_:context:)``), from the same functions: admission and rate limits, the deployment
/// plan with its retries, backoffs and fallbacks (``RoutePlan``), the credit hold and settlement, the
/// upstream body and the answer's model name and usage, the error bodies, the response headers and the
/// access log line; for streams, ``PassthroughStreamRelay``, the heartbeats while the provider is slow
/// to answer, the error events, the billing of a stream that ends early and the credit trailer. What
/// differs is how it waits: the credit decisions are made in memory
/// (``CreditMeter/reserveImmediately(_:)``; a task only when the ledger must ask the database), a
/// non-streamed answer is read whole by the upstream connection's handler and handed over as a
/// future, a stream's parts are relayed from the upstream connection's reads (``UpstreamSink``; the
/// provider is read no faster than the client takes the events), backoffs and heartbeats are scheduled
/// on the loop, and a client that goes away closes the upstream connection (or, billed in full, is
/// simply no longer written to). An open stream holds no task and no stack.
///
/// Anything else — other client APIs, ensembles, the mock provider, media to inline, a key not cached
/// yet, and every request the checks before admission would refuse — goes to the router, untouched:
/// the eligibility checks have no side effects.
final class LoopPassthrough: LoopResponder {
    let gateway: Gateway
    /// `/v1/chat/completions` and `/v1/messages` under every client prefix, and the format each speaks.
    private let paths: [String: WireFormat]
    let dates = HTTPDate()

    init(gateway: Gateway) {
        self.gateway = gateway
        var paths: [String: WireFormat] = [:]
        for prefix in gateway.clientPrefixes {
            paths["\(prefix)/v1/chat/completions"] = .openAI
            paths["\(prefix)/v1/messages"] = .anthropic
        }
        self.paths = paths
    }

    func answer(_ head: HTTPRequest, body: ByteBuffer, exchange: LoopExchange) -> Bool {
        guard head.method == .post, let target = head.path else { return false }
        // The query is not part of the route (Claude Code sends `/v1/messages?beta=true`).
        let path = target.firstIndex(of: "?").map { String(target[..<$0]) } ?? target
        guard let format = paths[path], let (call, model, canonical) = eligible(head, body: body, format: format) else { return false }
        LoopCall(self, call: call, target: model, canonical: canonical, path: path, exchange: exchange).start()
        return true
    }

    /// The call, when this path serves it, with its canonical form when a deployment needs it
    /// translated; nil (having changed nothing) otherwise.
    private func eligible(_ head: HTTPRequest, body: ByteBuffer, format: WireFormat) -> (ClientCall, ResolvedModel, ChatRequest?)? {
        let fields = head.headerFields
        let view = HTTPFieldsView(headers: fields)
        guard let presented = try? Authenticator.credential(view), APIKeys.isPlausible(presented),
            case .some(.some(let principal)) = gateway.keyCache.cached(APIKeys.hash(presented)),
            (try? principal.check(now: EpochClock.nowMilliseconds())) != nil,
            let doc = try? ScannedObject(body, maxDepth: gateway.config.limits.maxJSONDepth),
            let m = doc.member("model"), m.kind == .string,
            doc.member("messages")?.kind == .array
        else { return nil }
        let stream: Bool
        switch doc.member("stream")?.kind {
        case .false?, .null?, nil: stream = false
        case .true?: stream = true
        default: return nil
        }
        let model = doc.stringValue(m)
        guard let target = try? gateway.resolve(model), target.route.ensemble == nil, principal.allows(model),
            let others = otherFormats(target, format: format)
        else {
            return nil
        }
        var canonical: ChatRequest?
        if !others.isEmpty {
            // Translated for some deployment: decoded once here (a request that does not decode is
            // answered by the task path), and only when no deployment needs media fetched for it.
            guard let object = (try? JSONValue.parse(body, maxDepth: gateway.config.limits.maxJSONDepth))?.objectValue,
                let decoded = try? Translator.decodeRequest(format, object, model: model, stream: stream),
                !others.contains(where: { other in
                    let (images, documents) = Gateway.inlinedMedia(other)
                    return MediaFetcher.needsFetching(decoded, images: images, documents: documents)
                })
            else { return nil }
            canonical = decoded
        }
        var forward: [(String, String)] = []
        if format == .anthropic {
            // As ``Gateway/anthropicCall(_:context:)``: the version and every beta flag go as sent.
            if let v = fields[.anthropicVersion] { forward.append(("anthropic-version", v)) }
            let betas = fields[values: .anthropicBeta].joined(separator: ",")
            if !betas.isEmpty { forward.append(("anthropic-beta", betas)) }
        }
        let request = Request(head: head, body: RequestBody(buffer: body))
        let call = ClientCall(
            format: format, principal: principal, request: request, body: body, doc: doc, model: model, stream: stream, forwardHeaders: forward)
        return (call, target, canonical)
    }

    /// The formats other than `format` among the providers the call could be sent to; nil when one of
    /// them cannot be served here (the mock provider, an ensemble).
    private func otherFormats(_ target: ResolvedModel, format: WireFormat) -> Set<WireFormat>? {
        var others = Set<WireFormat>()
        func add(_ route: ModelRoute) -> Bool {
            guard route.ensemble == nil else { return false }
            for d in route.deployments {
                guard d.provider.isHTTP else { return false }
                if d.provider.format != format { others.insert(d.provider.format) }
            }
            return true
        }
        guard add(target.route) else { return nil }
        for name in target.route.fallbacks {
            if let route = gateway.models[name], !add(route) { return nil }
        }
        return others
    }
}

/// One call on ``LoopPassthrough``'s path: a state machine run on the connection's event loop.
private final class LoopCall: UpstreamSink {
    private let path: LoopPassthrough
    private var gateway: Gateway { path.gateway }
    private let call: ClientCall
    private let target: ResolvedModel
    /// The call decoded, when some deployment speaks another format; and as prepared for the attempt
    /// in flight when that attempt is translated.
    private let canonical: ChatRequest?
    private var translated: ChatRequest?
    private let requestPath: String
    private let exchange: LoopExchange
    private var loop: any EventLoop { exchange.eventLoop }
    private let log = RequestLog()
    private let id: String
    private var plan: RoutePlan
    /// The attempt in flight, and the upstream connection it uses.
    private var attempt: Attempt?
    private var upstream: UpstreamPool.Connection?
    /// The client went away; `drains` says whether the call goes on to learn its cost.
    private var gone = false
    private let drains: Bool
    private var ended = false
    /// Streams: whether the provider is asked for usage on the client's behalf (its chunk is dropped).
    private var injectedUsage = false
    /// Streams: the SSE head is written (by a heartbeat, or the stream itself).
    private var streamed = false
    private var heartbeat: Scheduled<Void>?
    /// Streams: the relay once the provider's event stream started, and the upstream exchange's id.
    private var relay: (any StreamProcessor)?
    private var upstreamExchange: Int?
    /// Streams: a body read whole (an error status, or a 2xx that is not an event stream).
    private var collecting: (head: HTTPResponseHead, limit: Int, body: ByteBuffer)?
    /// The call closed the upstream connection itself: what the connection reports after that is ignored.
    private var stopped = false

    init(_ path: LoopPassthrough, call: ClientCall, target: ResolvedModel, canonical: ChatRequest?, path requestPath: String, exchange: LoopExchange) {
        self.path = path
        self.call = call
        self.target = target
        self.canonical = canonical
        self.requestPath = requestPath
        self.exchange = exchange
        id = RequestIDs.from(call.request.headers) ?? RequestIDs.generate()
        plan = RoutePlan(target: target, models: path.gateway.models, routing: path.gateway.config.routing)
        drains = path.gateway.drainsOnLeave(target)
    }

    func start() {
        log.begin(requestID: id, method: "POST", path: requestPath, logger: gateway.logger, meter: gateway.meter)
        log.set(principal: call.principal)
        log.set(bytesIn: call.body.readableBytes)
        log.markModelCall(model: call.model)
        log.set(model: call.model, provider: target.route.deployments.first?.provider.name ?? "", upstreamModel: "", stream: call.stream)
        do {
            try gateway.admit(call, log: log)
        } catch {
            fail(error)
            return
        }
        exchange.onClientGone { [self] in clientLeft() }
        if call.stream, gateway.config.routing.heartbeat.milliseconds > 0 { armHeartbeat() }
        step()
    }

    // MARK: Routing

    private func step() {
        guard !abandoned else { return }
        switch plan.next(now: EpochClock.nowMilliseconds()) {
        case .wait(let milliseconds):
            loop.assumeIsolated().scheduleTask(in: .milliseconds(milliseconds)) { [self] in step() }
        case .finished(let failure):
            routingFailed(failure)
        case .attempt(let attempt):
            send(attempt)
        }
    }

    private func send(_ attempt: Attempt) {
        self.attempt = attempt
        log.set(model: call.model, provider: attempt.provider.name, upstreamModel: attempt.upstreamModel, stream: call.stream)
        let body: ByteBuffer
        do {
            if attempt.provider.format == call.format {
                translated = nil
                (body, injectedUsage) = try gateway.passthroughBody(call, attempt: attempt)
            } else {
                guard let canonical else { throw GatewayError.internalError() }
                let request = gateway.translatedRequest(canonical, client: call.format, attempt: attempt)
                body = try gateway.encodeUpstreamBody(request, attempt: attempt)
                translated = request
                injectedUsage = false
            }
        } catch {
            attempt.lease.release()
            fail(error)
            return
        }
        guard log.ticket == nil, let (amount, price) = gateway.maxCost(call, attempt: attempt, upstreamBody: body) else {
            forward(body, attempt: attempt)
            return
        }
        let request = gateway.reservationRequest(call, amount: amount, log: log, requestID: id)
        let reserved = { [self] (result: Result<ReservationResult, any Error>) in
            let ticket: CreditTicket
            do {
                let decision: ReservationResult
                do { decision = try result.get() } catch { throw gateway.ledgerUnavailable(error, requestID: id) }
                ticket = try gateway.ticket(
                    for: decision, call, amount: amount, price: price, provider: attempt.provider.name, upstreamModel: attempt.upstreamModel,
                    log: log, requestID: id)
            } catch {
                attempt.lease.release()
                fail(error)
                return
            }
            guard !ended else {
                // The client left while the database decided: nothing was sent, the hold goes back per policy.
                _ = ticket.settleImmediately(.clientLeft, reported: nil, status: 499, errorCode: "client_closed") { _ in }
                return
            }
            forward(body, attempt: attempt)
        }
        if let decided = gateway.meter.reserveImmediately(request) {
            reserved(.success(decided))
            return
        }
        // Only the database can decide: ask it from a task, and go on here with its answer.
        let meter = gateway.meter
        let promise = loop.makePromise(of: ReservationResult.self)
        promise.completeWithTask { try await meter.reserve(request) }
        promise.futureResult.assumeIsolated().whenComplete(reserved)
    }

    /// Sends the upstream request and waits for the whole answer, or relays the stream.
    private func forward(_ body: ByteBuffer, attempt: Attempt) {
        guard !abandoned else { return }
        // Client headers for the provider (`anthropic-version`, `anthropic-beta`) only in its own format.
        let headers = attempt.provider.format == call.format ? call.forwardHeaders : []
        let request = gateway.upstreamRequest(attempt, body: body, stream: call.stream, requestID: id, headers: headers)
        let pool: UpstreamPool
        let head: HTTPRequestHead
        do throws(GatewayError) {
            guard let prepared = try attempt.provider.httpRequest(request) else { throw GatewayError.internalError() }
            (pool, head) = prepared
        } catch {
            record(.transportError(error))
            return
        }
        let deadline = NIODeadline.now() + .nanoseconds(Int64(request.firstByteTimeout.nanoseconds))
        let limit = gateway.config.limits.maxResponseBytes
        let idle = pool.settings.idleTimeout
        pool.acquire(deadline: deadline, on: loop).hop(to: loop).assumeIsolated().whenComplete { [self] result in
            switch result {
            case .failure(let error):
                answered(.failure(error))
            case .success(let connection):
                guard !abandoned else {
                    pool.giveBack(connection)
                    return
                }
                upstream = connection
                if call.stream {
                    startStream(on: connection, head, body: body, deadline: deadline, idle: idle)
                    return
                }
                let started: EventLoopFuture<CollectedUpstreamResponse>
                if connection.channel.eventLoop.inEventLoop {
                    started = connection.handler.value.startCollecting(head, body: body, firstByteDeadline: deadline, idleTimeout: idle, limit: limit)
                } else {
                    let handler = connection.handler
                    started = connection.channel.eventLoop.flatSubmit {
                        handler.value.startCollecting(head, body: body, firstByteDeadline: deadline, idleTimeout: idle, limit: limit)
                    }.hop(to: loop)
                }
                started.assumeIsolated().whenComplete { [self] result in answered(result) }
            }
        }
    }

    private func answered(_ result: Result<CollectedUpstreamResponse, any Error>) {
        upstream = nil
        upstreamExchange = nil
        guard let attempt, !abandoned else {
            if !ended { clientClosed() }
            return
        }
        let answer: CollectedUpstreamResponse
        switch result {
        case .failure(let error) where error is UpstreamBody.BodyTooLarge:
            fail(UpstreamFailure.tooLarge(limit: gateway.config.limits.maxResponseBytes))
            return
        case .failure(let error):
            record(.transportError(UpstreamFailure.classify(error, provider: attempt.provider.name)))
            return
        case .success(let a):
            answer = a
        }
        let status = Int(answer.head.status.code)
        log.set(upstreamStatus: status)
        guard (200..<300).contains(status) else {
            record(.upstreamError(status: status, headers: answer.head.headers, body: answer.body, provider: attempt.provider))
            return
        }
        attempt.lease.succeeded()
        log.set(deploymentLease: attempt.lease)
        if let translated {
            translatedAnswer(answer.body, request: translated, provider: attempt.provider)
            return
        }
        let bytes: ByteBuffer
        let usage: TokenUsage?
        do {
            (bytes, usage) = try gateway.passthroughAnswer(answer.body, format: call.format, model: call.model, provider: attempt.provider)
        } catch {
            fail(error)
            return
        }
        log.set(usage: usage)
        settle(.completed, reported: usage, outputEstimate: answer.body.readableBytes / 4, status: 200, errorCode: nil) { [self] _ in
            log.markFirstByte()
            respond(Answer(status: 200, headers: [.contentType: "application/json"], body: bytes))
        }
    }

    /// A whole answer from a provider of another format, in the client's (as the task path's translate).
    private func translatedAnswer(_ full: ByteBuffer, request: ChatRequest, provider: Provider) {
        guard let object = (try? JSONValue.parse(full, maxDepth: gateway.config.limits.maxJSONDepth))?.objectValue else {
            fail(UpstreamFailure.notJSONObject(provider: provider.name))
            return
        }
        let answer: ChatResponse
        do {
            answer = try Translator.decodeResponse(provider.format, object, request: request)
        } catch {
            fail(error)
            return
        }
        let created = Int(EpochClock.nowMilliseconds() / 1000)
        log.set(usage: answer.usage)
        settle(.completed, reported: answer.usage, outputEstimate: full.readableBytes / 4, status: 200, errorCode: nil) { [self] _ in
            if call.format == .openAI { gateway.reasoningCache.store(answer.content) }
            let out = Translator.encodeResponse(call.format, answer, model: call.model, created: created)
            log.markFirstByte()
            respond(Answer(status: 200, headers: [.contentType: "application/json"], body: JSONValue.object(out).jsonBuffer))
        }
    }

    /// A failed attempt: on to the next, or the end of routing.
    private func record(_ failure: AttemptOutcome<Never>) {
        guard let attempt else { return }
        self.attempt = nil
        if case .stop(let end) = plan.record(failure, of: attempt) {
            routingFailed(end)
            return
        }
        switch failure {
        case .upstreamError(let status, _, _, _):
            gateway.logger.info("retrying after an upstream error", metadata: [
                "request_id": .string(id), "deployment": .string(attempt.deployment.id), "upstream_status": .stringConvertible(status),
            ])
        case .transportError(let error):
            gateway.logger.info("retrying after a transport error", metadata: [
                "request_id": .string(id), "deployment": .string(attempt.deployment.id), "error": .string(error.code),
            ])
        case .success: break
        }
        step()
    }

    /// As ``Gateway/respond(to:call:context:)``.
    private func routingFailed(_ failure: RoutingFailure) {
        switch failure {
        case .attempt(.transportError(let error)):
            fail(error)
        case .attempt(.upstreamError(let status, let headers, let raw, let provider)):
            settle(.failedBeforeContent, reported: nil, status: status, errorCode: "upstream_\(status)") { [self] _ in
                do {
                    respond(try gateway.upstreamErrorAnswer(
                        status: status, headers: headers, raw: raw, provider: provider, client: call.format, log: log, requestID: id))
                } catch {
                    fail(error)
                }
            }
        case .unavailable(let at):
            fail(Gateway.unavailable(call.model, availableAt: at))
        }
    }

    // MARK: Streams

    private func startStream(on connection: UpstreamPool.Connection, _ head: HTTPRequestHead, body: ByteBuffer, deadline: NIODeadline, idle: TimeAmount) {
        let upstreamLoop = connection.channel.eventLoop
        let handler = connection.handler
        if upstreamLoop.inEventLoop {
            upstreamExchange = handler.value.startStreaming(head, body: body, firstByteDeadline: deadline, idleTimeout: idle, sink: self)
            if upstreamExchange == nil { answered(.failure(UpstreamTransportError.closed)) }
            return
        }
        // The pool had no connection on this loop: the parts hop here, one task on the loop per part.
        let sink = HoppingSink(NIOLoopBound(self, eventLoop: loop))
        upstreamLoop.submit {
            handler.value.startStreaming(head, body: body, firstByteDeadline: deadline, idleTimeout: idle, sink: sink)
        }.hop(to: loop).assumeIsolated().whenComplete { [self] result in
            guard case .success(let id?) = result else {
                answered(.failure(UpstreamTransportError.closed))
                return
            }
            upstreamExchange = id
        }
    }

    func upstreamHead(_ head: HTTPResponseHead) {
        guard let attempt, !abandoned, !stopped else { return }
        let status = Int(head.status.code)
        log.set(upstreamStatus: status)
        guard (200..<300).contains(status) else {
            // Read whole (bounded) for the retry decision, and for the client if it is the last try.
            collecting = (head, 256 << 10, ByteBuffer())
            return
        }
        attempt.lease.succeeded()
        log.set(deploymentLease: attempt.lease)
        guard head.headers.first(name: "content-type")?.lowercased().hasPrefix("text/event-stream") == true else {
            // A provider that answers a stream request with a whole body: answered as a non-streamed call.
            collecting = (head, gateway.config.limits.maxResponseBytes, ByteBuffer())
            return
        }
        cancelHeartbeat()
        if let translated {
            relay = TranslatingStream(
                from: attempt.provider.format, to: call.format, request: translated, clientModel: call.model,
                created: Int(EpochClock.nowMilliseconds() / 1000))
        } else {
            relay = PassthroughStreamRelay(
                format: call.format, clientModel: call.model, maxDepth: gateway.config.limits.maxJSONDepth, dropUsageChunk: injectedUsage)
        }
        if !streamed { writeStreamHead() }
    }

    func upstreamBody(_ buffer: ByteBuffer) {
        guard !ended, !stopped else { return }
        if collecting != nil {
            guard collecting!.body.readableBytes + buffer.readableBytes <= collecting!.limit else {
                let head = collecting!.head
                collecting = nil
                stopUpstream()
                if (200..<300).contains(Int(head.status.code)) {
                    answered(.failure(UpstreamBody.BodyTooLarge()))
                } else {
                    // An error body past its bound is dropped, as the task path's bounded read drops it.
                    upstream = nil
                    answered(.success(CollectedUpstreamResponse(head: head, body: ByteBuffer())))
                }
                return
            }
            collecting!.body.writeImmutableBuffer(buffer)
            return
        }
        guard relay != nil else { return }
        let out: ByteBuffer
        do {
            out = try relay!.process(buffer)
        } catch {
            eventTooLarge()
            return
        }
        if out.readableBytes > 0 {
            log.markFirstByte()
            writeChunk(out)
        }
    }

    func upstreamEnd() {
        upstream = nil
        upstreamExchange = nil
        guard !ended, !stopped else { return }
        if let collected = collecting {
            collecting = nil
            answered(.success(CollectedUpstreamResponse(head: collected.head, body: collected.body)))
            return
        }
        guard var relay else { return }
        let last = relay.finish()
        self.relay = relay
        writeChunk(last)
        if relay.completed {
            finishStream(.completed, errorCode: nil)
        } else {
            finishStream(earlyEnd(contentBefore: relay.outputChars > 0), errorCode: "upstream_stream_error")
        }
    }

    func upstreamFailed(_ error: any Error) {
        upstream = nil
        upstreamExchange = nil
        guard !ended, !stopped else { return }
        guard var relay else {
            collecting = nil
            answered(.failure(error))
            return
        }
        if gone && !drains { return }  // ``clientLeft()`` ended it
        let failure = UpstreamFailure.streamBroken(error, provider: attempt?.provider.name ?? "")
        log.set(errorCode: failure.code)
        log.deploymentFailed()
        let hadContent = relay.outputChars > 0
        writeChunk(relay.fail(failure))
        self.relay = relay
        finishStream(earlyEnd(contentBefore: hadContent), errorCode: failure.code)
    }

    private func eventTooLarge() {
        guard var relay else { return }
        stopUpstream()
        let failure = UpstreamFailure.eventTooLarge(provider: attempt?.provider.name ?? "")
        log.set(errorCode: failure.code)
        let hadContent = relay.outputChars > 0
        writeChunk(relay.fail(failure))
        self.relay = relay
        finishStream(earlyEnd(contentBefore: hadContent), errorCode: failure.code)
    }

    /// How a stream that ended early is billed: nothing relayed, something relayed, or a client that left.
    private func earlyEnd(contentBefore: Bool) -> BilledOutcome {
        gone ? .clientLeft : contentBefore ? .failedAfterContent : .failedBeforeContent
    }

    /// Settles the stream, then ends it with the credit trailer.
    private func finishStream(_ outcome: BilledOutcome, errorCode: String?) {
        guard let relay, !ended else { return }
        ended = true
        settle(outcome, reported: relay.usage, outputEstimate: (relay.outputChars + 3) / 4, status: 200, errorCode: errorCode) { [self] result in
            log.set(usage: relay.usage)
            // As the task path's completion hook: what an OpenAI client cannot carry between turns is kept.
            if call.format == .openAI, let stream = relay as? TranslatingStream { gateway.reasoningCache.store(stream.accumulator.content) }
            endStream(with: result.map(CreditHeaders.trailer) ?? ByteBuffer(), outcome: "ok")
        }
    }

    /// Closes the upstream connection: the provider stops, and its failure report is ignored.
    private func stopUpstream() {
        let connection = upstream
        upstream = nil
        upstreamExchange = nil
        stopped = true
        connection?.channel.close(promise: nil)
    }

    private func writeStreamHead() {
        var headers: HTTPFields = [
            .contentType: "text/event-stream; charset=utf-8",
            .cacheControl: "no-cache",
            HTTPField.Name("x-accel-buffering")!: "no",
        ]
        GatewayMiddleware.finish(&headers, requestID: id, format: call.format, log: log, limiter: gateway.limiter)
        headers[.date] = path.dates.current
        log.set(status: 200)
        streamed = true
        exchange.writeHead(HTTPResponse(status: .ok, headerFields: headers))
    }

    /// Writes a part of the stream; when the client's buffer is full, the provider is not read until it drains.
    private func writeChunk(_ bytes: ByteBuffer) {
        guard bytes.readableBytes > 0, !gone, let wait = exchange.writeBody(bytes) else { return }
        guard let connection = upstream, let id = upstreamExchange else { return }
        let handler = connection.handler
        let upstreamLoop = connection.channel.eventLoop
        if upstreamLoop.inEventLoop { handler.value.pause(id) } else { upstreamLoop.execute { handler.value.pause(id) } }
        wait.whenComplete { _ in
            if upstreamLoop.inEventLoop { handler.value.demand(id) } else { upstreamLoop.execute { handler.value.demand(id) } }
        }
    }

    /// Writes the stream's last bytes, ends it and writes the access line.
    private func endStream(with last: ByteBuffer, outcome: String) {
        cancelHeartbeat()
        ended = true
        writeChunk(last)
        // A client that left mid-answer cannot be given its end: the connection closes instead.
        if gone { exchange.abort() } else { exchange.end() }
        log.emit(outcome: outcome)
    }

    private func armHeartbeat() {
        let interval = TimeAmount.milliseconds(gateway.config.routing.heartbeat.milliseconds)
        heartbeat = loop.assumeIsolated().scheduleTask(in: interval) { [self] in
            heartbeat = nil
            guard !ended, relay == nil else { return }
            // The provider is slow to answer: the status line goes out now, then a ping per interval.
            if !streamed { writeStreamHead() }
            writeChunk(Gateway.ping(call.format))
            armHeartbeat()
        }
    }

    private func cancelHeartbeat() {
        heartbeat?.cancel()
        heartbeat = nil
    }

    // MARK: The client

    /// Whether the call stops because its client left (a call billed in full goes on).
    private var abandoned: Bool { ended || (gone && !drains) }

    private func clientLeft() {
        guard !gone, !ended else { return }
        gone = true
        if drains {
            // Billed in full: the call goes on to learn its cost; the client's concurrency slot is free now.
            log.clientLeft()
            return
        }
        if let relay {
            // Mid-stream: stop the provider and bill what was relayed, per policy.
            ended = true
            cancelHeartbeat()
            upstream?.channel.close(promise: nil)
            upstream = nil
            exchange.abort()
            settle(.clientLeft, reported: relay.usage, outputEstimate: (relay.outputChars + 3) / 4, status: 200, errorCode: "client_closed") {
                [self] _ in
                log.emit(outcome: "client_closed")
            }
            return
        }
        // With a provider request in flight, closing its connection stops the provider and the failed
        // exchange ends the call (``answered(_:)``); otherwise it ends now, and whatever the call was
        // waiting for (a backoff, a connection, the ledger) finds it ended.
        if let upstream {
            upstream.channel.close(promise: nil)
        } else {
            clientClosed()
        }
    }

    /// The client left before its answer: as the task path's cancellation, 499 `client_closed`.
    private func clientClosed() {
        attempt?.lease.release()
        attempt = nil
        fail(GatewayError(status: 499, category: .invalidRequest, code: "client_closed", message: "the client closed the connection"))
    }

    // MARK: Ending

    /// Settles the hold (if any) and goes on with `then`, at once when the meter decides in memory.
    private func settle(
        _ outcome: BilledOutcome, reported: TokenUsage?, outputEstimate: Int = 0, status: Int, errorCode: String?,
        then: @escaping (SettlementResult?) -> Void
    ) {
        guard let ticket = log.ticket else {
            then(nil)
            return
        }
        let log = self.log
        let loop = self.loop
        let next = NIOLoopBound(then, eventLoop: loop)
        let immediate = ticket.settleImmediately(outcome, reported: reported, outputEstimate: outputEstimate, status: status, errorCode: errorCode) {
            result in
            if let result { log.set(creditsCharged: result.charged, remaining: result.available) }
            loop.execute { next.value(result) }
        }
        if case .settled(let result) = immediate {
            if let result { log.set(creditsCharged: result.charged, remaining: result.available) }
            then(result)
        }
    }

    /// As the middleware's error handling: the error in the client's format, its credits settled.
    private func fail(_ error: any Error) {
        guard !ended else { return }
        ended = true
        let gatewayError = GatewayError(error, method: .post, path: requestPath)
        if gatewayError.category == .internal {
            gateway.logger.error("unhandled error", metadata: ["request_id": .string(id), "error": .string("\(error)")])
        }
        log.set(errorCode: gatewayError.code)
        let left = gatewayError.code == "client_closed"
        settle(left ? .clientLeft : .failedBeforeContent, reported: nil, status: gatewayError.status, errorCode: gatewayError.code) { [self] _ in
            if streamed {
                // The status line went out with the heartbeats: the error is an event in the stream.
                endStream(with: StreamErrors.event(call.format, gatewayError), outcome: left ? "client_closed" : "ok")
            } else {
                write(ErrorResponse.answer(gatewayError, format: call.format, requestID: id))
            }
        }
    }

    private func respond(_ answer: Answer) {
        guard !ended else { return }
        ended = true
        write(answer)
    }

    /// Writes the answer with the headers every answer gets, and the access log line.
    private func write(_ answer: Answer) {
        cancelHeartbeat()
        if streamed {
            // After heartbeats: a success's body goes into the stream, an error becomes an event.
            let bytes = (200..<300).contains(answer.status) ? answer.body : Gateway.errorEvent(call.format, body: answer.body)
            endStream(with: bytes, outcome: "ok")
            return
        }
        var headers = answer.headers
        GatewayMiddleware.finish(&headers, requestID: id, format: call.format, log: log, limiter: gateway.limiter)
        headers[.date] = path.dates.current
        headers[.contentLength] = String(answer.body.readableBytes)
        log.set(status: answer.status)
        exchange.write(HTTPResponse(status: .init(code: answer.status), headerFields: headers), body: answer.body)
        log.emit(outcome: answer.status == 499 ? "client_closed" : "ok")
    }
}

/// Hands an upstream connection's parts to a call on another event loop.
private final class HoppingSink: UpstreamSink, Sendable {
    private let call: NIOLoopBound<LoopCall>
    init(_ call: NIOLoopBound<LoopCall>) { self.call = call }

    func upstreamHead(_ head: HTTPResponseHead) {
        let call = self.call
        call.eventLoop.execute { call.value.upstreamHead(head) }
    }
    func upstreamBody(_ buffer: ByteBuffer) {
        let call = self.call
        call.eventLoop.execute { call.value.upstreamBody(buffer) }
    }
    func upstreamEnd() {
        let call = self.call
        call.eventLoop.execute { call.value.upstreamEnd() }
    }
    func upstreamFailed(_ error: any Error) {
        let call = self.call
        call.eventLoop.execute { call.value.upstreamFailed(error) }
    }
}
