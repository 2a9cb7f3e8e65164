import NIOCore

/// Encoding and decoding of JSON string literals on raw bytes.
public enum JSONString {
    @inline(__always)
    static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// Decodes the content of a string literal (the bytes between the quotes, already validated).
    public static func decode(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> String {
        let slice = UnsafeRawBufferPointer(rebasing: bytes[range])
        if !slice.contains(UInt8(ascii: "\\")) {
            return String(decoding: slice, as: UTF8.self)
        }
        var out: [UInt8] = []
        out.reserveCapacity(slice.count)
        var i = 0
        func hex4(_ at: Int) -> UInt32? {
            guard at + 4 <= slice.count else { return nil }
            var v: UInt32 = 0
            for k in 0..<4 {
                guard let h = hexValue(slice[at + k]) else { return nil }
                v = v << 4 | UInt32(h)
            }
            return v
        }
        func appendScalar(_ v: UInt32) {
            let scalar = Unicode.Scalar(v) ?? "\u{FFFD}"
            out.append(contentsOf: Array(String(Character(scalar)).utf8))
        }
        while i < slice.count {
            let b = slice[i]
            guard b == UInt8(ascii: "\\"), i + 1 < slice.count else {
                out.append(b)
                i += 1
                continue
            }
            let e = slice[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                guard let hi = hex4(i) else { out.append(contentsOf: [0xEF, 0xBF, 0xBD]); continue }
                i += 4
                if (0xD800...0xDBFF).contains(hi), i + 6 <= slice.count, slice[i] == UInt8(ascii: "\\"),
                    slice[i + 1] == UInt8(ascii: "u"), let lo = hex4(i + 2), (0xDC00...0xDFFF).contains(lo)
                {
                    i += 6
                    appendScalar(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                } else {
                    appendScalar(hi)
                }
            default: out.append(e)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends `value` as a JSON string literal, quotes included.
    public static func write(_ value: String, into buffer: inout ByteBuffer) {
        var value = value
        value.withUTF8 { utf8 in
            buffer.writeInteger(UInt8(ascii: "\""))
            var runStart = 0
            for i in 0..<utf8.count {
                let b = utf8[i]
                guard b < 0x20 || b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") else { continue }
                if i > runStart { buffer.writeBytes(UnsafeBufferPointer(rebasing: utf8[runStart..<i])) }
                runStart = i + 1
                switch b {
                case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
                case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
                case 0x0A: buffer.writeStaticString("\\n")
                case 0x0D: buffer.writeStaticString("\\r")
                case 0x09: buffer.writeStaticString("\\t")
                case 0x08: buffer.writeStaticString("\\b")
                case 0x0C: buffer.writeStaticString("\\f")
                default:
                    let hex = "0123456789abcdef".utf8
                    buffer.writeStaticString("\\u00")
                    buffer.writeInteger(hex[hex.index(hex.startIndex, offsetBy: Int(b >> 4))])
                    buffer.writeInteger(hex[hex.index(hex.startIndex, offsetBy: Int(b & 0xF))])
                }
            }
            if utf8.count > runStart { buffer.writeBytes(UnsafeBufferPointer(rebasing: utf8[runStart..<utf8.count])) }
            buffer.writeInteger(UInt8(ascii: "\""))
        }
    }

    /// `value` as a JSON string literal, quotes included.
    public static func literal(_ value: String) -> String {
        var buffer = ByteBuffer()
        write(value, into: &buffer)
        return String(buffer: buffer)
    }
}
