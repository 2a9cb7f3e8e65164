import Foundation

/// Calendar days in one time zone, for daily request limits that reset at local midnight.
public struct DayClock: Sendable {
    /// One calendar day: an index (days since 1970-01-01 in the zone) and its bounds in epoch ms.
    public struct Day: Sendable, Equatable {
        public var index: Int64
        public var startMs: Int64
        public var endMs: Int64
    }

    public let identifier: String
    private let calendar: Calendar

    /// A clock for an IANA zone name (`Europe/Berlin`) or `UTC`; nil if the zone is unknown.
    public init?(identifier: String) {
        guard let zone = identifier == "UTC" ? TimeZone(secondsFromGMT: 0) : TimeZone(identifier: identifier) else { return nil }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        self.calendar = calendar
        self.identifier = identifier
    }

    public static let utc = DayClock(identifier: "UTC")!

    /// The day containing `ms`. Days around daylight-saving changes are 23 or 25 hours long.
    public func day(containing ms: Int64) -> Day {
        let date = Date(timeIntervalSince1970: Double(ms) / 1000)
        let start = calendar.startOfDay(for: date)
        let next = calendar.date(byAdding: .day, value: 1, to: start) ?? start.addingTimeInterval(86_400)
        let startMs = Int64((start.timeIntervalSince1970 * 1000).rounded())
        let offset = Int64(calendar.timeZone.secondsFromGMT(for: start)) * 1000
        let index = (startMs + offset).floorDiv(86_400_000)
        return Day(index: index, startMs: startMs, endMs: Int64((next.timeIntervalSince1970 * 1000).rounded()))
    }
}

extension Int64 {
    /// Division rounding toward negative infinity.
    func floorDiv(_ d: Int64) -> Int64 {
        let q = self / d
        return (self % d != 0 && (self < 0) != (d < 0)) ? q - 1 : q
    }
}
