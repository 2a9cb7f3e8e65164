import NIOCore
import SwitchyardCore
@testable import SwitchyardMock
import Testing

@Suite("Mock engine")
struct MockEngineTests {
    let engine = MockEngine(settings: .init(chunks: 4), now: 1_700_000_000)

    func body(_ plan: MockPlan) -> String {
        switch plan.body {
        case .full(let b): return String(buffer: b)
        case .events(let script, _, _): return script.all.map { String(buffer: $0) }.joined()
        }
    }

    @Test func directivesFromEverySource() {
        var d = MockDirectives()
        d.apply(MockDirectives.pairs(fromHeaders: [(name: "X-Mock-Delay-Ms", value: "5"), (name: "x-other", value: "1")]))
        #expect(d.delayMs == 5)
        d.apply(MockDirectives.pairs(fromJSON: ["status": 503, "usage": "none"]))
        #expect(d.status == 503 && d.omitUsage)
        d.apply(MockDirectives.pairs(fromText: "please [[mock status=429 retry_after=9]] thanks"))
        #expect(d.status == 429 && d.retryAfter == 9)
        #expect(MockDirectives.pairs(fromText: "no markers").isEmpty)
    }

    @Test func streamEventsCanCarryTheTimeTheMockWroteThem() throws {
        var d = MockDirectives()
        d.apply(MockDirectives.pairs(fromJSON: ["stamp_events": true]))
        #expect(d.stampEvents)
        let plan = engine.chatCompletion(body: ByteBuffer(string: #"{"model":"m","stream":true,"mock":{"stamp_events":true},"messages":[{"role":"user","content":"x"}]}"#))
        #expect(plan.stampEvents)
        let before = EpochClock.nowMicroseconds()
        let stamped = MockServer.stamped(ByteBuffer(string: "data: {\"id\":\"c1\"}\n\n"))
        let event = try JSONValue.parse(String(String(buffer: stamped).dropFirst("data: ".count)))
        #expect(event["id"]?.stringValue == "c1")
        let sent = event["mock_sent_us"]?.intValue ?? 0
        #expect(sent >= Int(before) && sent <= Int(EpochClock.nowMicroseconds()))
        #expect(String(buffer: MockServer.stamped(ByteBuffer(string: "data: [DONE]\n\n"))) == "data: [DONE]\n\n")
        #expect(String(buffer: MockServer.stamped(ByteBuffer(string: "data: {}\n\n"))) == "data: {}\n\n")
    }

    @Test func repliesAreDeterministicAndCarryUsage() throws {
        let request = ByteBuffer(string: #"{"model":"m","messages":[{"role":"user","content":"Hi there"}]}"#)
        let a = body(engine.chatCompletion(body: request))
        let b = body(MockEngine(settings: .init(chunks: 4), now: 1_700_000_000).chatCompletion(body: request))
        #expect(a == b)
        let v = try JSONValue.parse(a)
        #expect(v["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue == "Hello from the Switchyard mock upstream. You said: Hi there")
        #expect(v["usage"]?["completion_tokens"]?.intValue == 10)
    }

    @Test func streamsConcatenateToTheFullText() throws {
        let plan = engine.chatCompletion(body: ByteBuffer(string: #"{"model":"m","stream":true,"mock":{"words":1000,"chunks":7},"messages":[{"role":"user","content":"x"}]}"#))
        guard case .events(let script, _, _) = plan.body else { Issue.record("not a stream"); return }
        #expect(script.count == 1 + 7 + 1 + 1)  // role, 7 pieces, finish, [DONE]
        var text = ""
        for event in script.all.dropLast() {
            let data = String(buffer: event).dropFirst("data: ".count)
            text += try JSONValue.parse(String(data))["choices"]?.arrayValue?.first?["delta"]?["content"]?.stringValue ?? ""
        }
        #expect(text == MockText.vocabulary(count: 1000).full)
        #expect(text.split(separator: " ").count == 1000)
    }

    @Test func toolCallsFollowTheSchema() throws {
        let request = #"{"model":"m","messages":[{"role":"user","content":"go"}],"tool_choice":{"type":"function","function":{"name":"b"}},"tools":[{"type":"function","function":{"name":"a","parameters":{}}},{"type":"function","function":{"name":"b","parameters":{"type":"object","properties":{"n":{"type":"integer"},"tags":{"type":"array"},"mode":{"enum":["x","y"]},"opt":{"type":"string"}},"required":["n","tags","mode"]}}}]}"#
        let v = try JSONValue.parse(body(engine.chatCompletion(body: ByteBuffer(string: request))))
        let call = v["choices"]?.arrayValue?.first?["message"]?["tool_calls"]?.arrayValue?.first
        #expect(call?["function"]?["name"]?.stringValue == "b")
        #expect(call?["function"]?["arguments"]?.stringValue == #"{"n":1,"tags":[],"mode":"x"}"#)
        #expect(v["choices"]?.arrayValue?.first?["finish_reason"]?.stringValue == "tool_calls")
    }

    @Test func maxTokensTruncatesWithLength() throws {
        let v = try JSONValue.parse(body(engine.chatCompletion(body: ByteBuffer(string: #"{"model":"m","max_tokens":3,"messages":[{"role":"user","content":"a b c d e"}]}"#))))
        #expect(v["choices"]?.arrayValue?.first?["finish_reason"]?.stringValue == "length")
        #expect(v["usage"]?["completion_tokens"]?.intValue == 3)
    }

    @Test func faultsAndBadRequests() throws {
        let fault = engine.chatCompletion(body: ByteBuffer(string: #"{"model":"m","messages":[{"role":"user","content":"[[mock status=503 retry_after=2]]"}]}"#))
        #expect(fault.status == 503)
        #expect(fault.headers.contains { $0.0 == "retry-after" && $0.1 == "2" })
        #expect(engine.chatCompletion(body: ByteBuffer(string: "{oops")).status == 400)
        #expect(engine.chatCompletion(body: ByteBuffer(string: #"{"messages":[]}"#)).status == 400)
    }

    @Test func splitKeepsCharactersWhole() {
        let text = "héllo wörld 😀 ok"
        for n in 1...20 {
            let pieces = MockReply.split(text, into: n)
            #expect(pieces.joined() == text)
            #expect(pieces.count <= n)
        }
    }
}
