import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
@testable import SwitchyardServer
import SwitchyardCore
import SwitchyardMock
import SwitchyardStore
import Testing

/// Tiers as in the issue; `tiered` costs 1 credit × multiplier per request below 16K input tokens;
/// `metered` costs 1000 µc per input token and 2000 µc per output token.
func billing(_ policy: CancelledStreamPolicy = .charge, multiplier: Int64 = 1, plans extraPlans: [PlanConfig] = []) -> @Sendable (inout GatewayConfig, Int) -> Void {
    { config, mockPort in
        config.pricing = PricingConfig(inputTiers: [
            InputTier(maxInputTokens: 16_000, credits: .credits(1)), InputTier(maxInputTokens: 32_000, credits: .credits(2)),
            InputTier(maxInputTokens: 128_000, credits: .credits(5)), InputTier(maxInputTokens: nil, credits: .credits(10)),
        ])
        config.providers.append(ProviderConfig(name: "ant", type: .anthropic, baseURL: "http://127.0.0.1:\(mockPort)", apiKey: "upstream-secret"))
        config.models += [
            ModelConfig(name: "tiered", provider: "up", upstream: "mock-tiered", multiplier: .credits(multiplier)),
            ModelConfig(name: "metered", provider: "up", upstream: "mock-metered", maxTokens: 1000,
                        price: TokenPrice(inputPerMillion: .credits(1000), outputPerMillion: .credits(2000))),
            ModelConfig(name: "claude-tiered", provider: "ant", upstream: "claude-sonnet-4-6", multiplier: .credits(multiplier)),
        ]
        config.billing = BillingConfig(cancelledStreams: policy)
        if !extraPlans.isEmpty {
            config.plans = extraPlans
            config.defaultPlan = extraPlans[0].name
        }
    }
}

extension Harness {
    /// A user with `credits` of top-up and a key.
    func funded(_ credits: Int64, email: String = "payer@example.com") async throws -> (key: String, userID: String) {
        let key = try await store.createKey(name: "k", userEmail: email, prefix: "sy-")
        if credits > 0 {
            _ = try await store.grant(userEmail: email, amount: credits * Credits.scale, kind: .topup, note: nil, expiresAt: nil, idempotencyKey: nil, now: EpochClock.nowMilliseconds())
        }
        return (key.secret, key.record.userID!)
    }

    func balance(_ userID: String) async throws -> Int64 {
        await gateway.meter.sync()
        return try await store.creditBalance(userID: userID, policy: gateway.meter.policy, now: EpochClock.nowMilliseconds()).available
    }

    /// Waits until the user's usage rows number `count` (background rows, settlements in flight).
    func usageRows(_ userID: String, count: Int) async throws -> [UsageRecord] {
        var rows: [UsageRecord] = []
        _ = try await eventually {
            rows = try await store.usage(UsageQuery(userID: userID))
            return rows.count >= count
        }
        return rows
    }
}

@Suite("Credits end to end")
struct BillingServerTests {
    @Test func insufficientCreditsIs402InEachFormatAndNothingIsSent() async throws {
        try await Harness.run(configure: billing()) { h in
            let (key, user) = try await h.funded(0)
            let openAI = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "tiered"))
            #expect(openAI.status == 402 && openAI.errorCode == "insufficient_credits")
            #expect(openAI.json?["error"]?["type"]?.stringValue == "insufficient_quota")
            #expect(openAI.json?["error"]?["message"]?.stringValue?.contains("may cost up to 1 credits and your balance is 0") == true)
            #expect(openAI.headers.first(name: "X-Credits-Remaining") == "0")
            let anthropic = try await h.request(
                "/v1/messages", key: key, body: #"{"model":"claude-tiered","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#)
            #expect(anthropic.status == 402 && anthropic.json?["error"]?["type"]?.stringValue == "billing_error")
            let gemini = try await h.request("/v1beta/models/tiered:generateContent", key: key, body: #"{"contents":[{"parts":[{"text":"hi"}]}]}"#)
            #expect(gemini.status == 402)
            #expect(h.mockStats.countersJSON()["requests"]?.intValue == 0, "a request without credits reached the provider")
            let rows = try await h.usageRows(user, count: 3)
            #expect(rows.count == 3 && rows.allSatisfy { $0.status == 402 && $0.credits == 0 && $0.errorCode == "insufficient_credits" })
            // Free models still work.
            #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "demo-mock")).status == 200)
        }
    }

