import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
@testable import SwitchyardServer
import SwitchyardCore
import SwitchyardMock
import SwitchyardStore
import Testing

let adminKey = "test-admin-key-0123456789"

/// A Harness configuration with these plans (the first is the default unless named).
func plans(_ plans: [PlanConfig], default name: String? = nil, zone: String = "UTC") -> @Sendable (inout GatewayConfig, Int) -> Void {
    { config, _ in
        config.plans = plans
        config.defaultPlan = name ?? plans[0].name
        config.dayTimeZone = zone
    }
}

extension Harness {
    /// Fires `count` identical requests at once and returns their responses.
    func parallel(_ count: Int, key: String, body: String = Harness.chat(model: "demo-mock"), path: String = "/v1/chat/completions") async throws -> [TestResponse] {
        try await withThrowingTaskGroup(of: TestResponse.self) { group in
            for _ in 0..<count { group.addTask { try await self.request(path, key: key, body: body) } }
            var out: [TestResponse] = []
            for try await r in group { out.append(r) }
            return out
        }
    }

    func admin(_ method: HTTPMethod, _ path: String, body: String? = nil) async throws -> TestResponse {
        try await request(method, "/admin/v1" + path, key: adminKey, body: body)
    }
}

@Suite("Accounts, plans and limits")
struct AccountsTests {
    static let tiered = plans([
        PlanConfig(name: "free", models: ["demo-mock"]),
        PlanConfig(name: "pro", models: ["*"]),
        PlanConfig(name: "max", models: ["gpt-*", "demo-mock", "same-name"]),
    ])

    // MARK: Model access

    @Test func modelOutsideThePlanIs403NamingThePlansThatAllowIt() async throws {
        try await Harness.run(configure: Self.tiered) { h in
            let key = try await h.key(user: "free@example.com")
            let denied = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "gpt-5.1"))
            #expect(denied.status == 403)
            #expect(denied.errorCode == "model_not_allowed")
            #expect(denied.json?["error"]?["type"]?.stringValue == "permission_error")
            let message = denied.json?["error"]?["message"]?.stringValue ?? ""
            #expect(message.contains("`gpt-5.1` is not included in your plan `free`") && message.contains("plans `pro` and `max`"), "\(message)")
            #expect(h.mockStats.countersJSON()["requests"]?.intValue ?? 0 == 0, "a denied request reached the provider")

            // The same in the Anthropic format.
            let anthropic = try await h.request(
                "/v1/messages", key: key, body: #"{"model":"same-name","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#)
            #expect(anthropic.status == 403)
            #expect(anthropic.json?["error"]?["type"]?.stringValue == "permission_error")
            #expect(anthropic.json?["error"]?["message"]?.stringValue?.contains("plans `pro` and `max`") == true)
            // count_tokens is gated too.
            let count = try await h.request("/v1/messages/count_tokens", key: key, body: #"{"model":"gpt-5.1","messages":[{"role":"user","content":"hi"}]}"#)
            #expect(count.status == 403)

            #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock")).status == 200)
            // A model that does not exist is still 404, not 403.
            #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "nope")).status == 404)

            // The model list shows only what the key may use, in every format.
            let models = try await h.request(.GET, "/v1/models", key: key)
            #expect(models.json?["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == ["demo-mock"])
            let anthropicModels = try await h.request(.GET, "/v1/models", key: key, headers: [("anthropic-version", "2023-06-01")])
            #expect(anthropicModels.json?["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == ["demo-mock"])
            let gemini = try await h.request(.GET, "/v1beta/models", key: key)
            #expect(gemini.json?["models"]?.arrayValue?.count == 1)

            let proKey = try await h.store.createKey(name: "p", userEmail: "pro@example.com", prefix: "sy-")
            _ = try await h.store.setPlan(email: "pro@example.com", plan: "pro")
            h.gateway.keys.invalidateAll()
            let all = try await h.request(.GET, "/v1/models", key: proKey.secret)
            #expect(all.json?["data"]?.arrayValue?.count == 3)
        }
    }

