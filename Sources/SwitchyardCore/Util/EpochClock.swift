#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore

/// Wall-clock time as integer epoch milliseconds (how every timestamp is stored).
public enum EpochClock {
    public static func nowMilliseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// Wall-clock epoch microseconds (for latency stamps compared across processes).
    public static func nowMicroseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1_000
    }

    /// Formats epoch milliseconds as ISO 8601 UTC (`2026-11-21T18:43:00Z`).
    public static func iso8601(_ ms: Int64) -> String {
        var t = time_t(ms / 1000)
        var tmValue = tm()
        gmtime_r(&t, &tmValue)
        func pad(_ v: Int32, _ width: Int = 2) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(tmValue.tm_year + 1900, 4))-\(pad(tmValue.tm_mon + 1))-\(pad(tmValue.tm_mday))T\(pad(tmValue.tm_hour)):\(pad(tmValue.tm_min)):\(pad(tmValue.tm_sec))Z"
    }
}

extension EpochClock {
    private static let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// An HTTP `Date` (RFC 9110's IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`) for epoch seconds.
    public static func httpDate(_ seconds: Int) -> String {
        var t = time_t(seconds)
        var v = tm()
        gmtime_r(&t, &v)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(weekdays[Int(v.tm_wday)]), \(two(v.tm_mday)) \(months[Int(v.tm_mon)]) \(v.tm_year + 1900) "
            + "\(two(v.tm_hour)):\(two(v.tm_min)):\(two(v.tm_sec)) GMT"
    }

    /// ISO 8601 UTC with milliseconds (`2026-11-21T18:43:00.123Z`), for log lines.
    public static func iso8601Millis(_ ms: Int64) -> String {
        withISO8601Millis(ms) { String(decoding: $0, as: UTF8.self) }
    }

    /// Writes ``iso8601Millis(_:)``'s text into `out`, with no intermediate string.
    public static func writeISO8601Millis(_ ms: Int64, into out: inout ByteBuffer) {
        withISO8601Millis(ms) { out.writeBytes($0) }
    }

    /// The 24 bytes of ``iso8601Millis(_:)``, on the stack.
    static func withISO8601Millis<R>(_ ms: Int64, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        var t = time_t(ms / 1000)
        var v = tm()
        gmtime_r(&t, &v)
        var storage: (UInt64, UInt64, UInt64) = (0, 0, 0)
        return withUnsafeMutableBytes(of: &storage) { b in
            func put(_ value: Int, _ at: Int, _ width: Int) {
                var value = value
                for i in stride(from: at + width - 1, through: at, by: -1) {
                    b[i] = UInt8(48 + value % 10)
                    value /= 10
                }
            }
            put(Int(v.tm_year) + 1900, 0, 4)
            b[4] = UInt8(ascii: "-")
            put(Int(v.tm_mon) + 1, 5, 2)
            b[7] = UInt8(ascii: "-")
            put(Int(v.tm_mday), 8, 2)
            b[10] = UInt8(ascii: "T")
            put(Int(v.tm_hour), 11, 2)
            b[13] = UInt8(ascii: ":")
            put(Int(v.tm_min), 14, 2)
            b[16] = UInt8(ascii: ":")
            put(Int(v.tm_sec), 17, 2)
            b[19] = UInt8(ascii: ".")
            put(Int(ms % 1000), 20, 3)
            b[23] = UInt8(ascii: "Z")
            return body(UnsafeRawBufferPointer(b))
        }
    }
}

extension EpochClock {
    /// Parses an ISO 8601 / RFC 3339 time: `2026-12-31` (midnight UTC), `2026-12-31T18:00:00Z`,
    /// `2026-12-31T18:00:00.250+01:00`. Returns epoch milliseconds, or nil if malformed.
    public static func parseISO8601(_ text: String) -> Int64? {
        let b = Array(text.utf8)
        func num(_ at: Int, _ width: Int) -> Int? {
            guard at + width <= b.count else { return nil }
            var v = 0
            for i in at..<(at + width) {
                guard b[i] >= 48, b[i] <= 57 else { return nil }
                v = v * 10 + Int(b[i] - 48)
            }
            return v
        }
        guard let year = num(0, 4), b.count >= 10, b[4] == UInt8(ascii: "-"), let month = num(5, 2), b[7] == UInt8(ascii: "-"),
            let day = num(8, 2), (1...12).contains(month), (1...31).contains(day)
        else { return nil }
        var hour = 0, minute = 0, second = 0, millis = 0, offset = 0
        var i = 10
        if i < b.count {
            guard b[i] == UInt8(ascii: "T") || b[i] == UInt8(ascii: "t") || b[i] == UInt8(ascii: " "),
                let h = num(i + 1, 2), b.count > i + 3, b[i + 3] == UInt8(ascii: ":"), let m = num(i + 4, 2),
                h < 24, m < 60
            else { return nil }
            hour = h
            minute = m
            i += 6
            if i < b.count, b[i] == UInt8(ascii: ":") {
                guard let s = num(i + 1, 2), s < 61 else { return nil }
                second = s
                i += 3
                if i < b.count, b[i] == UInt8(ascii: ".") {
                    i += 1
                    var digits = 0
                    while i < b.count, b[i] >= 48, b[i] <= 57 {
                        if digits < 3 { millis = millis * 10 + Int(b[i] - 48) }
                        digits += 1
                        i += 1
                    }
                    guard digits > 0 else { return nil }
                    if digits < 3 { for _ in digits..<3 { millis *= 10 } }
                }
            }
            guard i < b.count else { return nil }  // a time needs a zone: Z or ±HH:MM
            if b[i] == UInt8(ascii: "Z") || b[i] == UInt8(ascii: "z") {
                i += 1
            } else if b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") {
                guard let oh = num(i + 1, 2), b.count > i + 3, b[i + 3] == UInt8(ascii: ":"), let om = num(i + 4, 2), oh < 24, om < 60 else { return nil }
                offset = (oh * 60 + om) * (b[i] == UInt8(ascii: "+") ? 1 : -1)
                i += 6
            } else {
                return nil
            }
            guard i == b.count else { return nil }
        }
        // Days from the civil date (proleptic Gregorian), valid for any year.
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        let seconds = Int64(days) * 86_400 + Int64(hour * 3600 + minute * 60 + second) - Int64(offset * 60)
        return seconds * 1000 + Int64(millis)
    }
}
