import Logging
import NIOCore
import Synchronization
import SwitchyardCore
import SwitchyardStore

/// The facts of one request, filled in along the request path and written as one structured log line
/// when the response body has been sent (or the request was abandoned).
public final class RequestLog: Sendable {
    struct Fields {
        var requestID = ""
        var method = ""
        var path = ""
        var status = 0
        var keyID: String?
        var model: String?
        var provider: String?
        var upstreamModel: String?
        var stream: Bool?
        var bytesIn = 0
        var errorCode: String?
        var usage: TokenUsage?
        var upstreamStatus: Int?
        var firstByteNanos: UInt64?
        var outcome: String?
        var emitted = false
        var waitsForBody = false
        var logger: Logger?
        /// The caller (once authenticated), for rate-limit headers on responses that were not admitted.
        var principal: Principal?
        /// What the rate-limit headers report, set at admission.
        var rateLimit: RateLimitSnapshot?
        /// The concurrency slot and token estimate held until the response ends.
        var lease: LimitLease?
        /// The model call's credit hold (settled by the request path; here only as a last resort).
        var ticket: CreditTicket?
        /// Credit figures for the response headers.
        var creditsCharged: Int64?
        var creditsRemaining: Int64?
        var creditsReserved: Int64?
        /// Set for model calls: they get a usage row whether or not they held credits.
        var modelCall: String?
        var meter: CreditMeter?
        var clientGone = false
        /// The deployment serving the request (in flight until the response ends).
        var deployment: DeploymentLease?
    }

    private let fields = Mutex(Fields())
    let start = ContinuousClock.now
    /// Unique per request even when the client chose its `x-request-id`: the ledger's key.
    let uniqueID = RequestIDs.generate()

    public init() {}

    func begin(requestID: String, method: String, path: String, logger: Logger, meter: CreditMeter? = nil) {
        fields.withLock {
            $0.requestID = requestID
            $0.method = method
            $0.path = path
            $0.logger = logger
            $0.meter = meter
        }
    }

    /// Marks a model call (it gets a usage row, successful or not).
    func markModelCall(model: String) { fields.withLock { $0.modelCall = model } }
    func set(ticket: CreditTicket, reserved: Int64, remaining: Int64) {
        fields.withLock {
            $0.ticket = ticket
            $0.creditsReserved = reserved
            $0.creditsRemaining = remaining
        }
    }
    func set(creditsRemaining: Int64) { fields.withLock { $0.creditsRemaining = creditsRemaining } }
    func set(creditsCharged: Int64, remaining: Int64) {
        fields.withLock {
            $0.creditsCharged = creditsCharged
            $0.creditsRemaining = remaining
        }
    }
    var ticket: CreditTicket? { fields.withLock { $0.ticket } }

    func set(deploymentLease: DeploymentLease) { fields.withLock { $0.deployment = deploymentLease } }
    /// The provider's stream broke after a successful head: a failure for the deployment's health.
    func deploymentFailed() { fields.withLock { $0.deployment }?.failed() }

    /// The client left while the request goes on (to learn what it cost): its concurrency slot is free now.
    func clientLeft() {
        let lease = fields.withLock { f -> LimitLease? in
            f.clientGone = true
            defer { f.lease = nil }
            return f.lease
        }
        lease?.release(actualTokens: nil)
    }

    var clientGone: Bool { fields.withLock { $0.clientGone } }
    /// Charged, remaining and reserved credits for the response headers.
    var creditFigures: (charged: Int64?, remaining: Int64?, reserved: Int64?) {
        fields.withLock { ($0.creditsCharged, $0.creditsRemaining, $0.creditsReserved) }
    }

    func set(principal: Principal) {
        fields.withLock {
            $0.keyID = principal.key.id
            $0.principal = principal
        }
    }
    func set(rateLimit: RateLimitSnapshot, lease: LimitLease?) {
        fields.withLock {
            $0.rateLimit = rateLimit
            $0.lease = lease
        }
    }
    /// The caller and the snapshot taken at admission, for the response headers.
    var rateLimitState: (Principal?, RateLimitSnapshot?) { fields.withLock { ($0.principal, $0.rateLimit) } }
    public func set(model: String, provider: String, upstreamModel: String, stream: Bool) {
        fields.withLock {
            $0.model = model
            $0.provider = provider
            $0.upstreamModel = upstreamModel
            $0.stream = stream
        }
    }
    public func set(bytesIn: Int) { fields.withLock { $0.bytesIn = bytesIn } }
    public func set(status: Int) { fields.withLock { $0.status = status } }
    public func set(errorCode: String) { fields.withLock { $0.errorCode = errorCode } }
    public func set(usage: TokenUsage?) { if let usage { fields.withLock { $0.usage = usage } } }
    public func set(upstreamStatus: Int) { fields.withLock { $0.upstreamStatus = upstreamStatus } }
    public func markFirstByte() {
        let elapsed = ContinuousClock.now - start
        fields.withLock { if $0.firstByteNanos == nil { $0.firstByteNanos = elapsed.nanoseconds } }
    }

