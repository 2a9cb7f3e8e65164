import NIOCore
import NIOEmbedded
import Testing

/// Writes parts into an embedded channel's pipeline and collects what reaches the wire: the bytes,
/// and which writes failed (by index). Used to compare the gateway's encoders with SwiftNIO's.
enum WireCapture {
    private final class Failed: @unchecked Sendable { var writes: [Int] = [] }

    static func write<Part>(_ parts: [Part], to channel: EmbeddedChannel) throws -> (wire: String, failedWrites: [Int]) {
        let failed = Failed()
        for (i, part) in parts.enumerated() {
            let promise = channel.eventLoop.makePromise(of: Void.self)
            channel.write(part, promise: promise)
            promise.futureResult.whenFailure { _ in failed.writes.append(i) }
        }
        channel.flush()
        var wire = ""
        while let data = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let bytes) = data else { Issue.record("a file region was written"); continue }
            wire += String(buffer: bytes)
        }
        return (wire, failed.writes)
    }
}
