import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Testing

@testable import SwitchyardServer

/// ``GatewayHTTPCodec`` against the two handlers it replaced (SwiftNIO's server pipeline encoder and
/// swift-nio-extras' `HTTP1ToHTTPServerCodec`): the same request bytes must give the same HTTP-types
/// request, and the same response parts the same bytes on the wire.
@Suite struct GatewayHTTPCodecTests {
    /// A channel with either the gateway's handlers or the reference pair.
    static func channel(reference: Bool) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let pipeline = channel.pipeline.syncOperations
        if reference {
            try pipeline.configureHTTPServerPipeline(
                withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false)
            try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
        } else {
            try pipeline.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
            try pipeline.addHandler(GatewayHTTPCodec())
        }
        return channel
    }

    /// What one side makes of `request` and `answers`: the request parts read, the bytes written, and
    /// which writes failed.
    struct Outcome: Equatable {
        var parts: [String] = []
        var heads: [HTTPRequest] = []
        var wire = ""
        var failedWrites: [Int] = []
    }

    static func run(reference: Bool, request: String, answers: [HTTPResponsePart]) throws -> Outcome {
        let channel = try channel(reference: reference)
        defer { _ = try? channel.finish() }
        var outcome = Outcome()
        try channel.writeInbound(ByteBuffer(string: request))
        while let part = try channel.readInbound(as: HTTPRequestPart.self) {
            switch part {
            case .head(let head):
                outcome.heads.append(head)
                outcome.parts.append("head")
            case .body(let bytes): outcome.parts.append("body \(String(buffer: bytes))")
            case .end(let trailers): outcome.parts.append("end \(trailers.map { "\($0)" } ?? "-")")
            }
        }
        (outcome.wire, outcome.failedWrites) = try WireCapture.write(answers, to: channel)
        return outcome
    }

    /// Runs both sides and expects the same outcome; returns the gateway's.
    @discardableResult
    static func same(_ request: String, _ answers: [HTTPResponsePart], sourceLocation: SourceLocation = #_sourceLocation) throws -> Outcome {
        let expected = try run(reference: true, request: request, answers: answers)
        let actual = try run(reference: false, request: request, answers: answers)
        #expect(actual == expected, sourceLocation: sourceLocation)
        return actual
    }

    static let post = "POST /v1/chat/completions?trace=1 HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer sk-1\r\nX-Mixed-Case: A b\r\nContent-Length: 2\r\n\r\n{}"

    static func body(_ text: String) -> HTTPResponsePart { .body(ByteBuffer(string: text)) }

    @Test func requestHeadsConvertAsSwiftNIOExtrasConvertsThem() throws {
        let requests = [
            Self.post,
            // Absolute form, two `Host` fields in other cases: the first is the authority, the second stays.
            "GET http://gw.example:8080/v1/models?a=b HTTP/1.1\r\nhOsT: first\r\nHOST: second\r\nAccept: */*\r\n\r\n",
            // No `Host` at all, a field named like it, an empty value, a query alone.
            "GET /health?x HTTP/1.1\r\nHostile: yes\r\nX-Empty: \r\n\r\n",
            "DELETE /admin/v1/keys/key_1 HTTP/1.1\r\nHost: a\r\nCookie: a=1; b=2\r\n\r\n",
            "PROPFIND /dav HTTP/1.1\r\nHost: a\r\n\r\n",
        ]
        for request in requests {
            let outcome = try Self.same(request, [])
            #expect(outcome.heads.count == 1)
        }
        let post = try Self.run(reference: false, request: Self.post, answers: [])
        #expect(post.heads.first?.path == "/v1/chat/completions?trace=1")
        #expect(post.heads.first?.authority == "gw.example")
        #expect(post.heads.first?.headerFields[.authorization] == "Bearer sk-1")
        #expect(post.parts == ["head", "body {}", "end -"])
    }

    @Test func aWholeAnswerIsWrittenAsSwiftNIOWritesIt() throws {
        // `content-length` framing; a stray `transfer-encoding` leaves; names are written as given.
        var ok = HTTPResponse(status: .ok)
        ok.headerFields[.contentType] = "application/json"
        ok.headerFields[.contentLength] = "11"
        ok.headerFields[.transferEncoding] = "gzip"
        ok.headerFields.append(HTTPField(name: HTTPField.Name("X-RateLimit-Limit")!, value: "60"))
        let outcome = try Self.same(Self.post, [.head(ok), Self.body("{\"ok\":true}"), .end(nil)])
        #expect(outcome.wire.hasPrefix("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nX-RateLimit-Limit: 60\r\n\r\n"))
        #expect(outcome.wire.hasSuffix("\r\n\r\n{\"ok\":true}"))

        // Other statuses and reason phrases, an empty body part.
        var limited = HTTPResponse(status: .tooManyRequests)
        limited.headerFields[.contentLength] = "0"
        try Self.same(Self.post, [.head(limited), Self.body(""), .end(nil)])
        var custom = HTTPResponse(status: .init(code: 599, reasonPhrase: "Upstream Gone"))
        custom.headerFields[.contentLength] = "1"
        try Self.same(Self.post, [.head(custom), Self.body("x"), .end(nil)])
    }

    @Test func anAnswerWithoutALengthIsChunkedAsSwiftNIOChunksIt() throws {
        var stream = HTTPResponse(status: .ok)
        stream.headerFields[.contentType] = "text/event-stream"
        stream.headerFields[.transferEncoding] = "identity"
        let large = String(repeating: "data: x\n\n", count: 1000)  // above the copied-chunk limit
        let outcome = try Self.same(Self.post, [
            .head(stream), Self.body("data: {\"a\":1}\n\n"), Self.body(""), Self.body(large), Self.body("data: [DONE]\n\n"),
            .end(nil),
        ])
        #expect(outcome.wire.contains("transfer-encoding: chunked\r\n\r\nf\r\ndata: {\"a\":1}\n\n\r\n"))
        #expect(outcome.wire.contains("\r\n2328\r\n"))
        #expect(outcome.wire.hasSuffix("e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"))

        // Trailers after the last chunk.
        var trailers = HTTPFields()
        trailers.append(HTTPField(name: HTTPField.Name("X-Usage")!, value: "12"))
        let withTrailers = try Self.same(Self.post, [.head(stream), Self.body("a"), .end(trailers)])
        #expect(withTrailers.wire.hasSuffix("1\r\na\r\n0\r\nX-Usage: 12\r\n\r\n"))
    }

    @Test func answersThatCarryNoBodyAreFramedAsSwiftNIOFramesThem() throws {
        // 204 and 304 lose both framing fields.
        for status in [HTTPResponse.Status.noContent, .notModified] {
            var response = HTTPResponse(status: status)
            response.headerFields[.contentLength] = "0"
            response.headerFields[.transferEncoding] = "chunked"
            let outcome = try Self.same(Self.post, [.head(response), .end(nil)])
            #expect(!outcome.wire.lowercased().contains("content-length") && !outcome.wire.lowercased().contains("transfer-encoding"))
        }
        // A HEAD request's answer keeps its framing and writes no body: the body write fails.
        let head = "HEAD /v1/models HTTP/1.1\r\nHost: a\r\n\r\n"
        var models = HTTPResponse(status: .ok)
        models.headerFields[.contentLength] = "5"
        let outcome = try Self.same(head, [.head(models), Self.body("hello"), .end(nil)])
        #expect(outcome.failedWrites == [1])
        #expect(outcome.wire == "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        // Unframed, it is still not chunked.
        try Self.same(head, [.head(HTTPResponse(status: .ok)), .end(nil)])
        // An interim 100 answers no request yet: the final answer is the HEAD's.
        try Self.same(head, [.head(HTTPResponse(status: .continue)), .head(models), Self.body("x"), .end(nil)])
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() throws {
        // A HEAD, then a GET in the same read: the first answer writes no body, the second does.
        let two = "HEAD /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\nHEAD /c HTTP/1.1\r\nHost: a\r\n\r\n"
        var sized = HTTPResponse(status: .ok)
        sized.headerFields[.contentLength] = "2"
        let outcome = try Self.same(two, [
            .head(sized), Self.body("no"), .end(nil),
            .head(sized), Self.body("ok"), .end(nil),
            .head(HTTPResponse(status: .ok)), Self.body("no"), .end(nil),
        ])
        #expect(outcome.heads.map(\.path) == ["/a", "/b", "/c"])
        #expect(outcome.failedWrites == [1, 7])
    }
}
