import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// Parses a client connection's HTTP/1.1 requests from its bytes straight into HTTP-types parts, for
/// ``GatewayHTTPCodec``.
///
/// It replaces SwiftNIO's request decoder (llhttp behind `ByteToMessageHandler`), whose heads then had
/// to be converted: each field name and value became a `String` in an `HTTPHeaders` array, and the
/// conversion made a second copy of each as an `HTTPField` (validating and lowercasing the name again).
/// Here a head is found whole in the bytes read (a `memchr` per line for its end), checked in one
/// pass, and its fields made once; the names clients send most often, spelled as they spell them, are shared
/// rather than made.
///
/// Its rules are ``HTTP1Parsing``'s, and a request line is `method SP target SP HTTP/1.1` (or
/// `HTTP/1.0`), with single spaces and a target of visible ASCII; empty lines before it are skipped.
/// `Transfer-Encoding` must be `chunked` alone (the gateway could not undo another coding) and never
/// comes in an HTTP/1.0 request; a request with neither framing field has no body.
///
/// The HTTP-types request is the one swift-nio-extras' conversion makes: the first `Host` field is the
/// authority and leaves the fields, the scheme is `http`, an origin-form target is the path (other
/// forms go through swift-nio-extras' conversion itself). A request announcing an upgrade (or a
/// `CONNECT`) is an ordinary request here: the gateway upgrades nothing, and answers it over HTTP/1.1.
/// After an error nothing more is parsed.
///
/// What the HTTP-types request cannot carry, its version and whether it lets the connection carry
/// another request, is ``lastHead``: an HTTP/1.1 request keeps the connection unless it says `close`,
/// an HTTP/1.0 one only if it says `keep-alive` (RFC 9112, 9.3).
struct HTTP1RequestParser {
    /// The version and persistence of the request whose head was parsed last.
    struct HeadInfo {
        var http10 = false
        var keepAlive = true
    }

    typealias Limits = HTTP1Parsing.Limits

    let limits: Limits
    private var body = HTTP1BodyReader()
    private var failed = false
    /// How far an incomplete head was searched for its end (``HTTP1Parsing/section(in:limits:scanned:_:)``).
    private var scanned = 0
    /// The last head's version and persistence (set with each head part).
    private(set) var lastHead = HeadInfo()

    init(limits: Limits = Limits()) { self.limits = limits }

    /// The next part `buffer` holds, consuming its bytes; nil when the bytes read so far complete none
    /// (they stay in `buffer` for the next read to extend).
    mutating func next(_ buffer: inout ByteBuffer) throws(HTTPParserError) -> HTTPRequestPart? {
        do {
            return try step(&buffer)
        } catch {
            failed = true
            throw error
        }
    }

