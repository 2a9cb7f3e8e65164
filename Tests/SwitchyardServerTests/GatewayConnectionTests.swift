import HTTPTypes
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import Testing

@testable import SwitchyardServer

/// ``GatewayConnection`` and its codec against clients that send more than they should at once.
@Suite struct GatewayConnectionTests {
    /// Answers the first request later (when told) and every other one at once, and records how deep
    /// answers nest inside one another.
    final class Responder: LoopResponder, @unchecked Sendable {
        var first: LoopExchange?
        var depth = 0
        var deepest = 0
        var answered = 0

        func answer(_ head: HTTPRequest, body: ByteBuffer, exchange: LoopExchange) -> Bool {
            if first == nil && answered == 0 {
                first = exchange
                answered += 1
                return true
            }
            depth += 1
            deepest = max(deepest, depth)
            answered += 1
            exchange.write(HTTPResponse(status: .tooManyRequests, headerFields: [.contentLength: "0"]), body: ByteBuffer())
            depth -= 1
            return true
        }
    }

    static func channel(_ responder: Responder) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(GatewayHTTPCodec())
        try channel.pipeline.syncOperations.addHandler(
            GatewayConnection(maxBodyBytes: 1 << 20, idleTimeout: nil, logger: Logger(label: "test"), direct: responder) { _, _, _ in })
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    @Test func pipelinedRequestsAnsweredAtOnceDoNotNest() throws {
        let responder = Responder()
        let channel = try Self.channel(responder)
        defer { _ = try? channel.finish() }
        // 300 requests in one read, queued behind the first, which is still being answered.
        let request = "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"
        try channel.writeInbound(ByteBuffer(string: String(repeating: request, count: 300)))
        #expect(responder.answered == 1)
        responder.first?.write(HTTPResponse(status: .ok, headerFields: [.contentLength: "0"]), body: ByteBuffer())
        channel.embeddedEventLoop.run()
        #expect(responder.answered == 300)
        #expect(responder.deepest == 1)
        var wire = ""
        while let bytes = try channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(let b) = bytes { wire += String(buffer: b) }
        }
        #expect(wire.split(separator: "\r\n\r\n").filter { $0.hasPrefix("HTTP/1.1 ") }.count == 300)
    }

    @Test func aBodyWhoseReadsEndInsideChunkSizeLinesKeepsOnlyWhatIsUnread() throws {
        let codec = GatewayHTTPCodec()
        let channel = EmbeddedChannel(handler: codec)
        defer { _ = try? channel.finish() }
        try channel.writeInbound(ByteBuffer(string: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1"))
        // Each read finishes a chunk and starts the next one's size line: one byte is left over each time.
        for _ in 0..<2000 {
            try channel.writeInbound(ByteBuffer(string: "\r\nx\r\n1"))
        }
        #expect(codec.keptCapacity < 1024)
        var body = 0
        while let part = try channel.readInbound(as: HTTPRequestPart.self) {
            if case .body(let bytes) = part { body += bytes.readableBytes }
        }
        #expect(body == 2000)
    }
}