    /// Whether the line waits until the response body has been written (streams); otherwise it is
    /// written as soon as the handler returns, and the response keeps Hummingbird's one-write fast path.
    var waitsForBody: Bool { fields.withLock { $0.waitsForBody } }

    /// Marks the response as streamed: the line is written after its last byte.
    public func waitForBody() { fields.withLock { $0.waitsForBody = true } }

    /// Ends the request once: releases its concurrency slot (correcting its token estimate with the
    /// usage seen) and writes the access log line. `outcome` is `ok`, `client_closed`, `write_failed`
    /// or `abandoned`.
    public func emit(outcome: String) {
        let elapsed = ContinuousClock.now - start
        let f = fields.withLock { f -> Fields? in
            guard !f.emitted else { return nil }
            f.emitted = true
            f.outcome = outcome
            let copy = f
            f.lease = nil
            f.principal = nil
            f.deployment = nil
            return copy
        }
        guard let f else { return }
        f.lease?.release(actualTokens: f.usage.map { $0.inputTokens + $0.outputTokens })
        f.deployment?.release()
        if let ticket = f.ticket, !ticket.isSettled {
            // The request path did not settle (a failure nobody caught): a client that left is charged
            // per policy, anything else is a platform failure before content, so refunded.
            let gone = outcome == "client_closed" || outcome == "abandoned" || outcome == "write_failed"
            let usage = f.usage
            let status = f.status
            Task { await ticket.settle(gone ? .clientLeft : .failedBeforeContent, reported: usage, status: status, errorCode: f.errorCode) }
        } else if f.ticket == nil, let model = f.modelCall, let meter = f.meter, let principal = f.principal {
            let u = f.usage ?? TokenUsage()
            meter.record(UsageRecord(
                id: uniqueID, requestID: f.requestID, createdAt: EpochClock.nowMilliseconds() - Int64(elapsed.nanoseconds / 1_000_000),
                userID: principal.key.userID, keyID: principal.key.id, model: model, provider: f.provider, upstreamModel: f.upstreamModel,
                inputTokens: u.inputTokens, outputTokens: u.outputTokens, cachedTokens: u.cachedInputTokens, usageEstimated: false,
                status: f.status, outcome: f.errorCode == nil ? (outcome == "ok" ? "ok" : "client_closed") : "error",
                latencyMs: Int(elapsed.nanoseconds / 1_000_000), stream: f.stream ?? false, errorCode: f.errorCode))
        }
        guard let logger = f.logger, logger.logLevel <= .info else { return }
        var line = AccessLogLine()
        line.add("request_id", .string(f.requestID))
        line.add("method", .string(f.method))
        line.add("path", .string(f.path))
        line.add("status", .int(f.status))
        line.add("duration_ms", .millis(elapsed.nanoseconds))
        if let v = f.firstByteNanos { line.add("ttfb_ms", .millis(v)) }
        line.add("outcome", .string(outcome))
        if let v = f.keyID { line.add("key_id", .string(v)) }
        if let v = f.model { line.add("model", .string(v)) }
        if let v = f.provider { line.add("provider", .string(v)) }
        if let v = f.upstreamModel { line.add("upstream_model", .string(v)) }
        if let v = f.upstreamStatus { line.add("upstream_status", .int(v)) }
        if let v = f.stream { line.add("stream", .bool(v)) }
        if f.bytesIn > 0 { line.add("bytes_in", .int(f.bytesIn)) }
        if let v = f.errorCode { line.add("error_code", .string(v)) }
        if let u = f.usage {
            line.add("input_tokens", .int(u.inputTokens))
            line.add("output_tokens", .int(u.outputTokens))
            if u.cachedInputTokens > 0 { line.add("cached_tokens", .int(u.cachedInputTokens)) }
        }
        if !SwitchyardLogHandler.logAccess(line, message: "request", to: logger) {
            logger.info("request", metadata: ["access": .stringConvertible(line)])
        }
    }

    deinit {
        // A response whose body was never written (the client left before the head) still gets its line.
        emit(outcome: "abandoned")
    }
}

extension Duration {
    var nanoseconds: UInt64 {
        let (s, atto) = components
        return UInt64(max(0, s)) * 1_000_000_000 + UInt64(max(0, atto)) / 1_000_000_000
    }
}
