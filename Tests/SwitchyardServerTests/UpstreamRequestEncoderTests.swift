import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import SwitchyardServer

/// ``UpstreamRequestEncoder`` against the handlers it replaced (SwiftNIO's `addHTTPClientHandlers`:
/// the request header validator and `HTTPRequestEncoder`): the same request parts must give the same
/// bytes, and the same heads must be refused.
@Suite struct UpstreamRequestEncoderTests {
    static func channel(reference: Bool) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let pipeline = channel.pipeline.syncOperations
        if reference {
            try pipeline.addHTTPClientHandlers()
        } else {
            try pipeline.addHandler(UpstreamRequestEncoder())
            try pipeline.addHandler(UpstreamResponseDecoder())
        }
        return channel
    }

    struct Outcome: Equatable {
        var wire = ""
        var failedWrites: [Int] = []
        var errors = 0
    }

    final class Errors: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = NIOAny
        var count = 0
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            if error as? HTTPParserError == .invalidHeaderToken { count += 1 }
        }
    }

    static func run(reference: Bool, _ parts: [HTTPClientRequestPart]) throws -> Outcome {
        let channel = try channel(reference: reference)
        let errors = Errors()
        try channel.pipeline.syncOperations.addHandler(errors)
        defer { _ = try? channel.finish() }
        var outcome = Outcome()
        (outcome.wire, outcome.failedWrites) = try WireCapture.write(parts, to: channel)
        outcome.errors = errors.count
        return outcome
    }

    @discardableResult
    static func same(_ parts: [HTTPClientRequestPart], sourceLocation: SourceLocation = #_sourceLocation) throws -> Outcome {
        let expected = try run(reference: true, parts)
        let actual = try run(reference: false, parts)
        #expect(actual == expected, sourceLocation: sourceLocation)
        return actual
    }

    static func head(_ method: HTTPMethod = .POST, _ uri: String = "/v1/chat/completions", _ headers: [(String, String)], version: HTTPVersion = .http1_1) -> HTTPClientRequestPart {
        .head(HTTPRequestHead(version: version, method: method, uri: uri, headers: HTTPHeaders(headers)))
    }

    static func body(_ text: String) -> HTTPClientRequestPart { .body(.byteBuffer(ByteBuffer(string: text))) }

    @Test func aProviderRequestIsWrittenAsSwiftNIOWritesIt() throws {
        // What the gateway sends: a POST with its length; a stray `Transfer-Encoding` leaves.
        let request = Self.head(.POST, "/v1/messages?beta=true", [
            ("host", "api.example.com"), ("x-api-key", "sk-ant-1"), ("content-type", "application/json"),
            ("Transfer-Encoding", "gzip"), ("anthropic-version", "2023-06-01"), ("Content-Length", "2"),
        ])
        let outcome = try Self.same([request, Self.body("{}"), .end(nil)])
        #expect(outcome.wire == "POST /v1/messages?beta=true HTTP/1.1\r\nhost: api.example.com\r\nx-api-key: sk-ant-1\r\ncontent-type: application/json\r\nanthropic-version: 2023-06-01\r\nContent-Length: 2\r\n\r\n{}")
        // Gemini's targets, values with tabs and non-ASCII bytes, an empty value.
        try Self.same([
            Self.head(.POST, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", [("x-goog-api-key", "k"), ("x-note", "a\tb é"), ("x-empty", ""), ("content-length", "0")]),
            .end(nil),
        ])
    }

    @Test func framingFollowsSwiftNIOForEachMethod() throws {
        let large = String(repeating: "x", count: 5000)  // above the copied-chunk limit
        // No length: chunked, with trailers or without.
        try Self.same([Self.head(.POST, "/a", [("host", "h")]), Self.body("hello"), Self.body(""), Self.body(large), .end(nil)])
        try Self.same([Self.head(.PUT, "/a", [("host", "h"), ("transfer-encoding", "identity")]), Self.body("a"), .end(HTTPHeaders([("x-sum", "1")]))])
        // Methods without a likely body: chunked only when they say so; TRACE never.
        try Self.same([Self.head(.GET, "/v1/models", [("host", "h")]), .end(nil)])
        try Self.same([Self.head(.DELETE, "/a", [("Transfer-Encoding", "chunked")]), Self.body("abc"), .end(nil)])
        try Self.same([Self.head(.TRACE, "/a", [("content-length", "3"), ("transfer-encoding", "chunked")]), .end(nil)])
        try Self.same([Self.head(.RAW(value: "PURGE"), "/a", [("content-length", "0")]), .end(nil)])
        // HTTP/1.0: no chunking to fall back on.
        try Self.same([Self.head(.POST, "/a", [("host", "h")], version: .http1_0), Self.body("a"), .end(nil)])
    }

    @Test func headsThatCouldSplitARequestAreRefusedAsSwiftNIORefusesThem() throws {
        let refused: [HTTPClientRequestPart] = [
            Self.head(.POST, "/a", [("x-injected", "a\r\nx-evil: 1")]),
            Self.head(.POST, "/a", [("x-nul", "a\u{0}b")]),
            Self.head(.POST, "/a", [("bad name", "v")]),
            Self.head(.POST, "/models/a b:generateContent", [("content-length", "0")]),
            Self.head(.POST, "/a\r\nHost: evil", []),
            Self.head(.RAW(value: "GET /x"), "/a", []),
        ]
        for head in refused {
            let outcome = try Self.same([head])
            #expect(outcome.wire.isEmpty)
            #expect(outcome.failedWrites == [0])
            #expect(outcome.errors == 1)
        }
        // One deliberate difference: SwiftNIO writes an empty field name (`: v`); a token has at least
        // one character, so it is refused here.
        let empty = try Self.run(reference: false, [Self.head(.POST, "/a", [("", "v")])])
        #expect(empty == Outcome(wire: "", failedWrites: [0], errors: 1))
        // Trailers are checked too.
        try Self.same([Self.head(.POST, "/a", []), Self.body("a"), .end(HTTPHeaders([("x-bad", "a\nb")]))])
    }
}
