import Foundation
import NIOCore
import Testing
@testable import SwitchyardCore

@Suite("API keys")
struct APIKeysTests {
    @Test func secretsArePrefixedRandomAndLongEnough() {
        let a = APIKeys.generateSecret(prefix: "sy-")
        let b = APIKeys.generateSecret(prefix: "sy-")
        #expect(a.hasPrefix("sy-"))
        #expect(a.count == 3 + 43)  // 43 base62 characters carry 256 bits
        #expect(a != b)
        #expect(a.dropFirst(3).allSatisfy { $0.isLetter || $0.isNumber })
    }

    @Test func randomCharactersAreSpreadOverTheAlphabet() {
        var counts: [Character: Int] = [:]
        for c in APIKeys.randomBase62(62_000) { counts[c, default: 0] += 1 }
        #expect(counts.count == 62)
        #expect(counts.values.allSatisfy { (700...1300).contains($0) })
    }

    @Test func idCharactersAreSpreadOverTheAlphabetAndIDsNeverRepeat() async {
        var counts: [Character: Int] = [:]
        for c in APIKeys.idBase62(62_000) { counts[c, default: 0] += 1 }
        #expect(counts.count == 62)
        #expect(counts.values.allSatisfy { (700...1300).contains($0) })
        // From several threads at once: 4 × 25,000 ids of 12 characters (71 bits), all distinct.
        let ids = await withTaskGroup(of: [String].self) { group in
            for _ in 0..<4 { group.addTask { (0..<25_000).map { _ in APIKeys.idBase62(12) } } }
            var all: [String] = []
            for await part in group { all += part }
            return all
        }
        #expect(Set(ids).count == ids.count)
    }

    @Test func orderedIDsCarryTheClockThenRandomCharactersAndSortByTime() throws {
        let alphabet = Set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        let before = EpochClock.nowMilliseconds()
        let id = APIKeys.generateOrderedID(prefix: "req_")
        #expect(id.hasPrefix("req_") && id.count == 4 + 8 + 16)
        #expect(id.dropFirst(4).allSatisfy { alphabet.contains($0) })
        // The 8 clock characters are the milliseconds in base62, most significant first.
        let ms = id.dropFirst(4).prefix(8).reduce(Int64(0)) { acc, c in
            acc * 62 + Int64("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".firstIndex(of: c)!.utf16Offset(in: "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
        }
        #expect(ms >= before && ms <= EpochClock.nowMilliseconds())
        #expect(APIKeys.generateOrderedID(prefix: "resp_", random: 24).count == 5 + 8 + 24)
        #expect(APIKeys.generateOrderedID(prefix: "", random: 0).count == 8)
        var earlier = APIKeys.generateOrderedID(prefix: "x_")
        for _ in 0..<3 {
            Thread.sleep(forTimeInterval: 0.002)
            let later = APIKeys.generateOrderedID(prefix: "x_")
            #expect(earlier < later)
            earlier = later
        }
    }

    @Test func hashIsSHA256AndRoundTripsThroughHex() {
        // SHA-256("abc")
        let h = APIKeys.hash("abc")
        #expect(h.hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(KeyHash(hex: h.hex) == h)
        #expect(APIKeys.hash("Bearer abc".dropFirst(7)) == h, "a substring hashes as its string")
        #expect(KeyHash(hex: "zz") == nil)
        #expect(h.constantTimeEquals(APIKeys.hash("abc")))
        #expect(!h.constantTimeEquals(APIKeys.hash("abd")))
    }

    @Test func implausibleCredentialsAreRejectedBeforeHashing() {
        #expect(APIKeys.isPlausible("sy-abc"))
        #expect(!APIKeys.isPlausible(""))
        #expect(!APIKeys.isPlausible(String(repeating: "k", count: 257)))
        #expect(!APIKeys.isPlausible("has space"))
        #expect(!APIKeys.isPlausible("ünïcode"))
    }
}

@Suite("Gateway errors")
struct GatewayErrorTests {
    @Test func rendersOpenAIErrorBody() throws {
        let body = GatewayError.modelNotFound("x\"y").openAIBody()
        let v = try JSONValue.parse(body)
        #expect(v["error"]?["message"]?.stringValue == "the model `x\"y` does not exist or you do not have access to it")
        #expect(v["error"]?["type"]?.stringValue == "invalid_request_error")
        #expect(v["error"]?["code"]?.stringValue == "model_not_found")
        #expect(v["error"]?["param"]?.stringValue == "model")
        #expect(GatewayError.missingKey.openAIBody().readableBytesView.elementsEqual(
            #"{"error":{"message":"missing API key: send it as `Authorization: Bearer KEY` or `x-api-key: KEY`","type":"authentication_error","param":null,"code":"invalid_api_key"}}"#.utf8))
    }

    @Test(arguments: [
        (GatewayError.invalidKey, 401), (.modelNotFound("m"), 404), (.bodyTooLarge(limit: 1), 413),
        (.missingField("model"), 400), (.internalError(), 500),
    ])
    func statusCodes(error: GatewayError, status: Int) {
        #expect(error.status == status)
    }
}