    @Test func aKeysModelListNarrowsItsPlan() async throws {
        try await Harness.run(configure: Self.tiered) { h in
            _ = try await h.store.createUser(email: "p@example.com", plan: "pro")
            let key = try await h.store.createKey(name: "k", userEmail: "p@example.com", prefix: "sy-", options: KeyOptions(models: ["demo-*"]))
            let denied = try await h.request("/v1/chat/completions", key: key.secret, body: Harness.chat(model: "gpt-5.1"))
            #expect(denied.status == 403 && denied.errorCode == "model_not_allowed")
            #expect(denied.json?["error"]?["message"]?.stringValue?.contains("may only use the models `demo-*`") == true)
            #expect(try await h.request("/v1/chat/completions", key: key.secret, body: Harness.chat(model: "demo-mock")).status == 200)
            let models = try await h.request(.GET, "/v1/models", key: key.secret)
            #expect(models.json?["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == ["demo-mock"])
        }
    }

    // MARK: Limits hold under concurrency

    @Test func requestsPerMinuteHoldExactlyUnderParallelLoad() async throws {
        try await Harness.run(configure: plans([PlanConfig(name: "free", limits: .init(requestsPerMinute: 5))])) { h in
            let key = try await h.key(user: "u@example.com")
            let responses = try await h.parallel(24, key: key)
            let ok = responses.filter { r in r.status == 200 }
            let refused = responses.filter { r in r.status == 429 }
            #expect(ok.count == 5)
            #expect(refused.count == 19)
            for r in refused {
                #expect(r.errorCode == "rate_limit_exceeded")
                #expect(r.json?["error"]?["type"]?.stringValue == "rate_limit_error")
                #expect(r.json?["error"]?["message"]?.stringValue?.contains("5 requests per minute for plan `free`") == true)
                let seconds = Int(r.headers.first(name: "retry-after") ?? "") ?? 0
                let millis = Int(r.headers.first(name: "retry-after-ms") ?? "") ?? 0
                #expect((55...60).contains(seconds), "Retry-After \(seconds)")
                #expect((54_000...60_000).contains(millis) && (millis + 999) / 1000 == seconds)
                #expect(r.headers.first(name: "x-ratelimit-remaining-requests") == "0")
            }
        }
    }

    @Test func requestsPerDayHoldExactlyUnderParallelLoad() async throws {
        try await Harness.clearOfUTCMidnight()
        try await Harness.run(configure: plans([PlanConfig(name: "free", limits: .init(requestsPerDay: 7))])) { h in
            let key = try await h.key(user: "u@example.com")
            let responses = try await h.parallel(20, key: key)
            let ok = responses.filter { r in r.status == 200 }
            #expect(ok.count == 7)
            let refused = try #require(responses.first { $0.status == 429 })
            let message = refused.json?["error"]?["message"]?.stringValue ?? ""
            #expect(message.contains("7 requests per day") && message.contains("T00:00:00Z"), "\(message)")
            let now = EpochClock.nowMilliseconds()
            let midnight = (now / 86_400_000 + 1) * 86_400_000
            let retry = Int64(refused.headers.first(name: "retry-after-ms") ?? "") ?? 0
            #expect(abs(now + retry - midnight) < 5_000)
            #expect(refused.headers.first(name: "x-ratelimit-reset") == String(midnight / 1000))
        }
    }

    @Test func concurrencyHoldsExactlyAndSlotsComeBack() async throws {
        try await Harness.run(configure: plans([PlanConfig(name: "free", limits: .init(concurrentRequests: 3))])) { h in
            let key = try await h.key(user: "u@example.com")
            // 5 s: all ten must reach the gateway while the three admitted ones are still in flight.
            let slow = Harness.chat(model: "gpt-5.1", content: "[[mock delay_ms=5000]] hi")
            let responses = try await h.parallel(10, key: key, body: slow)
            let ok = responses.filter { r in r.status == 200 }
            let refused = responses.filter { r in r.status == 429 }
            #expect(ok.count == 3)
            #expect(refused.count == 7)
            #expect(refused.allSatisfy { $0.json?["error"]?["message"]?.stringValue?.contains("3 requests at a time") == true })
            #expect(refused.allSatisfy { $0.headers.first(name: "retry-after") == "1" })
            // Every slot was given back.
            #expect(h.gateway.limiter.counters().allSatisfy { $0.inFlight == 0 })
            let again = try await h.parallel(3, key: key)
            #expect(again.allSatisfy { $0.status == 200 })
        }
    }

