#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import NIOCore
import Synchronization
import SwitchyardCore

/// The fields of one access log line, in a fixed order, rendered without a dictionary: passed to
/// swift-log as a single metadata value that ``SwitchyardLogHandler`` writes inline (other handlers
/// get the `key=value` text form).
public struct AccessLogLine: CustomStringConvertible, Sendable {
    public enum Value: Sendable {
        case string(String)
        case int(Int)
        case bool(Bool)
        /// Nanoseconds, shown as milliseconds with three decimals.
        case millis(UInt64)
    }

    var fields: [(StaticString, Value)] = []

    init() { fields.reserveCapacity(18) }

    mutating func add(_ key: StaticString, _ value: Value) { fields.append((key, value)) }

    /// Writes `"key":value,...` (no braces). Numbers go in as digits, without intermediate strings.
    func writeJSONMembers(into out: inout ByteBuffer) {
        for (i, (key, value)) in fields.enumerated() {
            Self.writeKey(key, comma: i > 0, into: &out)
            switch value {
            case .string(let s): JSONString.write(s, into: &out)
            case .int(let v): Self.writeDecimal(v, into: &out)
            case .bool(let v): out.writeStaticString(v ? "true" : "false")
            case .millis(let v): Self.writeMillis(v, into: &out)
            }
        }
    }

    /// `,"key":` (without the comma for the first member) in one write: four small writes per member
    /// each paid the buffer's uniqueness, capacity and exclusivity checks.
    static func writeKey(_ key: StaticString, comma: Bool, into out: inout ByteBuffer) {
        key.withUTF8Buffer { name in
            _ = out.writeWithUnsafeMutableBytes(minimumWritableBytes: name.count + 4) { raw in
                var i = 0
                if comma {
                    raw[0] = UInt8(ascii: ",")
                    i = 1
                }
                raw[i] = UInt8(ascii: "\"")
                UnsafeMutableRawBufferPointer(rebasing: raw[(i + 1)...]).copyMemory(from: UnsafeRawBufferPointer(name))
                i += 1 + name.count
                raw[i] = UInt8(ascii: "\"")
                raw[i + 1] = UInt8(ascii: ":")
                return i + 2
            }
        }
    }

    /// Nanoseconds as milliseconds with three decimals (`1234.567`).
    static func writeMillis(_ nanos: UInt64, into out: inout ByteBuffer) {
        let micros = nanos / 1000
        writeDecimal(Int(micros / 1000), into: &out)
        let frac = Int(micros % 1000)
        out.writeInteger(UInt8(ascii: "."))
        out.writeInteger(UInt8(48 + frac / 100))
        out.writeInteger(UInt8(48 + frac / 10 % 10))
        out.writeInteger(UInt8(48 + frac % 10))
    }

