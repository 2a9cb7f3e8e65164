import NIOCore

/// One server-sent event, as parsed from a stream.
public struct SSEEvent: Sendable, Equatable {
    /// The `event:` field, if any.
    public var event: String?
    /// The `data:` lines joined with `\n`; nil when the event had no data field.
    public var data: ByteBuffer?
    /// The `id:` field, if any.
    public var id: String?
    /// The exact bytes of the event in the stream, terminating blank line included.
    public var raw: ByteBuffer

    public init(event: String? = nil, data: ByteBuffer? = nil, id: String? = nil, raw: ByteBuffer = ByteBuffer()) {
        self.event = event
        self.data = data
        self.id = id
        self.raw = raw
    }

    /// True for a block of only comments (e.g. `: ping` heartbeats) or empty fields.
    public var isCommentOnly: Bool { event == nil && data == nil && id == nil }

    /// The data as a String (for tests and small payloads).
    public var dataString: String? { data.map { String(buffer: $0) } }

    /// Whether the data is the OpenAI end-of-stream sentinel `[DONE]`.
    public var isDoneSentinel: Bool {
        guard let data, data.readableBytes == 6 else { return false }
        return data.readableBytesView.elementsEqual("[DONE]".utf8)
    }
}

/// Splits a byte stream into server-sent events, following the WHATWG event-stream grammar:
/// lines end in LF, CRLF or CR (a CRLF split across chunks is handled), a blank line ends an event,
/// lines starting with `:` are comments, a single space after the field colon is dropped.
///
/// Feed chunks as they arrive and drain complete events with ``next()``; a partial event is kept
/// until the rest of it arrives.
public struct SSEScanner: Sendable {
    private var buffer = ByteBuffer()
    /// Offset (from the reader index) of the first unscanned line in the current event.
    private var lineStart = 0
    /// Offset up to which the current line is known to hold no line ending.
    private var searchFrom = 0
    /// The previous chunk ended in CR: a leading LF belongs to it.
    private var skipLeadingLF = false
    private var current = Pending()
    /// Upper bound on one event's size, so a peer that never ends an event cannot exhaust memory.
    public let maxEventBytes: Int

    private struct Pending: Sendable {
        var event: String?
        var dataLines: [ByteBuffer] = []
        var id: String?
        var hasFields = false
        var hasComment = false
    }

    public struct EventTooLarge: Error, Sendable {}

    public init(maxEventBytes: Int = 16 * 1024 * 1024) {
        self.maxEventBytes = maxEventBytes
    }

    /// Number of bytes held that do not yet form a complete event.
    public var bufferedBytes: Int { buffer.readableBytes }

    /// Adds bytes from the stream.
    public mutating func feed(_ chunk: ByteBuffer) {
        var chunk = chunk
        if skipLeadingLF, buffer.readableBytes == 0, chunk.readableBytes > 0 {
            if chunk.readableBytesView.first == UInt8(ascii: "\n") { chunk.moveReaderIndex(forwardBy: 1) }
            skipLeadingLF = false
        }
        if buffer.readableBytes == 0 {
            buffer = chunk
            lineStart = 0
            searchFrom = 0
        } else {
            buffer.writeImmutableBuffer(chunk)
        }
    }

