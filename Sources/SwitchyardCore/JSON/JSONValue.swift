import NIOCore

/// A JSON value that round-trips exactly: object keys keep their order and numbers keep their text.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    /// The number as written (so large integers and exact decimals survive a round trip).
    case number(String)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    public static func int(_ v: Int) -> JSONValue { .number(String(v)) }

    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    public var objectValue: JSONObject? { if case .object(let o) = self { return o } else { return nil } }
    public var intValue: Int? {
        guard case .number(let n) = self else { return nil }
        return Self.integer(n)
    }

    /// A number's text as an integer: exact, or a whole number written with a fraction or exponent
    /// (`12.0`, `1e3`) below 9e15; nil otherwise.
    public static func integer(_ text: String) -> Int? {
        if let i = Int(text) { return i }
        if let d = Double(text), d == d.rounded(), abs(d) < 9e15 { return Int(d) }
        return nil
    }
    public var doubleValue: Double? { if case .number(let n) = self { return Double(n) } else { return nil } }
    public var isNull: Bool { if case .null = self { return true } else { return false } }

    /// Member lookup on objects; nil for other kinds.
    public subscript(key: String) -> JSONValue? {
        objectValue?[key]
    }

    // MARK: Parsing

    /// Parses one JSON document.
    public static func parse(_ buffer: ByteBuffer, maxDepth: Int = 256) throws(JSONScanner.ScanError) -> JSONValue {
        do {
            return try buffer.withUnsafeReadableBytes { bytes in try parse(bytes, maxDepth: maxDepth) }
        } catch let e as JSONScanner.ScanError {
            throw e
        } catch {
            throw JSONScanner.ScanError(reason: .empty, offset: 0)
        }
    }

    public static func parse(_ text: String, maxDepth: Int = 256) throws(JSONScanner.ScanError) -> JSONValue {
        try parse(ByteBuffer(string: text), maxDepth: maxDepth)
    }

    public static func parse(_ bytes: UnsafeRawBufferPointer, maxDepth: Int = 256) throws(JSONScanner.ScanError) -> JSONValue {
        var p = Parser(cursor: .init(bytes: bytes, maxDepth: maxDepth))
        p.cursor.skipWhitespace()
        guard p.cursor.pos < p.cursor.end else { throw JSONScanner.ScanError(reason: .empty, offset: 0) }
        let v = try p.value(depth: 0)
        p.cursor.skipWhitespace()
        if p.cursor.pos != p.cursor.end { throw JSONScanner.ScanError(reason: .trailingData, offset: p.cursor.pos) }
        return v
    }

    struct Parser {
        var cursor: JSONScanner.Cursor

        mutating func value(depth: Int) throws(JSONScanner.ScanError) -> JSONValue {
            let start = cursor.pos
            guard start < cursor.end else { throw cursor.fail(.unexpectedEnd) }
            switch cursor.bytes[start] {
            case UInt8(ascii: "{"):
                guard depth + 1 <= cursor.maxDepth else { throw cursor.fail(.tooDeep(cursor.maxDepth)) }
                cursor.pos += 1
                var obj = JSONObject()
                cursor.skipWhitespace()
                if cursor.pos < cursor.end, cursor.bytes[cursor.pos] == UInt8(ascii: "}") {
                    cursor.pos += 1
                    return .object(obj)
                }
                while true {
                    cursor.skipWhitespace()
                    guard cursor.pos < cursor.end else { throw cursor.fail(.unexpectedEnd) }
                    guard cursor.bytes[cursor.pos] == UInt8(ascii: "\"") else { throw cursor.fail(.unexpectedByte(cursor.bytes[cursor.pos])) }
                    let (keyRange, _) = try cursor.string()
                    let key = JSONString.decode(cursor.bytes, keyRange)
                    cursor.skipWhitespace()
                    guard cursor.pos < cursor.end else { throw cursor.fail(.unexpectedEnd) }
                    guard cursor.bytes[cursor.pos] == UInt8(ascii: ":") else { throw cursor.fail(.unexpectedByte(cursor.bytes[cursor.pos])) }
                    cursor.pos += 1
                    cursor.skipWhitespace()
                    let v = try value(depth: depth + 1)
                    obj[key] = v
                    cursor.skipWhitespace()
                    guard cursor.pos < cursor.end else { throw cursor.fail(.unexpectedEnd) }
                    switch cursor.bytes[cursor.pos] {
                    case UInt8(ascii: ","): cursor.pos += 1
                    case UInt8(ascii: "}"):
                        cursor.pos += 1
                        return .object(obj)
                    default: throw cursor.fail(.unexpectedByte(cursor.bytes[cursor.pos]))
                    }
                }
            case UInt8(ascii: "["):
                guard depth + 1 <= cursor.maxDepth else { throw cursor.fail(.tooDeep(cursor.maxDepth)) }
                cursor.pos += 1
                var items: [JSONValue] = []
                cursor.skipWhitespace()
                if cursor.pos < cursor.end, cursor.bytes[cursor.pos] == UInt8(ascii: "]") {
                    cursor.pos += 1
                    return .array(items)
                }
                while true {
                    cursor.skipWhitespace()
                    items.append(try value(depth: depth + 1))
                    cursor.skipWhitespace()
                    guard cursor.pos < cursor.end else { throw cursor.fail(.unexpectedEnd) }
                    switch cursor.bytes[cursor.pos] {
                    case UInt8(ascii: ","): cursor.pos += 1
                    case UInt8(ascii: "]"):
                        cursor.pos += 1
                        return .array(items)
                    default: throw cursor.fail(.unexpectedByte(cursor.bytes[cursor.pos]))
                    }
                }
            case UInt8(ascii: "\""):
                let (range, _) = try cursor.string()
                return .string(JSONString.decode(cursor.bytes, range))
            default:
                let kind = try cursor.value(depth: depth)
                switch kind {
                case .true: return .bool(true)
                case .false: return .bool(false)
                case .null: return .null
                default:
                    return .number(String(decoding: UnsafeRawBufferPointer(rebasing: cursor.bytes[start..<cursor.pos]), as: UTF8.self))
                }
            }
        }
    }

    // MARK: Serialization

    /// Appends the compact JSON text of this value.
    public func write(into out: inout ByteBuffer) {
        switch self {
        case .null: out.writeStaticString("null")
        case .bool(let b): out.writeStaticString(b ? "true" : "false")
        case .number(let n): out.writeString(n)
        case .string(let s): JSONString.write(s, into: &out)
        case .array(let items):
            out.writeStaticString("[")
            for (i, item) in items.enumerated() {
                if i > 0 { out.writeStaticString(",") }
                item.write(into: &out)
            }
            out.writeStaticString("]")
        case .object(let obj):
            obj.write(into: &out)
        }
    }

    /// The compact JSON text of this value.
    public var jsonBuffer: ByteBuffer {
        var out = ByteBuffer()
        write(into: &out)
        return out
    }

    public var jsonString: String { String(buffer: jsonBuffer) }
}

