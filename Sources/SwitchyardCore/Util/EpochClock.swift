#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Wall-clock time as integer epoch milliseconds (how every timestamp is stored).
public enum EpochClock {
    public static func nowMilliseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
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
    /// ISO 8601 UTC with milliseconds (`2026-11-21T18:43:00.123Z`), for log lines; no intermediate strings.
    public static func iso8601Millis(_ ms: Int64) -> String {
        var t = time_t(ms / 1000)
        var v = tm()
        gmtime_r(&t, &v)
        var b = [UInt8](repeating: 0, count: 24)
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
        return String(decoding: b, as: UTF8.self)
    }
}
