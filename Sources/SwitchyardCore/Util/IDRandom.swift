import Synchronization

/// Random numbers for identifiers (request, record and response ids, load-balancing picks, retry
/// jitter) — unique and unpredictable enough for those, but not secrets: API keys, admin keys and
/// redemption codes use `SystemRandomNumberGenerator`.
///
/// The system generator makes a `getrandom` system call for every 64 bits; a request used about six
/// of them. This one is SplitMix64 over a shared counter seeded once from the system generator:
/// one relaxed atomic add per 64 bits, safe from any thread, and a bijection of the counter, so two
/// calls never return the same value within 2⁶⁴ calls.
public struct IDRandom: RandomNumberGenerator, Sendable {
    private static let counter = Atomic<UInt64>({
        var system = SystemRandomNumberGenerator()
        return system.next()
    }())

    public init() {}

    public mutating func next() -> UInt64 {
        var z = Self.counter.wrappingAdd(0x9E37_79B9_7F4A_7C15, ordering: .relaxed).newValue
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
