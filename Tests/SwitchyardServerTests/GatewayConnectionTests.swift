import HTTPTypes
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import Synchronization
import SwitchyardHTTP
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

    /// A connected client connection as the gateway sets one up: the codec, then the connection.
    static func channel(_ responder: (any LoopResponder)?) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let codec = GatewayHTTPCodec()
        try channel.pipeline.syncOperations.addHandler(codec)
        try channel.pipeline.syncOperations.addHandler(
            GatewayConnection(maxBodyBytes: 1 << 20, idleTimeout: nil, logger: Logger(label: "test"), wire: codec, direct: responder) { _, _, _ in })
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    /// Everything written to the client so far, as text.
    static func written(_ channel: EmbeddedChannel) throws -> String {
        var wire = ""
        while let bytes = try channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(let b) = bytes { wire += String(buffer: b) }
        }
        return wire
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
        let wire = try Self.written(channel)
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

    // MARK: Persistence (RFC 9112, 9.3) and HTTP/1.0 clients

    /// Answers every request at once: whole with a length (`ok`), or streamed without one.
    final class Answerer: LoopResponder, @unchecked Sendable {
        let streamed: Bool
        var answered = 0
        init(streamed: Bool) { self.streamed = streamed }

        func answer(_ head: HTTPRequest, body: ByteBuffer, exchange: LoopExchange) -> Bool {
            answered += 1
            if streamed {
                exchange.writeHead(HTTPResponse(status: .ok, headerFields: [.contentType: "text/event-stream"]))
                _ = exchange.writeBody(ByteBuffer(string: "data: 1\n\n"))
                exchange.end()
            } else {
                exchange.write(HTTPResponse(status: .ok, headerFields: [.contentLength: "2"]), body: ByteBuffer(string: "ok"))
            }
            return true
        }
    }

    /// Sends `requests` in one read to a connection served by the gateway's codec; returns what was
    /// written back, whether the connection is still open, and how many requests were answered.
    static func exchange(_ requests: String, streamed: Bool) throws -> (wire: String, open: Bool, answered: Int) {
        let answerer = Answerer(streamed: streamed)
        let channel = try Self.channel(answerer)
        try channel.writeInbound(ByteBuffer(string: requests))
        channel.embeddedEventLoop.run()
        let wire = try Self.written(channel)
        let open = channel.isActive
        _ = try? channel.finish()
        return (wire, open, answerer.answered)
    }

    @Test func anHTTP10RequestWithoutKeepAliveClosesTheConnectionAfterItsAnswer() throws {
        let request = "POST /v1/chat/completions HTTP/1.0\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"
        let (wire, open, answered) = try Self.exchange(request + request, streamed: false)
        #expect(answered == 1)
        #expect(!open)
        #expect(wire.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(wire.contains("\r\nconnection: close\r\n"))
    }

    @Test func anHTTP10RequestAskingForKeepAliveKeepsTheConnectionAndIsToldSo() throws {
        let request = "POST /v1/chat/completions HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\n{}"
        let (wire, open, answered) = try Self.exchange(request + request, streamed: false)
        #expect(answered == 2)
        #expect(open)
        #expect(wire.ranges(of: "\r\nconnection: keep-alive\r\n").count == 2)
    }

    /// HTTP/1.0 has no chunked coding: a stream goes unframed and ends with the connection.
    @Test func aStreamToAnHTTP10ClientIsNotChunkedAndEndsWithTheConnection() throws {
        let request = "POST /v1/chat/completions HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}"
        let (wire, open, answered) = try Self.exchange(request + request, streamed: true)
        #expect(answered == 1)
        #expect(!open)
        #expect(!wire.lowercased().contains("transfer-encoding"))
        #expect(wire.contains("\r\nconnection: close\r\n"))
        #expect(wire.hasSuffix("\r\n\r\ndata: 1\n\n"))
    }

    @Test func anHTTP11StreamIsChunkedAndKeepsTheConnection() throws {
        let request = "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"
        let (wire, open, answered) = try Self.exchange(request + request, streamed: true)
        #expect(answered == 2)
        #expect(open)
        #expect(wire.ranges(of: "transfer-encoding: chunked\r\n").count == 2)
        #expect(!wire.contains("connection:"))
    }

    /// `close` among other options ends the connection, and the answer says so.
    @Test func aCloseOptionAnywhereInConnectionEndsTheConnection() throws {
        for value in ["close", "keep-alive, close", "Upgrade,CLOSE"] {
            let request = "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nConnection: \(value)\r\nContent-Length: 2\r\n\r\n{}"
            let (wire, open, answered) = try Self.exchange(request + request, streamed: false)
            #expect(answered == 1, "\(value)")
            #expect(!open, "\(value)")
            #expect(wire.contains("\r\nconnection: close\r\n"), "\(value)")
        }
    }

    // MARK: The task path hears the client leave

    /// The close watcher is driven by the connection, outside the pipeline: work on the task path that
    /// watches the channel hears the client close, or half-close, its connection.
    @Test(arguments: [false, true])
    func workWatchingTheConnectionHearsTheClientLeave(halfClose: Bool) async throws {
        let channel = try Self.channel(nil)
        let told = Atomic<Bool>(false)
        try await ConnectionCloseWatcher.watching(channel, onClose: { told.store(true, ordering: .relaxed) }) {
            if halfClose {
                channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            } else {
                _ = try? channel.finish()
            }
        }
        let heard = told.load(ordering: .relaxed)
        #expect(heard)
        _ = try? channel.finish()
    }

    /// A connection that ends after the answer in progress (a graceful shutdown, a client that
    /// half-closed) says so in that answer when its head is not written yet.
    @Test(arguments: [false, true])
    func anAnswerAfterWhichTheConnectionEndsSaysSo(halfClose: Bool) throws {
        let responder = Responder()
        let channel = try Self.channel(responder)
        try channel.writeInbound(ByteBuffer(string: "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"))
        if halfClose {
            channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        } else {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        responder.first?.write(HTTPResponse(status: .ok, headerFields: [.contentLength: "2"]), body: ByteBuffer(string: "ok"))
        channel.embeddedEventLoop.run()
        let wire = try Self.written(channel)
        #expect(wire.hasPrefix("HTTP/1.1 200 OK\r\n") && wire.contains("\r\nconnection: close\r\n"), "\(wire)")
        #expect(!channel.isActive)
        _ = try? channel.finish()
    }
}
