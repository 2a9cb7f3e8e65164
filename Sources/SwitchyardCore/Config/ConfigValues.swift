/// A duration written as `250ms`, `5s`, `2m`, `1h`, `1d`, or a plain number of seconds.
public struct ConfigDuration: Decodable, Sendable, Equatable, Comparable, CustomStringConvertible {
    public var milliseconds: Int64

    public init(milliseconds: Int64) { self.milliseconds = milliseconds }
    public static func seconds(_ s: Int64) -> Self { .init(milliseconds: s * 1000) }

    public var duration: Duration { .milliseconds(milliseconds) }
    public var seconds: Double { Double(milliseconds) / 1000 }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let parsed = Self.parse(text) else {
            throw ConfigValueError("expected a duration such as 250ms, 30s, 5m or 24h, found `\(text)`")
        }
        self = parsed
    }

    public static func parse(_ text: String) -> ConfigDuration? {
        let t = text.trimmingWhitespace()
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, factor) in units where t.hasSuffix(suffix) {
            let number = t.dropLast(suffix.count).trimmingWhitespace()
            // "ms" must win over "s"; a number ending in "m" must not be read as "ms".
            if suffix == "s", t.hasSuffix("ms") { continue }
            if let v = Double(number), v >= 0, v.isFinite { return .init(milliseconds: Int64((v * Double(factor)).rounded())) }
            return nil
        }
        if let v = Double(t), v >= 0, v.isFinite { return .init(milliseconds: Int64((v * 1000).rounded())) }
        return nil
    }

    public var description: String {
        if milliseconds % 3_600_000 == 0, milliseconds > 0 { return "\(milliseconds / 3_600_000)h" }
        if milliseconds % 60_000 == 0, milliseconds > 0 { return "\(milliseconds / 60_000)m" }
        if milliseconds % 1000 == 0 { return "\(milliseconds / 1000)s" }
        return "\(milliseconds)ms"
    }

    public static func < (a: Self, b: Self) -> Bool { a.milliseconds < b.milliseconds }
}

/// A size written as `512`, `64KB`, `10MB`, `1GiB` (KB and KiB both mean 1024 bytes).
public struct ByteSize: Decodable, Sendable, Equatable {
    public var bytes: Int

    public init(bytes: Int) { self.bytes = bytes }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let parsed = Self.parse(text) else {
            throw ConfigValueError("expected a size such as 512KB or 10MB, found `\(text)`")
        }
        self = parsed
    }

    public static func parse(_ text: String) -> ByteSize? {
        let t = text.trimmingWhitespace().uppercased()
        let units: [(String, Int)] = [
            ("GIB", 1 << 30), ("MIB", 1 << 20), ("KIB", 1 << 10), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10),
            ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10), ("B", 1),
        ]
        for (suffix, factor) in units where t.hasSuffix(suffix) {
            guard let v = Double(t.dropLast(suffix.count).trimmingWhitespace()), v >= 0 else { return nil }
            return .init(bytes: Int(v * Double(factor)))
        }
        guard let v = Int(t), v >= 0 else { return nil }
        return .init(bytes: v)
    }
}

/// A `host:port` listen address (`[::1]:4000` for IPv6).
public struct ListenAddress: Decodable, Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let parsed = Self.parse(text) else {
            throw ConfigValueError("expected host:port such as 127.0.0.1:4000, found `\(text)`")
        }
        self = parsed
    }

    public static func parse(_ text: String) -> ListenAddress? {
        let t = text.trimmingWhitespace()
        let host: Substring
        let portText: Substring
        if t.hasPrefix("[") {
            guard let close = t.firstIndex(of: "]"), t[t.index(after: close)...].hasPrefix(":") else { return nil }
            host = t[t.index(after: t.startIndex)..<close]
            portText = t[t.index(close, offsetBy: 2)...]
        } else {
            guard let colon = t.lastIndex(of: ":") else { return nil }
            host = t[..<colon]
            portText = t[t.index(after: colon)...]
        }
        guard let port = Int(portText), (0...65535).contains(port) else { return nil }
        return .init(host: host.isEmpty ? "0.0.0.0" : String(host), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

extension StringProtocol {
    func trimmingWhitespace() -> Substring {
        let s = self[...]
        guard let first = s.firstIndex(where: { !$0.isWhitespace }) else { return Substring() }
        let last = s.lastIndex(where: { !$0.isWhitespace })!
        return Substring(s[first...last])
    }
}
