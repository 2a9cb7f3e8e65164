import NIOCore
import NIOHTTP1

/// Writes requests to a provider as HTTP/1.1 bytes: what SwiftNIO's `NIOHTTPRequestHeadersValidator`
/// and `HTTPRequestEncoder` (the pair `addHTTPClientHandlers` installs) did together, byte for byte
/// (the tests compare both), in one pass.
///
/// The pair walked the head three times (the validator over every name, value and the target; the
/// encoder's framing looking `content-length` and `transfer-encoding` up) and the encoder's framing
/// removed `transfer-encoding` from a copy of the head's header array (the array is shared with the
/// message it came in, so the removal copied it, even with nothing to remove), then wrote the head
/// four `ByteBuffer` writes per field into a 256-byte buffer that grew as it filled. Here the head is
/// checked while it is measured and written once into a buffer of its exact size.
///
/// The checks are the validator's: the target only in the characters RFC 9112 allows, the method a
/// token, names tokens, values without control characters but HTAB (no CR, LF or NUL can split a
/// header; unlike SwiftNIO, an empty name is refused too: a token has at least one character). A head
/// that fails them is not written: its write fails with
/// `HTTPParserError.invalidHeaderToken`, which the pipeline also sees. Framing is the encoder's: a
/// `POST`, `PUT` or `PATCH` keeps its `content-length` (any `transfer-encoding` dropped) or is chunked;
/// a `TRACE` has neither; other methods are chunked only if they say so.
///
/// It sits where SwiftNIO's encoder sat, before the response decoder, which still sees each request
/// head go out (it needs the method to read a `HEAD` answer).
final class UpstreamRequestEncoder: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = IOData

    private var isChunked = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            guard let measured = Self.measure(head) else {
                promise?.fail(HTTPParserError.invalidHeaderToken)
                context.fireErrorCaught(HTTPParserError.invalidHeaderToken)
                return
            }
            isChunked = measured.framing == .chunked
            var buffer = context.channel.allocator.buffer(capacity: 0)
            Self.writeHead(head, measured, into: &buffer)
            context.write(wrapOutboundOut(.byteBuffer(buffer)), promise: promise)
        case .body(let bytes):
            if isChunked, bytes.readableBytes > 0 {
                HTTP1Wire.writeChunk(bytes, context: context, promise: promise)
            } else {
                context.write(wrapOutboundOut(bytes), promise: promise)
            }
        case .end(let trailers):
            if let trailers, !trailers.allSatisfy({ Self.isToken($0.name) && Self.isValue($0.value) }) {
                promise?.fail(HTTPParserError.invalidHeaderToken)
                context.fireErrorCaught(HTTPParserError.invalidHeaderToken)
                return
            }
            if isChunked {
                isChunked = false
                let fields = trailers.map { $0.map { (name: $0.name, value: $0.value) } } ?? []
                context.write(wrapOutboundOut(.byteBuffer(HTTP1Wire.lastChunk(fields, allocator: context.channel.allocator))), promise: promise)
            } else {
                HTTP1Wire.writeNothing(context: context, promise: promise)
            }
        }
    }

    typealias Framing = HTTP1Wire.Framing

    /// Where the head's fields stand: its framing, which of its fields are dropped, and its size.
    struct Measured {
        var framing: Framing
        var dropsContentLength: Bool
        var dropsTransferEncoding: Bool
        var addsChunked: Bool
        var size: Int
    }

    /// Checks the head as the validator does and measures it as the encoder would write it; nil when
    /// it fails a check.
    static func measure(_ head: HTTPRequestHead) -> Measured? {
        let method = head.method.rawValue
        guard isToken(method), isTarget(head.uri) else { return nil }
        var hasContentLength = false
        var firstTransferEncodingIsChunked: Bool?
        var fieldBytes = 0
        var lengthBytes = 0
        var encodingBytes = 0
        for (name, value) in head.headers {
            guard isToken(name), isValue(value) else { return nil }
            let bytes = name.utf8.count + 2 + value.utf8.count + 2
            if HTTP1Wire.isName(name, "content-length") {
                hasContentLength = true
                lengthBytes += bytes
            } else if HTTP1Wire.isName(name, "transfer-encoding") {
                if firstTransferEncodingIsChunked == nil { firstTransferEncodingIsChunked = value == "chunked" }
                encodingBytes += bytes
            } else {
                fieldBytes += bytes
            }
        }
        var m = Measured(framing: .neither, dropsContentLength: false, dropsTransferEncoding: false, addsChunked: false, size: 0)
        let http11 = head.version.major == 1 && head.version.minor >= 1
        switch head.method {
        case .TRACE:
            (m.dropsContentLength, m.dropsTransferEncoding) = (true, true)
        case .POST, .PUT, .PATCH:
            if hasContentLength {
                (m.framing, m.dropsTransferEncoding) = (.contentLength, true)
            } else if http11 {
                (m.framing, m.dropsTransferEncoding, m.addsChunked) = (.chunked, true, true)
            }
        default:
            if hasContentLength {
                (m.framing, m.dropsTransferEncoding) = (.contentLength, true)
            } else if http11, firstTransferEncodingIsChunked == true {
                m.framing = .chunked
            }
        }
        m.size = method.utf8.count + 1 + head.uri.utf8.count + 1 + version(head.version).utf8.count + 2 + fieldBytes + 2
        if !m.dropsContentLength { m.size += lengthBytes }
        if !m.dropsTransferEncoding { m.size += encodingBytes }
        if m.addsChunked { m.size += HTTP1Wire.chunkedField.count }
        return m
    }

    static func writeHead(_ head: HTTPRequestHead, _ m: Measured, into buffer: inout ByteBuffer) {
        HTTP1Wire.writeHead(size: m.size, into: &buffer) { out in
            out.put(head.method.rawValue)
            out.put(UInt8(ascii: " "))
            out.put(head.uri)
            out.put(UInt8(ascii: " "))
            out.put(version(head.version))
            out.crlf()
            for (name, value) in head.headers {
                if m.dropsContentLength, HTTP1Wire.isName(name, "content-length") { continue }
                if m.dropsTransferEncoding, HTTP1Wire.isName(name, "transfer-encoding") { continue }
                var value = value
                value.withUTF8 { out.field(name, $0) }
            }
            if m.addsChunked { HTTP1Wire.chunkedField.withUnsafeBufferPointer { out.put($0) } }
            out.crlf()
        }
    }

    /// The version as SwiftNIO writes it.
    private static func version(_ v: HTTPVersion) -> String {
        switch (v.major, v.minor) {
        case (1, 1): "HTTP/1.1"
        case (1, 0): "HTTP/1.0"
        default: "HTTP/\(v.major).\(v.minor)"
        }
    }

    /// An RFC 9110 token (`field-name`, a method).
    static func isToken(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
                UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
                UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
                true
            default:
                false
            }
        }
    }

    /// A field value: no control character but HTAB.
    static func isValue(_ s: String) -> Bool {
        s.utf8.allSatisfy { $0 == UInt8(ascii: "\t") || ($0 > 0x1F && $0 != 0x7F) }
    }

    /// A request target in the characters RFC 9112 allows (SwiftNIO's validator's set).
    static func isTarget(_ s: String) -> Bool {
        s.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: ":"), UInt8(ascii: "/"),
                UInt8(ascii: "?"), UInt8(ascii: "#"), UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "@"), UInt8(ascii: "!"),
                UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "*"),
                UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="), UInt8(ascii: "%"):
                true
            default:
                false
            }
        }
    }
}
