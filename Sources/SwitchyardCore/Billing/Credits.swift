/// An amount of credits, held exactly as integer micro-credits (1 credit = 1,000,000 µc).
///
/// Parsed from and printed as plain decimals with at most six fractional digits (`750`, `1.25`,
/// `0.000125`), so no amount ever passes through a binary floating-point value.
public struct Credits: Sendable, Hashable, Comparable, CustomStringConvertible {
    public static let scale: Int64 = 1_000_000
    public static let zero = Credits(micros: 0)

    public var micros: Int64

    public init(micros: Int64) { self.micros = micros }

    /// Whole credits.
    public static func credits(_ n: Int64) -> Credits { Credits(micros: n * scale) }

    /// Parses `12`, `12.5`, `-3`, `0.000125`; nil for anything else (more than six decimals, exponents,
    /// empty parts, values beyond ±9 × 10¹² credits).
    public init?(parsing text: some StringProtocol) {
        var s = Substring(text)
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        var negative = false
        if s.first == "-" {
            negative = true
            s.removeFirst()
        } else if s.first == "+" {
            s.removeFirst()
        }
        let parts = s.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = parts.first, !whole.isEmpty, whole.count <= 13, whole.allSatisfy({ $0.isASCII && $0.isNumber }),
            let w = Int64(whole)
        else { return nil }
        var fraction: Int64 = 0
        if parts.count == 2 {
            let f = parts[1]
            guard !f.isEmpty, f.count <= 6, f.allSatisfy({ $0.isASCII && $0.isNumber }), let v = Int64(f) else { return nil }
            fraction = v
            for _ in f.count..<6 { fraction *= 10 }
        }
        let value = w * Self.scale + fraction
        micros = negative ? -value : value
    }

    /// The amount as a plain decimal: trailing zeros dropped, no exponent.
    public var description: String {
        let negative = micros < 0
        let magnitude = micros.magnitude
        let whole = magnitude / UInt64(Self.scale)
        let fraction = magnitude % UInt64(Self.scale)
        var out = negative ? "-" : ""
        out += String(whole)
        if fraction != 0 {
            var digits = String(fraction)
            digits = String(repeating: "0", count: 6 - digits.count) + digits
            while digits.hasSuffix("0") { digits.removeLast() }
            out += "." + digits
        }
        return out
    }

    /// The amount as a JSON number (exact decimal text).
    public var json: JSONValue { .number(description) }

    public static func < (a: Credits, b: Credits) -> Bool { a.micros < b.micros }
    public static func + (a: Credits, b: Credits) -> Credits { Credits(micros: a.micros + b.micros) }
    public static func - (a: Credits, b: Credits) -> Credits { Credits(micros: a.micros - b.micros) }

    /// `a × b / scale`, rounded up to the micro-credit (multiplying an amount by a decimal factor held as
    /// credits, e.g. a tier's credits by a model multiplier). Saturates instead of overflowing.
    public static func multiply(_ a: Int64, byFactor b: Int64) -> Int64 {
        let (high, low) = a.multipliedFullWidth(by: b)
        let fits = (high == 0 && Int64(bitPattern: low) >= 0) || (high == -1 && Int64(bitPattern: low) < 0)
        guard fits else { return a.signum() * b.signum() >= 0 ? Int64.max / 4 : Int64.min / 4 }
        let product = Int64(bitPattern: low)
        let (q, r) = product.quotientAndRemainder(dividingBy: scale)
        return r > 0 ? q + 1 : q
    }
}

extension Credits: Decodable {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = Credits(parsing: text) else {
            throw ConfigValueError("expected an amount of credits such as 750 or 1.25 (at most 6 decimals), found `\(text)`")
        }
        guard value.micros >= 0 else { throw ConfigValueError("an amount of credits must not be negative, found `\(text)`") }
        self = value
    }
}
