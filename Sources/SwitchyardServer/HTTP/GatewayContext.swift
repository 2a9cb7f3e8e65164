import Hummingbird
import Logging
import NIOCore

/// Per-request state carried through middleware and handlers.
public struct GatewayContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The request id: the client's `x-request-id` when it sent a sane one, otherwise generated.
    public var requestID: String = ""
    /// What the access log line will say about this request.
    public var log: RequestLog
    /// The client connection (watched while streaming, to notice the client leaving).
    public let channel: (any Channel)?
    /// Largest body Hummingbird itself will collect (the gateway collects with its own limit).
    public var maxUploadSize: Int { 64 << 20 }

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        log = RequestLog()
        channel = source.channel
    }
}
