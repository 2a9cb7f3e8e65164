import Foundation
import NIOCore
import Testing
@testable import SwitchyardCore

/// Responses and streams, each direction, from the providers' documented examples.
@Suite("Translation: responses and usage")
struct TranslateResponseTests {
    func obj(_ text: String) throws -> JSONObject { try #require(try JSONValue.parse(text).objectValue) }

    @Test func anthropicUsageIsNotDoubleCounted() throws {
        // Anthropic's input_tokens excludes cache reads and writes.
        let r = try AnthropicMessages.decodeResponse(try obj("""
            {"id":"msg_01","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"Hi"}],
             "stop_reason":"end_turn","stop_sequence":null,
             "usage":{"input_tokens":25,"output_tokens":8,"cache_creation_input_tokens":10,"cache_read_input_tokens":5}}
            """))
        #expect(r.usage == TokenUsage(inputTokens: 40, outputTokens: 8, cachedInputTokens: 5, cacheCreationTokens: 10))
        let o = JSONValue.object(OpenAIChat.encodeResponse(r, model: "m", created: 1))
        #expect(o["usage"]?["prompt_tokens"]?.intValue == 40)
        #expect(o["usage"]?["prompt_tokens_details"]?["cached_tokens"]?.intValue == 5)
        #expect(o["usage"]?["total_tokens"]?.intValue == 48)
        // and back: the same three numbers
        let a = JSONValue.object(AnthropicMessages.encodeResponse(r, model: "m"))
        #expect(a["usage"] == ["input_tokens": 25, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 8])
    }

    @Test func openAIUsageToAnthropic() throws {
        // OpenAI's prompt-caching example: prompt_tokens includes cached_tokens.
        let r = try OpenAIChat.decodeResponse(try obj("""
            {"id":"chatcmpl-1","object":"chat.completion","created":1730000000,"model":"gpt",
             "choices":[{"index":0,"finish_reason":"tool_calls","logprobs":null,"message":{"role":"assistant","content":null,"refusal":null,"annotations":[],
               "tool_calls":[{"id":"call_abc","type":"function","function":{"name":"get_weather","arguments":"{\\"city\\":\\"Paris\\"}"}}]}}],
             "usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},
               "completion_tokens_details":{"reasoning_tokens":0}}}
            """))
        let a = JSONValue.object(AnthropicMessages.encodeResponse(r, model: "m"))
        #expect(a["usage"] == ["input_tokens": 86, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1920, "output_tokens": 300])
        #expect(a["stop_reason"] == "tool_use")
        #expect(a["content"] == [["type": "tool_use", "id": "call_abc", "name": "get_weather", "input": ["city": "Paris"]]])
    }

    @Test func geminiUsageAndFunctionCallFinish() throws {
        // A real Gemini 3.1 response: thoughts are outside candidatesTokenCount; a call still says STOP.
        let r = try Gemini.decodeResponse(try obj("""
            {"candidates":[{"content":{"parts":[{"functionCall":{"name":"bash","args":{"command":"ls -R"},"id":"flveizpn"},"thoughtSignature":"EvwD"}],"role":"model"},"finishReason":"STOP","index":0}],
             "usageMetadata":{"promptTokenCount":1964,"candidatesTokenCount":16,"totalTokenCount":2067,"thoughtsTokenCount":87},
             "modelVersion":"gemini-3.1-pro-preview","responseId":"3XX0"}
            """))
        #expect(r.finish == .toolCalls)
        #expect(r.usage == TokenUsage(inputTokens: 1964, outputTokens: 103, reasoningTokens: 87))
        #expect(r.content == [.thinking("", signature: "gemini:EvwD"), .toolCall(id: "gmcall_flveizpn", name: "bash", arguments: #"{"command":"ls -R"}"#)])
        let o = JSONValue.object(OpenAIChat.encodeResponse(r, model: "m", created: 1))
        #expect(o["choices"]?.arrayValue?.first?["finish_reason"] == "tool_calls")
        #expect(o["usage"]?["completion_tokens_details"]?["reasoning_tokens"]?.intValue == 87)
        // A Gemini client gets the call back with Gemini's own id and signature.
        let g = JSONValue.object(Gemini.encodeResponse(r, model: "m"))
        #expect(g["candidates"]?.arrayValue?.first?["content"]?["parts"] == [["functionCall": ["id": "flveizpn", "name": "bash", "args": ["command": "ls -R"]], "thoughtSignature": "EvwD"]])
        #expect(g["usageMetadata"] == ["promptTokenCount": 1964, "candidatesTokenCount": 16, "totalTokenCount": 2067, "thoughtsTokenCount": 87])
    }

    @Test(arguments: [
        ("end_turn", FinishReason.stop, "stop"), ("max_tokens", .length, "length"), ("tool_use", .toolCalls, "tool_calls"),
        ("stop_sequence", .stopSequence("X"), "stop"), ("refusal", .refusal, "content_filter"), ("pause_turn", .pauseTurn, "stop"),
        ("model_context_window_exceeded", .length, "length"),
    ])
    func anthropicFinishReasons(raw: String, canonical: FinishReason, openAI: String) {
        #expect(AnthropicMessages.finish(raw, stopSequence: raw == "stop_sequence" ? "X" : nil) == canonical)
        #expect(OpenAIChat.finishString(canonical) == openAI)
    }

    @Test(arguments: [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal")])
    func openAIFinishReasons(raw: String, anthropic: String) {
        #expect(AnthropicMessages.finishString(OpenAIChat.finish(raw)).reason == anthropic)
    }

    @Test func geminiFinishReasons() {
        #expect(Gemini.finish("MAX_TOKENS", hasCalls: false) == .length)
        #expect(Gemini.finish("SAFETY", hasCalls: false) == .contentFilter)
        #expect(Gemini.finish("STOP", hasCalls: true) == .toolCalls)
        #expect(Gemini.finishString(.length) == "MAX_TOKENS")
    }

    @Test func reasoningContentBecomesThinkingForAnthropicClients() throws {
        let r = try OpenAIChat.decodeResponse(try obj(#"{"id":"x","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"42","reasoning_content":"thinking hard"}}]}"#))
        let a = JSONValue.object(AnthropicMessages.encodeResponse(r, model: "m"))
        #expect(a["content"] == [["type": "thinking", "thinking": "thinking hard", "signature": ""], ["type": "text", "text": "42"]])
    }

    @Test func anthropicThinkingReachesOpenAIClientsWithSignatures() throws {
        let r = try AnthropicMessages.decodeResponse(try obj(#"{"id":"msg_1","content":[{"type":"thinking","thinking":"t","signature":"SIG"},{"type":"text","text":"a"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}"#))
        let message = JSONValue.object(OpenAIChat.encodeResponse(r, model: "m", created: 1))["choices"]?.arrayValue?.first?["message"]
        #expect(message?["reasoning_content"] == "t")
        #expect(message?["thinking_blocks"] == [["type": "thinking", "thinking": "t", "signature": "SIG"]])
        // and a client that sends them back (LiteLLM convention) gets them to Anthropic byte-exact
        let back = try OpenAIChat.decodeRequest(try obj(#"{"model":"m","messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a","thinking_blocks":[{"type":"thinking","thinking":"t","signature":"SIG"}]}]}"#))
        #expect(back.messages[1].content.first == .thinking("t", signature: "SIG"))
    }
}

@Suite("Translation: streams")
struct TranslateStreamTests {
    /// Runs `stream` through a translating processor in pieces of `size` bytes.
    func translate(_ stream: String, from: WireFormat, to: WireFormat, size: Int = 7, request: ChatRequest = ChatRequest(model: "m")) throws -> String {
        var request = request
        request.includeUsage = true
        var t = TranslatingStream(from: from, to: to, request: request, clientModel: "client-model", created: 1)
        var out = ""
        let bytes = Array(stream.utf8)
        var i = 0
        while i < bytes.count {
            let end = min(bytes.count, i + size)
            out += String(buffer: try t.process(ByteBuffer(bytes: bytes[i..<end])))
            i = end
        }
        out += String(buffer: t.finish())
        return out
    }

    func events(_ sse: String) -> [(event: String?, data: JSONValue)] {
        var scanner = SSEScanner()
        scanner.feed(ByteBuffer(string: sse))
        var out: [(String?, JSONValue)] = []
        while let e = try? scanner.next() {
            guard let d = e.dataString else { continue }
            out.append((e.event, (try? JSONValue.parse(d)) ?? .string(d)))
        }
        return out
    }

    // The anthropic-sdk-python fixture tests/lib/streaming/fixtures/basic_response.txt.
    let anthropicBasic = """
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK","type":"message","role":"assistant","content":[],"model":"claude-3-opus-latest","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":1}}}

        event: content_block_start
        data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

        event: ping
        data: {"type": "ping"}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":0}

        event: message_delta
        data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":6}}

        event: message_stop
        data: {"type":"message_stop"}


        """

    // The anthropic-sdk-python fixture tool_use_response.txt (text block trimmed).
    let anthropicToolUse = """
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],"model":"claude","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":100,"cache_read_input_tokens":50,"output_tokens":1}}}

        event: content_block_start
        data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_01NRLabsLyVHZPKxbKvkfSMn","name":"get_weather","caller":{"type":"direct"},"input":{}}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\\"locati"}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"on\\": \\"Paris\\"}"}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":0}

        event: message_delta
        data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":65}}

        event: message_stop
        data: {"type":"message_stop"}


        """

    @Test(arguments: [1, 7, 4096])
    func anthropicTextToOpenAI(size: Int) throws {
        let out = events(try translate(anthropicBasic, from: .anthropic, to: .openAI, size: size))
        #expect(out.last?.data == "[DONE]")
        let chunks = out.dropLast().map(\.data)
        #expect(chunks.allSatisfy { $0["model"] == "client-model" && $0["object"] == "chat.completion.chunk" })
        #expect(chunks.compactMap { $0["choices"]?.arrayValue?.first?["delta"]?["content"]?.stringValue }.joined() == "Hello there")
        #expect(chunks.compactMap { $0["choices"]?.arrayValue?.first?["finish_reason"]?.stringValue } == ["stop"])
        // usage comes last, after the finish chunk (the SDK keeps the last chunk's usage)
        #expect(chunks.last?["choices"] == .array([]))
        #expect(chunks.last?["usage"]?["prompt_tokens"]?.intValue == 11 && chunks.last?["usage"]?["completion_tokens"]?.intValue == 6)
    }

    @Test(arguments: [1, 5, 4096])
    func anthropicToolUseToOpenAI(size: Int) throws {
        let chunks = events(try translate(anthropicToolUse, from: .anthropic, to: .openAI, size: size)).dropLast().map(\.data)
        let fragments = chunks.compactMap { $0["choices"]?.arrayValue?.first?["delta"]?["tool_calls"]?.arrayValue?.first }
        // id, type and name only in the first fragment: the SDK concatenates repeats
        #expect(fragments.first?["id"] == "toolu_01NRLabsLyVHZPKxbKvkfSMn" && fragments.first?["function"]?["name"] == "get_weather")
        #expect(fragments.dropFirst().allSatisfy { $0["id"] == nil && $0["type"] == nil && $0["function"]?["name"] == nil })
        #expect(fragments.allSatisfy { $0["index"] == 0 })
        #expect(fragments.compactMap { $0["function"]?["arguments"]?.stringValue }.joined() == #"{"location": "Paris"}"#)
        #expect(chunks.compactMap { $0["choices"]?.arrayValue?.first?["finish_reason"]?.stringValue } == ["tool_calls"])
        #expect(chunks.last?["usage"]?["prompt_tokens"]?.intValue == 150)
        #expect(chunks.last?["usage"]?["prompt_tokens_details"]?["cached_tokens"]?.intValue == 50)
    }

    // The OpenAI chunk sequence (text, then a tool call in fragments, finish, usage chunk).
    let openAIStream = """
        data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}

        data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"reasoning_content":"Let me"},"finish_reason":null}],"usage":null}

        data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Let me check."},"finish_reason":null}],"usage":null}

        data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_abc","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}],"usage":null}

        data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\":"}}]},"finish_reason":null}],"usage":null}

        data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\\"Paris\\"}"}}]},"finish_reason":null}],"usage":null}

        data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}

        data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":30,"total_tokens":2036,"prompt_tokens_details":{"cached_tokens":1920}}}

        data: [DONE]


        """

    @Test(arguments: [1, 9, 4096])
    func openAIToAnthropicEvents(size: Int) throws {
        let out = events(try translate(openAIStream, from: .openAI, to: .anthropic, size: size))
        // every event carries its `event:` line, equal to data.type
        #expect(out.allSatisfy { $0.event != nil && $0.event == $0.data["type"]?.stringValue })
        let names = out.map { $0.event ?? "" }
        #expect(names == [
            "message_start", "ping",
            "content_block_start", "content_block_delta", "content_block_stop",  // thinking
            "content_block_start", "content_block_delta", "content_block_stop",  // text
            "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",  // tool_use
            "message_delta", "message_stop",
        ])
        let starts = out.filter { $0.event == "content_block_start" }.map(\.data)
        #expect(starts.map { $0["index"]?.intValue ?? -1 } == [0, 1, 2])  // 0-based in start order
        #expect(starts.map { $0["content_block"]?["type"]?.stringValue ?? "" } == ["thinking", "text", "tool_use"])
        #expect(starts[2]["content_block"] == ["type": "tool_use", "id": "call_abc", "name": "get_weather", "input": .object([:])])
        let json = out.filter { $0.data["delta"]?["type"] == "input_json_delta" }.compactMap { $0.data["delta"]?["partial_json"]?.stringValue }.joined()
        #expect(json == #"{"city":"Paris"}"#)
        let delta = try #require(out.first { $0.event == "message_delta" }?.data)
        #expect(delta["delta"]?["stop_reason"] == "tool_use")
        #expect(delta["usage"] == ["input_tokens": 86, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1920, "output_tokens": 30])
        #expect(out.first?.data["message"]?["model"] == "client-model")
    }

    // A real Gemini 2.5 Flash stream with thoughts, text carrying a signature, then a call (CRLF framing).
    let geminiStream = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"**Calculating**\",\"thought\":true}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":391,\"totalTokenCount\":463,\"thoughtsTokenCount\":72},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"HTES\"}\r\n\r\n"
        + "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Yesterday was 2025-11-10.\\n\",\"thoughtSignature\":\"CikB0e2K\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":391,\"candidatesTokenCount\":12,\"totalTokenCount\":505,\"thoughtsTokenCount\":102},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"HTES\"}\r\n\r\n"
        + "data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"get_weather\",\"args\":{\"city\":\"shanghai\",\"date\":\"2025-11-10\"}}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0,\"finishMessage\":\"Model generated function call(s).\"}],\"usageMetadata\":{\"promptTokenCount\":391,\"candidatesTokenCount\":43,\"totalTokenCount\":536,\"thoughtsTokenCount\":102},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"HTES\"}\r\n\r\n"

    @Test(arguments: [1, 13, 4096])
    func geminiToAnthropic(size: Int) throws {
        let out = events(try translate(geminiStream, from: .gemini, to: .anthropic, size: size))
        let starts = out.filter { $0.event == "content_block_start" }.map { $0.data["content_block"]?["type"]?.stringValue ?? "" }
        #expect(starts == ["thinking", "thinking", "text", "tool_use"])
        let signature = out.first { $0.data["delta"]?["type"] == "signature_delta" }?.data["delta"]?["signature"]
        #expect(signature == "gemini:CikB0e2K")
        let delta = try #require(out.first { $0.event == "message_delta" }?.data)
        #expect(delta["delta"]?["stop_reason"] == "tool_use")
        #expect(delta["usage"]?["output_tokens"]?.intValue == 145)
        #expect(delta["usage"]?["input_tokens"]?.intValue == 391)
        #expect(out.last?.event == "message_stop")
    }

    @Test func geminiToOpenAIThenBackToGemini() throws {
        let chunks = events(try translate(geminiStream, from: .gemini, to: .openAI)).dropLast().map(\.data)
        let call = chunks.compactMap { $0["choices"]?.arrayValue?.first?["delta"]?["tool_calls"]?.arrayValue?.first }.first
        #expect(call?["function"]?["name"] == "get_weather")
        #expect(chunks.compactMap { $0["choices"]?.arrayValue?.first?["delta"]?["reasoning_content"]?.stringValue }.joined() == "**Calculating**")
        // OpenAI → Gemini client: the call arrives whole, as Gemini sends calls
        let gem = events(try translate(openAIStream, from: .openAI, to: .gemini, size: 3)).map(\.data)
        let calls = gem.flatMap { $0["candidates"]?.arrayValue?.first?["content"]?["parts"]?.arrayValue ?? [] }.compactMap { $0["functionCall"] }
        #expect(calls == [["id": "call_abc", "name": "get_weather", "args": ["city": "Paris"]]])
        #expect(gem.last?["candidates"]?.arrayValue?.first?["finishReason"] == "STOP")
        #expect(gem.last?["usageMetadata"]?["promptTokenCount"]?.intValue == 2006)
    }

    @Test func streamThatEndsWithoutFinishingIsAnError() throws {
        let cut = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n"
        let out = events(try translate(cut, from: .openAI, to: .anthropic))
        #expect(out.last?.event == "error")
        #expect(out.last?.data["error"]?["type"] == "api_error")
        #expect(!out.contains { $0.event == "message_stop" })
    }

    @Test func upstreamErrorEventReachesTheClientInItsFormat() throws {
        let overloaded = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
        let out = events(try translate(overloaded, from: .anthropic, to: .openAI))
        #expect(out.last?.data["error"]?["message"] == "Overloaded")
        #expect(!out.contains { $0.data == "[DONE]" })
    }
}
