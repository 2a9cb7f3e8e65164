import NIOCore
import Testing
@testable import SwitchyardCore

@Suite("JSON scanner")
struct JSONScannerTests {
    func scan(_ text: String, maxDepth: Int = 64) throws(JSONScanner.ScanError) -> ScannedObject {
        try ScannedObject(ByteBuffer(string: text), maxDepth: maxDepth)
    }

    func reason(_ text: String, maxDepth: Int = 64) -> JSONScanner.ScanError.Reason? {
        do {
            _ = try scan(text, maxDepth: maxDepth)
            return nil
        } catch {
            return error.reason
        }
    }

    @Test func findsTopLevelMembersOnly() throws {
        let doc = try scan(#"{"messages":[{"model":"inner"}],"model":"gpt-5.1","stream":true,"n":2}"#)
        #expect(doc.string("model") == "gpt-5.1")
        #expect(doc.bool("stream") == true)
        #expect(doc.member("messages")?.kind == .array)
        #expect(doc.rawString("n") == "2")
        #expect(doc.member("missing") == nil)
    }

    @Test func lastDuplicateWins() throws {
        let doc = try scan(#"{"model":"a","model":"b"}"#)
        #expect(doc.string("model") == "b")
    }

    @Test func decodesEscapedKeysAndValues() throws {
        let doc = try scan(#"{"mo\u0064el":"caf\u00e9 \"x\" \ud83d\ude00\n"}"#)
        #expect(doc.string("model") == "café \"x\" 😀\n")
    }

    @Test(arguments: [
        (#"{"a":1,}"#, "unexpected ','"),
        (#"{"a":01}"#, "number"),
        (#"{"a":1.}"#, "number"),
        (#"{"a":-}"#, "number"),
        (#"{"a":tru}"#, "literal"),
        (#"{"a":"x"#, "end"),
        (#"{"a" 1}"#, "colon"),
        ("{\"a\":\"\u{01}\"}", "control"),
        (#"{"a":"\x"}"#, "escape"),
        (#"{"a":"\u12"}"#, "escape"),
        (#"{"a":1} x"#, "trailing"),
        (#"{'a':1}"#, "quote"),
    ])
    func rejectsMalformedJSON(text: String, what: String) {
        #expect(reason(text) != nil, "should reject \(what): \(text)")
    }

    @Test func distinguishesEmptyNonObjectAndInvalid() {
        #expect(reason("") == .empty)
        #expect(reason("   \n") == .empty)
        #expect(reason("[1,2]") == .notAnObject)
        #expect(reason("\"x\"") == .notAnObject)
        #expect(reason("[1,") == .unexpectedEnd)
    }

    @Test func boundsNestingDepth() {
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(reason("{\"a\":\(deep)}", maxDepth: 64) == .tooDeep(64))
        let ok = String(repeating: "[", count: 10) + String(repeating: "]", count: 10)
        #expect(reason("{\"a\":\(ok)}", maxDepth: 64) == nil)
        // A pathological 100k-deep document fails fast instead of overflowing the stack.
        let bomb = "{\"a\":" + String(repeating: "[", count: 100_000)
        #expect(reason(bomb, maxDepth: 64) == .tooDeep(64))
    }

    @Test func acceptsValidNumbersAndLiterals() throws {
        let doc = try scan(#"{"a":-0.5e+10,"b":0,"c":123.456E-7,"d":null,"e":false,"f":{},"g":[]}"#)
        #expect(doc.object.members.count == 7)
        #expect(doc.member("d")?.kind == .null)
    }

    @Test func errorMessagesNameTheOffset() {
        do {
            _ = try scan(#"{"a":1,}"#)
            Issue.record("expected an error")
        } catch {
            #expect(error.description == "invalid JSON: unexpected '}' at offset 7")
        }
    }
}

@Suite("JSON object editor")
struct JSONObjectEditorTests {
    @Test func replacesModelKeepingEveryOtherByte() throws {
        let text = #"{ "model" : "alias",  "x_vendor": {"k": [1, 2.50]}, "messages":[] }"#
        let doc = try ScannedObject(ByteBuffer(string: text))
        let out = try #require(doc.replacingModel(with: JSONString.literal("real-model")))
        #expect(String(buffer: out) == #"{ "model" : "real-model",  "x_vendor": {"k": [1, 2.50]}, "messages":[] }"#)
    }

    @Test func replacingWithSameValueIsANoOp() throws {
        let doc = try ScannedObject(ByteBuffer(string: #"{"model":"same"}"#))
        #expect(doc.replacingModel(with: JSONString.literal("same")) == nil)
    }

    @Test func appendsAndRemovesMembers() throws {
        let doc = try ScannedObject(ByteBuffer(string: #"{"a":1,"b":2,"c":3}"#))
        var e = doc.editor()
        e.remove(doc.member("b")!)
        e.remove(doc.member("c")!)
        e.append(key: "d", rawJSON: #"{"x":true}"#)
        #expect(String(buffer: e.result()) == #"{"a":1,"d":{"x":true}}"#)

        let empty = try ScannedObject(ByteBuffer(string: "{ }"))
        var e2 = empty.editor()
        e2.append(key: "k", rawJSON: "1")
        #expect(String(buffer: e2.result()) == #"{ "k":1}"#)
    }

    @Test func encodesStringsSafely() {
        #expect(JSONString.literal("a\"b\\c\n\u{1}") == #""a\"b\\c\n\u0001""#)
        #expect(JSONString.literal("plain") == #""plain""#)
    }
}

@Suite("JSON values")
struct JSONValueTests {
    @Test func roundTripsExactly() throws {
        let text = #"{"z":1,"a":[true,false,null,-1.50e3,"s\"\u00e9"],"big":123456789012345678901234567890,"o":{}}"#
        let v = try JSONValue.parse(text)
        #expect(v.jsonString == #"{"z":1,"a":[true,false,null,-1.50e3,"s\"é"],"big":123456789012345678901234567890,"o":{}}"#)
        #expect(v["z"]?.intValue == 1)
        #expect(v["a"]?.arrayValue?.count == 5)
    }

    @Test func objectKeepsInsertionOrderAndReplacesInPlace() {
        var o: JSONObject = ["b": 1, "a": 2]
        o["b"] = 3
        o["c"] = 4
        o["a"] = nil
        #expect(JSONValue.object(o).jsonString == #"{"b":3,"c":4}"#)
    }

    @Test func rejectsDeepDocuments() {
        let deep = String(repeating: "[", count: 300) + String(repeating: "]", count: 300)
        #expect(throws: JSONScanner.ScanError.self) { try JSONValue.parse(deep, maxDepth: 256) }
    }
    /// The answer path reads usage from the scanned bytes; every reading must equal the parsed one's.
    @Test func scannedUsageReadsAsTheParsedValueDoes() throws {
        let cases = [
            #"{"prompt_tokens":12,"completion_tokens":0,"total_tokens":12}"#,
            #"{"prompt_tokens":40,"completion_tokens":8,"prompt_tokens_details":{"cached_tokens":5},"completion_tokens_details":{"reasoning_tokens":3}}"#,
            #"{"prompt_tokens":12.0,"completion_tokens":1e3,"prompt_tokens_details":{"cached_tokens":2.5}}"#,
            #"{"prompt_tokens":"12","completion_tokens":null,"prompt_tokens_details":[{"cached_tokens":1}],"completion_tokens_details":7}"#,
            #"{"prompt_tokens":-3,"completion_tokens":123456789012345678901234567890,"prompt_tokens_details":{}}"#,
            #"{"prompt_tokens":1,"prompt_tokens":2,"completion_tokens_details":{"reasoning_tokens":4,"reasoning_tokens":9}}"#,
            #"{}"#,
        ]
        for text in cases {
            let scanned = TokenUsage(openAI: try ScannedObject(ByteBuffer(string: text)))
            let parsed = try #require(TokenUsage(openAI: try JSONValue.parse(text)))
            #expect(scanned == parsed, "\(text)")
        }
        let doc = try ScannedObject(ByteBuffer(string: #"{"usage":{"prompt_tokens":7},"n":"x","o":[]}"#))
        #expect(doc.object("usage")?.int("prompt_tokens") == 7)
        #expect(doc.object("o") == nil && doc.object("missing") == nil && doc.int("n") == nil)
    }
}