    /// The next complete event, or nil when more bytes are needed.
    public mutating func next() throws(EventTooLarge) -> SSEEvent? {
        while true {
            let count = buffer.readableBytes
            if skipLeadingLF, lineStart < count {
                if buffer.getInteger(at: buffer.readerIndex + lineStart, as: UInt8.self) == UInt8(ascii: "\n") { lineStart += 1 }
                skipLeadingLF = false
            }
            guard lineStart < count else { return nil }
            // Find the end of the current line, resuming where the last search stopped.
            let from = max(lineStart, searchFrom)
            let found: (end: Int, next: Int, crAtEnd: Bool)? = buffer.withUnsafeReadableBytes { bytes in
                guard from < bytes.count, let base = bytes.baseAddress else { return nil }
                let region = UnsafeRawBufferPointer(start: base + from, count: bytes.count - from)
                guard let i = region.firstIndex(where: { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") }) else { return nil }
                let at = from + i
                if bytes[at] == UInt8(ascii: "\n") { return (at, at + 1, false) }
                if at + 1 < bytes.count { return (at, bytes[at + 1] == UInt8(ascii: "\n") ? at + 2 : at + 1, false) }
                return (at, at + 1, true)
            }
            guard let found else {
                searchFrom = count
                if count > maxEventBytes { throw EventTooLarge() }
                return nil
            }
            if found.crAtEnd { skipLeadingLF = true }
            let lineRange = lineStart..<found.end
            lineStart = found.next
            searchFrom = lineStart
            if lineRange.isEmpty {
                // Blank line: dispatch (or skip a stray blank line between events).
                let raw = buffer.readSlice(length: found.next)!
                lineStart = 0
                searchFrom = 0
                // Once everything received is consumed, let go of the chunk's storage. An empty slice
                // would still hold it, and it is the socket's receive buffer: SwiftNIO reuses that
                // buffer for the next read only when nobody else holds it, and otherwise allocates
                // another and keeps it too (up to four per connection), for every stream, between events.
                if buffer.readableBytes == 0 { buffer = ByteBuffer() }
                let pending = current
                current = Pending()
                guard pending.hasFields || pending.hasComment else { continue }
                return makeEvent(pending, raw: raw)
            }
            processLine(lineRange)
        }
    }

    /// Ends the stream: a final event not followed by a blank line is dispatched (lenient to peers that
    /// close without the trailing blank line); nil if nothing is pending.
    public mutating func finish() -> SSEEvent? {
        if lineStart < buffer.readableBytes {
            processLine(lineStart..<buffer.readableBytes)
        }
        defer {
            buffer.clear()
            lineStart = 0
            searchFrom = 0
            current = Pending()
        }
        guard current.hasFields else { return nil }
        let raw = buffer.readSlice(length: buffer.readableBytes) ?? ByteBuffer()
        return makeEvent(current, raw: raw)
    }

    private func makeEvent(_ pending: Pending, raw: ByteBuffer) -> SSEEvent {
        var data: ByteBuffer?
        if pending.dataLines.count == 1 {
            data = pending.dataLines[0]
        } else if pending.dataLines.count > 1 {
            var joined = ByteBuffer()
            for (n, line) in pending.dataLines.enumerated() {
                if n > 0 { joined.writeStaticString("\n") }
                joined.writeImmutableBuffer(line)
            }
            data = joined
        }
        return SSEEvent(event: pending.event, data: data, id: pending.id, raw: raw)
    }

    private mutating func processLine(_ range: Range<Int>) {
        let (isComment, valueStart, kind) = buffer.withUnsafeReadableBytes { bytes -> (Bool, Int, FieldKind) in
            if bytes[range.lowerBound] == UInt8(ascii: ":") { return (true, 0, .other) }
            var colon = range.upperBound
            for j in range where bytes[j] == UInt8(ascii: ":") {
                colon = j
                break
            }
            var valueStart = min(colon + 1, range.upperBound)
            if valueStart < range.upperBound, bytes[valueStart] == UInt8(ascii: " ") { valueStart += 1 }
            let name = UnsafeRawBufferPointer(rebasing: bytes[range.lowerBound..<colon])
            let kind: FieldKind =
                name.elementsEqual("data".utf8) ? .data : name.elementsEqual("event".utf8) ? .event : name.elementsEqual("id".utf8) ? .id : .other
            return (false, valueStart, kind)
        }
        if isComment {
            current.hasComment = true
            return
        }
        let value = buffer.getSlice(at: buffer.readerIndex + valueStart, length: range.upperBound - valueStart) ?? ByteBuffer()
        switch kind {
        case .data:
            current.dataLines.append(value)
            current.hasFields = true
        case .event:
            current.event = String(buffer: value)
            current.hasFields = true
        case .id:
            current.id = String(buffer: value)
            current.hasFields = true
        case .other:
            break  // `retry` and unknown fields are ignored, as the spec says.
        }
    }

    private enum FieldKind { case data, event, id, other }
}

extension SSEEvent {
    /// Writes an event in canonical form: `event:` line if named, one `data:` line per data line, blank line.
    public static func write(event: String?, data: ByteBuffer, into out: inout ByteBuffer) {
        if let event {
            out.writeStaticString("event: ")
            out.writeString(event)
            out.writeStaticString("\n")
        }
        let view = data.readableBytesView
        if !view.contains(UInt8(ascii: "\n")) {
            out.writeStaticString("data: ")
            out.writeImmutableBuffer(data)
            out.writeStaticString("\n\n")
            return
        }
        for line in view.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            out.writeStaticString("data: ")
            out.writeBytes(line)
            out.writeStaticString("\n")
        }
        out.writeStaticString("\n")
    }

    /// Writes an event whose data is a String.
    public static func write(event: String?, data: String, into out: inout ByteBuffer) {
        write(event: event, data: ByteBuffer(string: data), into: &out)
    }
}
