import Yams

/// A configuration error that names where it is: the key path and the line in the file.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var path: String
    public var line: Int?

    public init(_ message: String, path: String = "", line: Int? = nil) {
        self.message = message
        self.path = path
        self.line = line
    }

    public var description: String {
        var where_ = ""
        if let line { where_ += "line \(line)" }
        if !path.isEmpty { where_ += where_.isEmpty ? "`\(path)`" : ", `\(path)`" }
        return where_.isEmpty ? "config error: \(message)" : "config error (\(where_)): \(message)"
    }
}

/// Thrown from a config type's `init(from:)` to reject a value; the decoder turns it into a
/// ``ConfigError`` with the line of the offending key. `path` is relative to the value being decoded.
public struct ConfigValueError: Error, Sendable {
    public enum Component: Sendable { case key(String), index(Int) }
    public var message: String
    public var path: [Component]

    public init(_ message: String, at path: [Component] = []) {
        self.message = message
        self.path = path
    }

    public init(_ message: String, key: String) {
        self.init(message, at: [.key(key)])
    }
}

/// Decodes `Decodable` types from YAML, strictly: unknown keys and wrong types are errors naming the
/// key and line; `${VAR}` and `${VAR:-default}` in scalars expand from the environment (`$$` is a literal `$`).
public struct YAMLConfigDecoder {
    public var environment: [String: String]

    public init(environment: [String: String]) {
        self.environment = environment
    }

    public func decode<T: Decodable>(_ type: T.Type, from yaml: String) throws -> T {
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            throw ConfigError(Self.describe(error), line: Self.line(of: error))
        }
        let root = node ?? Node.mapping(.init([]))
        let decoder = NodeDecoder(node: root, codingPath: [], environment: environment)
        return try decoder.decodeValue(T.self)
    }

    static func describe(_ error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _):
            return "invalid YAML: \(problem)"
        case .duplicatedKeysInMapping(let duplicates, _):
            return "duplicate keys: \(duplicates.joined(separator: ", "))"
        default:
            return "invalid YAML: \(error)"
        }
    }

    static func line(of error: YamlError) -> Int? {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): return mark.line
        default: return nil
        }
    }
}

/// Renders a coding path as `providers[0].base_url`.
func renderPath(_ path: [any CodingKey]) -> String {
    var out = ""
    for key in path {
        if let i = key.intValue {
            out += "[\(i)]"
        } else {
            out += out.isEmpty ? key.stringValue : ".\(key.stringValue)"
        }
    }
    return out
}

struct IndexKey: CodingKey {
    var stringValue: String { "\(intValue!)" }
    var intValue: Int?
    init(_ i: Int) { intValue = i }
    init?(stringValue: String) { nil }
    init?(intValue: Int) { self.intValue = intValue }
}

struct NameKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

final class NodeDecoder: Decoder {
    let node: Node
    let codingPath: [any CodingKey]
    let environment: [String: String]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    init(node: Node, codingPath: [any CodingKey], environment: [String: String]) {
        self.node = node
        self.codingPath = codingPath
        self.environment = environment
    }

    var line: Int? { node.mark?.line }

    func error(_ message: String, path: [any CodingKey]? = nil, line: Int? = nil) -> ConfigError {
        ConfigError(message, path: renderPath(path ?? codingPath), line: line ?? self.line)
    }

    /// Decodes `T` from this node, converting errors thrown by `T.init(from:)` into located errors.
    func decodeValue<T: Decodable>(_ type: T.Type) throws -> T {
        do {
            return try T(from: self)
        } catch let e as ConfigValueError {
            // Resolve the relative path to a node to find its line.
            var current: Node? = node
            var path = codingPath
            for component in e.path {
                switch component {
                case .key(let k):
                    current = current?.mapping?[k] ?? current
                    path.append(NameKey(k))
                case .index(let i):
                    if let seq = current?.sequence, i < seq.count { current = seq[i] }
                    path.append(IndexKey(i))
                }
            }
            throw ConfigError(e.message, path: renderPath(path), line: current?.mark?.line ?? line)
        } catch let e as DecodingError {
            // Types decoding through Swift's standard containers (e.g. RawRepresentable enums).
            switch e {
            case .dataCorrupted(let ctx), .typeMismatch(_, let ctx), .valueNotFound(_, let ctx):
                throw error(ctx.debugDescription)
            case .keyNotFound(let key, _):
                throw error("missing required key `\(key.stringValue)`")
            @unknown default:
                throw error("\(e)")
            }
        }
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .mapping(let mapping) = node else {
            throw error("expected a mapping (key: value pairs), found \(describeKind(node))")
        }
        var entries: [String: Node] = [:]
        for (k, v) in mapping {
            guard let name = k.scalar?.string else { throw error("mapping keys must be strings", line: k.mark?.line) }
            guard Key(stringValue: name) != nil else {
                throw error("unknown key `\(name)`", path: codingPath + [NameKey(name)], line: k.mark?.line)
            }
            entries[name] = v
        }
        return KeyedDecodingContainer(KeyedContainer<Key>(decoder: self, entries: entries))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .sequence(let sequence) = node else {
            throw error("expected a list, found \(describeKind(node))")
        }
        return UnkeyedContainer(decoder: self, items: Array(sequence))
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        SingleValueContainer(decoder: self)
    }

    func child(_ node: Node, key: any CodingKey) -> NodeDecoder {
        NodeDecoder(node: node, codingPath: codingPath + [key], environment: environment)
    }

    // MARK: scalars

    var isNull: Bool {
        guard case .scalar(let s) = node else { return false }
        guard s.style == .plain || s.style == .any else { return false }
        return ["", "~", "null", "Null", "NULL"].contains(s.string)
    }

