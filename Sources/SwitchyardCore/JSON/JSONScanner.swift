/// A validating, single-pass JSON scanner that records the members of the top-level object
/// without decoding their values.
///
/// The gateway needs only a few fields of a request (`model`, `stream`, sizes) to route and admit it,
/// and must rewrite `model` while keeping every other byte. Full decoding costs several times more, so
/// the hot path scans once: the whole document is validated (RFC 8259 grammar, nesting depth bounded),
/// and each top-level member is returned as byte ranges into the original buffer.
public enum JSONScanner {
    /// The kind of a JSON value, as seen by its first byte.
    public enum ValueKind: Sendable, Equatable {
        case object, array, string, number, `true`, `false`, null
    }

    /// One member of the top-level object: where its key and value lie in the scanned bytes.
    public struct Member: Sendable, Equatable {
        /// The key's bytes between the quotes (still escaped if `keyHasEscapes`).
        public var keyRange: Range<Int>
        /// Whether the raw key contains backslash escapes.
        public var keyHasEscapes: Bool
        /// The value's bytes, from its first to its last byte.
        public var valueRange: Range<Int>
        /// The value's kind.
        public var kind: ValueKind
        /// Where the member starts (its key's opening quote) and ends (its value's last byte).
        public var memberRange: Range<Int> { (keyRange.lowerBound - 1)..<valueRange.upperBound }
    }

    /// The top-level object of a document.
    public struct Object: Sendable {
        /// Members in document order (duplicates kept; lookups return the last, as most parsers do).
        public var members: [Member]
        /// Offset of the opening `{`.
        public var openBrace: Int
        /// Offset of the closing `}`.
        public var closeBrace: Int
    }

    /// Why a document was rejected; `offset` is the byte at which scanning stopped.
    public struct ScanError: Error, Sendable, Equatable, CustomStringConvertible {
        public enum Reason: Sendable, Equatable {
            case empty
            case notAnObject
            case unexpectedByte(UInt8)
            case unexpectedEnd
            case invalidEscape
            case controlCharacterInString
            case invalidNumber
            case tooDeep(Int)
            case trailingData
        }

        public var reason: Reason
        public var offset: Int

        public var description: String {
            switch reason {
            case .empty: return "the request body is empty"
            case .notAnObject: return "the request body must be a JSON object"
            case .unexpectedByte(let b):
                let shown = (0x21...0x7E).contains(b) ? "'\(Character(UnicodeScalar(b)))'" : "byte 0x\(String(b, radix: 16))"
                return "invalid JSON: unexpected \(shown) at offset \(offset)"
            case .unexpectedEnd: return "invalid JSON: unexpected end of input at offset \(offset)"
            case .invalidEscape: return "invalid JSON: invalid escape sequence in string at offset \(offset)"
            case .controlCharacterInString: return "invalid JSON: unescaped control character in string at offset \(offset)"
            case .invalidNumber: return "invalid JSON: malformed number at offset \(offset)"
            case .tooDeep(let limit): return "invalid JSON: nesting deeper than \(limit) levels at offset \(offset)"
            case .trailingData: return "invalid JSON: unexpected data after the top-level value at offset \(offset)"
            }
        }
    }

    /// Validates `bytes` as one JSON document whose top level is an object, and returns its members.
    public static func scanObject(_ bytes: UnsafeRawBufferPointer, maxDepth: Int = 64) throws(ScanError) -> Object {
        var s = Cursor(bytes: bytes, maxDepth: maxDepth)
        s.skipWhitespace()
        guard s.pos < s.end else { throw ScanError(reason: .empty, offset: 0) }
        guard s.peek == UInt8(ascii: "{") else {
            // Still report malformed input as such, so "not JSON" and "JSON but not an object" differ.
            _ = try s.value(depth: 0)
            throw ScanError(reason: .notAnObject, offset: 0)
        }
        let object = try s.object(depth: 1, collect: true)
        s.skipWhitespace()
        if s.pos != s.end { throw ScanError(reason: .trailingData, offset: s.pos) }
        return object
    }