    @Test func failedRequestsGiveTheirSlotBack() async throws {
        try await Harness.run(configure: plans([PlanConfig(name: "free", limits: .init(concurrentRequests: 1))])) { h in
            let key = try await h.key(user: "u@example.com")
            for body in [
                Harness.chat(model: "gpt-5.1", content: "[[mock status=500]] hi"),  // upstream error
                Harness.chat(model: "gpt-5.1", stream: true, content: "[[mock drop_after=2]] hi"),  // broken stream
                Harness.chat(model: "gpt-5.1", content: "[[mock status=429 retry_after=3]] hi"),
            ] {
                _ = try await h.request("/v1/chat/completions", key: key, body: body)
                // Polled: a stream gives its slot back after its last byte is written, which can be a
                // moment after the client has read it. A slot that never comes back still fails.
                #expect(try await h.eventually { try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock")).status == 200 }, "\(body)")
            }
        }
    }

    @Test func aStreamHoldsItsSlotUntilItEndsOrTheClientLeaves() async throws {
        try await Harness.run(configure: plans([PlanConfig(name: "free", limits: .init(concurrentRequests: 1))])) { h in
            let key = try await h.key(user: "u@example.com")
            func openStream(_ content: String) -> Task<Int, any Error> {
                Task {
                    var r = HTTPClientRequest(url: h.gatewayURL + "/v1/chat/completions")
                    r.method = .POST
                    r.headers.add(name: "authorization", value: "Bearer \(key)")
                    r.body = .bytes(ByteBuffer(string: Harness.chat(model: "gpt-5.1", stream: true, content: content)))
                    let response = try await h.client.execute(r, timeout: .seconds(60))
                    var bytes = 0
                    for try await chunk in response.body { bytes += chunk.readableBytes }
                    return bytes
                }
            }
            // While a stream runs, a second request is refused; once it has ended, one is admitted.
            let stream = openStream("[[mock chunks=8 chunk_delay_ms=600]] hi")  // ~5 s: room for the probe below
            #expect(try await h.eventually { try await h.mockCounters()["active_streams"]?.intValue == 1 })
            let during = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock"))
            #expect(during.status == 429 && during.json?["error"]?["message"]?.stringValue?.contains("at a time") == true)
            #expect(try await stream.value > 0)
            #expect(try await h.eventually {
                try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock")).status == 200
            })

