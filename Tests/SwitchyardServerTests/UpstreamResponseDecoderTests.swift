import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import SwitchyardServer

/// ``UpstreamResponseDecoder`` against the decoder it replaced (SwiftNIO's `addHTTPClientHandlers`,
/// llhttp behind `ByteToMessageHandler`): after the same request, the same answer bytes must give the
/// same response parts, and the same answers must be refused.
@Suite struct UpstreamResponseDecoderTests {
    struct Outcome: Equatable {
        var parts: [String] = []
        var refused = false
    }

    final class Errors: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = NIOAny
        var seen = false
        func errorCaught(context: ChannelHandlerContext, error: any Error) { seen = true }
    }

    /// Writes a request with `method`, then reads `answer` in reads of `readSize` bytes (all at once by
    /// default); `close` ends the connection after it.
    static func run(reference: Bool, method: HTTPMethod = .POST, _ answer: String, close: Bool = false, readSize: Int? = nil) throws -> Outcome {
        let channel = EmbeddedChannel()
        let pipeline = channel.pipeline.syncOperations
        if reference {
            try pipeline.addHTTPClientHandlers()
        } else {
            try pipeline.addHandler(UpstreamRequestEncoder())
            try pipeline.addHandler(UpstreamResponseDecoder())
        }
        let errors = Errors()
        try pipeline.addHandler(errors)
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: method, uri: "/v1/x", headers: ["content-length": "0"])))
        try channel.writeOutbound(HTTPClientRequestPart.end(nil))
        let bytes = Array(answer.utf8)
        let size = readSize ?? max(bytes.count, 1)
        for start in stride(from: 0, to: bytes.count, by: size) {
            try? channel.writeInbound(ByteBuffer(bytes: bytes[start..<min(start + size, bytes.count)]))
        }
        if close { _ = try? channel.finish() }
        var outcome = Outcome()
        while let part = try? channel.readInbound(as: HTTPClientResponsePart.self) {
            switch part {
            case .head(let head):
                outcome.parts.append("head \(head.version) \(head.status.code) '\(head.status.reasonPhrase)' \(head.headers.map { "\($0.name)=\($0.value)" })")
            case .body(let bytes):
                let text = String(buffer: bytes)
                if let last = outcome.parts.last, last.hasPrefix("body ") { outcome.parts[outcome.parts.count - 1] += text } else { outcome.parts.append("body " + text) }
            case .end(let trailers):
                outcome.parts.append("end \(trailers.map { $0.map { "\($0.name)=\($0.value)" } } ?? [])")
            }
        }
        outcome.refused = errors.seen
        if !close { _ = try? channel.finish() }
        return outcome
    }

    @discardableResult
    static func same(method: HTTPMethod = .POST, _ answer: String, close: Bool = false, sourceLocation: SourceLocation = #_sourceLocation) throws -> Outcome {
        let expected = try run(reference: true, method: method, answer, close: close)
        let actual = try run(reference: false, method: method, answer, close: close)
        #expect(actual == expected, "\(answer.debugDescription)", sourceLocation: sourceLocation)
        for size in [1, 5] {
            let split = try run(reference: false, method: method, answer, close: close, readSize: size)
            #expect(split == expected, "\(answer.debugDescription) in reads of \(size)", sourceLocation: sourceLocation)
        }
        return actual
    }

    @Test func answersAreReadAsLlhttpReadsThem() throws {
        let json = try Self.same("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 11\r\nX-Request-Id: r1\r\n\r\n{\"ok\":true}")
        #expect(json.parts == ["head HTTP/1.1 200 'OK' [\"Content-Type=application/json\", \"content-length=11\", \"X-Request-Id=r1\"]", "body {\"ok\":true}", "end []"])
        // A stream, chunked, with an extension and trailers; an empty chunked body.
        try Self.same("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n7;x=y\r\ndata: 1\r\nA\r\n\ndata: 22\n\r\n0\r\nX-Usage: 5\r\n\r\n")
        try Self.same("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
        // An answer after the one asked for is refused.
        let extra = try Self.same("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        #expect(extra.refused && extra.parts.count == 3)
        // No reason phrase, an unknown code with one, HTTP/1.0.
        try Self.same("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n")
        try Self.same("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")
        try Self.same("HTTP/1.1 599 Upstream Gone\r\nX-A: \t a b\r\nContent-Length: 1\r\n\r\nx")
        try Self.same("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        // No body: 204, 304, the answer to a HEAD request (its length notwithstanding).
        try Self.same("HTTP/1.1 204 No Content\r\n\r\n")
        try Self.same("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n")
        try Self.same(method: .HEAD, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        // Informational answers are dropped.
        try Self.same("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        // Neither framing field (or a coding other than chunked): up to the connection's end.
        let untilClose = try Self.same("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", close: true)
        #expect(untilClose.parts.last == "end []")
        try Self.same("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nall of it", close: true)
    }

    @Test func aValuesTrailingSpacesAreNotPartOfIt() throws {
        // RFC 9110, 5.5: llhttp kept them.
        let answer = "HTTP/1.1 200 OK\r\nX-A: \t a b \t\r\nContent-Length: 0\r\n\r\n"
        #expect(try Self.run(reference: true, answer).parts.first?.contains("X-A=a b \\t") == true)
        #expect(try Self.run(reference: false, answer).parts.first?.contains("\"X-A=a b\"") == true)
    }

    @Test func malformedAnswersAreRefusedAsLlhttpRefusesThem() throws {
        let refused = [
            "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
            "HTTP/1.1 2x0 OK\r\n\r\n",
            "HTTX/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX",
        ]
        for answer in refused {
            let outcome = try Self.same(answer)
            #expect(outcome.refused, "\(answer.debugDescription)")
        }
        // Cut short by the connection's end: in the head, in a sized body, in a chunked one.
        for answer in ["HTTP/1.1 200 OK\r\nContent-", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"] {
            let outcome = try Self.same(answer, close: true)
            #expect(outcome.refused && !outcome.parts.contains { $0.hasPrefix("end") }, "\(answer.debugDescription)")
        }
    }

    @Test func keepAliveIsDecidedAsSwiftNIODecidesIt() throws {
        let cases: [(HTTPVersion, [(String, String)])] = [
            (.http1_1, []), (.http1_0, []), (.http1_1, [("Connection", "close")]), (.http1_0, [("connection", "Keep-Alive")]),
            (.http1_1, [("Connection", "keep-alive, close")]), (.http1_0, [("Connection", "keep-alive"), ("connection", "keep-alive")]),
            (.http1_1, [("Connection", " Upgrade ,  CLOSE ")]), (.http1_0, [("CONNECTION", "te, keep-alive")]), (.http1_1, [("Connection", "")]),
            (.http1_1, [("X-Connection", "close"), ("Connectio", "close")]), (.http1_0, [("Connection", "keep-alive,")]),
        ]
        for (version, fields) in cases {
            let head = HTTPResponseHead(version: version, status: .ok, headers: HTTPHeaders(fields))
            #expect(UpstreamResponseDecoder.isKeepAlive(head) == head.isKeepAlive, "\(version) \(fields)")
        }
    }

    /// Closes the channel when the first body part arrives, as a call whose client left closes its
    /// provider's connection.
    final class CloseOnBody: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        var parts: [String] = []
        var errors = 0
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head: parts.append("head")
            case .body:
                parts.append("body")
                context.close(promise: nil)
            case .end: parts.append("end")
            }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { errors += 1 }
    }

    /// A connected provider connection as the pool sets one up (encoder, decoder), with `handler`
    /// after them in place of the pool's.
    static func providerChannel(_ handler: any ChannelHandler) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(UpstreamRequestEncoder())
        try channel.pipeline.syncOperations.addHandler(UpstreamResponseDecoder())
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    @Test func aConnectionClosedWhileItsPartsAreHandedOnStopsTheParsing() throws {
        // Three chunks in one read: the first closes the connection, the rest are not handed on.
        let closer = CloseOnBody()
        let channel = try Self.providerChannel(closer)
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/x")))
        try channel.writeOutbound(HTTPClientRequestPart.end(nil))
        try? channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n"))
        #expect(closer.parts == ["head", "body"])
        #expect(closer.errors == 1)  // the answer was cut short
    }

    /// Writes a new request when an answer ends, as the pool does when a waiting call takes the
    /// connection back at once.
    final class NextOnEnd: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        typealias OutboundOut = HTTPClientRequestPart
        var parts: [String] = []
        var errors = 0
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): parts.append("head \(head.status.code)")
            case .body: parts.append("body")
            case .end:
                parts.append("end")
                guard parts.count < 4 else { return }
                context.write(wrapOutboundOut(.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/next"))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { errors += 1 }
    }

    @Test func bytesAfterAnAnswerAreNotTheNextRequestsAnswer() throws {
        let next = NextOnEnd()
        let channel = try Self.providerChannel(next)
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/x")))
        try channel.writeOutbound(HTTPClientRequestPart.end(nil))
        // A provider that sends a second answer nobody asked for right after the first.
        try? channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"))
        #expect(next.parts == ["head 200", "body", "end"])
        #expect(next.errors == 1)
    }
}
