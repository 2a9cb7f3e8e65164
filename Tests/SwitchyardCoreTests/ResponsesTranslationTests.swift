import Foundation
import NIOCore
import Testing
@testable import SwitchyardCore

/// The OpenAI Responses format, both directions, from OpenAI's documented shapes.
@Suite("Translation: Responses API")
struct ResponsesTranslationTests {
    func obj(_ text: String) throws -> JSONObject { try #require(try JSONValue.parse(text).objectValue) }

    let codexTurn = """
        {"model":"gpt-5.3-codex","instructions":"You are a coding agent.","store":false,"stream":true,
         "reasoning":{"effort":"high","summary":"auto"},"max_output_tokens":900,"parallel_tool_calls":false,"tool_choice":"auto",
         "text":{"format":{"type":"json_schema","name":"answer","schema":{"type":"object"},"strict":true}},
         "tools":[{"type":"function","name":"shell","description":"Run","parameters":{"type":"object","properties":{}},"strict":false}],
         "input":[
          {"type":"message","role":"developer","content":[{"type":"input_text","text":"Use metric units."}]},
          {"role":"user","content":[{"type":"input_text","text":"List files"},{"type":"input_image","image_url":"https://example.com/a.png","detail":"low"}]},
          {"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"Plan"}],"encrypted_content":"gAAAA-opaque"},
          {"type":"reasoning","id":"rs_2","summary":[{"type":"summary_text","text":"Claude thought"}],"encrypted_content":"switchyard:sig:EqQBsig"},
          {"type":"function_call","call_id":"call_1","name":"shell","arguments":"{\\"command\\":[\\"ls\\"]}"},
          {"type":"function_call_output","call_id":"call_1","output":"README.md"},
          {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Done."}]},
          {"role":"user","content":"Thanks"}]}
        """

    @Test func decodesItemsIntoCanonical() throws {
        let r = try OpenAIResponses.decodeRequest(try obj(codexTurn))
        #expect(r.system == [.text("You are a coding agent."), .text("Use metric units.")])
        #expect(r.messages.map(\.role) == [.user, .assistant, .user, .assistant, .user])
        #expect(r.messages[0].content[1] == .image(.url("https://example.com/a.png"), detail: "low"))
        #expect(r.messages[1].content == [
            .thinking("Plan", signature: "openai:rs_1:gAAAA-opaque"),
            .thinking("Claude thought", signature: "EqQBsig"),
            .toolCall(id: "call_1", name: "shell", arguments: #"{"command":["ls"]}"#),
        ])
        #expect(r.messages[2].content == [.toolResult(ToolResult(callID: "call_1", name: "shell", content: [.text("README.md")]))])
        #expect(r.tools.map(\.name) == ["shell"] && r.toolChoice == .auto && r.parallelToolCalls == false)
        #expect(r.maxTokens == 900 && r.reasoning == .effort("high") && r.stream)
        #expect(r.responseFormat == .jsonSchema(name: "answer", schema: .object(["type": "object"]), strict: true, description: nil))
    }

    @Test func encodesOnlyOpenAIReasoningBackByteExact() throws {
        let r = try OpenAIResponses.decodeRequest(try obj(codexTurn))
        let body = JSONValue.object(OpenAIResponses.encodeRequest(r, model: "gpt-up"))
        let input = body["input"]?.arrayValue ?? []
        let reasoning = input.filter { $0["type"]?.stringValue == "reasoning" }
        #expect(reasoning.count == 1)
        #expect(reasoning.first?["id"]?.stringValue == "rs_1" && reasoning.first?["encrypted_content"]?.stringValue == "gAAAA-opaque")
        #expect(body["store"] == false && body["include"] == .array(["reasoning.encrypted_content"]))
        #expect(body["instructions"]?.stringValue == "You are a coding agent.\n\nUse metric units.")
        #expect(input.contains { $0["type"]?.stringValue == "function_call_output" && $0["call_id"]?.stringValue == "call_1" })
        // And nothing of OpenAI's reaches Anthropic.
        let anthropic = JSONValue.object(try AnthropicMessages.encodeRequest(r, model: "claude", options: .init()))
        #expect(!anthropic.jsonString.contains("gAAAA-opaque") && anthropic.jsonString.contains("EqQBsig"))
    }

    @Test func unsupportedItemsAndToolsAreClearErrors() throws {
        #expect(throws: GatewayError.self) { try OpenAIResponses.decodeRequest(try obj(#"{"model":"m","input":[{"type":"item_reference","id":"msg_1"}]}"#)) }
        #expect(throws: GatewayError.self) { try OpenAIResponses.decodeRequest(try obj(#"{"model":"m","input":"hi","tools":[{"type":"web_search"}]}"#)) }
        #expect(throws: GatewayError.self) { try OpenAIResponses.decodeRequest(try obj(#"{"model":"m","input":42}"#)) }
    }

