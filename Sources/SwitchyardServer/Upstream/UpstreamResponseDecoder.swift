import NIOCore
import NIOHTTP1

/// Parses a provider connection's answers into SwiftNIO's response parts for
/// ``UpstreamConnectionHandler``, with ``HTTP1Parsing``'s rules; it sees the requests written (to
/// know which answers have no body). It replaces SwiftNIO's response decoder (llhttp behind
/// `ByteToMessageHandler`), and hands on what it did:
/// - the head as an `HTTPResponseHead`, fields in order, names and values as sent (but a value's
///   trailing spaces, which llhttp kept), the reason phrase dropped;
/// - an answer to no request (or more answers than requests) is an error, and so are bytes after an
///   answer when no other request was written (they are not kept for the next request's answer);
/// - the body as it arrives, framed by `Transfer-Encoding` ending in `chunked`, else by
///   `Content-Length`, else up to the connection's end (another coding alone is read to the end too);
///   none for the answer to a `HEAD` (or `CONNECT`) request or a 204 or 304;
/// - the end, with the trailers if there are any;
/// - informational answers (1xx) dropped, as SwiftNIO's decoder drops them by default; a 101 is an
///   error (the gateway asks providers for no upgrade);
/// - at the connection's end, the end of a body read up to it, or `invalidEOFState` for an answer cut
///   short;
/// - after an error nothing more is parsed.
final class UpstreamResponseDecoder: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    private let limits: HTTP1Parsing.Limits
    /// Whether each request still unanswered has an answer without a body (`HEAD`, `CONNECT`), oldest first.
    private var bodiless: [Bool] = []
    private var body = HTTP1BodyReader()
    private var unparsed: ByteBuffer?
    private var scanned = 0
    private var failed = false
    private var parsing = false

    init(limits: HTTP1Parsing.Limits = .init()) { self.limits = limits }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .head(let head) = unwrapOutboundIn(data) { bodiless.append(head.method == .HEAD || head.method == .CONNECT) }
        context.write(data, promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        HTTP1Parsing.append(unwrapInboundIn(data), to: &unparsed)
        guard !parsing else { return }
        parsing = true
        defer { parsing = false }
        // A part handed on may close the channel at once (a client that left closes its provider's
        // connection mid-answer): `finish` then ends or fails the answer, drops what is left, and
        // the loop stops.
        while unparsed != nil {
            let part: HTTPClientResponsePart?
            do {
                part = try next(&unparsed!)
            } catch {
                fail(error, context: context)
                return
            }
            guard let part else { break }
            if case .end = part, bodiless.isEmpty, let rest = unparsed, rest.readableBytes > 0 {
                // Bytes after the answer, with no other request written: nothing may read them as
                // the answer to a request written next (the end below may hand the connection on).
                failed = true
                unparsed = nil
                context.fireChannelRead(wrapInboundOut(part))
                context.fireErrorCaught(NIOHTTPDecoderError.unsolicitedResponse)
                return
            }
            context.fireChannelRead(wrapInboundOut(part))
        }
        HTTP1Parsing.compact(&unparsed, allocator: context.channel.allocator)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(context: context)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed { finish(context: context) }
        context.fireUserInboundEventTriggered(event)
    }

    /// The input ended: a body read up to it ends; an answer cut short is an error. Nothing more is
    /// parsed.
    private func finish(context: ChannelHandlerContext) {
        defer { unparsed = nil }
        guard !failed else { return }
        do {
            if case .end? = try body.finish() {
                context.fireChannelRead(wrapInboundOut(.end(nil)))
            } else if let unparsed, unparsed.readableBytes > 0 {
                throw HTTPParserError.invalidEOFState
            }
        } catch {
            fail(error, context: context)
        }
    }

    private func fail(_ error: any Error, context: ChannelHandlerContext) {
        failed = true
        unparsed = nil
        context.fireErrorCaught(error)
    }

    /// The next part the bytes hold; nil when they complete none.
    private func next(_ buffer: inout ByteBuffer) throws -> HTTPClientResponsePart? {
        guard !failed else {
            buffer.moveReaderIndex(to: buffer.writerIndex)
            return nil
        }
        if body.isReading {
            switch try body.next(&buffer, limits: limits) {
            case nil: return nil
            case .data(let bytes): return .body(bytes)
            case .end(let section?): return .end(try Self.trailers(section, limits: limits))
            case .end(nil): return .end(nil)
            }
        }
        while buffer.readableBytes > 0 {
            guard !bodiless.isEmpty else { throw NIOHTTPDecoderError.unsolicitedResponse }
            let limits = self.limits
            guard let ((head, framing), length) = try HTTP1Parsing.section(in: buffer, limits: limits, scanned: &scanned, { p throws(HTTPParserError) in
                try Self.parseHead(p, limits: limits)
            }) else { return nil }
            buffer.moveReaderIndex(forwardBy: length)
            scanned = 0
            let code = head.status.code
            if (100..<200).contains(code) {
                guard code != 101 else { throw HTTPParserError.invalidStatus }
                continue  // informational: the final answer follows
            }
            body.start(bodiless.removeFirst() || code == 204 || code == 304 ? .length(0) : framing)
            return .head(head)
        }
        return nil
    }

    /// Parses a response head whose last four bytes are CRLF CRLF.
    static func parseHead(_ p: UnsafeRawBufferPointer, limits: HTTP1Parsing.Limits) throws(HTTPParserError) -> (HTTPResponseHead, HTTP1BodyFraming) {
        let n = p.count
        // HTTP/1.x SP 3DIGIT [SP reason] CRLF
        guard n >= 14, p[0] == UInt8(ascii: "H"), p[1] == UInt8(ascii: "T"), p[2] == UInt8(ascii: "T"), p[3] == UInt8(ascii: "P"),
            p[4] == UInt8(ascii: "/"), p[5] == UInt8(ascii: "1"), p[6] == UInt8(ascii: "."),
            p[7] == UInt8(ascii: "1") || p[7] == UInt8(ascii: "0"), p[8] == HTTP1Parsing.space
        else { throw .invalidVersion }
        let minor = Int(p[7] - UInt8(ascii: "0"))
        var code = 0
        for i in 9..<12 {
            guard p[i] >= UInt8(ascii: "0"), p[i] <= UInt8(ascii: "9") else { throw .invalidStatus }
            code = code * 10 + Int(p[i] - UInt8(ascii: "0"))
        }
        guard code >= 100 else { throw .invalidStatus }
        // The reason phrase is checked and dropped (SwiftNIO's decoder drops it too).
        var i = 12
        if p[i] == HTTP1Parsing.space {
            i += 1
            while i < n, p[i] != HTTP1Parsing.cr {
                guard p[i] == HTTP1Parsing.tab || (p[i] >= HTTP1Parsing.space && p[i] != 0x7F) else { throw .invalidStatus }
                i += 1
            }
        }
        guard i + 1 < n, p[i] == HTTP1Parsing.cr, p[i + 1] == HTTP1Parsing.lf else { throw .lfExpected }
        i += 2

        var headers = HTTPHeaders()
        var contentLength: Int?
        var transferEncoding: Bool?  // whether the coding ends with `chunked`
        try HTTP1Parsing.fields(p, from: i, limits: limits) { name, value throws(HTTPParserError) in
            if HTTP1Parsing.isName(name, "content-length") {
                guard contentLength == nil else { throw .unexpectedContentLength }
                contentLength = try HTTP1Parsing.contentLength(value)
            } else if HTTP1Parsing.isName(name, "transfer-encoding") {
                guard transferEncoding == nil else { throw .invalidConstant }
                transferEncoding = HTTP1Parsing.isChunked(value, alone: false)
            }
            headers.add(name: String(decoding: name, as: UTF8.self), value: String(decoding: value, as: UTF8.self))
        }
        let framing: HTTP1BodyFraming
        switch (transferEncoding, contentLength) {
        case (_?, _?): throw .unexpectedContentLength
        case (true?, nil): framing = .chunked
        case (false?, nil): framing = .untilClose
        case (nil, let length?): framing = .length(length)
        case (nil, nil): framing = .untilClose
        }
        let status = HTTPResponseStatus(statusCode: code)
        return (HTTPResponseHead(version: HTTPVersion(major: 1, minor: minor), status: status, headers: headers), framing)
    }

    /// Whether the connection stays open after `head`, as SwiftNIO's `HTTPResponseHead.isKeepAlive`
    /// decides (a `close` token in `Connection` ends it, `keep-alive` keeps it, two such tokens end it;
    /// without either HTTP/1.1 keeps it) without its copies: a head parsed here carries no keep-alive
    /// state, and SwiftNIO's fallback splits every `Connection` value into new strings (~1 % of the
    /// gateway's samples at 64 connections).
    static func isKeepAlive(_ head: HTTPResponseHead) -> Bool {
        var decided: Bool?
        for (name, value) in head.headers where HTTP1Wire.isName(name, "connection") {
            var value = value
            value.withUTF8 { HTTP1Parsing.connectionOptions(UnsafeRawBufferPointer($0), &decided) }
        }
        return decided ?? (head.version.major == 1 && head.version.minor >= 1)
    }

    private static func trailers(_ section: ByteBuffer, limits: HTTP1Parsing.Limits) throws(HTTPParserError) -> HTTPHeaders {
        var headers = HTTPHeaders()
        try HTTP1Parsing.fields(in: section, limits: limits) { name, value in
            headers.add(name: String(decoding: name, as: UTF8.self), value: String(decoding: value, as: UTF8.self))
        }
        return headers
    }
}
