import NIOCore

/// A JSON object document held as bytes, with its top-level members located by ``JSONScanner``.
public struct ScannedObject: Sendable {
    /// The document bytes (member ranges are offsets from its reader index).
    public let buffer: ByteBuffer
    /// The scanned top-level object.
    public let object: JSONScanner.Object

    /// Validates `buffer` as a JSON object and locates its members.
    public init(_ buffer: ByteBuffer, maxDepth: Int = 64) throws(JSONScanner.ScanError) {
        self.buffer = buffer
        do {
            self.object = try buffer.withUnsafeReadableBytes { bytes in
                try JSONScanner.scanObject(bytes, maxDepth: maxDepth)
            }
        } catch let error as JSONScanner.ScanError {
            throw error
        } catch {
            throw JSONScanner.ScanError(reason: .empty, offset: 0)
        }
    }

    /// The last member named `name`.
    public func member(_ name: StaticString) -> JSONScanner.Member? {
        buffer.withUnsafeReadableBytes { object.member(name, in: $0) }
    }

    /// The value of member `name` if it is a string.
    public func string(_ name: StaticString) -> String? {
        guard let m = member(name), m.kind == .string else { return nil }
        return stringValue(m)
    }

    /// The decoded value of a string member.
    public func stringValue(_ member: JSONScanner.Member) -> String {
        buffer.withUnsafeReadableBytes { bytes in
            JSONString.decode(bytes, (member.valueRange.lowerBound + 1)..<(member.valueRange.upperBound - 1))
        }
    }

    /// The value of member `name` if it is `true` or `false`.
    public func bool(_ name: StaticString) -> Bool? {
        switch member(name)?.kind {
        case .true: return true
        case .false: return false
        default: return nil
        }
    }

    /// The value of member `name` as an integer, read as ``JSONValue/intValue`` reads it; nil when it
    /// is missing, not a number, or not a whole number.
    public func int(_ name: StaticString) -> Int? {
        guard let m = member(name), m.kind == .number else { return nil }
        return buffer.withUnsafeReadableBytes { bytes in
            JSONValue.integer(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[m.valueRange]), as: UTF8.self))
        }
    }

    /// Member `name` if it is an object, scanned (its bytes were validated with this document's).
    public func object(_ name: StaticString) -> ScannedObject? {
        guard let m = member(name), m.kind == .object else { return nil }
        return try? ScannedObject(rawValue(m))
    }

    /// The raw bytes of a member's value.
    public func rawValue(_ member: JSONScanner.Member) -> ByteBuffer {
        buffer.getSlice(at: buffer.readerIndex + member.valueRange.lowerBound, length: member.valueRange.count) ?? ByteBuffer()
    }

    /// The raw value of member `name` as a String (for small values such as numbers).
    public func rawString(_ name: StaticString) -> String? {
        guard let m = member(name) else { return nil }
        return String(buffer: rawValue(m))
    }

    /// An editor over this document.
    public func editor() -> JSONObjectEditor {
        JSONObjectEditor(source: buffer, object: object)
    }

    /// The document with its top-level string `model` replaced by `literal` (an encoded JSON string),
    /// or nil when there is no such member or it already has that value.
    public func replacingModel(with literal: String) -> ByteBuffer? {
        guard let m = member("model"), m.kind == .string else { return nil }
        let same = buffer.withUnsafeReadableBytes { bytes in
            literal.utf8.elementsEqual(UnsafeRawBufferPointer(rebasing: bytes[m.valueRange]))
        }
        if same { return nil }
        var editor = editor()
        editor.replaceValue(of: m, with: literal)
        return editor.result()
    }
}

extension ScannedObject {
    /// Whether `needle` occurs in the raw bytes of `member`'s value (a byte search, no String made).
    public func valueContains(_ member: JSONScanner.Member, _ needle: StaticString) -> Bool {
        buffer.withUnsafeReadableBytes { bytes in
            let range = member.valueRange
            let n = needle.utf8CodeUnitCount
            guard range.upperBound <= bytes.count, n > 0, range.count >= n else { return n == 0 }
            let pattern = UnsafeBufferPointer(start: needle.utf8Start, count: n)
            let first = pattern[0]
            var i = range.lowerBound
            let last = range.upperBound - n
            while i <= last {
                if bytes[i] == first {
                    var j = 1
                    while j < n, bytes[i + j] == pattern[j] { j += 1 }
                    if j == n { return true }
                }
                i += 1
            }
            return false
        }
    }
}