            // A client that leaves mid-stream frees its slot at once.
            let abandoned = openStream("[[mock chunks=100 chunk_delay_ms=10000]] hi")
            #expect(try await h.eventually { try await h.mockCounters()["active_streams"]?.intValue == 1 })
            #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock")).status == 429)
            abandoned.cancel()
            let freed = try await h.eventually(timeout: .seconds(5)) {
                try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock")).status == 200
            }
            #expect(freed, "the departed client's slot was not released")
        }
    }

    @Test func aClientLeavingBeforeTheAnswerFreesItsSlotAndCancelsTheUpstream() async throws {
        try await Harness.run(configure: plans([PlanConfig(name: "free", limits: .init(concurrentRequests: 1))])) { h in
            let key = try await h.key(user: "u@example.com")
            let waiting = Task {
                var r = HTTPClientRequest(url: h.gatewayURL + "/v1/chat/completions")
                r.method = .POST
                r.headers.add(name: "authorization", value: "Bearer \(key)")
                r.body = .bytes(ByteBuffer(string: Harness.chat(model: "gpt-5.1", content: "[[mock delay_ms=20000]] hi")))
                _ = try await h.client.execute(r, timeout: .seconds(60))
            }
            #expect(try await h.eventually { h.mockStats.countersJSON()["requests"]?.intValue == 1 })
            #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock")).status == 429)
            waiting.cancel()  // the client gives up long before the provider answers
            let freed = try await h.eventually(timeout: .seconds(10)) {
                try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock")).status == 200
            }
            #expect(freed, "the slot stayed taken until the provider answered")
        }
    }

    @Test func keysOfOnePersonShareThePlanAndKeyLimitsStandAlone() async throws {
        try await Harness.run(configure: plans([PlanConfig(name: "free", limits: .init(requestsPerMinute: 3))])) { h in
            let a = try await h.key(user: "same@example.com")
            let b = try await h.key(user: "same@example.com")
            let own = try await h.store.createKey(
                name: "own", userEmail: "same@example.com", prefix: "sy-", options: KeyOptions(limits: .init(requestsPerMinute: 1)))
            let chat = Harness.chat(model: "demo-mock")
            #expect(try await h.request("/v1/chat/completions", key: a, body: chat).status == 200)
            #expect(try await h.request("/v1/chat/completions", key: a, body: chat).status == 200)
            #expect(try await h.request("/v1/chat/completions", key: b, body: chat).status == 200)
            let shared = try await h.request("/v1/chat/completions", key: b, body: chat)
            #expect(shared.status == 429, "the user's plan limit was not shared between their keys")
            // A key with its own limit counts on its own.
            #expect(try await h.request("/v1/chat/completions", key: own.secret, body: chat).status == 200)
            let ownRefused = try await h.request("/v1/chat/completions", key: own.secret, body: chat)
            #expect(ownRefused.status == 429 && ownRefused.json?["error"]?["message"]?.stringValue?.contains("this API key") == true)
            // Keys without a user (the service user) do not share one budget.
            let s1 = try await h.key(), s2 = try await h.key()
            for _ in 0..<3 { #expect(try await h.request("/v1/chat/completions", key: s1, body: chat).status == 200) }
            #expect(try await h.request("/v1/chat/completions", key: s2, body: chat).status == 200)
        }
    }

    // MARK: Headers

    @Test func rateLimitHeadersOnEveryAuthenticatedResponse() async throws {
        try await Harness.run(configure: plans([
            PlanConfig(name: "free", limits: .init(requestsPerMinute: 10, requestsPerDay: 100, tokensPerMinute: 50_000)),
            PlanConfig(name: "open"),
        ])) { h in
            let key = try await h.key(user: "u@example.com")
            let before = EpochClock.nowMilliseconds() / 1000
            let chat = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock"))
            let after = EpochClock.nowMilliseconds() / 1000
            #expect(chat.headers.first(name: "X-RateLimit-Limit") == "10")
            #expect(chat.headers.first(name: "X-RateLimit-Remaining") == "9")
            let reset = Int64(chat.headers.first(name: "X-RateLimit-Reset") ?? "") ?? 0
            #expect(reset >= before + 59 && reset <= after + 61)  // a minute from when the gateway saw it
            #expect(chat.headers.first(name: "x-ratelimit-limit-requests") == "10")
            #expect(chat.headers.first(name: "x-ratelimit-remaining-requests") == "9")
            let resetRequests = chat.headers.first(name: "x-ratelimit-reset-requests") ?? ""
            #expect(resetRequests.range(of: #"^(59(\.\d+)?s|1m0s)$"#, options: .regularExpression) != nil, "\(resetRequests)")
            #expect(chat.headers.first(name: "x-ratelimit-limit-tokens") == "50000")
            #expect(chat.headers.first(name: "anthropic-ratelimit-requests-limit") == nil)

            let messages = try await h.request(
                "/v1/messages", key: key, body: #"{"model":"demo-mock","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#)
            #expect(messages.status == 200)
            #expect(messages.headers.first(name: "anthropic-ratelimit-requests-limit") == "10")
            #expect(messages.headers.first(name: "anthropic-ratelimit-requests-remaining") == "8")
            let anthropicReset = messages.headers.first(name: "anthropic-ratelimit-requests-reset") ?? ""
            #expect(EpochClock.parseISO8601(anthropicReset) != nil, "\(anthropicReset)")
            #expect(messages.headers.first(name: "anthropic-ratelimit-tokens-limit") == "50000")
            #expect(messages.headers.first(name: "X-RateLimit-Remaining") == "8")
            #expect(messages.headers.first(name: "x-ratelimit-limit-requests") == nil)

            // Responses that are not model calls report without counting.
            let models = try await h.request(.GET, "/v1/models", key: key)
            #expect(models.headers.first(name: "X-RateLimit-Remaining") == "8")
            let bad = try await h.request("/v1/chat/completions", key: key, body: "{oops")
            #expect(bad.status == 400 && bad.headers.first(name: "X-RateLimit-Remaining") == "8")
            let stream = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock", stream: true))
            #expect(stream.headers.first(name: "X-RateLimit-Remaining") == "7")
            let gemini = try await h.request("/v1beta/models/demo-mock:generateContent", key: key, body: #"{"contents":[{"parts":[{"text":"hi"}]}]}"#)
            #expect(gemini.status == 200 && gemini.headers.first(name: "X-RateLimit-Remaining") == "6")

            // Unauthenticated responses and callers without limits carry none.
            let anonymous = try await h.request("/v1/chat/completions", body: Harness.chat(model: "demo-mock"))
            #expect(anonymous.status == 401 && anonymous.headers.first(name: "X-RateLimit-Limit") == nil)
            _ = try await h.store.createUser(email: "open@example.com", plan: "open")
            let open = try await h.key(user: "open@example.com")
            let unlimited = try await h.request("/v1/chat/completions", key: open, body: Harness.chat(model: "demo-mock"))
            #expect(unlimited.status == 200 && unlimited.headers.first(name: "X-RateLimit-Limit") == nil)
        }
    }

    @Test func theTightestRequestLimitIsReported() async throws {
        try await Harness.run(configure: plans([PlanConfig(name: "free", limits: .init(requestsPerMinute: 100, requestsPerDay: 2))])) { h in
            let key = try await h.key(user: "u@example.com")
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock"))
            #expect(r.headers.first(name: "X-RateLimit-Limit") == "2")
            #expect(r.headers.first(name: "X-RateLimit-Remaining") == "1")
        }
    }

    // MARK: Key and account states

    @Test func expiredKeysDisabledUsersAndVanishedPlansAreRefusedClearly() async throws {
        try await Harness.run(configure: Self.tiered) { h in
            let expired = try await h.store.createKey(
                name: "old", userEmail: "e@example.com", prefix: "sy-", options: KeyOptions(expiresAt: EpochClock.nowMilliseconds() - 1000))
            let r1 = try await h.request("/v1/chat/completions", key: expired.secret, body: Harness.chat(model: "demo-mock"))
            #expect(r1.status == 401 && r1.errorCode == "key_expired")
            #expect(r1.json?["error"]?["message"]?.stringValue?.contains("expired at") == true)

            let key = try await h.key(user: "d@example.com")
            #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock")).status == 200)
            #expect(try await h.admin(.PATCH, "/users/d@example.com", body: #"{"disabled":true}"#).status == 200)
            let r2 = try await h.request("/v1/messages", key: key, body: #"{"model":"demo-mock","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#)
            #expect(r2.status == 403 && r2.json?["error"]?["type"]?.stringValue == "permission_error")
            #expect(r2.json?["error"]?["message"]?.stringValue?.contains("d@example.com is disabled") == true)
            let r2o = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock"))
            #expect(r2o.errorCode == "account_disabled")
            #expect(try await h.admin(.PATCH, "/users/d@example.com", body: #"{"disabled":false}"#).status == 200)
            #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock")).status == 200)

            // A plan removed from the configuration while users are on it.
            let orphan = try await h.key(user: "o@example.com")
            _ = try await h.store.setPlan(email: "o@example.com", plan: "enterprise")
            h.gateway.keys.invalidateAll()
            let r3 = try await h.request("/v1/chat/completions", key: orphan, body: Harness.chat(model: "demo-mock"))
            #expect(r3.status == 403 && r3.errorCode == "plan_unavailable")
            #expect(r3.json?["error"]?["message"]?.stringValue?.contains("`enterprise`") == true)
            let listed = try await h.admin(.GET, "/users/o@example.com")
            #expect(listed.json?["plan"]?.stringValue == "enterprise" && listed.json?["plan_defined"]?.boolValue == false)
        }
    }

    @Test func rotationKeepsTheOldSecretForTheGracePeriod() async throws {
        try await Harness.run(configure: Self.tiered) { h in
            let created = try await h.store.createKey(name: "r", userEmail: "r@example.com", prefix: "sy-")
            // A 5 s grace: the two calls below must land inside it on a loaded machine. It runs from when
            // the gateway rotated the key, which is before its answer arrives: wait from the answer.
            let rotated = try await h.admin(.POST, "/keys/\(created.record.id)/rotate", body: #"{"grace":"5s"}"#)
            let rotatedAt = ContinuousClock.now
            #expect(rotated.status == 200)
            let newSecret = try #require(rotated.json?["key"]?.stringValue)
            #expect(rotated.json?["id"]?.stringValue == created.record.id && newSecret != created.secret)
            #expect(rotated.json?["previous_secret_expires_at"]?.stringValue != nil)
            let chat = Harness.chat(model: "demo-mock")
            #expect(try await h.request("/v1/chat/completions", key: created.secret, body: chat).status == 200)
            #expect(try await h.request("/v1/chat/completions", key: newSecret, body: chat).status == 200)
            try await Task.sleep(until: rotatedAt + .milliseconds(5300))
            let old = try await h.request("/v1/chat/completions", key: created.secret, body: chat)
            #expect(old.status == 401 && old.errorCode == "key_rotated")
            #expect(try await h.request("/v1/chat/completions", key: newSecret, body: chat).status == 200)

            // Without a grace period the old secret stops at once; a revoked key cannot be rotated.
            let again = try await h.admin(.POST, "/keys/\(created.record.id)/rotate")
            let third = try #require(again.json?["key"]?.stringValue)
            #expect(try await h.request("/v1/chat/completions", key: newSecret, body: chat).errorCode == "key_rotated")
            #expect(try await h.request("/v1/chat/completions", key: third, body: chat).status == 200)
            _ = try await h.admin(.DELETE, "/keys/\(created.record.id)")
            #expect(try await h.admin(.POST, "/keys/\(created.record.id)/rotate").status == 409)
            #expect(try await h.request("/v1/chat/completions", key: third, body: chat).status == 401)
        }
    }

    @Test func malformedCredentialsGetClearErrors() async throws {
        try await Harness.run(configure: Self.tiered) { h in
            let cases: [(String, String, String)] = [
                ("authorization", "Bearer", "malformed Authorization"),
                ("authorization", "Bearer    ", "malformed Authorization"),
                ("authorization", "Token abc", "malformed Authorization"),
                ("authorization", "Bearer " + String(repeating: "x", count: 4000), "invalid API key"),
                ("x-api-key", String(repeating: "y", count: 4000), "invalid API key"),
                ("x-api-key", "sy-ключ", "invalid API key"),
            ]
            for (name, value, text) in cases {
                let r = try await h.request("/v1/chat/completions", body: Harness.chat(model: "demo-mock"), headers: [(name, value)])
                #expect(r.status == 401, "\(name): \(value.prefix(20))")
                #expect(r.json?["error"]?["message"]?.stringValue?.contains(text) == true, "\(r.body)")
            }
        }
    }

    // MARK: Persistence

    @Test func dailyCountsAreSavedAndARestartContinuesThem() async throws {
        try await Harness.clearOfUTCMidnight()
        try await Harness.run(configure: plans([PlanConfig(name: "free", limits: .init(requestsPerDay: 5))])) { h in
            let key = try await h.key(user: "u@example.com")
            for _ in 0..<3 { #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock")).status == 200) }
            let day = h.gateway.limiter.today
            let saved = try await h.eventually(timeout: .seconds(5)) { try await h.store.dailyCounts(day: day).values.contains(3) }
            #expect(saved, "the day's count was not saved within a few seconds")

            // A second gateway on the same database starts from the saved count.
            let restarted = Gateway(config: h.gateway.config, store: h.store, logger: Harness.quiet)
            try await restarted.prepare()
            await restarted.closeClients()
            let counters = restarted.limiter.counters()
            #expect(counters.count == 1 && counters[0].requestsToday == 3)
        }
    }

    // MARK: Admin API

    @Test func adminManagesUsersKeysPlansAndCounters() async throws {
        try await Harness.run(configure: plans([
            PlanConfig(name: "free", models: ["demo-mock"], limits: .init(requestsPerMinute: 70, requestsPerDay: 5000, concurrentRequests: 1)),
            PlanConfig(name: "pro", limits: .init(requestsPerMinute: 600, concurrentRequests: 10)),
        ])) { h in
            // Users
            let created = try await h.admin(.POST, "/users", body: #"{"email":"Ann@Example.com","plan":"pro"}"#)
            #expect(created.status == 201 && created.json?["email"]?.stringValue == "ann@example.com" && created.json?["plan"]?.stringValue == "pro")
            #expect(try await h.admin(.POST, "/users", body: #"{"email":"ann@example.com"}"#).status == 409)
            let unknownPlan = try await h.admin(.POST, "/users", body: #"{"email":"b@example.com","plan":"gold"}"#)
            #expect(unknownPlan.status == 400 && unknownPlan.errorCode == "unknown_plan")
            #expect(unknownPlan.json?["error"]?["message"]?.stringValue?.contains("free, pro") == true)
            let extra = try await h.admin(.POST, "/users", body: #"{"email":"b@example.com","role":"admin"}"#)
            #expect(extra.status == 400 && extra.errorCode == "unknown_field")
            #expect(try await h.admin(.POST, "/users", body: #"{"email":"not-an-email"}"#).status == 400)
            #expect(try await h.admin(.GET, "/users").json?["data"]?.arrayValue?.count == 1)
            let moved = try await h.admin(.PATCH, "/users/ann%40example.com", body: #"{"plan":"free"}"#)
            #expect(moved.status == 200 && moved.json?["plan"]?.stringValue == "free")
            #expect(try await h.admin(.PATCH, "/users/nobody@example.com", body: #"{"plan":"free"}"#).status == 404)

            // Keys, with options
            let key = try await h.admin(.POST, "/keys", body: #"""
                {"name":"ci","user":"ann@example.com","expires_at":"2099-01-01T00:00:00Z","models":["demo-mock"],"limits":{"requests_per_minute":2}}
                """#)
            #expect(key.status == 201)
            let id = try #require(key.json?["id"]?.stringValue)
            let secret = try #require(key.json?["key"]?.stringValue)
            #expect(key.json?["expires_at"]?.stringValue == "2099-01-01T00:00:00Z")
            #expect(key.json?["limits"]?["requests_per_minute"]?.intValue == 2)
            #expect(key.json?["models"]?.arrayValue?.count == 1)
            let shown = try await h.admin(.GET, "/keys/\(id)")
            #expect(shown.json?["key"] == nil && !shown.body.contains(secret))
            #expect(try await h.admin(.POST, "/keys", body: #"{"name":"x","models":["llama"]}"#).errorCode == "unknown_model")
            #expect(try await h.admin(.POST, "/keys", body: #"{"name":"x","expires_at":"2001-01-01"}"#).status == 400)
            #expect(try await h.admin(.POST, "/keys", body: #"{"name":"x","expires_at":"soon"}"#).status == 400)
            #expect(try await h.admin(.POST, "/keys", body: #"{"name":"x","limits":{"requests_per_minute":0}}"#).status == 400)
            #expect(try await h.admin(.POST, "/keys", body: #"{"name":"x","limits":{"rpm":5}}"#).errorCode == "unknown_field")

            let chat = Harness.chat(model: "demo-mock")
            #expect(try await h.request("/v1/chat/completions", key: secret, body: chat).status == 200)
            #expect(try await h.request("/v1/chat/completions", key: secret, body: chat).status == 200)
            #expect(try await h.request("/v1/chat/completions", key: secret, body: chat).status == 429)
            // A change applies to the very next request.
            let patched = try await h.admin(.PATCH, "/keys/\(id)", body: #"{"limits":null,"name":"ci-2"}"#)
            #expect(patched.status == 200 && patched.json?["name"]?.stringValue == "ci-2" && patched.json?["limits"] == .object([:]))
            #expect(try await h.request("/v1/chat/completions", key: secret, body: chat).status == 200)
            #expect(try await h.admin(.GET, "/keys?user=ann@example.com").json?["data"]?.arrayValue?.count == 1)
            #expect(try await h.admin(.GET, "/keys/key_nope").status == 404)
            let user = try await h.admin(.GET, "/users/ann@example.com")
            #expect(user.json?["keys"]?.arrayValue?.first?["id"]?.stringValue == id)

            // Plans and counters
            let planList = try await h.admin(.GET, "/plans")
            let free = planList.json?["data"]?.arrayValue?.first { $0["name"]?.stringValue == "free" }
            #expect(free?["default"]?.boolValue == true && free?["users"]?.intValue == 1)
            #expect(free?["limits"]?["requests_per_day"]?.intValue == 5000)
            #expect(try await h.admin(.GET, "/plans/pro").json?["limits"]?["concurrent_requests"]?.intValue == 10)
            #expect(try await h.admin(.GET, "/plans/gold").status == 404)
            let counters = try await h.admin(.GET, "/counters?user=ann@example.com")
            #expect(counters.status == 200 && counters.json?["day_time_zone"]?.stringValue == "UTC")
            let row = counters.json?["data"]?.arrayValue?.first { $0["user"]?.stringValue == "ann@example.com" }
            #expect(row?["requests_today"]?.intValue == 3 && row?["in_flight"]?.intValue == 0)
            #expect(try await h.admin(.GET, "/counters?key=\(id)").json?["data"]?.arrayValue?.first?["requests_last_minute"]?.intValue == 2)

            // Wrong methods are 405, not 404; everything needs the admin key.
            #expect(try await h.admin(.DELETE, "/users").status == 405)
            #expect(try await h.request(.GET, "/admin/v1/users", key: secret).status == 401)
        }
    }
}