    @Test func streamEncoderEmitsTheDocumentedSequence() throws {
        var encoder = ResponsesStreamEncoder(model: "claude-x", created: 1_700_000_000, responseID: "resp_1")
        var out = ByteBuffer()
        let events: [StreamEvent] = [
            .start(id: "msg_up", model: "claude"), .thinkingStart(index: 0), .thinkingDelta(index: 0, "Hmm"), .signatureDelta(index: 0, "sig"),
            .blockStop(index: 0), .textStart(index: 1), .textDelta(index: 1, "Hi"), .textDelta(index: 1, "!"), .blockStop(index: 1),
            .toolCallStart(index: 2, id: "toolu_1", name: "f"), .toolCallDelta(index: 2, "{}"), .blockStop(index: 2),
            .usage(TokenUsage(inputTokens: 10, outputTokens: 5, cachedInputTokens: 2, reasoningTokens: 1)), .finish(.toolCalls),
        ]
        for e in events { encoder.encode(e, into: &out) }
        encoder.finish(into: &out)
        var types: [String] = []
        var sequence: [Int] = []
        for block in String(buffer: out).components(separatedBy: "\n\n") where !block.isEmpty {
            let lines = block.split(separator: "\n")
            let data = try JSONValue.parse(String(lines[1].dropFirst(6)))
            #expect(lines[0] == "event: \(data["type"]?.stringValue ?? "")")
            types.append(data["type"]?.stringValue ?? "")
            sequence.append(data["sequence_number"]?.intValue ?? -1)
        }
        #expect(sequence == Array(0..<types.count))
        #expect(types == [
            "response.created", "response.in_progress",
            "response.output_item.added", "response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done", "response.reasoning_summary_part.done", "response.output_item.done",
            "response.output_item.added", "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
            "response.output_text.done", "response.content_part.done", "response.output_item.done",
            "response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.done", "response.output_item.done",
            "response.completed",
        ])
        let final = try #require(encoder.finalResponse)
        #expect(final["status"]?.stringValue == "completed" && final["output"]?.arrayValue?.count == 3)
        #expect(final["output"]?.arrayValue?.first?["encrypted_content"]?.stringValue == "switchyard:sig:sig")
        #expect(final["usage"]?["input_tokens_details"]?["cached_tokens"]?.intValue == 2)
        #expect(final["usage"]?["output_tokens_details"]?["reasoning_tokens"]?.intValue == 1)
    }

    @Test func aFailureEndsWithResponseFailedAndALengthStopIsIncomplete() throws {
        var failing = ResponsesStreamEncoder(model: "m", created: 0)
        var out = ByteBuffer()
        failing.encode(.textStart(index: 0), into: &out)
        failing.encode(.error(GatewayError(status: 502, category: .upstream, code: "upstream_stream_error", message: "broke")), into: &out)
        failing.finish(into: &out)
        #expect(String(buffer: out).hasSuffix("\n\n") && String(buffer: out).contains("event: response.failed"))
        #expect(!String(buffer: out).contains("response.completed"))
        var cut = ResponsesStreamEncoder(model: "m", created: 0)
        out.clear()
        cut.encode(.textStart(index: 0), into: &out)
        cut.encode(.finish(.length), into: &out)
        cut.finish(into: &out)
        #expect(cut.finalResponse?["status"]?.stringValue == "incomplete" && cut.finalResponse?["incomplete_details"]?["reason"]?.stringValue == "max_output_tokens")
    }

    @Test func decodesAProviderStream() throws {
        let sse = """
            event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":"resp_9","model":"gpt-up","output":[]}}\n\n\
            event: response.output_item.added\ndata: {"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"id":"rs_9","type":"reasoning","summary":[]}}\n\n\
            event: response.reasoning_summary_text.delta\ndata: {"type":"response.reasoning_summary_text.delta","sequence_number":2,"item_id":"rs_9","output_index":0,"summary_index":0,"delta":"Think"}\n\n\
            event: response.output_item.done\ndata: {"type":"response.output_item.done","sequence_number":3,"output_index":0,"item":{"id":"rs_9","type":"reasoning","summary":[{"type":"summary_text","text":"Think"}],"encrypted_content":"ENC"}}\n\n\
            event: response.output_item.added\ndata: {"type":"response.output_item.added","sequence_number":4,"output_index":1,"item":{"id":"fc_9","type":"function_call","call_id":"call_9","name":"f","arguments":""}}\n\n\
            event: response.function_call_arguments.delta\ndata: {"type":"response.function_call_arguments.delta","sequence_number":5,"item_id":"fc_9","output_index":1,"delta":"{}"}\n\n\
            event: response.output_item.done\ndata: {"type":"response.output_item.done","sequence_number":6,"output_index":1,"item":{"id":"fc_9","type":"function_call","call_id":"call_9","name":"f","arguments":"{}"}}\n\n\
            event: response.completed\ndata: {"type":"response.completed","sequence_number":7,"response":{"id":"resp_9","status":"completed","usage":{"input_tokens":7,"output_tokens":3,"output_tokens_details":{"reasoning_tokens":2}}}}\n\n
            """
        var decoder = ResponsesStreamDecoder()
        let events = try decoder.feed(ByteBuffer(string: sse)) + decoder.finish()
        #expect(events == [
            .start(id: "resp_9", model: "gpt-up"), .thinkingStart(index: 0), .thinkingDelta(index: 0, "Think"),
            .signatureDelta(index: 0, "openai:rs_9:ENC"), .blockStop(index: 0),
            .toolCallStart(index: 1, id: "call_9", name: "f"), .toolCallDelta(index: 1, "{}"), .blockStop(index: 1),
            .usage(TokenUsage(inputTokens: 7, outputTokens: 3, reasoningTokens: 2)), .finish(.toolCalls),
        ])
    }
}
