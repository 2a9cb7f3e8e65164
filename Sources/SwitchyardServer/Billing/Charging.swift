import HTTPTypes
import Logging
import Hummingbird
import NIOCore
import SwitchyardCore
import SwitchyardStore

extension HTTPField.Name {
    static let xCreditsCharged = HTTPField.Name("X-Credits-Charged")!
    static let xCreditsRemaining = HTTPField.Name("X-Credits-Remaining")!
    static let xCreditsReserved = HTTPField.Name("X-Credits-Reserved")!
}

extension Gateway {
    /// The output cap to send upstream for a per-token priced model when the client set none, so the
    /// reservation (which counts the cap) bounds the cost.
    func injectedOutputCap(_ target: ResolvedModel) -> Int? {
        guard case .perToken = target.route.config.pricing else { return nil }
        return target.route.config.maxTokens ?? 8192
    }

    /// Reserves the most this request can cost, durably, before `body` goes upstream: input bounded by
    /// the body's size (plus media allowances), output by the cap in the body. 402
    /// `insufficient_credits` when the balance cannot cover it. Nil for models that cost nothing.
    func reserveCredits(_ call: ClientCall, attempt: Attempt, upstreamBody body: ByteBuffer, context: GatewayContext) async throws -> CreditTicket? {
        // One hold per request, taken on the first attempt; retries and fallbacks use it.
        if let held = context.log.ticket { return held }
        guard let (amount, price) = maxCost(call, attempt: attempt, upstreamBody: body) else { return nil }
        return try await holdCredits(call, amount: amount, price: price, provider: attempt.provider.name, upstreamModel: attempt.upstreamModel, context: context)
    }

    /// The most `call` can cost on `attempt` and the price it is billed at (the model the client asked
    /// for, even when a fallback serves it); nil when it costs nothing.
    func maxCost(_ call: ClientCall, attempt: Attempt, upstreamBody body: ByteBuffer) -> (Int64, ModelPrice)? {
        let target = attempt.target
        let price = ((try? resolve(call.model))?.route ?? target.route).config.pricing
        guard !price.isFree else { return nil }
        let input = UsageBounds.inputTokens(body)
        var output = 0
        if case .perToken = price {
            let (cap, thinking) = UsageBounds.outputCap(body, format: attempt.provider.format)
            output = (cap ?? (target.route.config.maxTokens ?? 8192)) + thinking
        }
        let amount = CostCalculator.maxCost(price, inputTokens: input, outputTokens: output, pricing: config.pricing)
        return amount > 0 ? (amount, price) : nil
    }

    /// Reserves `amount` for the call, durably; 402 `insufficient_credits` when the balance cannot cover it.
    func holdCredits(
        _ call: ClientCall, amount: Int64, price: ModelPrice, provider: String, upstreamModel: String, context: GatewayContext
    ) async throws -> CreditTicket {
        let request = reservationRequest(call, amount: amount, log: context.log, requestID: context.requestID)
        let result: ReservationResult
        do {
            result = try await meter.reserve(request)
        } catch {
            throw ledgerUnavailable(error, requestID: context.requestID)
        }
        return try ticket(
            for: result, call, amount: amount, price: price, provider: provider, upstreamModel: upstreamModel, log: context.log, requestID: context.requestID)
    }

    func reservationRequest(_ call: ClientCall, amount: Int64, log: RequestLog, requestID: String) -> ReservationRequest {
        let principal = call.principal
        return ReservationRequest(
            id: log.uniqueID, requestID: requestID, userID: principal.key.userID ?? "usr_service", keyID: principal.key.id, amount: amount, model: call.model)
    }

    func ledgerUnavailable(_ error: any Error, requestID: String) -> GatewayError {
        logger.error("cannot reserve credits", metadata: ["request_id": .string(requestID), "error": .string("\(error)")])
        return GatewayError(status: 503, category: .unavailable, code: "ledger_unavailable",
                            message: "the credit ledger is unavailable; retry shortly", retryAfterSeconds: 1)
    }

    /// The hold a reservation decision makes (recorded in `log`), or 402 `insufficient_credits`.
    func ticket(
        for result: ReservationResult, _ call: ClientCall, amount: Int64, price: ModelPrice, provider: String, upstreamModel: String,
        log: RequestLog, requestID: String
    ) throws(GatewayError) -> CreditTicket {
        switch result {
        case .insufficient(let available):
            log.set(creditsRemaining: available)
            throw GatewayError(
                status: 402, category: .billing, code: "insufficient_credits",
                message: "Insufficient credits: this request may cost up to \(Credits(micros: amount)) credits and your balance is \(Credits(micros: available)). Top up or upgrade your plan.")
        case .reserved(let available):
            let principal = call.principal
            let ticket = CreditTicket(
                meter: meter, id: log.uniqueID, requestID: requestID, userID: principal.key.userID ?? "usr_service", keyID: principal.key.id,
                model: call.model, provider: provider, upstreamModel: upstreamModel, stream: call.stream, price: price,
                reserved: amount, inputEstimate: call.body.readableBytes / 4)
            log.set(ticket: ticket, reserved: amount, remaining: available)
            return ticket
        }
    }

    /// Settles a non-streamed answer that arrived in full and records what it cost for the headers.
    func settleCompleted(_ ticket: CreditTicket?, usage: TokenUsage?, answerBytes: Int, context: GatewayContext) async {
        guard let ticket else { return }
        if let result = await ticket.settle(.completed, reported: usage, outputEstimate: answerBytes / 4, status: 200) {
            context.log.set(creditsCharged: result.charged, remaining: result.available)
        }
    }
}

/// Credit headers on a response: what it cost and what is left (non-streamed), or what a stream holds.
enum CreditHeaders {
    static func apply(charged: Int64?, remaining: Int64?, reserved: Int64?, to headers: inout HTTPFields) {
        if let charged { headers[.xCreditsCharged] = Credits(micros: charged).description }
        if let remaining { headers[.xCreditsRemaining] = Credits(micros: remaining).description }
        if let reserved, charged == nil { headers[.xCreditsReserved] = Credits(micros: reserved).description }
    }

    /// The SSE comment that ends a metered stream: `: credits charged=1.5 remaining=748.5`.
    static func trailer(_ result: SettlementResult) -> ByteBuffer {
        ByteBuffer(string: ": credits charged=\(Credits(micros: result.charged)) remaining=\(Credits(micros: result.available))\n\n")
    }
}