    func scalarString() throws -> String {
        guard case .scalar(let s) = node else {
            throw error("expected a single value, found \(describeKind(node))")
        }
        return try Interpolation.expand(s.string, environment: environment, onError: { self.error($0) })
    }

    func decodeString() throws -> String {
        if isNull { throw error("expected a string, found null") }
        return try scalarString()
    }

    func decodeBool() throws -> Bool {
        let s = try scalarString()
        switch s.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error("expected true or false, found `\(s)`")
        }
    }

    func decodeInteger<I: FixedWidthInteger>(_: I.Type) throws -> I {
        let s = try scalarString()
        guard let v = I(s.filter { $0 != "_" }) else { throw error("expected an integer, found `\(s)`") }
        return v
    }

    func decodeDouble() throws -> Double {
        let s = try scalarString()
        guard let v = Double(s), v.isFinite else { throw error("expected a number, found `\(s)`") }
        return v
    }

    func describeKind(_ node: Node) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .scalar(let s): return "`\(s.string)`"
        case .alias: return "an alias"
        }
    }
}

struct KeyedContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let decoder: NodeDecoder
    let entries: [String: Node]

    var codingPath: [any CodingKey] { decoder.codingPath }
    var allKeys: [Key] { entries.keys.compactMap { Key(stringValue: $0) } }

    func contains(_ key: Key) -> Bool { entries[key.stringValue] != nil }

    func childDecoder(_ key: Key) throws -> NodeDecoder {
        guard let node = entries[key.stringValue] else {
            throw decoder.error("missing required key `\(key.stringValue)`")
        }
        return decoder.child(node, key: key)
    }

    func decodeNil(forKey key: Key) throws -> Bool {
        guard let node = entries[key.stringValue] else { return true }
        return decoder.child(node, key: key).isNull
    }

    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try childDecoder(key).decodeBool() }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try childDecoder(key).decodeString() }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try childDecoder(key).decodeDouble() }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { Float(try childDecoder(key).decodeDouble()) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try childDecoder(key).decodeInteger(Int.self) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try childDecoder(key).decodeInteger(Int8.self) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try childDecoder(key).decodeInteger(Int16.self) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try childDecoder(key).decodeInteger(Int32.self) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try childDecoder(key).decodeInteger(Int64.self) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try childDecoder(key).decodeInteger(UInt.self) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try childDecoder(key).decodeInteger(UInt8.self) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try childDecoder(key).decodeInteger(UInt16.self) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try childDecoder(key).decodeInteger(UInt32.self) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try childDecoder(key).decodeInteger(UInt64.self) }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try childDecoder(key).decodeValue(T.self) }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        try childDecoder(key).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try childDecoder(key).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder { decoder }
    func superDecoder(forKey key: Key) throws -> any Decoder { try childDecoder(key) }
}

struct UnkeyedContainer: UnkeyedDecodingContainer {
    let decoder: NodeDecoder
    let items: [Node]
    var currentIndex = 0

    init(decoder: NodeDecoder, items: [Node]) {
        self.decoder = decoder
        self.items = items
    }

    var codingPath: [any CodingKey] { decoder.codingPath }
    var count: Int? { items.count }
    var isAtEnd: Bool { currentIndex >= items.count }

    mutating func nextDecoder() throws -> NodeDecoder {
        guard !isAtEnd else { throw decoder.error("not enough list items") }
        defer { currentIndex += 1 }
        return decoder.child(items[currentIndex], key: IndexKey(currentIndex))
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd else { return true }
        if decoder.child(items[currentIndex], key: IndexKey(currentIndex)).isNull {
            currentIndex += 1
            return true
        }
        return false
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool { try nextDecoder().decodeBool() }
    mutating func decode(_ type: String.Type) throws -> String { try nextDecoder().decodeString() }
    mutating func decode(_ type: Double.Type) throws -> Double { try nextDecoder().decodeDouble() }
    mutating func decode(_ type: Int.Type) throws -> Int { try nextDecoder().decodeInteger(Int.self) }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try nextDecoder().decodeInteger(Int64.self) }
    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try nextDecoder().decodeValue(T.self) }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try nextDecoder().container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try nextDecoder().unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder { try nextDecoder() }
}

struct SingleValueContainer: SingleValueDecodingContainer {
    let decoder: NodeDecoder
    var codingPath: [any CodingKey] { decoder.codingPath }

    func decodeNil() -> Bool { decoder.isNull }
    func decode(_ type: Bool.Type) throws -> Bool { try decoder.decodeBool() }
    func decode(_ type: String.Type) throws -> String { try decoder.decodeString() }
    func decode(_ type: Double.Type) throws -> Double { try decoder.decodeDouble() }
    func decode(_ type: Float.Type) throws -> Float { Float(try decoder.decodeDouble()) }
    func decode(_ type: Int.Type) throws -> Int { try decoder.decodeInteger(Int.self) }
    func decode(_ type: Int8.Type) throws -> Int8 { try decoder.decodeInteger(Int8.self) }
    func decode(_ type: Int16.Type) throws -> Int16 { try decoder.decodeInteger(Int16.self) }
    func decode(_ type: Int32.Type) throws -> Int32 { try decoder.decodeInteger(Int32.self) }
    func decode(_ type: Int64.Type) throws -> Int64 { try decoder.decodeInteger(Int64.self) }
    func decode(_ type: UInt.Type) throws -> UInt { try decoder.decodeInteger(UInt.self) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try decoder.decodeInteger(UInt8.self) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try decoder.decodeInteger(UInt16.self) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try decoder.decodeInteger(UInt32.self) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try decoder.decodeInteger(UInt64.self) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try decoder.decodeValue(T.self) }
}
