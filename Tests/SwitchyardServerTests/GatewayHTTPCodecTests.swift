import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Testing

@testable import SwitchyardServer

/// ``GatewayHTTPCodec`` against the handlers it replaced (SwiftNIO's server pipeline, llhttp's decoder
/// and the encoder, and swift-nio-extras' `HTTP1ToHTTPServerCodec`): the same request bytes must give
/// the same HTTP-types parts (or both an error), and the same response parts the same bytes on the wire.
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
        /// The request bytes were refused (after the parts before the error).
        var refused = false
    }

    static func run(reference: Bool, request: String, answers: [HTTPResponsePart], readSize: Int? = nil) throws -> Outcome {
        let channel = try channel(reference: reference)
        defer { _ = try? channel.finish() }
        var outcome = Outcome()
        let bytes = Array(request.utf8)
        for start in stride(from: 0, to: bytes.count, by: readSize ?? max(bytes.count, 1)) where !outcome.refused {
            do {
                try channel.writeInbound(ByteBuffer(bytes: bytes[start..<min(start + (readSize ?? bytes.count), bytes.count)]))
            } catch is HTTPParserError {
                outcome.refused = true
            }
        }
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

    // MARK: Reading requests

    /// Requests read the same way by llhttp and by ``HTTP1RequestParser``.
    static let accepted = [
        post,
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        // Empty lines before a request line are skipped.
        "\r\n\r\nGET /after-empty-lines HTTP/1.1\r\nHost: a\r\n\r\n",
        // Chunked, with an extension, upper-case hex digits and trailers; then an empty chunked body.
        "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\nX-Other: two words\r\n\r\n",
        "POST /c HTTP/1.1\r\nHost: a\r\ntransfer-encoding: Chunked\r\n\r\n0\r\n\r\n",
        // Values: surrounding spaces and tabs dropped, inner ones kept, empty, no space after the colon, UTF-8.
        "GET /v HTTP/1.1\r\nHost: a\r\nX-A: \t a  b \t\r\nX-B:\r\nX-C:tight\r\nX-D: café ünïcode\r\nX-E: tab\tinside\r\n\r\n",
        // Names in every case, the common ones included; tokens with punctuation.
        "POST /n HTTP/1.1\r\nHOST: a\r\ncontent-type: application/json\r\nCONTENT-LENGTH: 2\r\nx-api-key: k\r\nAnthropic-Version: 2023-06-01\r\nX-Weird!#$%&'*+.^_`|~: ok\r\n\r\n{}",
        // Pipelined: a body, then no body, then a chunked one, in one read.
        post + "GET /health HTTP/1.1\r\nHost: a\r\n\r\n" + "PUT /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "POST /empty HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        // A query with the characters clients send; an asterisk-form OPTIONS.
        "GET /v1/models?x=a%20b&y=[1]&z=~!$'()*,;:@/? HTTP/1.1\r\nHost: a\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    ]

    /// Requests both refuse (and nothing after them is read).
    static let refusedByBoth = [
        "THIS IS NOT HTTP\r\n\r\n",
        "\u{0}\u{1} garbage\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",  // space before the colon
        "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",  // a folded line
        "GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\u{0}b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nNo-Colon\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Bare-CR: a\rb\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\nab",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2x\r\n\r\nab",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
        "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        "GET / http/1.1\r\nHost: a\r\n\r\n",
        "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\nGET /x HTTP/1.1 extra\r\n\r\n",  // the second request refused after the first
        // Lines ending in a bare LF.
        "GET / HTTP/1.1\nHost: a\n\n",
        "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
        // `Content-Length` twice, even with one value; `Transfer-Encoding` twice.
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
        "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{7F}b\r\n\r\n",  // DEL in a value
        "GET /caf\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n",  // a target that is not ASCII
        // A space after a chunk's size, before an extension; a malformed trailer.
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 ;a=b\r\nhello\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
    ]

    /// Requests llhttp reads (or reads the head of) and the gateway refuses at their head, being
    /// stricter: a transfer coding other than `chunked` alone, which the gateway could not undo; `chunked`
    /// in an HTTP/1.0 request (RFC 9112, 6.1); more than one space in the request line.
    static let refusedOnlyByTheGateway = [
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nab",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    ]

    /// Joins consecutive body parts: how many a body arrives in depends on the reads.
    static func joined(_ parts: [String]) -> [String] {
        var out: [String] = []
        for part in parts {
            if part.hasPrefix("body "), let last = out.last, last.hasPrefix("body ") {
                out[out.count - 1] = last + part.dropFirst(5)
            } else {
                out.append(part)
            }
        }
        return out
    }

    @Test func requestsAreReadAsLlhttpReadsThem() throws {
        for request in Self.accepted {
            let outcome = try Self.same(request, [])
            #expect(!outcome.refused && !outcome.heads.isEmpty, "\(request.debugDescription)")
            // A byte at a time, and in reads of 7 bytes: the same heads, bodies and trailers.
            for size in [1, 7] {
                let split = try Self.run(reference: false, request: request, answers: [], readSize: size)
                #expect(split.heads == outcome.heads && Self.joined(split.parts) == Self.joined(outcome.parts), "\(request.debugDescription)")
            }
        }
        // What the parts hold, beyond agreeing with llhttp.
        let values = try Self.run(reference: false, request: Self.accepted[6], answers: [])
        #expect(values.heads.first?.headerFields[HTTPField.Name("x-a")!] == "a  b")
        #expect(values.heads.first?.headerFields[HTTPField.Name("x-d")!] == "café ünïcode")
        let chunked = try Self.run(reference: false, request: Self.accepted[4], answers: [], readSize: 3)
        #expect(Self.joined(chunked.parts) == ["head", "body hello0123456789", "end [X-Trailer: 1, X-Other: two words]"])
        // The name as sent is kept, shared or not.
        let names = try Self.run(reference: false, request: Self.accepted[7], answers: [])
        #expect(names.heads.first?.headerFields.map(\.name.rawName) == ["content-type", "CONTENT-LENGTH", "x-api-key", "Anthropic-Version", "X-Weird!#$%&'*+.^_`|~"])
        #expect(names.heads.first?.authority == "a")
    }

    @Test func malformedRequestsAreRefusedAsLlhttpRefusesThem() throws {
        for request in Self.refusedByBoth {
            let outcome = try Self.same(request, [])
            #expect(outcome.refused, "\(request.debugDescription)")
            let split = try Self.run(reference: false, request: request, answers: [], readSize: 1)
            #expect(split.refused && split.heads == outcome.heads, "\(request.debugDescription)")
        }
    }

    @Test func theGatewayIsStricterWhereLlhttpIsLenient() throws {
        for request in Self.refusedOnlyByTheGateway {
            let reference = try Self.run(reference: true, request: request, answers: [])
            let outcome = try Self.run(reference: false, request: request, answers: [])
            #expect(!reference.heads.isEmpty, "\(request.debugDescription)")
            #expect(outcome.refused && outcome.heads.isEmpty, "\(request.debugDescription)")
        }
        // An upgrade is not taken: the request is answered over HTTP/1.1 and the next one read, where
        // SwiftNIO's decoder stopped reading the connection.
        let upgrade = "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
        #expect(try Self.run(reference: false, request: upgrade, answers: []).heads.map(\.path) == ["/", "/2"])
    }

    @Test func headsPastTheLimitsAreRefused() throws {
        func refused(_ request: String, _ limits: HTTP1RequestParser.Limits, readSize: Int? = nil) throws -> Bool {
            let channel = EmbeddedChannel(handler: GatewayHTTPCodec(limits: limits))
            defer { _ = try? channel.finish() }
            let bytes = Array(request.utf8)
            let size = readSize ?? bytes.count
            for start in stride(from: 0, to: bytes.count, by: size) {
                do {
                    try channel.writeInbound(ByteBuffer(bytes: bytes[start..<min(start + size, bytes.count)]))
                } catch is HTTPParserError {
                    return true
                }
            }
            return false
        }
        let limits = HTTP1RequestParser.Limits(maxHeadBytes: 200, maxFieldBytes: 50, maxFieldCount: 3)
        #expect(try !refused("GET / HTTP/1.1\r\nHost: a\r\nX-1: 1\r\nX-2: 2\r\n\r\n", limits))
        // A head too long, whole or still arriving (no empty line yet); a field too long; a field too many.
        let long = (1...3).map { "X-\($0): \(String(repeating: "v", count: 40))\r\n" }.joined()
        #expect(try refused("GET / HTTP/1.1\r\nHost: a\r\n\(long)\r\n", limits))
        #expect(try refused("GET / HTTP/1.1\r\nHost: a\r\nX-Endless: " + String(repeating: "a", count: 300), limits, readSize: 10))
        #expect(try refused("GET / HTTP/1.1\r\nHost: a\r\nX-Long: \(String(repeating: "a", count: 60))\r\n\r\n", limits))
        #expect(try refused("GET / HTTP/1.1\r\nHost: a\r\nX-1: 1\r\nX-2: 2\r\nX-3: 3\r\n\r\n", limits))
        // A chunk-size line that never ends, and trailers past the limit; trailers within it, a byte at a time.
        let chunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        #expect(try refused(chunked + "5;" + String(repeating: "e", count: 5000), limits, readSize: 100))
        #expect(try refused(chunked + "0\r\nX-T: " + String(repeating: "t", count: 300), limits, readSize: 10))
        #expect(try !refused(chunked + "0\r\nX-T: t\r\n\r\n", limits, readSize: 1))
        // Empty lines before a request, split across reads.
        #expect(try !refused("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", limits, readSize: 1))
    }

    @Test func tokenBytesAreRFC9110s() {
        let tchar = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        for byte in UInt8.min...UInt8.max {
            #expect(HTTP1Parsing.isToken(byte) == tchar.contains(byte), "\(byte)")
        }
    }

    /// Closes the channel when the first request head arrives.
    final class CloseOnHead: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPRequestPart
        var heads = 0
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case .head = unwrapInboundIn(data) {
                heads += 1
                context.close(promise: nil)
            }
        }
    }

    @Test func aConnectionClosedWhileItsPartsAreHandedOnStopsTheParsing() throws {
        let channel = EmbeddedChannel()
        let closer = CloseOnHead()
        try channel.pipeline.syncOperations.addHandler(GatewayHTTPCodec())
        try channel.pipeline.syncOperations.addHandler(closer)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try? channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.1\r\n\r\n"))
        #expect(closer.heads == 1)
    }
}
