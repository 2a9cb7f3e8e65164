import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// Between SwiftNIO's HTTP/1.1 request decoder and ``GatewayConnection``: turns decoded request parts
/// into HTTP types, and writes HTTP-types responses as HTTP/1.1 bytes. It replaces two handlers,
/// swift-nio-extras' `HTTP1ToHTTPServerCodec` and SwiftNIO's `HTTPResponseEncoder`, and writes what
/// they wrote together, byte for byte (the tests compare both).
///
/// What the pair cost per request (a profile at 64 connections, ~6 % of the gateway's samples): the
/// request's path went through Foundation's `URLComponents` (a parse and its allocations, even for
/// the origin-form path every client sends), each header name was lowercased into a new string to
/// find `Host`, the response's fields were copied into an `HTTPHeaders` array of string pairs and its
/// framing fields looked up and removed there, and the head was then written four `ByteBuffer` writes
/// per field (each with its own exclusivity check) into a 256-byte buffer that grew as it filled.
/// Here an origin-form path is taken as it is, and the head is measured first and written in one pass
/// into a buffer of its exact size.
///
/// Framing is SwiftNIO's: a response that may have a body keeps its `content-length` (and loses any
/// `transfer-encoding`) or is sent chunked; a 1xx, 204 or 304 answer has neither; the answer to a
/// `HEAD` (or `CONNECT`) request keeps its framing fields and writes no body. A request head that is
/// not origin-form (`http://host/path`) is converted by swift-nio-extras, as before.
final class GatewayHTTPCodec: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = IOData

    /// A body was written for the answer to a `HEAD` or `CONNECT` request.
    struct BodyNotAllowed: Error {}

    /// What each request still unanswered asked for, oldest first: the first is kept inline, so only a
    /// pipelining client makes `overflow` allocate.
    enum Asked { case other, head, connect }
    private var firstAsked: Asked?
    private var overflow: [Asked] = []
    private var isChunked = false
    private var suppressBody = false

    // MARK: Requests

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            let asked: Asked = head.method == .HEAD ? .head : head.method == .CONNECT ? .connect : .other
            if firstAsked == nil { firstAsked = asked } else { overflow.append(asked) }
            do {
                context.fireChannelRead(wrapInboundOut(.head(try Self.request(head))))
            } catch {
                context.fireErrorCaught(error)
            }
        case .body(let bytes):
            context.fireChannelRead(wrapInboundOut(.body(bytes)))
        case .end(let trailers):
            context.fireChannelRead(wrapInboundOut(.end(trailers.map { HTTPFields($0, splitCookie: false) })))
        }
    }

    /// The request as swift-nio-extras' conversion makes it: the first `Host` field becomes the
    /// authority and leaves the fields; the scheme is `http`; an origin-form target is the path.
    static func request(_ head: HTTPRequestHead) throws -> HTTPRequest {
        guard head.uri.utf8.first == UInt8(ascii: "/") else {
            return try HTTPRequest(head, secure: false, splitCookie: false)
        }
        let method = try HTTPRequest.Method(head.method)
        var authority: String?
        var fields = HTTPFields()
        fields.reserveCapacity(head.headers.count)
        for (name, value) in head.headers {
            if authority == nil, HTTP1Wire.isName(name, "host") {
                authority = value
                continue
            }
            if let name = HTTPField.Name(name) { fields.append(HTTPField(name: name, value: value)) }
        }
        return HTTPRequest(method: method, scheme: "http", authority: authority, path: head.uri, headerFields: fields)
    }

    // MARK: Responses

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let response):
            let code = response.status.code
            // A non-final 1xx answer is followed by the final one: it answers no request yet.
            let interim = (100..<200).contains(code) && code != 101
            var asked = Asked.other
            if !interim, let first = firstAsked {
                firstAsked = overflow.isEmpty ? nil : overflow.removeFirst()
                asked = first
                suppressBody = first != .other
            }
            let framing = Self.framing(response, connect: asked == .connect)
            isChunked = suppressBody ? false : framing == .chunked
            var buffer = context.channel.allocator.buffer(capacity: 0)
            Self.writeHead(response, framing: framing, into: &buffer)
            context.write(wrapOutboundOut(.byteBuffer(buffer)), promise: promise)
        case .body(let bytes):
            if suppressBody {
                promise?.fail(BodyNotAllowed())
            } else if isChunked, bytes.readableBytes > 0 {
                HTTP1Wire.writeChunk(.byteBuffer(bytes), context: context, promise: promise)
            } else {
                context.write(wrapOutboundOut(.byteBuffer(bytes)), promise: promise)
            }
        case .end(let trailers):
            suppressBody = false
            if isChunked {
                isChunked = false
                let fields = trailers.map { $0.map { (name: $0.name.rawName, value: $0.value) } } ?? []
                context.write(wrapOutboundOut(.byteBuffer(HTTP1Wire.lastChunk(fields, allocator: context.channel.allocator))), promise: promise)
            } else {
                HTTP1Wire.writeNothing(context: context, promise: promise)
            }
        }
    }

    typealias Framing = HTTP1Wire.Framing

    /// SwiftNIO's framing decision for a response (`correctlyFrameTransportHeaders`).
    static func framing(_ response: HTTPResponse, connect: Bool) -> Framing {
        let code = response.status.code
        if connect || (100..<200).contains(code) || code == 204 || code == 304 { return .neither }
        return response.headerFields[.contentLength] != nil ? .contentLength : .chunked
    }

    /// Writes the status line and the fields, framed as `framing` says: for `.neither` without
    /// `content-length` and `transfer-encoding`; for `.contentLength` without `transfer-encoding`; for
    /// `.chunked` with `transfer-encoding: chunked` in place of any other.
    static func writeHead(_ response: HTTPResponse, framing: Framing, into buffer: inout ByteBuffer) {
        let status = response.status
        let reason = status.reasonPhrase
        var size = 9 + 3 + 1 + reason.utf8.count + 2 + 2  // "HTTP/1.1 " code " " reason CRLF ... CRLF
        for field in response.headerFields where Self.keeps(field.name, framing) {
            size += field.name.rawName.utf8.count + 2 + field.withUnsafeBytesOfValue { $0.count } + 2
        }
        if framing == .chunked { size += HTTP1Wire.chunkedField.count }
        HTTP1Wire.writeHead(size: size, into: &buffer) { out in
            Self.statusLinePrefix.withUnsafeBufferPointer { out.put($0) }
            let code = status.code
            out.put(UInt8(ascii: "0") + UInt8(code / 100 % 10))
            out.put(UInt8(ascii: "0") + UInt8(code / 10 % 10))
            out.put(UInt8(ascii: "0") + UInt8(code % 10))
            out.put(UInt8(ascii: " "))
            out.put(reason)
            out.crlf()
            for field in response.headerFields where Self.keeps(field.name, framing) {
                field.withUnsafeBytesOfValue { out.field(field.name.rawName, $0) }
            }
            if framing == .chunked { HTTP1Wire.chunkedField.withUnsafeBufferPointer { out.put($0) } }
            out.crlf()
        }
    }

    private static func keeps(_ name: HTTPField.Name, _ framing: Framing) -> Bool {
        switch framing {
        case .neither: return name != .contentLength && name != .transferEncoding
        case .contentLength, .chunked: return name != .transferEncoding
        }
    }

    private static let statusLinePrefix = Array("HTTP/1.1 ".utf8)
}