    /// Validates `bytes` as one JSON document of any kind.
    public static func validate(_ bytes: UnsafeRawBufferPointer, maxDepth: Int = 64) throws(ScanError) {
        var s = Cursor(bytes: bytes, maxDepth: maxDepth)
        s.skipWhitespace()
        guard s.pos < s.end else { throw ScanError(reason: .empty, offset: 0) }
        _ = try s.value(depth: 0)
        s.skipWhitespace()
        if s.pos != s.end { throw ScanError(reason: .trailingData, offset: s.pos) }
    }

    /// The scanning state: a position in a byte buffer. Recursion depth is bounded by `maxDepth`.
    struct Cursor {
        let bytes: UnsafeRawBufferPointer
        let end: Int
        let maxDepth: Int
        var pos: Int = 0

        init(bytes: UnsafeRawBufferPointer, maxDepth: Int) {
            self.bytes = bytes
            self.end = bytes.count
            self.maxDepth = maxDepth
        }

        @inline(__always) var peek: UInt8 { bytes[pos] }

        @inline(__always) mutating func skipWhitespace() {
            while pos < end {
                switch bytes[pos] {
                case 0x20, 0x0A, 0x0D, 0x09: pos += 1
                default: return
                }
            }
        }

        @inline(__always) func fail(_ reason: ScanError.Reason) -> ScanError {
            ScanError(reason: pos >= end && reason != .tooDeep(maxDepth) ? .unexpectedEnd : reason, offset: pos)
        }

        /// Scans one value starting at `pos` (whitespace already skipped); returns its kind.
        mutating func value(depth: Int) throws(ScanError) -> ValueKind {
            guard pos < end else { throw fail(.unexpectedEnd) }
            switch bytes[pos] {
            case UInt8(ascii: "{"):
                _ = try object(depth: depth + 1, collect: false)
                return .object
            case UInt8(ascii: "["):
                try array(depth: depth + 1)
                return .array
            case UInt8(ascii: "\""):
                _ = try string()
                return .string
            case UInt8(ascii: "t"):
                try literal("true")
                return .true
            case UInt8(ascii: "f"):
                try literal("false")
                return .false
            case UInt8(ascii: "n"):
                try literal("null")
                return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                try number()
                return .number
            default:
                throw fail(.unexpectedByte(bytes[pos]))
            }
        }

        mutating func literal(_ word: StaticString) throws(ScanError) {
            let count = word.utf8CodeUnitCount
            let w = word.utf8Start
            for i in 0..<count {
                guard pos < end else { throw fail(.unexpectedEnd) }
                guard bytes[pos] == w[i] else { throw fail(.unexpectedByte(bytes[pos])) }
                pos += 1
            }
        }

