import Hummingbird
import Logging
import NIOCore
import SwitchyardCore
import SwitchyardStore

extension Gateway {
    /// A virtual model: the proposers answer the client's request in parallel (each through its own
    /// routing: retries, fallbacks, cooldowns), then the aggregator writes the final answer from their
    /// drafts and is relayed to the client like any model (stream or not; heartbeats cover the wait).
    /// A proposer that fails is left out; if every one fails, so does the request. The usage reported
    /// and billed is the sum of every call (proposers and aggregator), priced by the ensemble's own
    /// pricing. A client that leaves cancels every proposer and the aggregator.
    func ensemble(_ call: ClientCall, target: ResolvedModel, context: GatewayContext) async throws -> Response {
        guard let (proposers, aggregatorName) = target.route.ensemble else { throw GatewayError.modelNotFound(call.model) }
        guard let object = (try? JSONValue.parse(call.body, maxDepth: config.limits.maxJSONDepth))?.objectValue else {
            throw GatewayError.invalidRequest("the request body must be a JSON object")
        }
        let request = try Translator.decodeRequest(call.format, object, model: call.model, stream: call.stream)
        try await holdEnsembleCredits(call, target: target, proposers: proposers.count, context: context)

        var drafting = request
        drafting.stream = false
        drafting.includeUsage = false
        let draftRequest = drafting
        let requestID = context.requestID
        let drafts = try await withThrowingTaskGroup(of: (Int, Result<ChatResponse, any Error>).self) { group in
            for (i, name) in proposers.enumerated() {
                group.addTask { (i, await Result(catching: { try await self.complete(draftRequest, model: name, requestID: requestID) })) }
            }
            var out: [(Int, Result<ChatResponse, any Error>)] = []
            for try await r in group { out.append(r) }
            return out.sorted { $0.0 < $1.0 }.map(\.1)
        }
        try Task.checkCancellation()
        let answers = drafts.compactMap { try? $0.get() }
        guard !answers.isEmpty else {
            if case .failure(let error) = drafts.last! { throw error }
            throw GatewayError(status: 502, category: .upstream, code: "ensemble_failed", message: "every proposer of `\(call.model)` failed")
        }
        let proposerUsage = answers.compactMap(\.usage).reduce(TokenUsage(), +)

        var final = request
        final.system.append(.text(Self.aggregatorInstruction))
        final.messages.append(ChatMessage(role: .user, content: [.text(Self.draftsMessage(answers))]))
        let aggregator = try resolve(aggregatorName)
        let result = try await route(aggregator, requestID: context.requestID) { attempt in
            try await self.translate(call, request: final, attempt: attempt, context: context, usageExtra: proposerUsage)
        }
        switch result {
        case .success(let response): return response
        case .failure(let failure): return try await respond(to: failure, call: call, context: context)
        }
    }

    /// One non-streamed call through `model`'s routing, for the gateway's own use (no client sees it).
    func complete(_ request: ChatRequest, model: String, requestID: String) async throws -> ChatResponse {
        let target = try resolve(model)
        let result = try await route(target, requestID: requestID) { attempt in
            try await self.completeOnce(request, attempt: attempt, requestID: requestID)
        }
        switch result {
        case .success(let answer): return answer
        case .failure(let failure): throw Self.error(failure, model: model)
        }
    }

    func completeOnce(_ request: ChatRequest, attempt: Attempt, requestID: String) async throws -> AttemptOutcome<ChatResponse> {
        let provider = attempt.provider
        var request = request
        request.model = attempt.clientModel
        let body = try await encodeUpstream(&request, attempt: attempt)
        let upstream: UpstreamResponse
        do {
            var r = upstreamRequest(attempt, body: body, stream: false, requestID: requestID)
            r.stream = false
            upstream = try await provider.send(r, logger: logger)
        } catch {
            if error.code == "client_closed" { throw CancellationError() }
            return .transportError(error)
        }
        guard (200..<300).contains(upstream.status) else {
            let raw = (try? await upstream.body.collect(upTo: 256 << 10)) ?? ByteBuffer()
            return .upstreamError(status: upstream.status, headers: upstream.headers, body: raw, provider: provider)
        }
        attempt.lease.succeeded()
        defer { attempt.lease.release() }
        let full = try await collect(upstream, provider: provider)
        guard let object = (try? JSONValue.parse(full, maxDepth: config.limits.maxJSONDepth))?.objectValue else {
            throw UpstreamFailure.notJSONObject(provider: provider.name)
        }
        return .success(try Translator.decodeResponse(provider.format, object, request: request))
    }

    /// Holds credits for every call an ensemble makes: each proposer and the aggregator may read the
    /// whole request (the aggregator also every draft) and write up to the output cap.
    func holdEnsembleCredits(_ call: ClientCall, target: ResolvedModel, proposers: Int, context: GatewayContext) async throws {
        let price = target.route.config.pricing
        guard !price.isFree else { return }
        let cap = target.route.config.maxTokens ?? 8192
        let calls = proposers + 1
        let input = UsageBounds.inputTokens(call.body) * calls + proposers * cap
        let amount = CostCalculator.maxCost(price, inputTokens: input, outputTokens: cap * calls, pricing: config.pricing)
        guard amount > 0 else { return }
        _ = try await holdCredits(call, amount: amount, price: price, provider: "ensemble", upstreamModel: call.model, context: context)
    }

    static let aggregatorInstruction = """
        You write the final answer. Several models drafted answers to the conversation above; their drafts \
        follow in the last message. Combine them into the single best answer to the user's last request: keep \
        what is correct, fix what is wrong, and answer in the form the conversation asks for (call tools if a \
        tool call is the right next step). Do not mention the drafts or that other models were involved.
        """

    static func draftsMessage(_ answers: [ChatResponse]) -> String {
        var text = "Drafts:\n"
        for (i, answer) in answers.enumerated() {
            text += "\n<draft \(i + 1)>\n"
            for part in answer.content {
                switch part {
                case .text(let t, _): text += t + "\n"
                case .toolCall(_, let name, let arguments): text += "[calls tool \(name) with \(arguments)]\n"
                default: break
                }
            }
            text += "</draft \(i + 1)>\n"
        }
        return text + "\nWrite the final answer now."
    }
}
