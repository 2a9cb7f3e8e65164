import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import SwitchyardMock
import SwitchyardStore
import SwitchyardCore
@testable import SwitchyardServer
import Testing

@Suite("Chat completions end to end")
struct ChatCompletionsTests {
    @Test func nonStreamRelaysWithClientFacingModelName() async throws {
        try await Harness.run { h in
            let key = try await h.key()
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat())
            #expect(r.status == 200)
            #expect(r.json?["model"]?.stringValue == "gpt-5.1")
            #expect(r.json?["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue?.contains("You said: Hello!") == true)
            #expect(r.json?["usage"]?["total_tokens"]?.intValue ?? 0 > 0)
            #expect(r.headers.first(name: "content-type") == "application/json")
        }
    }

    @Test func forwardsUnknownFieldsUntouchedAndOnlyRewritesModel() async throws {
        try await Harness.run { h in
            let key = try await h.key()
            let body = #"{"model":"gpt-5.1","temperature":0.25,"x_vendor":{"top_k":[1,2.50]},"messages":[{"role":"user","content":"hi"}]}"#
            let r = try await h.request("/v1/chat/completions", key: key, body: body)
            #expect(r.status == 200)
            let upstream = try #require(h.lastUpstreamRequest())
            #expect(upstream["body"] == (try JSONValue.parse(#"{"model":"mock-upstream-model","temperature":0.25,"x_vendor":{"top_k":[1,2.50]},"messages":[{"role":"user","content":"hi"}]}"#)))
            #expect(upstream["path"]?.stringValue == "/v1/chat/completions")
        }
    }

    /// A large prompt (a coding agent's conversation) takes the path that lets the upstream client drop
    /// the body once sent, and arrives through small client reads: it must reach the provider whole,
    /// with the right Content-Length, and the stream must come back complete.
    @Test func aLargePromptReachesTheProviderWholeAndStreamsBack() async throws {
        try await Harness.run { h in
            let key = try await h.key()
            let prompt = String(repeating: "0123456789abcdef", count: 12_500)  // 200,000 bytes
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(stream: true, content: prompt))
            #expect(r.status == 200)
            #expect(r.body.contains("data: [DONE]"))
            let upstream = try #require(h.lastUpstreamRequest())
            let sent = upstream["body"]?["messages"]?.arrayValue?.first?["content"]?.stringValue
            #expect(sent == prompt)
            let length = upstream["headers"]?["content-length"]?.stringValue.flatMap { Int($0) } ?? 0
            #expect(length > 200_000)
        }
    }

    @Test func sendsTheProviderKeyUpstreamNeverTheClientKey() async throws {
        try await Harness.run { h in
            let key = try await h.key()
            _ = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(), headers: [("x-request-id", "trace-42")])
            let headers = try #require(h.lastUpstreamRequest()?["headers"])
            #expect(headers["authorization"]?.stringValue == "Bearer upstream-secret")
            #expect(headers["x-request-id"]?.stringValue == "trace-42")
            #expect(!(h.lastUpstreamRequest()?.jsonString.contains(key) ?? true))
        }
    }

    @Test func requestIDIsEchoedOrGenerated() async throws {
        try await Harness.run { h in
            let key = try await h.key()
            let mine = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(), headers: [("x-request-id", "abc-123")])
            #expect(mine.headers.first(name: "x-request-id") == "abc-123")
            let generated = try await h.request("/v1/chat/completions", key: key, body: Harness.chat())
            #expect(generated.headers.first(name: "x-request-id")?.hasPrefix("req_") == true)
            // An unsafe client id is replaced, not echoed.
            let unsafe = try await h.request("/v1/models", key: key, headers: [("x-request-id", "bad id with spaces")])
            #expect(unsafe.headers.first(name: "x-request-id")?.hasPrefix("req_") == true)
            // Errors carry it too.
            let failed = try await h.request("/v1/chat/completions", key: "nope", body: Harness.chat(), headers: [("x-request-id", "err-1")])
            #expect(failed.headers.first(name: "x-request-id") == "err-1")
        }
    }

    @Test func streamRelaysEveryEventWithRewrittenModel() async throws {
        try await Harness.run(mock: .init(chunks: 5)) { h in
            let key = try await h.key()
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(stream: true, extra: #""stream_options":{"include_usage":true},"#))
            #expect(r.status == 200)
            #expect(r.headers.first(name: "content-type")?.hasPrefix("text/event-stream") == true)
            let data = sseData(r.body)
            #expect(data.last == "[DONE]")
            let chunks = data.dropLast().compactMap { try? JSONValue.parse($0) }
            #expect(chunks.count == 8)  // role, 5 content chunks, finish, usage
            #expect(chunks.allSatisfy { $0["model"]?.stringValue == "gpt-5.1" })
            let text = chunks.compactMap { $0["choices"]?.arrayValue?.first?["delta"]?["content"]?.stringValue }.joined()
            #expect(text.contains("You said: Hello!"))
            #expect(chunks.last?["usage"]?["prompt_tokens"]?.intValue ?? 0 > 0)
        }
    }

    @Test func streamIsATrueRelayNotBuffered() async throws {
        // The mock pauses 2 s after its first events; the client must see them before the mock finishes.
        try await Harness.run(mock: .init(chunkDelayMs: 400, chunks: 6)) { h in
            let key = try await h.key()
            var r = HTTPClientRequest(url: h.gatewayURL + "/v1/chat/completions")
            r.method = .POST
            r.headers.add(name: "authorization", value: "Bearer \(key)")
            r.body = .bytes(ByteBuffer(string: Harness.chat(stream: true)))
            let response = try await h.client.execute(r, timeout: .seconds(30))
            var received = ""
            for try await chunk in response.body {
                received += String(buffer: chunk)
                if received.contains("\"content\":\"") { break }
            }
            let counters = try await h.mockCounters()
            #expect(counters["streams_completed"]?.intValue == 0, "the first content event arrived only after the upstream finished")
            #expect(counters["active_streams"]?.intValue == 1)
        }
    }

    @Test func clientDisconnectCancelsTheUpstreamAtOnce() async throws {
        // 10 s between chunks: only noticing the disconnect itself (not a failed write) cancels in time.
        try await Harness.run(mock: .init(chunkDelayMs: 10_000, chunks: 100)) { h in
            let key = try await h.key()
            let task = Task {
                var r = HTTPClientRequest(url: h.gatewayURL + "/v1/chat/completions")
                r.method = .POST
                r.headers.add(name: "authorization", value: "Bearer \(key)")
                r.body = .bytes(ByteBuffer(string: Harness.chat(stream: true)))
                let response = try await h.client.execute(r, timeout: .seconds(60))
                for try await _ in response.body {}
            }
            #expect(try await h.eventually { try await h.mockCounters()["active_streams"]?.intValue == 1 })
            task.cancel()  // drops the client connection
            let cancelled = try await h.eventually(timeout: .seconds(5)) {
                try await h.mockCounters()["streams_cancelled"]?.intValue == 1
            }
            #expect(cancelled, "the upstream stream kept running after the client left")
            #expect(try await h.mockCounters()["streams_completed"]?.intValue == 0)
        }
    }

    @Test func backpressureReachesTheUpstream() async throws {
        // A 200 MB stream (far more than loopback socket buffers hold): a client that stops reading must
        // stall the upstream instead of the gateway buffering the stream in memory.
        try await Harness.run(mock: .init(chunks: 2000)) { h in
            let key = try await h.key()
            let task = Task {
                var r = HTTPClientRequest(url: h.gatewayURL + "/v1/chat/completions")
                r.method = .POST
                r.headers.add(name: "authorization", value: "Bearer \(key)")
                r.body = .bytes(ByteBuffer(string: Harness.chat(stream: true, content: "[[mock words=25000000]] go")))
                let response = try await h.client.execute(r, timeout: .seconds(60))
                try await Task.sleep(for: .seconds(60))  // never reads the body
                _ = response
            }
            #expect(try await h.eventually { try await h.mockCounters()["active_streams"]?.intValue == 1 })
            // Wait until the upstream's writes stall (no progress for a second), however slow this build is.
            var last = -1
            let stalled = try await h.eventually(timeout: .seconds(120)) {
                let sent = try await h.mockCounters()["stream_bytes_sent"]?.intValue ?? 0
                defer { last = sent }
                if sent == last { return true }
                try await Task.sleep(for: .seconds(1))
                return false
            }
            let counters = try await h.mockCounters()
            #expect(stalled)
            #expect(counters["streams_completed"]?.intValue == 0, "the whole stream was read although the client read nothing")
            #expect((counters["stream_bytes_sent"]?.intValue ?? 0) < 150_000_000)
            task.cancel()
            #expect(try await h.eventually { try await h.mockCounters()["streams_cancelled"]?.intValue == 1 })
        }
    }

    @Test func upstreamFailureMidStreamBecomesAnErrorEvent() async throws {
        try await Harness.run { h in
            let key = try await h.key()
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(stream: true, content: "[[mock drop_after=3]] hi"))
            #expect(r.status == 200)
            let data = sseData(r.body)
            let last = try #require(data.last.flatMap { try? JSONValue.parse($0) })
            #expect(last["error"]?["code"]?.stringValue == "upstream_stream_error")
            #expect(!data.contains("[DONE]"))
        }
    }

    @Test func servesUnderEveryPrefix() async throws {
        try await Harness.run(configure: { c, _ in c.pathPrefixes = ["/api/proxy"] }) { h in
            let key = try await h.key()
            for prefix in ["", "/api", "/api/proxy"] {
                let r = try await h.request("\(prefix)/v1/chat/completions", key: key, body: Harness.chat())
                #expect(r.status == 200, "\(prefix)")
                let m = try await h.request(.GET, "\(prefix)/v1/models", key: key)
                #expect(m.status == 200, "\(prefix)")
            }
            let missing = try await h.request("/api/other/v1/chat/completions", key: key, body: Harness.chat())
            #expect(missing.status == 404)
            #expect(missing.errorCode == "not_found")
            let wrongMethod = try await h.request(.GET, "/api/proxy/v1/chat/completions", key: key)
            #expect(wrongMethod.status == 405)
            #expect(wrongMethod.headers.first(name: "allow") == "POST")
            #expect(wrongMethod.errorCode == "method_not_allowed")
        }
    }

    @Test func inProcessMockProvider() async throws {
        try await Harness.run { h in
            let key = try await h.key()
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock"))
            #expect(r.status == 200)
            #expect(r.json?["model"]?.stringValue == "demo-mock")
            let s = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock", stream: true))
            #expect(sseData(s.body).last == "[DONE]")
            let toolCall = try await h.request("/v1/chat/completions", key: key, body:
                #"{"model":"demo-mock","messages":[{"role":"user","content":"weather?"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]}"#)
            let call = toolCall.json?["choices"]?.arrayValue?.first?["message"]?["tool_calls"]?.arrayValue?.first
            #expect(call?["function"]?["name"]?.stringValue == "get_weather")
            #expect(call?["function"]?["arguments"]?.stringValue == #"{"city":"mock"}"#)
        }
    }

    @Test func modelsListsTheCatalog() async throws {
        try await Harness.run { h in
            let key = try await h.key()
            let r = try await h.request(.GET, "/v1/models", key: key)
            #expect(r.json?["object"]?.stringValue == "list")
            #expect(r.json?["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == ["gpt-5.1", "same-name", "demo-mock"])
            #expect(r.json?["data"]?.arrayValue?.first?["object"]?.stringValue == "model")
            let anonymous = try await h.request(.GET, "/v1/models")
            #expect(anonymous.status == 401)
        }
    }

    @Test func healthProbes() async throws {
        try await Harness.run { h in
            let live = try await h.request(.GET, "/health/live")
            #expect(live.json?["status"]?.stringValue == "ok")
            let ready = try await h.request(.GET, "/health/ready")
            #expect(ready.json?["status"]?.stringValue == "ready")
            let head = try await h.request(.HEAD, "/")
            #expect(head.status == 200)
        }
    }
}
