import Crypto

/// The SHA-256 digest of an API key secret: what the store keeps instead of the secret.
public struct KeyHash: Hashable, Sendable, CustomStringConvertible {
    public let a: UInt64, b: UInt64, c: UInt64, d: UInt64

    /// From a SHA-256 digest's bytes, read in place (the request path hashes every presented key).
    public init(sha256 digest: SHA256Digest) {
        (a, b, c, d) = digest.withUnsafeBytes { raw in
            (UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
             UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
             UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
             UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self)))
        }
    }

    public init(digest: some Sequence<UInt8>) {
        var words: [UInt64] = [0, 0, 0, 0]
        for (i, byte) in digest.enumerated() where i < 32 {
            words[i / 8] = words[i / 8] << 8 | UInt64(byte)
        }
        (a, b, c, d) = (words[0], words[1], words[2], words[3])
    }

    /// Parses the 64-character lowercase hex form.
    public init?(hex: String) {
        let bytes = Array(hex.utf8)
        guard bytes.count == 64 else { return nil }
        var digest: [UInt8] = []
        digest.reserveCapacity(32)
        var i = 0
        while i < 64 {
            guard let hi = JSONString.hexValue(bytes[i]), let lo = JSONString.hexValue(bytes[i + 1]) else { return nil }
            digest.append(hi << 4 | lo)
            i += 2
        }
        self.init(digest: digest)
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(32)
        for w in [a, b, c, d] {
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: w >> UInt64(shift))) }
        }
        return out
    }

    /// Lowercase hex, as stored.
    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public var description: String { hex }

    /// Compares two hashes without an early exit, so timing reveals nothing about where they differ.
    public func constantTimeEquals(_ other: KeyHash) -> Bool {
        ((a ^ other.a) | (b ^ other.b) | (c ^ other.c) | (d ^ other.d)) == 0
    }
}

/// Generation, hashing and validation of API keys and record ids.
public enum APIKeys {
    static let alphabet: [UInt8] = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    /// Characters of randomness in a secret: 43 base62 characters carry 256 bits.
    public static let secretLength = 43
    /// Longest key the gateway will even hash; anything longer is rejected before any work.
    public static let maxPresentedLength = 256

    /// `count` base62 characters from the system's cryptographic generator (secrets, codes).
    public static func randomBase62(_ count: Int) -> String {
        var rng = SystemRandomNumberGenerator()
        return base62(count, using: &rng)
    }

    /// `count` base62 characters for an identifier that must be unique but need not be secret.
    public static func idBase62(_ count: Int) -> String {
        var rng = IDRandom()
        return base62(count, using: &rng)
    }

    /// `count` uniformly random base62 characters from `rng` (rejection sampling, no modulo bias).
    private static func base62(_ count: Int, using rng: inout some RandomNumberGenerator) -> String {
        String(unsafeUninitializedCapacity: count) { fillBase62($0, using: &rng) }
    }

    /// Fills `out` with uniformly random base62 characters; returns how many (all of them).
    private static func fillBase62(_ out: UnsafeMutableBufferPointer<UInt8>, using rng: inout some RandomNumberGenerator) -> Int {
        var filled = 0
        while filled < out.count {
            var word = rng.next()
            for _ in 0..<8 where filled < out.count {
                let byte = UInt8(truncatingIfNeeded: word)
                word >>= 8
                if byte < 248 {
                    out[filled] = alphabet[Int(byte % 62)]
                    filled += 1
                }
            }
        }
        return filled
    }

    /// A new secret: the configured prefix followed by 256 bits of randomness.
    public static func generateSecret(prefix: String) -> String {
        prefix + randomBase62(secretLength)
    }

    /// A time-ordered id: `prefix`, the millisecond clock in 8 base62 digits, then `random` random
    /// characters. Ids sort by creation time, so a database index on them grows at its right edge
    /// instead of dirtying a random page per insert.
    public static func generateOrderedID(prefix: String, random: Int = 16) -> String {
        var ms = UInt64(max(0, EpochClock.nowMilliseconds()))
        var prefix = prefix
        // Built in place: one string allocation per request id (the parts and their concatenations were five).
        return prefix.withUTF8 { head in
            String(unsafeUninitializedCapacity: head.count + 8 + random) { out in
                _ = UnsafeMutableBufferPointer(rebasing: out[..<head.count]).initialize(fromContentsOf: head)
                for i in stride(from: head.count + 7, through: head.count, by: -1) {
                    out[i] = alphabet[Int(ms % 62)]
                    ms /= 62
                }
                var rng = IDRandom()
                return head.count + 8 + fillBase62(UnsafeMutableBufferPointer(rebasing: out[(head.count + 8)...]), using: &rng)
            }
        }
    }

    /// A new record id such as `key_3kTMd9Qx2bZr`.
    public static func generateID(prefix: String) -> String {
        prefix + idBase62(14)
    }

    /// SHA-256 of the secret.
    /// Inlinable so callers get it specialized for `String` and `Substring` (it runs on every request);
    /// a native string's bytes are hashed where they lie.
    @inlinable
    public static func hash(_ secret: some StringProtocol) -> KeyHash {
        var hasher = SHA256()
        if secret.utf8.withContiguousStorageIfAvailable({ hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }) == nil {
            Array(secret.utf8).withUnsafeBytes { hasher.update(bufferPointer: $0) }
        }
        return KeyHash(sha256: hasher.finalize())
    }

    /// Whether a presented credential is worth looking up: bounded length, visible ASCII only.
    @inlinable
    public static func isPlausible(_ secret: some StringProtocol) -> Bool {
        let utf8 = secret.utf8
        return !utf8.isEmpty && utf8.count <= maxPresentedLength && utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }

    /// The last four characters, kept for display.
    public static func last4(_ secret: String) -> String {
        String(secret.suffix(4))
    }
}