    private mutating func step(_ buffer: inout ByteBuffer) throws(HTTPParserError) -> HTTPRequestPart? {
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
        // Empty lines before a request line are skipped (RFC 9112, 2.2).
        while buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) == HTTP1Wire.crlf {
            buffer.moveReaderIndex(forwardBy: 2)
            scanned = max(0, scanned - 2)
        }
        let limits = self.limits
        guard let ((head, framing, info), length) = try HTTP1Parsing.section(in: buffer, limits: limits, scanned: &scanned, { p throws(HTTPParserError) in
            try Self.parseHead(p, limits: limits)
        }) else { return nil }
        buffer.moveReaderIndex(forwardBy: length)
        scanned = 0
        body.start(framing)
        lastHead = info
        return .head(head)
    }

    // MARK: Heads

    /// Parses a head whose last four bytes are CRLF CRLF.
    private static func parseHead(_ p: UnsafeRawBufferPointer, limits: Limits) throws(HTTPParserError) -> (HTTPRequest, HTTP1BodyFraming, HeadInfo) {
        let space = HTTP1Parsing.space
        let n = p.count
        var i = 0
        while i < n, HTTP1Parsing.isToken(p[i]) { i += 1 }
        guard i > 0, i < n, p[i] == space else { throw .invalidMethod }
        let method = method(UnsafeRawBufferPointer(rebasing: p[0..<i]))
        i += 1
        let targetStart = i
        while i < n, p[i] > space, p[i] < 0x7F { i += 1 }
        guard i > targetStart, i < n, p[i] == space else { throw .invalidURL }
        let target = UnsafeRawBufferPointer(rebasing: p[targetStart..<i])
        i += 1
        guard n - i >= 10, p[i] == UInt8(ascii: "H"), p[i + 1] == UInt8(ascii: "T"), p[i + 2] == UInt8(ascii: "T"), p[i + 3] == UInt8(ascii: "P"),
            p[i + 4] == UInt8(ascii: "/"), p[i + 5] == UInt8(ascii: "1"), p[i + 6] == UInt8(ascii: "."),
            p[i + 7] == UInt8(ascii: "1") || p[i + 7] == UInt8(ascii: "0")
        else { throw .invalidVersion }
        let minor = p[i + 7] == UInt8(ascii: "1") ? 1 : 0
        guard p[i + 8] == HTTP1Parsing.cr, p[i + 9] == HTTP1Parsing.lf else { throw .lfExpected }
        i += 10

        var fields = HTTPFields()
        var authority: String?
        var contentLength: Int?
        var chunked = false
        var persistence: Bool?
        try HTTP1Parsing.fields(p, from: i, limits: limits) { name, value throws(HTTPParserError) in
            if authority == nil, HTTP1Parsing.isName(name, "host") {
                authority = String(decoding: value, as: UTF8.self)
                return
            }
            if HTTP1Parsing.isName(name, "content-length") {
                guard contentLength == nil else { throw .unexpectedContentLength }
                contentLength = try HTTP1Parsing.contentLength(value)
            } else if HTTP1Parsing.isName(name, "transfer-encoding") {
                guard !chunked, HTTP1Parsing.isChunked(value, alone: true) else { throw .invalidConstant }
                chunked = true
            } else if HTTP1Parsing.isName(name, "connection") {
                HTTP1Parsing.connectionOptions(value, &persistence)
            }
            fields.append(HTTPField(name: fieldName(name), value: value))
        }
        if chunked, contentLength != nil || minor == 0 { throw .unexpectedContentLength }
        let framing: HTTP1BodyFraming = chunked ? .chunked : .length(contentLength ?? 0)
        let info = HeadInfo(http10: minor == 0, keepAlive: persistence ?? (minor == 1))

        guard target.first == UInt8(ascii: "/") else {
            // Absolute, authority or asterisk form: converted as swift-nio-extras converts it.
            var headers = HTTPHeaders()
            if let authority { headers.add(name: "Host", value: authority) }
            for field in fields { headers.add(name: field.name.rawName, value: field.value) }
            let head = HTTPRequestHead(
                version: HTTPVersion(major: 1, minor: minor), method: HTTPMethod(rawValue: method.rawValue),
                uri: String(decoding: target, as: UTF8.self), headers: headers)
            do {
                return (try HTTPRequest(head, secure: false, splitCookie: false), framing, info)
            } catch {
                throw .invalidURL
            }
        }
        let path = String(decoding: target, as: UTF8.self)  // visible ASCII
        return (HTTPRequest(method: method, scheme: "http", authority: authority, path: path, headerFields: fields), framing, info)
    }

    /// A trailer section's fields.
    private static func trailers(_ section: ByteBuffer, limits: Limits) throws(HTTPParserError) -> HTTPFields {
        var fields = HTTPFields()
        try HTTP1Parsing.fields(in: section, limits: limits) { name, value in fields.append(HTTPField(name: fieldName(name), value: value)) }
        return fields
    }

    private static func method(_ bytes: UnsafeRawBufferPointer) -> HTTPRequest.Method {
        if bytes.elementsEqual("POST".utf8) { return .post }
        if bytes.elementsEqual("GET".utf8) { return .get }
        // A token is a valid method.
        return HTTPRequest.Method(String(decoding: bytes, as: UTF8.self))!
    }

    /// The name of a field, shared when it is one clients send most often, spelled one of the two
    /// usual ways; otherwise made (the name as sent is kept either way).
    private static func fieldName(_ bytes: UnsafeRawBufferPointer) -> HTTPField.Name {
        if bytes.count < knownNames.count {
            for known in knownNames[bytes.count] where bytes.elementsEqual(known.spelling) { return known.name }
        }
        // A token is a valid field name.
        return HTTPField.Name(String(decoding: bytes, as: UTF8.self))!
    }

    /// Common field names by length: each as its canonical lowercase and in its usual capitalisation.
    private static let knownNames: [[(spelling: [UInt8], name: HTTPField.Name)]] = {
        let common = [
            "Host", "Authorization", "Content-Type", "Content-Length", "Transfer-Encoding", "Connection", "User-Agent", "Accept",
            "Accept-Encoding", "Accept-Language", "X-Api-Key", "X-Request-Id", "Anthropic-Version", "Anthropic-Beta",
            "Anthropic-Dangerous-Direct-Browser-Access", "X-Goog-Api-Key", "X-Goog-Api-Client", "OpenAI-Organization",
            "OpenAI-Project", "Openai-Beta", "X-Stainless-Lang", "X-Stainless-Package-Version", "X-Stainless-OS",
            "X-Stainless-Arch", "X-Stainless-Runtime", "X-Stainless-Runtime-Version", "X-Stainless-Async",
            "X-Stainless-Retry-Count", "X-Stainless-Read-Timeout", "X-Stainless-Timeout", "X-Stainless-Helper-Method",
            "Idempotency-Key", "Expect", "Cookie", "Origin", "Referer",
        ]
        var table = [[(spelling: [UInt8], name: HTTPField.Name)]](repeating: [], count: 48)
        for name in common {
            for spelling in [name, name.lowercased()] where table[spelling.utf8.count].allSatisfy({ $0.spelling != Array(spelling.utf8) }) {
                table[spelling.utf8.count].append((Array(spelling.utf8), HTTPField.Name(spelling)!))
            }
        }
        return table
    }()
}
