import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import SwitchyardCore
import SwitchyardMock
@testable import SwitchyardServer
import SwitchyardStore
import Testing

@Suite("Translation through the server")
struct TranslationServerTests {
    /// The harness plus Anthropic and Gemini providers on the same mock.
    static func withFormats(_ extra: @escaping @Sendable (inout GatewayConfig) -> Void = { _ in }, _ body: @Sendable (Harness) async throws -> Void) async throws {
        try await Harness.run(configure: { c, port in
            c.providers.append(ProviderConfig(name: "ant", type: .anthropic, baseURL: "http://127.0.0.1:\(port)/v1", apiKey: "k"))
            c.providers.append(ProviderConfig(name: "gem", type: .gemini, baseURL: "http://127.0.0.1:\(port)", apiKey: "k"))
            c.models.append(ModelConfig(name: "claude-up", provider: "ant", upstream: "claude-sonnet-4-6"))
            c.models.append(ModelConfig(name: "gemini-up", provider: "gem"))
            c.models.append(ModelConfig(name: "claude-think", provider: "ant", thinking: .budget(4000), maxTokens: 1000))
            extra(&c)
        }, body)
    }

    @Test func imageURLsToPrivateAddressesAreRefused() async throws {
        try await Self.withFormats { h in
            let key = try await h.key()
            let body = #"{"model":"gemini-up","messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"image_url","image_url":{"url":"\#(h.mockURL)/mock/stats"}}]}]}"#
            let r = try await h.request("/v1/chat/completions", key: key, body: body)
            #expect(r.status == 400)
            #expect(r.errorCode == "invalid_media_url")
            #expect(r.json?["error"]?["message"]?.stringValue?.contains("private or local address") == true)
            let scheme = try await h.request("/v1/chat/completions", key: key, body: #"{"model":"gemini-up","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"file:///etc/passwd"}}]}]}"#)
            #expect(scheme.status == 400)
        }
    }

    @Test func addressClassification() {
        for a in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "::", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "64:ff9b::a00:1", "224.0.0.1"] {
            #expect(!MediaFetcher.isPublic(a), "\(a) must count as private")
        }
        for a in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            #expect(MediaFetcher.isPublic(a), "\(a) is public")
        }
    }

    @Test func anthropicErrorsCarryRequestIDAndTheirFormat() async throws {
        try await Self.withFormats { h in
            let r = try await h.request("/v1/messages", key: "sy-bad", body: #"{"model":"claude-up","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#)
            #expect(r.status == 401)
            #expect(r.json?["type"] == "error")
            #expect(r.json?["error"]?["type"] == "authentication_error")
            #expect(r.headers.first(name: "request-id") == r.headers.first(name: "x-request-id"))
            let key = try await h.key()
            let unknown = try await h.request("/api/v1/messages?beta=true", key: key, body: #"{"model":"nope","max_tokens":5,"messages":[]}"#)
            #expect(unknown.status == 404 && unknown.json?["error"]?["type"] == "not_found_error")
            let gem = try await h.request("/v1beta/models/nope:generateContent", key: key, body: #"{"contents":[]}"#)
            #expect(gem.json?["error"]?["status"] == "NOT_FOUND" && gem.json?["error"]?["code"] == 404)
        }
    }

    @Test func overloadedIs529ForAnthropicClientsAnd503ForOthers() async throws {
        try await Self.withFormats { h in
            let key = try await h.key()
            let a = try await h.request("/v1/messages", key: key, body: #"{"model":"claude-up","max_tokens":5,"messages":[{"role":"user","content":"[[mock status=529]]"}]}"#)
            #expect(a.status == 529 && a.json?["error"]?["type"] == "overloaded_error")
            let o = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "claude-up", content: "[[mock status=529]]"))
            #expect(o.status == 503)
            #expect(o.json?["error"]?["message"]?.stringValue?.contains("mock upstream error") == true)
        }
    }

    @Test func providersRejectingTheGatewayKeyAre502InEveryFormat() async throws {
        try await Harness.run(mock: .init(requiredKey: "right"), configure: { c, port in
            c.providers.append(ProviderConfig(name: "ant", type: .anthropic, baseURL: "http://127.0.0.1:\(port)", apiKey: "wrong"))
            c.providers.append(ProviderConfig(name: "gem", type: .gemini, baseURL: "http://127.0.0.1:\(port)", apiKey: "wrong"))
            c.models.append(ModelConfig(name: "claude-up", provider: "ant"))
            c.models.append(ModelConfig(name: "gemini-up", provider: "gem"))
        }) { h in
            let key = try await h.key()
            for model in ["claude-up", "gemini-up"] {
                let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: model))
                #expect(r.status == 502, "\(model)")
                #expect(r.errorCode == "upstream_auth_failed", "\(model)")
            }
        }
    }

    @Test func anthropicPassthroughGetsDefaultsItRequires() async throws {
        try await Self.withFormats { h in
            let key = try await h.key()
            // No max_tokens: Anthropic requires one, so the model's default is added.
            let r = try await h.request("/v1/messages", key: key, body: #"{"model":"claude-up","messages":[{"role":"user","content":"hi"}]}"#)
            #expect(r.status == 200)
            #expect(h.lastUpstreamRequest()?["body"]?["max_tokens"] == 8192)
            // A thinking model: thinking is turned on, max_tokens raised above the budget, temperature removed.
            let t = try await h.request("/v1/messages", key: key, body: #"{"model":"claude-think","max_tokens":1000,"temperature":0.3,"messages":[{"role":"user","content":"hi"}]}"#)
            #expect(t.status == 200, "\(t.body)")
            let sent = try #require(h.lastUpstreamRequest()?["body"])
            #expect(sent["thinking"] == ["type": "enabled", "budget_tokens": 4000])
            #expect((sent["max_tokens"]?.intValue ?? 0) > 4000)
            #expect(sent["temperature"] == nil)
            #expect(t.json?["content"]?.arrayValue?.first?["type"] == "thinking")
            // Unknown fields and headers pass through untouched.
            _ = try await h.request("/v1/messages", key: key, body: #"{"model":"claude-up","max_tokens":5,"future_field":{"x":1},"messages":[{"role":"user","content":"hi"}]}"#,
                                    headers: [("anthropic-beta", "a-2026,b-2027"), ("anthropic-version", "2023-06-01")])
            let seen = try #require(h.lastUpstreamRequest())
            #expect(seen["body"]?["future_field"] == ["x": 1])
            #expect(seen["headers"]?["anthropic-beta"] == "a-2026,b-2027")
            #expect(seen["headers"]?["anthropic-version"] == "2023-06-01")
            #expect(seen["path"] == "/v1/messages")  // base_url given with /v1 is tolerated
        }
    }

    @Test func openAIStreamsToOpenAIDropTheUsageChunkTheClientDidNotAskFor() async throws {
        try await Self.withFormats { h in
            let key = try await h.key()
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(stream: true))
            #expect(h.lastUpstreamRequest()?["body"]?["stream_options"] == ["include_usage": true])
            let chunks = sseData(r.body).dropLast().compactMap { try? JSONValue.parse($0) }
            #expect(!chunks.contains { $0["choices"] == .array([]) })
            #expect(sseData(r.body).last == "[DONE]")
        }
    }

    @Test func geminiStreamsAreSSEForGeminiClients() async throws {
        try await Self.withFormats { h in
            let key = try await h.key()
            for model in ["gpt-5.1", "claude-up", "gemini-up"] {
                let r = try await h.request("/v1beta/models/\(model):streamGenerateContent?alt=sse", key: nil,
                                            body: #"{"contents":[{"role":"user","parts":[{"text":"Hi"}]}]}"#, headers: [("x-goog-api-key", key)])
                #expect(r.status == 200, "\(model): \(r.body)")
                let chunks = sseData(r.body).compactMap { try? JSONValue.parse($0) }
                let text = chunks.flatMap { $0["candidates"]?.arrayValue?.first?["content"]?["parts"]?.arrayValue ?? [] }.compactMap { $0["text"]?.stringValue }.joined()
                #expect(text.contains("You said: Hi"), "\(model)")
                #expect(chunks.last?["candidates"]?.arrayValue?.first?["finishReason"] == "STOP", "\(model)")
                #expect(chunks.last?["modelVersion"]?.stringValue == model)
            }
        }
    }
}

@Suite("Token estimator")
struct TokenEstimatorTests {
    @Test func countsWordsPunctuationAndScripts() {
        #expect(TokenEstimator.text("") == 0)
        #expect(TokenEstimator.text("Hello world") == 4)  // runs longer than 4 letters cost a second token
        #expect(TokenEstimator.text("a b c") == 3)
        #expect(TokenEstimator.text("x == y") == 3)
        #expect(TokenEstimator.text("日本語") == 3)
        #expect(TokenEstimator.text("café") == 2)
    }

    @Test func requestEstimateIncludesOverheads() {
        var r = ChatRequest(model: "m")
        r.messages = [ChatMessage(role: .user, content: [.text("hi")])]
        let base = TokenEstimator.estimate(r)
        r.messages[0].content.append(.image(.url("https://x/y.png")))
        #expect(TokenEstimator.estimate(r) == base + 1600)
    }
}
