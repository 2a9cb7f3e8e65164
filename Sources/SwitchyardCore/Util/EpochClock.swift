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
    /// ISO 8601 UTC with milliseconds (`2026-11-21T18:43:00.123Z`), for log lines.
    public static func iso8601Millis(_ ms: Int64) -> String {
        let base = iso8601(ms)
        let frac = String(ms % 1000)
        return base.dropLast() + "." + String(repeating: "0", count: 3 - frac.count) + frac + "Z"
    }
}
