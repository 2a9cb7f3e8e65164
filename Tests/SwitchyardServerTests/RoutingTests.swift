import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import SwitchyardCore
import SwitchyardMock
import Testing

/// Deployments, retries, fallbacks, cooldowns, timeouts, heartbeats and virtual models, driven through
/// the real gateway against `mock-upstream` deployments whose provider headers inject faults. Every
/// provider sends `x-mock-tag: <name>`, so the mock counts which deployment got each request.
@Suite("Routing")
struct RoutingTests {
    static let admin = "test-admin-key-0123456789"

    /// Providers on the mock: `a` and `b` healthy, `bad` answers 503, `limited` 429 with
    /// `retry-after: 30`, `slow` after 3 s, `dropper` breaks streams after two events, `refuser` 400,
    /// `capped` allows 2 requests a minute, `ant` speaks Anthropic.
    static func routed(_ models: String, routing: String = "") -> @Sendable (inout GatewayConfig, Int) -> Void {
        { c, port in
            let base = "http://127.0.0.1:\(port)"
            func provider(_ name: String, _ headers: String = "", type: String = "openai", extra: String = "") -> String {
                let url = type == "openai" ? base + "/v1" : base
                return "  - {name: \(name), type: \(type), base_url: \"\(url)\", api_key: k, headers: {x-mock-tag: \(name)\(headers)}\(extra)}"
            }
            let yaml = """
                providers:
                \(provider("a"))
                \(provider("b"))
                \(provider("bad", ", x-mock-status: \"503\""))
                \(provider("limited", ", x-mock-status: \"429\", x-mock-retry-after: \"30\""))
                \(provider("slow", ", x-mock-delay-ms: \"3000\""))
                \(provider("lagging", ", x-mock-delay-ms: \"2500\""))
                \(provider("dropper", ", x-mock-drop-after: \"2\""))
                \(provider("refuser", ", x-mock-status: \"400\""))
                \(provider("capped", extra: ", requests_per_minute: 2"))
                \(provider("ant", type: "anthropic"))
                models:
                \(models)
                routing:
                \(routing.contains("heartbeat") ? "" : "  heartbeat: 15s")
                \(routing)
                """
            do {
                let parsed = try YAMLConfigDecoder(environment: [:]).decode(GatewayConfig.self, from: yaml)
                c.providers += parsed.providers
                c.models += parsed.models
                c.routing = parsed.routing
            } catch {
                Issue.record("config: \(error)\n\(yaml)")
            }
        }
    }

    static func tags(_ h: Harness) -> [String: Int] {
        var out: [String: Int] = [:]
        for (k, v) in h.mockStats.countersJSON()["by_tag"]?.objectValue ?? [:] { out[k] = v.intValue }
        return out
    }

    static func deployments(_ h: Harness, _ model: String) async throws -> [String: JSONValue] {
        let r = try await h.request(.GET, "/admin/v1/deployments?model=\(model)", key: admin)
        var out: [String: JSONValue] = [:]
        for d in r.json?["data"]?.arrayValue ?? [] { out[d["id"]?.stringValue ?? ""] = d }
        return out
    }