    @Test func aCompletedRequestIsChargedExactlyAndSaysSo() async throws {
        try await Harness.run(configure: billing(multiplier: 2)) { h in
            let (key, user) = try await h.funded(10)
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "tiered"))
            #expect(r.status == 200)
            #expect(r.headers.first(name: "X-Credits-Charged") == "2")
            #expect(r.headers.first(name: "X-Credits-Remaining") == "8")
            #expect(try await h.balance(user) == 8 * Credits.scale)

            let m = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "metered", content: "count these words please"))
            let usage = try #require(m.json?["usage"])
            let expected = Int64(usage["prompt_tokens"]!.intValue!) * 1000 + Int64(usage["completion_tokens"]!.intValue!) * 2000
            #expect(m.headers.first(name: "X-Credits-Charged") == Credits(micros: expected).description)
            // The cap that bounded the reservation was sent upstream.
            #expect(h.lastUpstreamRequest()?["body"]?["max_completion_tokens"]?.intValue == 1000 || h.lastUpstreamRequest()?["body"]?["max_tokens"]?.intValue == 1000)
            let rows = try await h.usageRows(user, count: 2)
            #expect(rows.map(\.credits).sorted() == [2 * Credits.scale, expected].sorted())
            let row = try #require(rows.first { $0.model == "metered" })
            #expect(row.inputTokens == usage["prompt_tokens"]!.intValue! && row.outcome == "ok" && row.status == 200 && !row.usageEstimated)
            #expect(row.upstreamModel == "mock-metered" && row.provider == "up" && row.keyID != nil)
            #expect(try await h.store.checkLedger().isConsistent)
        }
    }

    @Test func aStreamEndsWithItsCostInATrailingComment() async throws {
        try await Harness.run(configure: billing(multiplier: 3)) { h in
            let (key, user) = try await h.funded(10)
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "tiered", stream: true))
            #expect(r.headers.first(name: "X-Credits-Reserved") == "3")
            #expect(r.body.hasSuffix(": credits charged=3 remaining=7\n\n"), "\(r.body.suffix(200))")
            #expect(r.body.contains("data: [DONE]"))
            let anthropic = try await h.request(
                "/v1/messages", key: key, body: #"{"model":"claude-tiered","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
            #expect(anthropic.body.contains("event: message_stop") && anthropic.body.hasSuffix(": credits charged=3 remaining=4\n\n"))
            #expect(try await h.balance(user) == 4 * Credits.scale)
        }
    }

    @Test func platformFailuresBeforeContentAreRefundedInFull() async throws {
        try await Harness.run(configure: billing()) { h in
            let (key, user) = try await h.funded(5)
            let failed = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "tiered", content: "[[mock status=503]] hi"))
            #expect(failed.status == 503 && failed.headers.first(name: "X-Credits-Charged") == "0")
            let broken = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "tiered", stream: true, content: "[[mock drop_after=1]] hi"))
            #expect(broken.status == 200 && broken.body.contains("upstream_stream_error") || broken.body.contains("error"))
            let slow = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "tiered", content: "[[mock status=429 retry_after=1]] hi"))
            #expect(slow.status == 429)
            #expect(try await h.balance(user) == 5 * Credits.scale)
            let rows = try await h.usageRows(user, count: 3)
            #expect(rows.allSatisfy { $0.credits == 0 })
            #expect(Set(rows.map(\.status)) == [503, 200, 429])
            #expect(try await h.store.checkLedger().isConsistent)
        }
    }

    @Test func aStreamThatBreaksAfterContentIsChargedForWhatWasUsed() async throws {
        try await Harness.run(configure: billing()) { h in
            let (key, user) = try await h.funded(100)
            let before = try await h.balance(user)
            // Spaced events, so content reaches the client before the break whatever the machine's load.
            let r = try await h.request(
                "/v1/chat/completions", key: key, body: Harness.chat(model: "metered", stream: true, content: "[[mock chunks=10 chunk_delay_ms=20 drop_after=6]] hi"))
            #expect(r.status == 200 && r.body.contains("upstream_stream_error"))
            #expect(sseData(r.body).contains { $0.contains("\"content\":\"") && !$0.contains("\"content\":\"\"") }, "no content reached the client")
            let rows = try await h.usageRows(user, count: 1)
            let row = try #require(rows.first)
            #expect(row.credits > 0 && row.outcome == "error" && row.usageEstimated, "\(row) \(r.body)")
            #expect(before - (try await h.balance(user)) == row.credits)
        }
    }

    @Test(arguments: [CancelledStreamPolicy.charge, .chargeUsed])
    func aClientThatLeavesMidStreamPaysPerPolicy(policy: CancelledStreamPolicy) async throws {
        try await Harness.run(configure: billing(policy)) { h in
            let (key, user) = try await h.funded(100)
            let reader = Task {
                var r = HTTPClientRequest(url: h.gatewayURL + "/v1/chat/completions")
                r.method = .POST
                r.headers.add(name: "authorization", value: "Bearer \(key)")
                r.body = .bytes(ByteBuffer(string: Harness.chat(model: "metered", stream: true, content: "[[mock chunks=20 chunk_delay_ms=50]] hi")))
                let response = try await h.client.execute(r, timeout: .seconds(60))
                for try await _ in response.body { break }  // reads the first bytes, then hangs up
            }
            _ = try? await reader.value
            let rows = try await h.usageRows(user, count: 1)
            let row = try #require(rows.first)
            let counters = h.mockStats.countersJSON()
            switch policy {
            case .charge:
                // The gateway read the answer to its end and charged its exact cost.
                #expect(counters["streams_completed"]?.intValue == 1 && counters["streams_cancelled"]?.intValue == 0)
                #expect(row.outcome == "ok" && !row.usageEstimated && row.outputTokens > 0)
                #expect(row.credits == Int64(row.inputTokens) * 1000 + Int64(row.outputTokens) * 2000)
            case .chargeUsed:
                // The upstream request was cancelled at once; what was used is charged.
                #expect(try await h.eventually { h.mockStats.countersJSON()["streams_cancelled"]?.intValue == 1 })
                #expect(row.outcome == "client_closed" && row.credits > 0)
            }
            #expect(try await h.store.checkLedger().isConsistent)
            #expect(try await h.store.openReservations().isEmpty)
        }
    }

    @Test func parallelRequestsOnASmallBalanceNeverOverdraw() async throws {
        try await Harness.run(configure: billing()) { h in
            let (key, user) = try await h.funded(10)
            let responses = try await h.parallel(40, key: key, body: Harness.chat(model: "tiered"))
            let ok = responses.filter { r in r.status == 200 }
            let refused = responses.filter { r in r.status == 402 }
            #expect(ok.count == 10 && refused.count == 30)
            #expect(try await h.balance(user) == 0)
            let rows = try await h.usageRows(user, count: 40)
            #expect(rows.count == 40)
            let charged = rows.reduce(Int64(0)) { $0 + $1.credits }
            let check = try await h.store.checkLedger()
            #expect(charged == 10 * Credits.scale && check.totalCharged == charged && check.isConsistent)
        }
    }

    @Test func monthlyPlanCreditsArriveOnFirstUse() async throws {
        try await Harness.run(configure: billing(plans: [PlanConfig(name: "pro", monthlyCredits: .credits(3), signupCredits: .credits(1))])) { h in
            let (key, user) = try await h.funded(0)
            for _ in 0..<4 { #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "tiered")).status == 200) }
            #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "tiered")).status == 402)
            let balance = try await h.request(.GET, "/v1/credits", key: key)
            #expect(balance.json?["balance"] == .number("0"))
            let history = try await h.store.creditHistory(userID: user, limit: 100)
            #expect(history.filter { $0.kind == .grant }.count == 1 && history.filter { $0.kind == .bonus }.count == 1)
        }
    }

    @Test func clientsReadTheirBalanceAndRedeemCodesOnce() async throws {
        try await Harness.run(configure: billing()) { h in
            let (key, _) = try await h.funded(2)
            let codes = try await h.store.createCodes(count: 1, credits: 150 * Credits.scale, expiresAt: nil, now: EpochClock.nowMilliseconds())
            let redeemed = try await h.request("/v1/credits/redeem", key: key, body: #"{"code":"\#(codes[0].code)"}"#)
            #expect(redeemed.status == 200 && redeemed.json?["redeemed"] == .number("150") && redeemed.json?["balance"] == .number("152"))
            let again = try await h.request("/v1/credits/redeem", key: key, body: #"{"code":"\#(codes[0].code)"}"#)
            #expect(again.status == 409 && again.errorCode == "code_already_redeemed")
            #expect(try await h.request("/v1/credits/redeem", key: key, body: #"{"code":"SYC-0000-0000-0000-0000"}"#).status == 404)
            #expect(try await h.request("/v1/credits/redeem", key: key, body: #"{"coupon":"x"}"#).status == 400)
            let balance = try await h.request(.GET, "/v1/credits", key: key)
            #expect(balance.status == 200 && balance.json?["balance"] == .number("152"))
            let buckets = balance.json?["buckets"]?.arrayValue ?? []
            #expect(buckets.count == 2 && buckets.allSatisfy { $0["kind"]?.stringValue == "topup" && $0["expires_at"] == .null })
            // Guessing is limited.
            var statuses: [Int] = []
            for i in 0..<12 { statuses.append(try await h.request("/v1/credits/redeem", key: key, body: #"{"code":"SYC-GUES-S000-0000-00\#(i)"}"#).status) }
            #expect(statuses.contains(429))
        }
    }

    @Test func reservationsLeftOpenAreSettledAtStart() async throws {
        try await Harness.run(configure: billing()) { h in
            let (_, user) = try await h.funded(10)
            let now = EpochClock.nowMilliseconds()
            _ = try await h.store.reserve([ReservationRequest(id: "req_crashed", userID: user, keyID: "key_x", amount: 4 * Credits.scale, model: "tiered")], policy: h.gateway.meter.policy, now: now)
            let restarted = Gateway(config: h.gateway.config, store: h.store, logger: Harness.quiet)
            try await restarted.prepare()
            await restarted.closeClients()
            #expect(try await h.store.openReservations().isEmpty)
            #expect(try await h.balance(user) == 6 * Credits.scale)  // `charge`: the hold is charged
            let row = try #require(try await h.store.usage(UsageQuery(userID: user)).first)
            #expect(row.outcome == "interrupted" && row.credits == 4 * Credits.scale)
            #expect(try await h.store.checkLedger().isConsistent)
        }
    }
}

@Suite("Responses API end to end")
struct ResponsesServerTests {
    @Test func aResponsesRequestIsBilledAndLoggedLikeAnyOther() async throws {
        try await Harness.run(configure: { c, port in
            billing()(&c, port)
            c.providers.append(ProviderConfig(name: "resp", type: .openaiResponses, baseURL: "http://127.0.0.1:\(port)/v1", apiKey: "upstream-secret"))
            c.models.append(ModelConfig(name: "codex", provider: "resp", upstream: "gpt-5.3-codex", multiplier: .credits(2)))
        }) { h in
            let (key, user) = try await h.funded(10)
            let r = try await h.request("/v1/responses", key: key, body: #"{"model":"codex","input":"hi"}"#)
            #expect(r.status == 200 && r.headers.first(name: "X-Credits-Charged") == "2")
            #expect(h.lastUpstreamRequest()?["path"]?.stringValue == "/v1/responses")
            let streamed = try await h.request("/api/v1/responses", key: key, body: #"{"model":"tiered","input":"hi","stream":true}"#)
            #expect(streamed.body.contains("event: response.completed") && streamed.body.hasSuffix(": credits charged=1 remaining=7\n\n"))
            let rows = try await h.usageRows(user, count: 2)
            #expect(rows.allSatisfy { $0.inputTokens > 0 && $0.outputTokens > 0 && $0.status == 200 })
            #expect(try await h.balance(user) == 7 * Credits.scale)
            #expect(try await h.store.checkLedger().isConsistent)
        }
    }
}

@Suite("Responses API: stored conversations")
struct StoredResponsesTests {
    @Test func previousResponseIDNeedsRetentionAndExpires() async throws {
        try await Harness.run(configure: { c, _ in c.responses = ResponsesConfig(retention: .init(milliseconds: 0)) }) { h in
            let key = try await h.key()
            let first = try await h.request("/v1/responses", key: key, body: #"{"model":"gpt-5.1","input":"hi"}"#)
            let id = first.json?["id"]?.stringValue ?? ""
            let next = try await h.request("/v1/responses", key: key, body: #"{"model":"gpt-5.1","input":"again","previous_response_id":"\#(id)"}"#)
            #expect(next.status == 400 && next.errorCode == "previous_response_not_supported")
        }
        try await Harness.run(configure: { c, _ in c.responses = ResponsesConfig(retention: .init(milliseconds: 3000)) }) { h in
            // 3 s, not less: the follow-up must land inside it on a loaded machine.
            let key = try await h.key()
            let first = try await h.request("/v1/responses", key: key, body: #"{"model":"gpt-5.1","input":"hi"}"#)
            let id = first.json?["id"]?.stringValue ?? ""
            let soon = try await h.request("/v1/responses", key: key, body: #"{"model":"gpt-5.1","input":"again","previous_response_id":"\#(id)"}"#)
            #expect(soon.status == 200)
            let sent = h.lastUpstreamRequest()?["body"]?["messages"]?.arrayValue?.count
            #expect(sent == 3)  // hi, the answer, again
            try await Task.sleep(for: .milliseconds(3500))
            let late = try await h.request("/v1/responses", key: key, body: #"{"model":"gpt-5.1","input":"again","previous_response_id":"\#(id)"}"#)
            #expect(late.status == 404 && late.errorCode == "previous_response_not_found")
            let unstored = try await h.request("/v1/responses", key: key, body: #"{"model":"gpt-5.1","input":"hi","store":false}"#)
            let other = unstored.json?["id"]?.stringValue ?? ""
            let missing = try await h.request("/v1/responses", key: key, body: #"{"model":"gpt-5.1","input":"x","previous_response_id":"\#(other)"}"#)
            #expect(missing.status == 404)
        }
    }
}

/// Usage rows of requests that hold no credits wait a few milliseconds to share one transaction.
@Suite struct UsageRowTests {
    @Test func bufferedUsageRowsShowInTheAdminAPIAtOnceAndLandTogether() async throws {
        try await Harness.run { h in
            let key = try await h.key()
            for _ in 0..<3 { #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat()).status == 200) }
            // Right after the answers, the rows may still be buffered: the admin API writes them first.
            let listed = try await h.request(.GET, "/admin/v1/usage", key: adminKey)
            #expect(listed.status == 200)
            #expect(listed.json?["data"]?.arrayValue?.count == 3, "\(listed.body)")
            // A fourth row is written when its window ends, without a reader asking.
            #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat()).status == 200)
            #expect(try await h.eventually { try await h.store.usage(UsageQuery()).count == 4 })
        }
    }
}
