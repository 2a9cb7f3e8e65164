import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// A client connection's HTTP/1.1: parses the bytes read into HTTP-types request parts
/// (``HTTP1RequestParser``) for ``GatewayConnection``, and writes HTTP-types responses as HTTP/1.1
/// bytes. It replaces four handlers: SwiftNIO's request decoder and response encoder, and
/// swift-nio-extras' `HTTP1ToHTTPServerCodec` between them and the gateway. What it reads and writes is
/// what they did (the tests compare both); a request the parser refuses is reported as the
/// `HTTPParserError` SwiftNIO's decoder reported, and nothing after it is read.
///
/// What the four cost per request (docs/benchmarks.md, eighteenth and twenty-second rounds): llhttp's
/// callbacks made a `String` of every field name and value, the conversion made an `HTTPField` of
/// each again (validating and lowercasing the name), each part crossed two
/// handlers as an existential, and the response's fields were copied into an `HTTPHeaders` array of
/// string pairs with its framing fields looked up and removed there, then written four `ByteBuffer`
/// writes per field into a buffer that grew as it filled. Here a head is parsed in place once, and an
/// answer's head is measured first and written in one pass into a buffer of its exact size.
///
/// Framing is SwiftNIO's: a response that may have a body keeps its `content-length` (and loses any
/// `transfer-encoding`) or is sent chunked; a 1xx, 204 or 304 answer has neither; the answer to a
/// `HEAD` (or `CONNECT`) request keeps its framing fields and writes no body.
///
/// HTTP/1.0 clients know no chunks: an answer of unknown length (a stream) goes to them unframed, its
/// body ending with the connection. Each request's persistence is kept with it; the answer's
/// (``answerKeepsAlive``) decides whether ``GatewayConnection`` carries on, and the answer says so:
/// `connection: close` when the connection ends after it, `connection: keep-alive` when an HTTP/1.0
/// client's stays open (unless the answer names its own).
final class GatewayHTTPCodec: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = IOData

    /// A body was written for the answer to a `HEAD` or `CONNECT` request.
    struct BodyNotAllowed: Error {}

    /// What each request still unanswered asked for, oldest first: the first is kept inline, so only a
    /// pipelining client makes `overflow` allocate.
    struct Asked {
        enum Method { case other, head, connect }
        var method: Method
        /// An HTTP/1.0 request: no chunked answer.
        var http10: Bool
        /// Whether the request lets the connection carry another one after its answer.
        var keepAlive: Bool
    }
    private var firstAsked: Asked?
    private var overflow: [Asked] = []
    private var isChunked = false
    private var suppressBody = false

    /// Whether the connection may carry another request after the answer whose head was written last:
    /// not when its request said so, nor when its body ends with the connection.
    private(set) var answerKeepsAlive = true
    /// The connection ends after the answers not written yet, whatever their requests asked (a graceful
    /// shutdown, a client that half-closed): their heads say `connection: close`.
    var closing = false

    // MARK: Requests

    private var parser: HTTP1RequestParser
    /// Bytes read and not parsed yet (a head or a chunk-size line still incomplete).
    private var unparsed: ByteBuffer?
    /// Parts are being handed on: bytes read meanwhile (a handler reading again) wait in `unparsed`.
    private var parsing = false
    /// The bytes kept between reads, with their buffer's room (for tests).
    var keptCapacity: Int { unparsed?.capacity ?? 0 }

    init(limits: HTTP1RequestParser.Limits = .init()) {
        parser = HTTP1RequestParser(limits: limits)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        HTTP1Parsing.append(unwrapInboundIn(data), to: &unparsed)
        guard !parsing else { return }
        parsing = true
        defer { parsing = false }
        // A part handed on may close the channel at once (a handler closing it, the answer to a bad
        // request): `channelInactive` then drops what is left, and the loop stops.
        while unparsed != nil {
            let part: HTTPRequestPart?
            do {
                part = try parser.next(&unparsed!)
            } catch {
                unparsed = nil
                context.fireErrorCaught(error)
                return
            }
            guard let part else { break }
            if case .head(let head) = part {
                let method: Asked.Method = head.method == .head ? .head : head.method == .connect ? .connect : .other
                let asked = Asked(method: method, http10: parser.lastHead.http10, keepAlive: parser.lastHead.keepAlive)
                if firstAsked == nil { firstAsked = asked } else { overflow.append(asked) }
            }
            context.fireChannelRead(wrapInboundOut(part))
        }
        HTTP1Parsing.compact(&unparsed, allocator: context.channel.allocator)
    }

    func channelInactive(context: ChannelHandlerContext) {
        unparsed = nil
        context.fireChannelInactive()
    }

    // MARK: Responses

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let response):
            let code = response.status.code
            // A non-final 1xx answer is followed by the final one: it answers no request yet.
            let interim = (100..<200).contains(code) && code != 101
            var asked: Asked?
            if !interim, let first = firstAsked {
                firstAsked = overflow.isEmpty ? nil : overflow.removeFirst()
                asked = first
                suppressBody = first.method != .other
            }
            var framing = Self.framing(response, connect: asked?.method == .connect)
            var connection: Connection?
            if let asked {
                var keepAlive = asked.keepAlive && !closing
                if asked.http10, framing == .chunked {
                    // No chunks in HTTP/1.0: the body ends with the connection.
                    framing = .neither
                    if !suppressBody { keepAlive = false }
                }
                answerKeepsAlive = keepAlive
                if !response.headerFields.contains(.connection) {
                    connection = !keepAlive ? .close : asked.http10 ? .keepAlive : nil
                }
            }
            isChunked = suppressBody ? false : framing == .chunked
            var buffer = context.channel.allocator.buffer(capacity: 0)
            Self.writeHead(response, framing: framing, connection: connection, into: &buffer)
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
        return response.headerFields.contains(.contentLength) ? .contentLength : .chunked
    }

    /// A `connection` field the codec adds to an answer that names none.
    enum Connection {
        case close, keepAlive
        var field: [UInt8] { self == .close ? GatewayHTTPCodec.closeField : GatewayHTTPCodec.keepAliveField }
    }
    private static let closeField = Array("connection: close\r\n".utf8)
    private static let keepAliveField = Array("connection: keep-alive\r\n".utf8)

    /// Writes the status line and the fields, framed as `framing` says: for `.neither` without
    /// `content-length` and `transfer-encoding`; for `.contentLength` without `transfer-encoding`; for
    /// `.chunked` with `transfer-encoding: chunked` in place of any other; and `connection` after them.
    static func writeHead(_ response: HTTPResponse, framing: Framing, connection: Connection? = nil, into buffer: inout ByteBuffer) {
        let status = response.status
        let reason = status.reasonPhrase
        var size = 9 + 3 + 1 + reason.utf8.count + 2 + 2  // "HTTP/1.1 " code " " reason CRLF ... CRLF
        for field in response.headerFields where Self.keeps(field.name, framing) {
            size += field.name.rawName.utf8.count + 2 + field.withUnsafeBytesOfValue { $0.count } + 2
        }
        if framing == .chunked { size += HTTP1Wire.chunkedField.count }
        if let connection { size += connection.field.count }
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
            if let connection { connection.field.withUnsafeBufferPointer { out.put($0) } }
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