    @Test func weightedRoutingFollowsTheWeights() async throws {
        try await Harness.run(configure: Self.routed("""
              - name: w
                deployments:
                  - {provider: a, upstream: up-a, weight: 3}
                  - {provider: b, upstream: up-b, weight: 1}
            """)) { h in
            let key = try await h.key()
            let total = 1000
            let ok = try await withThrowingTaskGroup(of: Int.self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        var ok = 0
                        for _ in stride(from: worker, to: total, by: 8) {
                            if try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "w")).status == 200 { ok += 1 }
                        }
                        return ok
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(ok == total)
            let tags = Self.tags(h)
            let a = tags["a"] ?? 0
            let b = tags["b"] ?? 0
            #expect(a + b == total)
            // 3:1 is 750 of 1000; ±45 is over three standard deviations of the binomial.
            #expect(abs(a - 750) <= 45, "a got \(a) of \(total)")
            let state = try await Self.deployments(h, "w")
            #expect(state["w#0"]?["requests"]?.intValue == a && state["w#1"]?["requests"]?.intValue == b)
        }
    }

    @Test func leastBusyPicksTheDeploymentWithFewestInFlight() async throws {
        try await Harness.run(configure: Self.routed("""
              - name: lb
                strategy: least_busy
                deployments: [{provider: a}, {provider: b}]
            """)) { h in
            let key = try await h.key()
            let busy = Task { try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "lb", content: "[[mock delay_ms=6000]] hi")) }
            #expect(try await h.eventually { h.mockStats.countersJSON()["waiting"]?.intValue == 1 })
            let busyTag = Self.tags(h).first?.key ?? ""
            let idleTag = busyTag == "a" ? "b" : "a"
            // Only the calls made wholly while the busy one was in flight count, so a loaded machine that
            // stretches them past its end makes fewer of them count, not a wrong pick.
            var whileBusy = 0
            for _ in 0..<6 {
                let before = Self.tags(h)
                #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "lb")).status == 200)
                let after = Self.tags(h)
                guard h.mockStats.countersJSON()["waiting"]?.intValue == 1 else { break }
                #expect(after[idleTag, default: 0] == before[idleTag, default: 0] + 1 && after[busyTag] == before[busyTag], "\(before) → \(after)")
                whileBusy += 1
            }
            #expect(whileBusy >= 3, "only \(whileBusy) calls finished while the busy one was in flight")
            #expect(try await busy.value.status == 200)
        }
    }

    @Test func lowestLatencyMeasuresEachDeploymentThenPrefersTheFastest() async throws {
        try await Harness.run(configure: Self.routed("""
              - name: ll
                strategy: lowest_latency
                deployments: [{provider: lagging}, {provider: a}]
            """)) { h in
            let key = try await h.key()
            for _ in 0..<7 {
                #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "ll")).status == 200)
            }
            #expect(Self.tags(h) == ["lagging": 1, "a": 6])
            let state = try await Self.deployments(h, "ll")
            let lagging = state["ll#0"]?["latency_ms"]?.intValue ?? 0
            let fast = state["ll#1"]?["latency_ms"]?.intValue ?? .max
            // 2.5 s against an instant provider: a loaded machine can stall one quick call for most of a second.
            #expect(lagging >= 2500 && fast < lagging)
        }
    }

    @Test func deploymentAndProviderRequestsPerMinuteAreRespected() async throws {
        try await Harness.run(configure: Self.routed("""
              - name: r
                deployments:
                  - {provider: a, weight: 100, requests_per_minute: 3}
                  - {provider: b, weight: 1}
              - name: p
                deployments:
                  - {provider: capped, weight: 100}
                  - {provider: b, weight: 1}
              - name: solo
                provider: capped
            """)) { h in
            let key = try await h.key()
            for _ in 0..<10 {
                #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "r")).status == 200)
            }
            #expect(Self.tags(h)["a"] == 3 && Self.tags(h)["b"] == 7)
            for _ in 0..<6 {
                #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "p")).status == 200)
            }
            #expect(Self.tags(h)["capped"] == 2 && Self.tags(h)["b"] == 11)
            // The provider's minute is used up by `p`: its other model has nowhere to go.
            let before = h.mockStats.countersJSON()["requests"]?.intValue
            let refused = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "solo"))
            #expect(refused.status == 503 && refused.errorCode == "no_deployment_available")
            let retryAfter = Int(refused.headers.first(name: "retry-after") ?? "") ?? 0
            #expect(retryAfter >= 1 && retryAfter <= 60)
            #expect(h.mockStats.countersJSON()["requests"]?.intValue == before)
            let state = try await Self.deployments(h, "r")
            #expect(state["r#0"]?["requests_last_minute"]?.intValue == 3 && state["r#0"]?["requests_per_minute"]?.intValue == 3)
        }
    }

    @Test func aFailingDeploymentIsRetriedElsewhereAndCoolsDown() async throws {
        try await Harness.run(configure: Self.routed("""
              - name: f
                strategy: ordered
                deployments: [{provider: bad}, {provider: a}]
            """, routing: "  cooldown: {failures: 2, for: 60s}")) { h in
            let key = try await h.key()
            for _ in 0..<4 {
                let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "f"))
                #expect(r.status == 200 && r.json?["model"]?.stringValue == "f")
            }
            // Two failures in a row, then the deployment is skipped.
            #expect(Self.tags(h)["bad"] == 2 && Self.tags(h)["a"] == 4)
            let state = try await Self.deployments(h, "f")
            #expect(state["f#0"]?["state"]?.stringValue == "cooling_down")
            #expect(state["f#0"]?["cooling_until"]?.stringValue != nil && state["f#0"]?["failures"]?.intValue == 2)
            #expect(state["f#1"]?["state"]?.stringValue == "healthy" && state["f#1"]?["error_rate"] == .number("0.00"))
            #expect(state["f#0"]?["error_rate"] == .number("1.00"))
        }
    }

    @Test func a429WithRetryAfterSkipsTheDeploymentThatLong() async throws {
        try await Harness.run(configure: Self.routed("""
              - name: l
                strategy: ordered
                deployments: [{provider: limited}, {provider: a}]
            """)) { h in
            let key = try await h.key()
            for _ in 0..<3 {
                #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "l")).status == 200)
            }
            #expect(Self.tags(h)["limited"] == 1 && Self.tags(h)["a"] == 3)
            let until = try await Self.deployments(h, "l")["l#0"]?["cooling_until"]?.stringValue
            let at = try #require(until.flatMap { ISO8601DateFormatter().date(from: $0) })
            #expect(at.timeIntervalSinceNow > 20 && at.timeIntervalSinceNow <= 31)
        }
    }

    @Test func otherClientErrorsAreNeverRetried() async throws {
        try await Harness.run(configure: Self.routed("""
              - name: n
                strategy: ordered
                deployments: [{provider: refuser}, {provider: a}]
            """)) { h in
            let key = try await h.key()
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "n"))
            #expect(r.status == 400)
            #expect(Self.tags(h)["refuser"] == 1 && Self.tags(h)["a"] == nil)
            // A client error is not the deployment's fault.
            #expect(try await Self.deployments(h, "n")["n#0"]?["consecutive_failures"]?.intValue == 0)
        }
    }

    @Test func whenEveryDeploymentIsDownTheClientGets503WithRetryAfterAtOnce() async throws {
        try await Harness.run(configure: Self.routed("""
              - name: d
                deployments: [{provider: bad}, {provider: bad, upstream: other}]
              - name: claude-d
                deployments: [{provider: bad}, {provider: bad, upstream: other}]
            """, routing: "  cooldown: {failures: 1, for: 30s}")) { h in
            let key = try await h.key()
            let first = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "d"))
            #expect(first.status == 503 && first.errorCode != "no_deployment_available")  // the provider's own 503
            #expect(Self.tags(h)["bad"] == 2)  // each deployment once, then both cool down
            let second = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "d"))
            #expect(second.status == 503 && second.errorCode == "no_deployment_available")
            let retryAfter = Int(second.headers.first(name: "retry-after") ?? "") ?? 0
            #expect(retryAfter >= 25 && retryAfter <= 30)
            #expect(second.headers.first(name: "retry-after-ms") != nil)
            #expect(Self.tags(h)["bad"] == 2, "a cooling deployment was called")
            // The same in the Anthropic format.
            _ = try await h.request("/v1/messages", key: key, body: #"{"model":"claude-d","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#)
            let anthropic = try await h.request("/v1/messages", key: key, body: #"{"model":"claude-d","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#)
            #expect(anthropic.status == 503 && anthropic.json?["type"]?.stringValue == "error")
            #expect(anthropic.headers.first(name: "retry-after") != nil)
        }
    }

    @Test func fallbacksTakeOverWhenEveryDeploymentFails() async throws {
        try await Harness.run(configure: Self.routed("""
              - name: primary
                deployments: [{provider: bad}]
                fallbacks: [backup]
              - name: backup
                provider: b
            """)) { h in
            let key = try await h.key()
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "primary"))
            #expect(r.status == 200 && r.json?["model"]?.stringValue == "primary")  // the name the client asked for
            #expect(Self.tags(h)["bad"] == 3 && Self.tags(h)["b"] == 1)  // 1 try + 2 retries, then the fallback
            // Three failures in a row cool the deployment down: the next request goes straight to the fallback.
            let stream = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "primary", stream: true))
            #expect(stream.status == 200 && stream.body.contains("data: [DONE]"))
            #expect(Self.tags(h)["bad"] == 3 && Self.tags(h)["b"] == 2)
        }
    }

    @Test func aSlowFirstByteTimesOutIsCancelledAndRetriedElsewhere() async throws {
        try await Harness.run(configure: Self.routed("""
              - name: s
                strategy: ordered
                deployments: [{provider: slow}, {provider: a}]
                timeouts: {first_byte: 2s}
            """)) { h in
            // `slow` answers after 3 s; `a` at once, but the suites run in parallel on two cores, where a
            // 300 ms budget once timed `a` out as well (CI, 2026-11-22).
            let key = try await h.key()
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "s", stream: true))
            #expect(r.status == 200 && r.body.contains("data: [DONE]"))
            #expect(Self.tags(h)["slow"] == 1 && Self.tags(h)["a"] == 1)
            // The timed-out request was cancelled: the slow provider saw its caller hang up.
            #expect(try await h.eventually { h.mockStats.countersJSON()["waits_abandoned"]?.intValue == 1 })
            #expect(try await h.eventually { h.mockStats.countersJSON()["waiting"]?.intValue == 0 })
        }
    }

    @Test func afterTheFirstByteAFailureIsAnErrorEventNotARetry() async throws {
        try await Harness.run(configure: Self.routed("""
              - name: drop
                strategy: ordered
                deployments: [{provider: dropper}, {provider: a}]
              - name: idle
                deployments: [{provider: a}]
                timeouts: {idle: 300ms}
            """)) { h in
            let key = try await h.key()
            let dropped = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "drop", stream: true))
            #expect(dropped.status == 200 && dropped.body.contains("\"error\"") && !dropped.body.contains("[DONE]"))
            #expect(Self.tags(h)["dropper"] == 1 && Self.tags(h)["a"] == nil)
            #expect(try await h.eventually { try await Self.deployments(h, "drop")["drop#0"]?["failures"]?.intValue == 1 })

            let stalled = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "idle", stream: true, content: "[[mock chunks=3 chunk_delay_ms=1500]] hi"))
            #expect(stalled.status == 200 && stalled.body.contains("upstream_timeout") && !stalled.body.contains("[DONE]"), "\(stalled.body)")
            #expect(Self.tags(h)["a"] == 1)
        }
    }

    @Test func heartbeatsKeepAWaitingStreamAliveInEachFormat() async throws {
        try await Harness.run(configure: Self.routed("""
              - name: hb
                provider: a
                retries: 0
              - name: claude-hb
                provider: ant
                upstream: claude-sonnet-4-6
            """, routing: "  heartbeat: 200ms")) { h in
            let key = try await h.key()
            // 2.5 s of waiting at a 200 ms heartbeat is twelve pings; three leave room for a loaded machine
            // whose timers fire late (the suites run in parallel). Every wait below is well over one
            // heartbeat for the same reason.
            let openai = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "hb", stream: true, content: "[[mock delay_ms=2500]] hi"))
            #expect(openai.status == 200 && openai.body.hasPrefix(": ping\n\n"))
            #expect(openai.body.components(separatedBy: ": ping\n\n").count - 1 >= 3)
            #expect(openai.body.contains("data: [DONE]") && sseData(openai.body).first?.contains("chat.completion.chunk") == true)

            let anthropic = try await h.request(
                "/v1/messages", key: key,
                body: #"{"model":"claude-hb","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"[[mock delay_ms=1500]] hi"}]}"#)
            #expect(anthropic.status == 200 && anthropic.body.hasPrefix("event: ping\ndata: {\"type\": \"ping\"}\n\n"))
            #expect(anthropic.body.contains("event: message_start") && anthropic.body.contains("event: message_stop"))

            // A waiting non-streamed request gets no pings (a quick stream: see the next test).
            let plain = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "hb", content: "[[mock delay_ms=600]] hi"))
            #expect(plain.status == 200 && plain.json?["object"]?.stringValue == "chat.completion")

            // Once pings went out the status is sent: a failure is an error event in the stream's format.
            let failed = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "hb", stream: true, content: "[[mock delay_ms=1500 status=500]] hi"))
            #expect(failed.status == 200 && failed.body.hasPrefix(": ping"))
            let event = try #require(sseData(failed.body).last.flatMap { try? JSONValue.parse($0) })
            #expect(event["error"]?["message"]?.stringValue != nil)
            let failedAnthropic = try await h.request(
                "/v1/messages", key: key,
                body: #"{"model":"claude-hb","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"[[mock delay_ms=1500 status=400]] hi"}]}"#)
            #expect(failedAnthropic.body.contains("event: error\ndata: {") && failedAnthropic.body.contains("invalid_request_error"))
        }
    }

    @Test func aStreamThatAnswersWithinOneHeartbeatHasNoPings() async throws {
        // A heartbeat of 2 s: under the parallel suites a quick answer can take longer than 200 ms.
        try await Harness.run(configure: Self.routed("""
              - name: hb
                provider: a
                retries: 0
            """, routing: "  heartbeat: 2s")) { h in
            let key = try await h.key()
            let quick = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "hb", stream: true))
            #expect(quick.status == 200 && quick.body.contains("data: [DONE]"))
            #expect(!quick.body.contains(": ping"))
        }
    }

    @Test func anEnsembleAnswersFromItsProposersDrafts() async throws {
        try await Harness.run(configure: Self.routed("""
              - {name: p1, provider: a, upstream: drafter-one}
              - {name: p2, provider: b, upstream: drafter-two}
              - {name: agg, provider: ant, upstream: claude-sonnet-4-6}
              - name: omni
                type: ensemble
                proposers: [p1, p2]
                aggregator: agg
            """, routing: "  heartbeat: 100ms")) { h in
            let key = try await h.key()
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "omni", content: "What is 2+2?"))
            #expect(r.status == 200 && r.json?["model"]?.stringValue == "omni")
            #expect(r.json?["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue?.isEmpty == false)
            #expect(Self.tags(h) == ["a": 1, "b": 1, "ant": 1])
            let aggregatorCall = try #require(h.lastUpstreamRequest())
            #expect(aggregatorCall["path"]?.stringValue == "/v1/messages")
            let sent = aggregatorCall["body"]?.jsonString ?? ""
            #expect(sent.contains("<draft 1>") && sent.contains("<draft 2>") && sent.contains("What is 2+2?"))
            // Usage covers every call.
            let prompt = r.json?["usage"]?["prompt_tokens"]?.intValue ?? 0
            #expect(prompt > 0)

            let stream = try await h.request("/v1/messages", key: key, body: #"{"model":"omni","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
            #expect(stream.status == 200 && stream.body.contains("event: message_start") && stream.body.contains("event: message_stop"))
        }
    }

    @Test func aClientLeavingCancelsEveryProposer() async throws {
        try await Harness.run(configure: Self.routed("""
              - {name: p1, provider: a}
              - {name: p2, provider: b}
              - {name: p3, provider: a, upstream: third}
              - name: omni
                type: ensemble
                proposers: [p1, p2, p3]
                aggregator: p1
            """)) { h in
            let key = try await h.key()
            for stream in [false, true] {
                let before = h.mockStats.countersJSON()["waits_abandoned"]?.intValue ?? 0
                let waiting = Task {
                    var r = HTTPClientRequest(url: h.gatewayURL + "/v1/chat/completions")
                    r.method = .POST
                    r.headers.add(name: "authorization", value: "Bearer \(key)")
                    r.body = .bytes(ByteBuffer(string: Harness.chat(model: "omni", stream: stream, content: "[[mock delay_ms=20000]] hi")))
                    let response = try await h.client.execute(r, timeout: .seconds(60))
                    _ = try await response.body.collect(upTo: 1 << 20)
                }
                #expect(try await h.eventually { h.mockStats.countersJSON()["waiting"]?.intValue == 3 })
                waiting.cancel()
                let cancelled = try await h.eventually(timeout: .seconds(10)) {
                    h.mockStats.countersJSON()["waits_abandoned"]?.intValue == before + 3
                }
                #expect(cancelled, "stream: \(stream) — proposers kept running after the client left")
                #expect(h.mockStats.countersJSON()["waiting"]?.intValue == 0)
            }
        }
    }

    @Test func anAliasServesItsTargetUnderItsOwnName() async throws {
        try await Harness.run(configure: Self.routed("""
              - {name: target, provider: a, upstream: real-upstream}
              - name: fast
                alias_of: target
            """)) { h in
            let key = try await h.key()
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "fast"))
            #expect(r.status == 200 && r.json?["model"]?.stringValue == "fast")
            #expect(h.lastUpstreamRequest()?["body"]?["model"]?.stringValue == "real-upstream")
            #expect(try await Self.deployments(h, "fast").keys.sorted() == ["target#0"])
            let models = try await h.request(.GET, "/v1/models", key: key)
            #expect(models.body.contains("\"fast\""))
        }
    }
}
