import NIOCore

/// Rewrites members of a scanned top-level JSON object while keeping every other byte as it was.
///
/// Used to forward a request with only `model` rewritten (and, where needed, a member added or removed),
/// so that fields the gateway does not know pass through untouched.
public struct JSONObjectEditor {
    private let source: ByteBuffer
    private let object: JSONScanner.Object
    private var replacements: [(index: Int, value: String)] = []
    private var removals: Set<Int> = []
    private var appended: [(key: String, value: String)] = []

    /// - Parameters:
    ///   - source: the document; member ranges are offsets from its reader index.
    ///   - object: the result of scanning `source`.
    public init(source: ByteBuffer, object: JSONScanner.Object) {
        self.source = source
        self.object = object
    }

    /// Whether any edit is pending.
    public var hasEdits: Bool { !replacements.isEmpty || !removals.isEmpty || !appended.isEmpty }

    /// Replaces the value of `member` by `rawJSON` (already encoded JSON).
    public mutating func replaceValue(of member: JSONScanner.Member, with rawJSON: String) {
        guard let index = object.members.firstIndex(of: member) else { return }
        replacements.append((index, rawJSON))
    }

    /// Removes `member` (and the comma that separated it).
    public mutating func remove(_ member: JSONScanner.Member) {
        guard let index = object.members.firstIndex(of: member) else { return }
        removals.insert(index)
    }

    /// Adds a member at the end of the object; `rawJSON` is already encoded JSON.
    public mutating func append(key: String, rawJSON: String) {
        appended.append((key, rawJSON))
    }

    /// The edited document.
    public func result() -> ByteBuffer {
        guard hasEdits else { return source }
        var out = ByteBuffer()
        out.reserveCapacity(source.readableBytes + replacements.reduce(0) { $0 + $1.value.utf8.count } + appended.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count + 4 })
        let base = source.readerIndex
        func copy(_ range: Range<Int>) {
            guard !range.isEmpty, let slice = source.getSlice(at: base + range.lowerBound, length: range.count) else { return }
            out.writeImmutableBuffer(slice)
        }
        // The last replacement of a member wins. A scan, not a dictionary: there are one or two, and the
        // dictionary (and the array it was built from) were two allocations on every relayed request.
        func replacement(_ index: Int) -> String? { replacements.last { $0.index == index }?.value }

        if removals.isEmpty {
            // Splice: keep all bytes, swap the replaced values, insert appended members before `}`.
            var cursor = 0
            for (index, member) in object.members.enumerated() {
                guard let value = replacement(index) else { continue }
                copy(cursor..<member.valueRange.lowerBound)
                out.writeString(value)
                cursor = member.valueRange.upperBound
            }
            copy(cursor..<object.closeBrace)
            var needsComma = !object.members.isEmpty
            for (key, value) in appended {
                if needsComma { out.writeStaticString(",") }
                JSONString.write(key, into: &out)
                out.writeStaticString(":")
                out.writeString(value)
                needsComma = true
            }
            copy(object.closeBrace..<source.readableBytes)
            return out
        }

        // Rebuild the member list: kept members keep their raw bytes, separated by commas.
        copy(0..<(object.openBrace + 1))
        var needsComma = false
        for (index, member) in object.members.enumerated() where !removals.contains(index) {
            if needsComma { out.writeStaticString(",") }
            if let value = replacement(index) {
                copy(member.memberRange.lowerBound..<member.valueRange.lowerBound)
                out.writeString(value)
            } else {
                copy(member.memberRange)
            }
            needsComma = true
        }
        for (key, value) in appended {
            if needsComma { out.writeStaticString(",") }
            JSONString.write(key, into: &out)
            out.writeStaticString(":")
            out.writeString(value)
            needsComma = true
        }
        copy(object.closeBrace..<source.readableBytes)
        return out
    }
}
