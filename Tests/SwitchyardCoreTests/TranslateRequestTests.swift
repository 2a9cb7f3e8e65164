import NIOCore
import Testing
@testable import SwitchyardCore

/// Requests, each direction, from the providers' documented shapes.
@Suite("Translation: requests")
struct TranslateRequestTests {
    func obj(_ text: String) throws -> JSONObject { try #require(try JSONValue.parse(text).objectValue) }

    // MARK: OpenAI client → Anthropic provider

    let openAIToolTurn = """
        {"model":"claude","temperature":1.5,"stop":"END","parallel_tool_calls":false,"tool_choice":"required","user":"u-1",
         "messages":[
          {"role":"system","content":"You are terse."},
          {"role":"developer","content":[{"type":"text","text":"Use metric units."}]},
          {"role":"user","content":[{"type":"text","text":"Weather in Paris?"},
             {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},
             {"type":"image_url","image_url":{"url":"https://example.com/cat.jpg","detail":"low"}}]},
          {"role":"assistant","content":"","tool_calls":[
             {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\\"city\\":\\"Paris\\"}"}},
             {"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{}"}}]},
          {"role":"tool","tool_call_id":"call_1","content":"18C"},
          {"role":"tool","tool_call_id":"call_2","content":"noon"},
          {"role":"user","content":"And tomorrow?"}],
         "tools":[{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}},
                  {"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{}}}}]}
        """

    @Test func openAIToAnthropic() throws {
        let r = try OpenAIChat.decodeRequest(try obj(openAIToolTurn))
        let a = try AnthropicMessages.encodeRequest(r, model: "claude-sonnet-4-6", options: .init(defaultMaxTokens: 4096))
        let v = JSONValue.object(a)
        #expect(v["model"]?.stringValue == "claude-sonnet-4-6")
        #expect(v["system"] == [["type": "text", "text": "You are terse."], ["type": "text", "text": "Use metric units."]])
        #expect(v["max_tokens"]?.intValue == 4096)  // Anthropic requires it; the model's default applies
        #expect(v["temperature"]?.stringValue == nil && v["temperature"]?.doubleValue == 1)  // clamped from 1.5
        #expect(v["stop_sequences"] == ["END"])
        #expect(v["tool_choice"] == ["type": "any", "disable_parallel_tool_use": true])
        #expect(v["metadata"] == ["user_id": "u-1"])
        let msgs = try #require(v["messages"]?.arrayValue)
        #expect(msgs.count == 3)
        // user: text, base64 image, URL image
        let user = try #require(msgs[0]["content"]?.arrayValue)
        #expect(user[1] == ["type": "image", "source": ["type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="]])
        #expect(user[2] == ["type": "image", "source": ["type": "url", "url": "https://example.com/cat.jpg"]])
        // assistant: empty text dropped, both calls as tool_use with parsed input
        #expect(msgs[1]["content"] == [
            ["type": "tool_use", "id": "call_1", "name": "get_weather", "input": ["city": "Paris"]],
            ["type": "tool_use", "id": "call_2", "name": "get_time", "input": .object([:])],
        ])
        // both tool results open the next user turn, then the new question, in one merged turn
        #expect(msgs[2]["content"] == [
            ["type": "tool_result", "tool_use_id": "call_1", "content": "18C"],
            ["type": "tool_result", "tool_use_id": "call_2", "content": "noon"],
            ["type": "text", "text": "And tomorrow?"],
        ])
        #expect(v["tools"]?.arrayValue?.first == ["name": "get_weather", "description": "Weather", "input_schema": ["type": "object", "properties": ["city": ["type": "string"]]]])
    }

    @Test func topLevelSystemStringOnChatCompletions() throws {
        // One of the seed products accepts `system` beside `messages` on Chat Completions.
        let r = try OpenAIChat.decodeRequest(try obj(#"{"model":"m","system":"Be brief.","messages":[{"role":"system","content":"And kind."},{"role":"user","content":"hi"}]}"#))
        #expect(r.system == [.text("Be brief."), .text("And kind.")])
        let a = JSONValue.object(try AnthropicMessages.encodeRequest(r, model: "c", options: .init()))
        #expect(a["system"] == [["type": "text", "text": "Be brief."], ["type": "text", "text": "And kind."]])
    }

    @Test func reasoningEffortBecomesThinkingAndDropsSampling() throws {
        let r = try OpenAIChat.decodeRequest(try obj(#"{"model":"m","reasoning_effort":"high","temperature":0.2,"top_k":5,"max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#))
        let v = JSONValue.object(try AnthropicMessages.encodeRequest(r, model: "c", options: .init()))
        #expect(v["thinking"] == ["type": "enabled", "budget_tokens": 16384])
        #expect((v["max_tokens"]?.intValue ?? 0) > 16384)  // the budget must fit under max_tokens
        #expect(v["temperature"] == nil && v["top_k"] == nil)  // Anthropic rejects both with thinking
    }

    @Test func meaningChangingParametersAre400() throws {
        let n2 = try OpenAIChat.decodeRequest(try obj(#"{"model":"m","n":2,"messages":[{"role":"user","content":"hi"}]}"#))
        #expect(throws: GatewayError.self) { try AnthropicMessages.encodeRequest(n2, model: "c", options: .init()) }
        do {
            _ = try AnthropicMessages.encodeRequest(n2, model: "c", options: .init())
        } catch {
            #expect(error.status == 400 && error.param == "n")
        }
        let lp = try OpenAIChat.decodeRequest(try obj(#"{"model":"m","logprobs":true,"messages":[{"role":"user","content":"hi"}]}"#))
        #expect(throws: GatewayError.self) { try Gemini.encodeRequest(lp) }
        let audio = try OpenAIChat.decodeRequest(try obj(#"{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]}"#))
        #expect(throws: GatewayError.self) { try AnthropicMessages.encodeRequest(audio, model: "c", options: .init()) }
        // ... but Gemini takes audio inline.
        let g = JSONValue.object(try Gemini.encodeRequest(audio))
        #expect(g["contents"]?.arrayValue?.first?["parts"]?.arrayValue?.first == ["inlineData": ["mimeType": "audio/wav", "data": "AAAA"]])
    }

    @Test func jsonSchemaBecomesAForcedToolForAnthropic() throws {
        let r = try OpenAIChat.decodeRequest(try obj(#"{"model":"m","response_format":{"type":"json_schema","json_schema":{"name":"city","schema":{"type":"object","properties":{"name":{"type":"string"}}}}},"messages":[{"role":"user","content":"hi"}]}"#))
        let v = JSONValue.object(try AnthropicMessages.encodeRequest(r, model: "c", options: .init()))
        #expect(v["tool_choice"] == ["type": "tool", "name": .string(AnthropicMessages.structuredOutputTool)])
        #expect(v["tools"]?.arrayValue?.last?["input_schema"] == ["type": "object", "properties": ["name": ["type": "string"]]])
        // and the forced call comes back as the message text
        let answer = try AnthropicMessages.decodeResponse(try obj(#"{"id":"msg_1","content":[{"type":"tool_use","id":"toolu_1","name":"structured_output","input":{"name":"Paris"}}],"stop_reason":"tool_use","usage":{"input_tokens":5,"output_tokens":3}}"#), structuredOutput: true)
        #expect(answer.content == [.text(#"{"name":"Paris"}"#)])
        #expect(answer.finish == .stop)
    }

    @Test func midConversationSystemKeepsItsPlace() throws {
        let r = try AnthropicMessages.decodeRequest(try obj(#"{"model":"m","max_tokens":10,"system":"top","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"system","content":"reminder"},{"role":"user","content":"c"}]}"#))
        #expect(r.system == [.text("top")])
        #expect(r.messages.map(\.role) == [.user, .assistant, .system, .user])
        // OpenAI keeps a system message in place …
        let o = JSONValue.object(OpenAIChat.encodeRequest(r, model: "g", maxTokensField: .maxTokens))
        #expect(o["messages"]?.arrayValue?.map { $0["role"]?.stringValue ?? "" } == ["system", "user", "assistant", "system", "user"])
        // … Anthropic (older models) gets it as a reminder in the user turn, position kept
        let a = JSONValue.object(try AnthropicMessages.encodeRequest(r, model: "c", options: .init()))
        let last = try #require(a["messages"]?.arrayValue?.last)
        #expect(last["content"] == [["type": "text", "text": "<system-reminder>\nreminder\n</system-reminder>"], ["type": "text", "text": "c"]])
    }

    @Test func thinkingSignaturesGoBackOnlyToTheirIssuer() throws {
        let r = ChatRequest.with(messages: [
            ChatMessage(role: .user, content: [.text("q")]),
            ChatMessage(role: .assistant, content: [
                .thinking("anthropic thought", signature: "EqoBAnthropicSig=="),
                .thinking("", signature: "gemini:R2VtaW5pU2ln"),
                .thinking("unsigned", signature: nil),
                .redactedThinking(data: "cmVkYWN0ZWQ="),
                .toolCall(id: "toolu_1", name: "f", arguments: "{}"),
            ]),
            ChatMessage(role: .user, content: [.toolResult(ToolResult(callID: "toolu_1", content: [.text("ok")]))]),
        ])
        let a = JSONValue.object(try AnthropicMessages.encodeRequest(r, model: "c", options: .init()))
        #expect(a["messages"]?.arrayValue?[1]["content"] == [
            ["type": "thinking", "thinking": "anthropic thought", "signature": "EqoBAnthropicSig=="],
            ["type": "redacted_thinking", "data": "cmVkYWN0ZWQ="],
            ["type": "tool_use", "id": "toolu_1", "name": "f", "input": .object([:])],
        ])
        let g = JSONValue.object(try Gemini.encodeRequest(r))
        #expect(g["contents"]?.arrayValue?[1] == ["role": "model", "parts": [["functionCall": ["name": "f", "args": .object([:])], "thoughtSignature": "R2VtaW5pU2ln"]]])
    }

    // MARK: Anthropic client → OpenAI provider

    @Test func anthropicToOpenAI() throws {
        let body = """
            {"model":"claude","max_tokens":512,"stream":true,"stop_sequences":["X"],"top_k":3,
             "system":[{"type":"text","text":"Be kind.","cache_control":{"type":"ephemeral"}}],
             "tool_choice":{"type":"tool","name":"Read"},
             "tools":[{"name":"Read","description":"Reads","input_schema":{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"file_path":{"type":"string"}},"required":["file_path"],"additionalProperties":false}}],
             "messages":[
              {"role":"user","content":[{"type":"text","text":"Read it"},{"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"/9j/"}}]},
              {"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"sig"},{"type":"text","text":"Reading."},{"type":"tool_use","id":"toolu_01","name":"Read","input":{"file_path":"/a"}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":[{"type":"text","text":"line 1"}]},{"type":"text","text":"continue"}]}]}
            """
        let r = try AnthropicMessages.decodeRequest(try obj(body))
        let v = JSONValue.object(OpenAIChat.encodeRequest(r, model: "gpt-5.1", maxTokensField: .maxCompletionTokens))
        #expect(v["max_completion_tokens"]?.intValue == 512)
        #expect(v["stop"] == ["X"])
        #expect(v["stream_options"] == ["include_usage": true])
        #expect(v["tool_choice"] == ["type": "function", "function": ["name": "Read"]])
        #expect(v["top_k"] == nil)  // OpenAI has no top_k: dropped, harmless
        let msgs = try #require(v["messages"]?.arrayValue)
        #expect(msgs.map { $0["role"]?.stringValue ?? "" } == ["system", "user", "assistant", "tool", "user"])
        #expect(msgs[0]["content"] == "Be kind.")
        #expect(msgs[1]["content"]?.arrayValue?[1] == ["type": "image_url", "image_url": ["url": "data:image/jpeg;base64,/9j/"]])
        #expect(msgs[2] == ["role": "assistant", "content": "Reading.", "tool_calls": [["id": "toolu_01", "type": "function", "function": ["name": "Read", "arguments": #"{"file_path":"/a"}"#]]]])
        #expect(msgs[3] == ["role": "tool", "tool_call_id": "toolu_01", "content": "line 1"])
        #expect(msgs[4] == ["role": "user", "content": "continue"])
    }

    // MARK: → Gemini provider, and Gemini clients

    @Test func toGeminiKeepsNamesIDsAndOrder() throws {
        let r = try OpenAIChat.decodeRequest(try obj("""
            {"model":"g","max_tokens":100,"temperature":0.7,"stop":["a","b"],"tool_choice":{"type":"function","function":{"name":"f"}},
             "messages":[{"role":"system","content":"sys"},{"role":"user","content":"q"},{"role":"user","content":"q2"},
              {"role":"assistant","content":null,"tool_calls":[{"id":"gmcall_abc","type":"function","function":{"name":"f","arguments":"{\\"x\\":1}"}},{"id":"call_9","type":"function","function":{"name":"f","arguments":"{}"}}]},
              {"role":"tool","tool_call_id":"gmcall_abc","content":"one"},{"role":"tool","tool_call_id":"call_9","content":"two"}],
             "tools":[{"type":"function","function":{"name":"f","parameters":{"$schema":"x","type":"object","properties":{"x":{"type":"integer","exclusiveMinimum":0}},"additionalProperties":false}}}]}
            """))
        let g = JSONValue.object(try Gemini.encodeRequest(r))
        #expect(g["systemInstruction"] == ["parts": [["text": "sys"]]])
        let contents = try #require(g["contents"]?.arrayValue)
        #expect(contents.count == 3)  // consecutive user turns merged
        #expect(contents[0] == ["role": "user", "parts": [["text": "q"], ["text": "q2"]]])
        // Gemini-issued id goes back untagged; a foreign id is not sent; the first call carries a signature.
        #expect(contents[1] == ["role": "model", "parts": [
            ["functionCall": ["name": "f", "args": ["x": 1], "id": "abc"], "thoughtSignature": .string(Gemini.skipSignature)],
            ["functionCall": ["name": "f", "args": .object([:])]],
        ]])
        #expect(contents[2] == ["role": "user", "parts": [
            ["functionResponse": ["name": "f", "response": ["output": "one"], "id": "abc"]],
            ["functionResponse": ["name": "f", "response": ["output": "two"]]],
        ]])
        #expect(g["toolConfig"] == ["functionCallingConfig": ["mode": "ANY", "allowedFunctionNames": ["f"]]])
        #expect(g["generationConfig"] == ["temperature": .number("0.7"), "maxOutputTokens": 100, "stopSequences": ["a", "b"]])
        // `$schema` goes; the constraints stay (parametersJsonSchema takes full JSON Schema)
        #expect(g["tools"]?.arrayValue?.first?["functionDeclarations"]?.arrayValue?.first?["parametersJsonSchema"] ==
                ["type": "object", "properties": ["x": ["type": "integer", "exclusiveMinimum": 0]], "additionalProperties": false])
        let six = try OpenAIChat.decodeRequest(try obj(#"{"model":"g","stop":["1","2","3","4","5","6"],"messages":[{"role":"user","content":"q"}]}"#))
        #expect(throws: GatewayError.self) { try Gemini.encodeRequest(six) }
    }

    @Test func geminiClientRequestsInBothSpellings() throws {
        let body = """
            {"contents":[{"role":"user","parts":[{"text":"a"},{"inline_data":{"mime_type":"image/png","data":"iVBO"}}]},
              {"role":"model","parts":[{"text":"thinking...","thought":true,"thoughtSignature":"czE="},{"functionCall":{"id":"c1","name":"get_w","args":{"city":"x"}},"thoughtSignature":"c2ln"}]},
              {"role":"user","parts":[{"functionResponse":{"id":"c1","name":"get_w","response":{"output":"sunny"}}}]}],
             "system_instruction":{"parts":[{"text":"be nice"}],"role":"user"},
             "tools":[{"functionDeclarations":[{"name":"get_w","parameters_json_schema":{"type":"object"}},{"name":"p","parameters":{"type":"OBJECT","properties":{"a":{"type":"STRING","nullable":true}}}}]}],
             "toolConfig":{"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["get_w"]}},
             "generationConfig":{"temperature":0.5,"maxOutputTokens":100,"thinkingConfig":{"include_thoughts":true,"thinking_budget":1024}}}
            """
        let r = try Gemini.decodeRequest(try obj(body), model: "gemini-2.5-flash", stream: true)
        #expect(r.system == [.text("be nice")])
        #expect(r.messages[0].content == [.text("a"), .image(.base64(mediaType: "image/png", data: "iVBO"))])
        #expect(r.messages[1].content == [
            .thinking("thinking...", signature: "gemini:czE="),
            .thinking("", signature: "gemini:c2ln"), .toolCall(id: "c1", name: "get_w", arguments: #"{"city":"x"}"#),
        ])
        #expect(r.messages[2].content == [.toolResult(ToolResult(callID: "c1", name: "get_w", content: [.text("sunny")]))])
        #expect(r.tools.map(\.name) == ["get_w", "p"])
        #expect(r.tools[1].parameters == ["type": "object", "properties": ["a": ["type": ["string", "null"]]]])
        #expect(r.toolChoice == .tool("get_w"))
        #expect(r.reasoning == .budget(1024) && r.maxTokens == 100 && r.stream)
    }

    @Test func foreignSignaturesSurviveAGeminiClientRoundTrip() throws {
        // An Anthropic signature goes to a Gemini client wrapped in base64 (its SDK keeps bytes), and
        // comes back as the same Anthropic signature on one merged thinking block.
        let answer = ChatResponse(id: "r", model: "m", content: [.thinking("step one", signature: "EqoBSig+/=="), .toolCall(id: "toolu_1", name: "f", arguments: "{}")], finish: .toolCalls, usage: nil)
        let parts = try #require(JSONValue.object(Gemini.encodeResponse(answer, model: "m"))["candidates"]?.arrayValue?.first?["content"]?["parts"]?.arrayValue)
        let wrapped = try #require(parts[0]["thoughtSignature"]?.stringValue)
        #expect(Base64.decode(wrapped) != nil)
        // The client sends the model turn back, its thought split in two streamed pieces.
        let back = try Gemini.decodeRequest(try obj("""
            {"contents":[{"role":"user","parts":[{"text":"q"}]},
              {"role":"model","parts":[{"text":"step ","thought":true},{"text":"one","thought":true,"thoughtSignature":"\(wrapped)"},{"functionCall":{"id":"toolu_1","name":"f","args":{}}}]},
              {"role":"user","parts":[{"functionResponse":{"id":"toolu_1","name":"f","response":{"output":"ok"}}}]}]}
            """), model: "m", stream: false)
        #expect(back.messages[1].content == [.thinking("step one", signature: "EqoBSig+/=="), .toolCall(id: "toolu_1", name: "f", arguments: "{}")])
        #expect(ThinkingSignature.unwrapFromGemini(ThinkingSignature.wrapForGemini(redacted: "abc")) == .redacted("abc"))
        #expect(ThinkingSignature.unwrapFromGemini("R2VtaW5p") == .gemini("gemini:R2VtaW5p"))
    }

    @Test func toolResultsWithoutIDsFindTheirCallsByName() throws {
        let r = try Gemini.decodeRequest(try obj("""
            {"contents":[{"role":"user","parts":[{"text":"q"}]},
              {"role":"model","parts":[{"functionCall":{"name":"a","args":{}}},{"functionCall":{"name":"b","args":{}}}]},
              {"role":"user","parts":[{"functionResponse":{"name":"b","response":{"output":"B"}}},{"functionResponse":{"name":"a","response":{"output":"A"}}}]}]}
            """), model: "g", stream: false)
        let calls = r.messages[1].content.compactMap { p -> String? in if case .toolCall(let id, _, _) = p { return id } else { return nil } }
        let results = r.messages[2].content.compactMap { p -> String? in if case .toolResult(let t) = p { return t.callID } else { return nil } }
        #expect(results == [calls[1], calls[0]])
    }
}

extension ChatRequest {
    static func with(messages: [ChatMessage]) -> ChatRequest {
        var r = ChatRequest(model: "m")
        r.messages = messages
        return r
    }
}