    /// `n` in decimal, as `String(n)` spells it.
    static func writeDecimal(_ n: Int, into out: inout ByteBuffer) {
        if n < 0 { out.writeInteger(UInt8(ascii: "-")) }
        var magnitude = n.magnitude
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: enough for 20 digits
        let count = withUnsafeMutableBytes(of: &digits) { raw -> Int in
            var i = raw.count
            repeat {
                i -= 1
                raw[i] = UInt8(48 + magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            return raw.count - i
        }
        withUnsafeBytes(of: &digits) { out.writeBytes(UnsafeRawBufferPointer(rebasing: $0[($0.count - count)...])) }
    }

    public var description: String {
        fields.map { key, value in
            switch value {
            case .string(let s): return "\(key)=\(s.contains(" ") ? JSONString.literal(s) : s)"
            case .int(let v): return "\(key)=\(v)"
            case .bool(let v): return "\(key)=\(v)"
            case .millis(let v):
                var text = ByteBuffer()
                Self.writeMillis(v, into: &text)
                return "\(key)=\(String(buffer: text))"
            }
        }.joined(separator: " ")
    }
}

/// Writes one line per log event to stderr: JSON objects (`format: json`) or `key=value` text, through
/// a ``LogWriter`` when given one (the server: the logging thread never waits for stderr), otherwise
/// directly (the CLI commands). Never given secrets: request headers are not logged anywhere.
public struct SwitchyardLogHandler: LogHandler {
    public enum Format: Sendable { case json, text }

    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String
    let format: Format
    let writer: LogWriter?

    private static let lock = Mutex(())

    public init(label: String, level: Logger.Level, format: Format, writer: LogWriter? = nil) {
        self.label = label
        self.logLevel = level
        self.format = format
        self.writer = writer
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        write(Self.render(level: event.level, message: event.message.description, metadata: merged, format: format))
    }

    private func write(_ line: ByteBuffer) {
        if let writer {
            writer.append(line)
            return
        }
        Self.lock.withLock { _ in line.withUnsafeReadableBytes { writeFully(2, $0) } }
    }

    /// Writes a request's access line at `info`, byte for byte as `logger.info(message, metadata:
    /// ["access": .stringConvertible(line)])` would, but without what swift-log's path costs per request
    /// (a metadata dictionary, the line boxed into an existential and cast back, the keys sorted).
    /// Returns false when `logger`'s handler is not a ``SwitchyardLogHandler``: the caller then logs
    /// through swift-log. True also when `info` is below the handler's level (nothing to write).
    static func logAccess(_ line: AccessLogLine, message: StaticString, to logger: Logger) -> Bool {
        guard let handler = logger.handler as? SwitchyardLogHandler else { return false }
        guard handler.logLevel <= .info else { return true }
        guard handler.metadata.isEmpty else {
            var metadata = handler.metadata
            // Rare (a logger with metadata of its own): the general path, whose order this must keep.
            metadata["access"] = .stringConvertible(line)
            handler.write(render(level: .info, message: message.description, metadata: metadata, format: handler.format))
            return true
        }
        var out = ByteBuffer()
        out.reserveCapacity(512)
        switch handler.format {
        case .json:
            out.writeStaticString("{\"ts\":\"")
            EpochClock.writeISO8601Millis(EpochClock.nowMilliseconds(), into: &out)
            out.writeStaticString("\",\"level\":\"info\",\"msg\":")
            JSONString.write(message.description, into: &out)
            out.writeStaticString(",")
            line.writeJSONMembers(into: &out)
            out.writeStaticString("}\n")
        case .text:
            EpochClock.writeISO8601Millis(EpochClock.nowMilliseconds(), into: &out)
            out.writeStaticString(" info ")
            out.writeStaticString(message)
            out.writeStaticString(" ")
            out.writeString(line.description)
            out.writeStaticString("\n")
        }
        handler.write(out)
        return true
    }

    /// The line a ``LogWriter`` adds when it had to drop `count` lines.
    public static func droppedNotice(_ count: Int, format: Format) -> ByteBuffer {
        render(level: .warning, message: "log lines dropped: stderr did not take them fast enough",
               metadata: ["dropped_lines": .stringConvertible(count)], format: format)
    }

    /// One log line, newline included.
    static func render(level: Logger.Level, message: String, metadata merged: Logger.Metadata, format: Format) -> ByteBuffer {
        var line = ByteBuffer()
        line.reserveCapacity(512)
        switch format {
        case .json:
            line.writeStaticString("{\"ts\":\"")
            EpochClock.writeISO8601Millis(EpochClock.nowMilliseconds(), into: &line)
            line.writeStaticString("\",\"level\":\"")
            line.writeString(level.rawValue)
            line.writeStaticString("\",\"msg\":")
            JSONString.write(message, into: &line)
            for key in merged.keys.sorted() {
                line.writeStaticString(",")
                if case .stringConvertible(let value) = merged[key]!, let access = value as? AccessLogLine {
                    access.writeJSONMembers(into: &line)
                    continue
                }
                JSONString.write(key, into: &line)
                line.writeStaticString(":")
                Self.writeJSON(merged[key]!, into: &line)
            }
            line.writeStaticString("}\n")
        case .text:
            EpochClock.writeISO8601Millis(EpochClock.nowMilliseconds(), into: &line)
            line.writeString(" \(level.rawValue) \(message)")
            for key in merged.keys.sorted() {
                if case .stringConvertible(let value) = merged[key]!, let access = value as? AccessLogLine {
                    line.writeString(" \(access)")
                    continue
                }
                line.writeString(" \(key)=\(Self.text(merged[key]!))")
            }
            line.writeStaticString("\n")
        }
        return line
    }

    static func writeJSON(_ value: Logger.Metadata.Value, into out: inout ByteBuffer) {
        switch value {
        case .string(let s): JSONString.write(s, into: &out)
        case .stringConvertible(let c):
            if c is Int || c is Bool || c is Double {
                out.writeString(c.description)
            } else {
                JSONString.write(c.description, into: &out)
            }
        case .array(let items):
            out.writeStaticString("[")
            for (i, item) in items.enumerated() {
                if i > 0 { out.writeStaticString(",") }
                writeJSON(item, into: &out)
            }
            out.writeStaticString("]")
        case .dictionary(let dict):
            out.writeStaticString("{")
            for (i, key) in dict.keys.sorted().enumerated() {
                if i > 0 { out.writeStaticString(",") }
                JSONString.write(key, into: &out)
                out.writeStaticString(":")
                writeJSON(dict[key]!, into: &out)
            }
            out.writeStaticString("}")
        }
    }

    static func text(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let s): return s.contains(" ") ? JSONString.literal(s) : s
        case .stringConvertible(let c): return c.description
        default: return value.description
        }
    }
}
