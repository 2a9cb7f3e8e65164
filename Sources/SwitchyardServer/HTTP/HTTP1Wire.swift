import NIOCore

/// HTTP/1.1 bytes written the way the gateway's encoders (``GatewayHTTPCodec`` for answers,
/// ``UpstreamRequestEncoder`` for provider requests) write them: a head measured first and then written
/// in one pass into a buffer of its exact size, and SwiftNIO's chunked framing.
enum HTTP1Wire {
    /// Copies bytes into a head's buffer; made by ``writeHead(size:into:_:)``.
    struct Writer {
        fileprivate let out: UnsafeMutableRawBufferPointer
        fileprivate(set) var count = 0

        mutating func put(_ bytes: UnsafeBufferPointer<UInt8>) {
            guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
            precondition(count + bytes.count <= out.count, "an HTTP head outgrew its measure")
            (out.baseAddress! + count).copyMemory(from: base, byteCount: bytes.count)
            count += bytes.count
        }

        mutating func put(_ string: String) {
            var string = string
            string.withUTF8 { put($0) }
        }

        mutating func put(_ byte: UInt8) {
            precondition(count < out.count, "an HTTP head outgrew its measure")
            out[count] = byte
            count += 1
        }

        mutating func crlf() {
            put(13)
            put(10)
        }

        /// `name: value` and the line's end.
        mutating func field(_ name: String, _ value: UnsafeBufferPointer<UInt8>) {
            put(name)
            put(UInt8(ascii: ":"))
            put(UInt8(ascii: " "))
            put(value)
            crlf()
        }
    }

    /// How a message's body is framed (SwiftNIO's `correctlyFrameTransportHeaders` decides it).
    enum Framing { case contentLength, chunked, neither }

    /// The field a chunked message's head carries.
    static let chunkedField = Array("transfer-encoding: chunked\r\n".utf8)

    /// `name` equals `lowercase` (ASCII: lowercase letters, digits, `-`) with its letters in any case,
    /// without making a lowercased copy (``HTTP1Parsing/isName(_:_:)`` over its bytes).
    static func isName(_ name: String, _ lowercase: StaticString) -> Bool {
        guard name.utf8.count == lowercase.utf8CodeUnitCount else { return false }
        var name = name
        return name.withUTF8 { HTTP1Parsing.isName(UnsafeRawBufferPointer($0), lowercase) }
    }

    /// Writes a head of exactly `size` bytes (as `body` writes it) at the buffer's end.
    static func writeHead(size: Int, into buffer: inout ByteBuffer, _ body: (inout Writer) -> Void) {
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { raw in
            var writer = Writer(out: raw)
            body(&writer)
            precondition(writer.count == size, "an HTTP head was measured at \(size) bytes and written as \(writer.count)")
            return writer.count
        }
    }

    /// Chunks up to this size (a stream's events) are copied into one buffer with their size line and
    /// end; larger ones go as three writes, uncopied.
    static let copiedChunkLimit = 4096
    static let crlf: UInt16 = 0x0D0A  // "\r\n", big-endian

    /// Writes one chunk of a chunked body towards the channel's head; the promise completes with its
    /// last write (writes complete in order).
    static func writeChunk(_ bytes: IOData, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        let count = bytes.readableBytes
        if count <= copiedChunkLimit, case .byteBuffer(let body) = bytes {
            var buffer = context.channel.allocator.buffer(capacity: count + 20)
            writeChunkSize(count, into: &buffer)
            buffer.writeImmutableBuffer(body)
            buffer.writeInteger(crlf)
            context.write(NIOAny(IOData.byteBuffer(buffer)), promise: promise)
            return
        }
        var size = context.channel.allocator.buffer(capacity: 20)
        writeChunkSize(count, into: &size)
        context.write(NIOAny(IOData.byteBuffer(size)), promise: nil)
        context.write(NIOAny(bytes), promise: nil)
        var end = context.channel.allocator.buffer(capacity: 2)
        end.writeInteger(crlf)
        context.write(NIOAny(IOData.byteBuffer(end)), promise: promise)
    }

    private static func writeChunkSize(_ count: Int, into buffer: inout ByteBuffer) {
        buffer.writeString(String(count, radix: 16))
        buffer.writeInteger(crlf)
    }

    /// The last chunk, with trailers if there are any.
    static func lastChunk(_ trailers: [(name: String, value: String)], allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: trailers.isEmpty ? 5 : 256)
        buffer.writeStaticString("0\r\n")
        for (name, value) in trailers {
            buffer.writeString(name)
            buffer.writeStaticString(": ")
            buffer.writeString(value)
            buffer.writeInteger(crlf)
        }
        buffer.writeInteger(crlf)
        return buffer
    }

    /// An empty write that completes `promise` in order with the writes before it.
    static func writeNothing(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        guard let promise else { return }
        context.write(NIOAny(IOData.byteBuffer(context.channel.allocator.buffer(capacity: 0))), promise: promise)
    }
}
