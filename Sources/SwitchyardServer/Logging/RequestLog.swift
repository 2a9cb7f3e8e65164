import Logging
import NIOCore
import Synchronization
import SwitchyardCore

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
        var logger: Logger?
    }

    private let fields = Mutex(Fields())
    let start = ContinuousClock.now

    public init() {}

    func begin(requestID: String, method: String, path: String, logger: Logger) {
        fields.withLock {
            $0.requestID = requestID
            $0.method = method
            $0.path = path
            $0.logger = logger
        }
    }

    public func set(keyID: String) { fields.withLock { $0.keyID = keyID } }
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

    /// Writes the access log line once; `outcome` is `ok`, `client_closed` or `error`.
    public func emit(outcome: String) {
        let elapsed = ContinuousClock.now - start
        let f = fields.withLock { f -> Fields? in
            guard !f.emitted else { return nil }
            f.emitted = true
            f.outcome = outcome
            return f
        }
        guard let f, let logger = f.logger else { return }
        var metadata: Logger.Metadata = [
            "request_id": .string(f.requestID),
            "method": .string(f.method),
            "path": .string(f.path),
            "status": .stringConvertible(LogNumber(f.status)),
            "duration_ms": .stringConvertible(LogNumber(millisecondsFromNanos: elapsed.nanoseconds)),
            "outcome": .string(outcome),
        ]
        if let v = f.keyID { metadata["key_id"] = .string(v) }
        if let v = f.model { metadata["model"] = .string(v) }
        if let v = f.provider { metadata["provider"] = .string(v) }
        if let v = f.upstreamModel { metadata["upstream_model"] = .string(v) }
        if let v = f.stream { metadata["stream"] = .stringConvertible(v) }
        if f.bytesIn > 0 { metadata["bytes_in"] = .stringConvertible(LogNumber(f.bytesIn)) }
        if let v = f.errorCode { metadata["error_code"] = .string(v) }
        if let v = f.upstreamStatus { metadata["upstream_status"] = .stringConvertible(LogNumber(v)) }
        if let v = f.firstByteNanos { metadata["ttfb_ms"] = .stringConvertible(LogNumber(millisecondsFromNanos: v)) }
        if let u = f.usage {
            metadata["input_tokens"] = .stringConvertible(LogNumber(u.inputTokens))
            metadata["output_tokens"] = .stringConvertible(LogNumber(u.outputTokens))
            if u.cachedInputTokens > 0 { metadata["cached_tokens"] = .stringConvertible(LogNumber(u.cachedInputTokens)) }
        }
        logger.info("request", metadata: metadata)
    }

    static func milliseconds(_ nanos: UInt64) -> String {
        let micros = nanos / 1000
        let frac = micros % 1000
        let fracText = String(frac)
        return "\(micros / 1000).\(String(repeating: "0", count: 3 - fracText.count))\(fracText)"
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
