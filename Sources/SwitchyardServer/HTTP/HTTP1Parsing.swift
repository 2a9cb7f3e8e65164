import NIOCore
import NIOHTTP1

#if canImport(Glibc)
import Glibc
#endif

/// What the gateway's two HTTP/1.1 parsers share (``HTTP1RequestParser`` for clients'
/// requests, ``UpstreamResponseDecoder`` for providers' answers): finding a head's end, field lines,
/// framing fields, and bodies (``HTTP1BodyReader``). Both are at least as strict as llhttp, which they
/// replaced, so no message is read differently by another HTTP/1.1 implementation (the usual
/// request-smuggling ambiguities are errors):
/// - every line ends with CRLF: a bare CR or LF is an error;
/// - a field name is a token followed at once by `:` (no space before it, no folded lines); a value
///   has no control characters other than tab; its surrounding spaces and tabs are not part of it;
/// - `Content-Length` is digits only and appears once; `Transfer-Encoding` appears once, and never
///   with `Content-Length`;
/// - a chunk's size is hexadecimal, its extensions follow it at once and are skipped, and its data
///   ends with CRLF; trailers follow the last chunk as field lines;
/// - a head (or a trailer section) over `maxHeadBytes`, a field over `maxFieldBytes` or more than
///   `maxFieldCount` fields is `headerOverflow`.
enum HTTP1Parsing {
    struct Limits {
        var maxHeadBytes = 80 << 10
        var maxFieldBytes = 80 << 10
        var maxFieldCount = 256
    }

    static let space = UInt8(ascii: " ")
    static let tab = UInt8(ascii: "\t")
    static let cr = UInt8(ascii: "\r")
    static let lf = UInt8(ascii: "\n")
    static let colon = UInt8(ascii: ":")

    /// RFC 9110's `tchar`, as a bit per byte below 128: a table in a `static let` cost a
    /// `swift_once` check per byte.
    @inline(__always)
    static func isToken(_ b: UInt8) -> Bool {
        let low: UInt64 = 0x03FF_6CFA_0000_0000  // ! # $ % & ' * + - . 0-9
        let high: UInt64 = 0x57FF_FFFF_C7FF_FFFE  // A-Z ^ _ ` a-z | ~
        return b < 64 ? low >> b & 1 == 1 : b < 128 && high >> (b - 64) & 1 == 1
    }

    /// What a parsing handler keeps of the bytes it read once it has parsed what it could: nothing
    /// when all were used; the rest alone, in a buffer of their own, when some were used. Appending
    /// the next read to a buffer whose front was consumed would keep everything the connection ever
    /// read (a `ByteBuffer` does not drop consumed bytes as it grows): a sender that ends each read
    /// in the middle of a chunk-size line would grow it without bound.
    static func compact(_ unparsed: inout ByteBuffer?, allocator: ByteBufferAllocator) {
        guard let bytes = unparsed else { return }
        if bytes.readableBytes == 0 {
            unparsed = nil
        } else if bytes.readerIndex > 0 {
            var rest = allocator.buffer(capacity: bytes.readableBytes)
            rest.writeImmutableBuffer(bytes)
            unparsed = rest
        }
    }