        mutating func number() throws(ScanError) {
            if bytes[pos] == UInt8(ascii: "-") { pos += 1 }
            guard pos < end else { throw fail(.unexpectedEnd) }
            if bytes[pos] == UInt8(ascii: "0") {
                pos += 1
            } else if isDigit(bytes[pos]) {
                while pos < end && isDigit(bytes[pos]) { pos += 1 }
            } else {
                throw fail(.invalidNumber)
            }
            if pos < end && bytes[pos] == UInt8(ascii: ".") {
                pos += 1
                guard pos < end, isDigit(bytes[pos]) else { throw fail(.invalidNumber) }
                while pos < end && isDigit(bytes[pos]) { pos += 1 }
            }
            if pos < end && (bytes[pos] == UInt8(ascii: "e") || bytes[pos] == UInt8(ascii: "E")) {
                pos += 1
                if pos < end && (bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-")) { pos += 1 }
                guard pos < end, isDigit(bytes[pos]) else { throw fail(.invalidNumber) }
                while pos < end && isDigit(bytes[pos]) { pos += 1 }
            }
        }

        @inline(__always) func isDigit(_ b: UInt8) -> Bool { b &- UInt8(ascii: "0") < 10 }

        /// Scans a string at `pos` (on its opening quote). Returns the content range and whether it has escapes.
        mutating func string() throws(ScanError) -> (Range<Int>, Bool) {
            pos += 1
            let start = pos
            var escaped = false
            while pos < end {
                let b = bytes[pos]
                if b == UInt8(ascii: "\"") {
                    let range = start..<pos
                    pos += 1
                    return (range, escaped)
                }
                if b == UInt8(ascii: "\\") {
                    escaped = true
                    pos += 1
                    guard pos < end else { throw fail(.unexpectedEnd) }
                    switch bytes[pos] {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                        UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                        pos += 1
                    case UInt8(ascii: "u"):
                        pos += 1
                        for _ in 0..<4 {
                            guard pos < end else { throw fail(.unexpectedEnd) }
                            guard JSONString.hexValue(bytes[pos]) != nil else { throw fail(.invalidEscape) }
                            pos += 1
                        }
                    default:
                        throw fail(.invalidEscape)
                    }
                    continue
                }
                if b < 0x20 { throw fail(.controlCharacterInString) }
                pos += 1
            }
            throw fail(.unexpectedEnd)
        }

        mutating func array(depth: Int) throws(ScanError) {
            guard depth <= maxDepth else { throw fail(.tooDeep(maxDepth)) }
            pos += 1
            skipWhitespace()
            guard pos < end else { throw fail(.unexpectedEnd) }
            if bytes[pos] == UInt8(ascii: "]") { pos += 1; return }
            while true {
                skipWhitespace()
                _ = try value(depth: depth)
                skipWhitespace()
                guard pos < end else { throw fail(.unexpectedEnd) }
                switch bytes[pos] {
                case UInt8(ascii: ","): pos += 1
                case UInt8(ascii: "]"): pos += 1; return
                default: throw fail(.unexpectedByte(bytes[pos]))
                }
            }
        }

        mutating func object(depth: Int, collect: Bool) throws(ScanError) -> Object {
            guard depth <= maxDepth else { throw fail(.tooDeep(maxDepth)) }
            let open = pos
            var members: [Member] = []
            if collect { members.reserveCapacity(16) }
            pos += 1
            skipWhitespace()
            guard pos < end else { throw fail(.unexpectedEnd) }
            if bytes[pos] == UInt8(ascii: "}") {
                pos += 1
                return Object(members: members, openBrace: open, closeBrace: pos - 1)
            }
            while true {
                skipWhitespace()
                guard pos < end else { throw fail(.unexpectedEnd) }
                guard bytes[pos] == UInt8(ascii: "\"") else { throw fail(.unexpectedByte(bytes[pos])) }
                let (keyRange, keyEscaped) = try string()
                skipWhitespace()
                guard pos < end else { throw fail(.unexpectedEnd) }
                guard bytes[pos] == UInt8(ascii: ":") else { throw fail(.unexpectedByte(bytes[pos])) }
                pos += 1
                skipWhitespace()
                let valueStart = pos
                let kind = try value(depth: depth)
                if collect {
                    members.append(Member(keyRange: keyRange, keyHasEscapes: keyEscaped, valueRange: valueStart..<pos, kind: kind))
                }
                skipWhitespace()
                guard pos < end else { throw fail(.unexpectedEnd) }
                switch bytes[pos] {
                case UInt8(ascii: ","): pos += 1
                case UInt8(ascii: "}"):
                    pos += 1
                    return Object(members: members, openBrace: open, closeBrace: pos - 1)
                default: throw fail(.unexpectedByte(bytes[pos]))
                }
            }
        }
    }
}

extension JSONScanner.Object {
    /// The last member whose key equals `name` (compared on raw bytes; escaped keys are decoded first).
    public func member(_ name: StaticString, in bytes: UnsafeRawBufferPointer) -> JSONScanner.Member? {
        let count = name.utf8CodeUnitCount
        let n = name.utf8Start
        var found: JSONScanner.Member?
        outer: for m in members {
            if m.keyHasEscapes {
                if JSONString.decode(bytes, m.keyRange) == String(describing: name) { found = m }
                continue
            }
            guard m.keyRange.count == count else { continue }
            var i = 0
            var p = m.keyRange.lowerBound
            while i < count {
                if bytes[p] != n[i] { continue outer }
                i += 1
                p += 1
            }
            found = m
        }
        return found
    }
}