/// A JSON object with its keys in insertion order.
public struct JSONObject: Sendable, Equatable, Sequence, ExpressibleByDictionaryLiteral {
    public private(set) var keys: [String] = []
    public private(set) var values: [JSONValue] = []

    public init() {}

    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        for (k, v) in elements { self[k] = v }
    }

    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }

    public subscript(key: String) -> JSONValue? {
        get {
            // Last occurrence wins (duplicates are collapsed on insert anyway).
            guard let i = keys.lastIndex(of: key) else { return nil }
            return values[i]
        }
        set {
            if let i = keys.lastIndex(of: key) {
                if let newValue {
                    values[i] = newValue
                } else {
                    keys.remove(at: i)
                    values.remove(at: i)
                }
            } else if let newValue {
                keys.append(key)
                values.append(newValue)
            }
        }
    }

    public func makeIterator() -> Zip2Sequence<[String], [JSONValue]>.Iterator {
        zip(keys, values).makeIterator()
    }

    public func write(into out: inout ByteBuffer) {
        out.writeStaticString("{")
        for i in keys.indices {
            if i > 0 { out.writeStaticString(",") }
            JSONString.write(keys[i], into: &out)
            out.writeStaticString(":")
            values[i].write(into: &out)
        }
        out.writeStaticString("}")
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int) { self = .number(String(value)) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        var obj = JSONObject()
        for (k, v) in elements { obj[k] = v }
        self = .object(obj)
    }
}