    /// Runs `body` over `buffer`'s readable bytes, keeping its typed error (`withUnsafeReadableBytes`
    /// rethrows untyped).
    static func withBytes<T>(_ buffer: ByteBuffer, _ body: (UnsafeRawBufferPointer) throws(HTTPParserError) -> T) throws(HTTPParserError) -> T {
        let result: Result<T, HTTPParserError> = buffer.withUnsafeReadableBytes { p in
            do throws(HTTPParserError) { return .success(try body(p)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Appends a read to what was left unparsed.
    static func append(_ bytes: ByteBuffer, to unparsed: inout ByteBuffer?) {
        if unparsed == nil { unparsed = bytes } else { unparsed!.writeImmutableBuffer(bytes) }
    }

    /// A head's or a trailer section's bytes at the start of `buffer`, up to and with the empty line
    /// ending it, given to `parse` once they are all there; returns what it made and their length, or
    /// nil until they arrive. `scanned` is how far the bytes were searched already (a section arriving
    /// in many small reads is not searched again each time); reset it once the section is consumed.
    static func section<T>(
        in buffer: ByteBuffer, limits: Limits, scanned: inout Int, _ parse: (UnsafeRawBufferPointer) throws(HTTPParserError) -> T
    ) throws(HTTPParserError) -> (T, Int)? {
        try withBytes(buffer) { p throws(HTTPParserError) -> (T, Int)? in
            guard let end = try sectionEnd(p, from: &scanned) else {
                if p.count > limits.maxHeadBytes { throw .headerOverflow }
                return nil
            }
            guard end <= limits.maxHeadBytes else { throw .headerOverflow }
            return (try parse(UnsafeRawBufferPointer(rebasing: p[0..<end])), end)
        }
    }

    /// The index just past the first empty line (CRLF CRLF), searched from `scanned` (which it
    /// advances); nil until it arrives. A line ending in a bare LF is an error.
    private static func sectionEnd(_ p: UnsafeRawBufferPointer, from scanned: inout Int) throws(HTTPParserError) -> Int? {
        guard let base = p.baseAddress else { return nil }
        var i = scanned
        while i < p.count, let found = memchr(base + i, Int32(lf), p.count - i) {
            i = base.distance(to: UnsafeRawPointer(found))
            guard i > 0, p[i - 1] == cr else { throw .lfExpected }
            if i >= 3, p[i - 2] == lf { return i + 1 }
            i += 1
        }
        scanned = p.count
        return nil
    }

    /// Parses field lines from `start` up to the empty line ending `p` (its last two bytes), calling
    /// `field` with each name and value.
    static func fields(
        _ p: UnsafeRawBufferPointer, from start: Int, limits: Limits,
        _ field: (_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws(HTTPParserError) -> Void
    ) throws(HTTPParserError) {
        let end = p.count - 2
        var i = start
        var count = 0
        while i < end {
            let nameStart = i
            while i < end, isToken(p[i]) { i += 1 }
            guard i > nameStart, i < end, p[i] == colon else { throw .invalidHeaderToken }
            let nameEnd = i
            i += 1
            while i < end, p[i] == space || p[i] == tab { i += 1 }
            let valueStart = i
            var valueEnd = i
            while i < end {
                let b = p[i]
                if b == cr { break }
                guard b == tab || (b >= space && b != 0x7F) else { throw .invalidHeaderToken }
                i += 1
                if b != space, b != tab { valueEnd = i }
            }
            guard i + 1 < p.count, p[i] == cr, p[i + 1] == lf else { throw .lfExpected }
            i += 2
            count += 1
            guard count <= limits.maxFieldCount, valueEnd - nameStart <= limits.maxFieldBytes else { throw .headerOverflow }
            try field(UnsafeRawBufferPointer(rebasing: p[nameStart..<nameEnd]), UnsafeRawBufferPointer(rebasing: p[valueStart..<valueEnd]))
        }
    }

    /// The field lines of a trailer section (``HTTP1BodyReader``'s `end`), with its empty line.
    static func fields(
        in section: ByteBuffer, limits: Limits,
        _ field: (_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws(HTTPParserError) -> Void
    ) throws(HTTPParserError) {
        try withBytes(section) { p throws(HTTPParserError) in try fields(p, from: 0, limits: limits, field) }
    }

    /// `name` is `lowercase` (a lowercase ASCII name) in any case.
    static func isName(_ name: UnsafeRawBufferPointer, _ lowercase: StaticString) -> Bool {
        guard name.count == lowercase.utf8CodeUnitCount else { return false }
        return lowercase.withUTF8Buffer { expected in
            for i in 0..<name.count where name[i] | 0x20 != expected[i] | 0x20 || !isToken(name[i]) { return false }
            return true
        }
    }

    /// Folds one `Connection` value's options into `decided` as SwiftNIO's `isKeepAlive` does: `close`
    /// ends the connection, `keep-alive` keeps it when no option decided before (a second one ends it);
    /// other options change nothing. Nil afterwards: the version decides.
    static func connectionOptions(_ value: UnsafeRawBufferPointer, _ decided: inout Bool?) {
        var start = 0
        while start <= value.count {
            var end = start
            while end < value.count, value[end] != UInt8(ascii: ",") { end += 1 }
            var a = start
            var b = end
            while a < b, value[a] == space || value[a] == tab { a += 1 }
            while b > a, value[b - 1] == space || value[b - 1] == tab { b -= 1 }
            let option = UnsafeRawBufferPointer(rebasing: value[a..<b])
            if isName(option, "close") {
                decided = false
            } else if isName(option, "keep-alive") {
                decided = decided == nil
            }
            start = end + 1
        }
    }

    /// A `Content-Length` value: digits only.
    static func contentLength(_ value: UnsafeRawBufferPointer) throws(HTTPParserError) -> Int {
        guard !value.isEmpty, value.count <= 18 else { throw .invalidContentLength }
        var n = 0
        for b in value {
            guard b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") else { throw .invalidContentLength }
            n = n * 10 + Int(b - UInt8(ascii: "0"))
        }
        return n
    }

    /// A `Transfer-Encoding` value is `chunked` alone (`alone`), or ends with it.
    static func isChunked(_ value: UnsafeRawBufferPointer, alone: Bool) -> Bool {
        if !alone, let comma = value.lastIndex(of: UInt8(ascii: ",")) {
            var start = comma + 1
            while start < value.count, value[start] == space || value[start] == tab { start += 1 }
            return isName(UnsafeRawBufferPointer(rebasing: value[start...]), "chunked")
        }
        return isName(value, "chunked")
    }

    /// A chunk-size line at the start of `buffer`: the size and the line's length; nil until it is
    /// whole. At most 16 digits and 4 KB with its extensions, whether it arrives in one read or many.
    static func chunkSize(in buffer: ByteBuffer) throws(HTTPParserError) -> (Int, Int)? {
        let maxLine = 4096
        return try withBytes(buffer) { p throws(HTTPParserError) -> (Int, Int)? in
            let n = min(p.count, maxLine + 2)
            var i = 0
            var size = 0
            while i < n, let digit = hexValue(p[i]) {
                guard i < 16 else { throw .invalidChunkSize }
                size = size << 4 | digit
                i += 1
            }
            if i == n { return nil }
            guard i > 0 else { throw .invalidChunkSize }
            // Extensions (`;name=value`), skipped.
            if p[i] != cr {
                guard p[i] == UInt8(ascii: ";") else { throw .invalidChunkSize }
                while i < n, p[i] != cr {
                    guard p[i] == tab || (p[i] >= space && p[i] != 0x7F) else { throw .invalidChunkSize }
                    i += 1
                }
            }
            guard i <= maxLine else { throw .invalidChunkSize }
            guard i + 1 < p.count else { return nil }
            guard p[i + 1] == lf else { throw .lfExpected }
            guard size >= 0, size < (1 << 62) else { throw .invalidChunkSize }
            return (size, i + 2)
        }
    }

    private static func hexValue(_ b: UInt8) -> Int? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return Int(b - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return Int(b - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return Int(b - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }
}

/// How a message's body is framed on the wire.
enum HTTP1BodyFraming: Equatable {
    case length(Int)
    case chunked
    /// Up to the connection's end (a response with neither framing field).
    case untilClose
}

/// Reads a message's body from the bytes after its head, as its framing says: its data as it arrives
/// (a slice of the bytes read, uncopied), then its end with the trailer section's bytes if it had one.
struct HTTP1BodyReader {
    enum Event {
        case data(ByteBuffer)
        /// The body ended; `trailers` are the trailer section's bytes, with the empty line ending it.
        case end(trailers: ByteBuffer?)
    }

    private enum State {
        case none
        /// The data is all read: the end comes next.
        case ending
        case fixed(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkEnd
        case trailers
        case untilClose
    }

    private var state = State.none
    private var scanned = 0

    /// A body is being read (its end has not been reached).
    var isReading: Bool {
        if case .none = state { return false }
        return true
    }

    /// Starts reading a body framed as `framing`.
    mutating func start(_ framing: HTTP1BodyFraming) {
        switch framing {
        case .length(0): state = .ending
        case .length(let n): state = .fixed(remaining: n)
        case .chunked: state = .chunkSize
        case .untilClose: state = .untilClose
        }
    }

    /// The next event `buffer` holds, consuming its bytes; nil when the bytes read so far complete none.
    mutating func next(_ buffer: inout ByteBuffer, limits: HTTP1Parsing.Limits) throws(HTTPParserError) -> Event? {
        while true {
            switch state {
            case .none:
                return nil
            case .ending:
                state = .none
                return .end(trailers: nil)
            case .fixed(let remaining):
                guard let (bytes, left) = Self.data(&buffer, upTo: remaining) else { return nil }
                state = left == 0 ? .ending : .fixed(remaining: left)
                return .data(bytes)
            case .untilClose:
                guard buffer.readableBytes > 0 else { return nil }
                return .data(buffer.readSlice(length: buffer.readableBytes)!)
            case .chunkSize:
                guard let (size, length) = try HTTP1Parsing.chunkSize(in: buffer) else { return nil }
                buffer.moveReaderIndex(forwardBy: length)
                state = size == 0 ? .trailers : .chunkData(remaining: size)
            case .chunkData(let remaining):
                guard let (bytes, left) = Self.data(&buffer, upTo: remaining) else { return nil }
                state = left == 0 ? .chunkEnd : .chunkData(remaining: left)
                return .data(bytes)
            case .chunkEnd:
                guard buffer.readableBytes >= 2 else { return nil }
                guard buffer.readInteger(as: UInt16.self) == HTTP1Wire.crlf else { throw .lfExpected }
                state = .chunkSize
            case .trailers:
                guard buffer.readableBytes >= 2 else { return nil }
                if buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) == HTTP1Wire.crlf {
                    buffer.moveReaderIndex(forwardBy: 2)
                    state = .none
                    return .end(trailers: nil)
                }
                guard let (_, length) = try HTTP1Parsing.section(in: buffer, limits: limits, scanned: &scanned, { _ in () }) else { return nil }
                scanned = 0
                state = .none
                return .end(trailers: buffer.readSlice(length: length)!)
            }
        }
    }

    /// Up to `remaining` bytes of data from `buffer`, and how many are still to come; nil when none
    /// has arrived.
    private static func data(_ buffer: inout ByteBuffer, upTo remaining: Int) -> (ByteBuffer, left: Int)? {
        guard buffer.readableBytes > 0 else { return nil }
        let n = min(remaining, buffer.readableBytes)
        return (buffer.readSlice(length: n)!, remaining - n)
    }

    /// The connection's input ended: the end of a body read up to it, nil when no body was being read;
    /// an error for a body cut short.
    mutating func finish() throws(HTTPParserError) -> Event? {
        switch state {
        case .none: return nil
        case .ending, .untilClose:
            state = .none
            return .end(trailers: nil)
        default:
            throw .invalidEOFState
        }
    }
}
