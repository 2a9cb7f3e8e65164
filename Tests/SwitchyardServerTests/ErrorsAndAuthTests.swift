import AsyncHTTPClient
import Hummingbird
import NIOCore
import NIOHTTP1
import SwitchyardMock
import SwitchyardStore
import SwitchyardCore
import Testing
@testable import SwitchyardServer

@Suite("Errors and authentication")
struct ErrorsAndAuthTests {
    @Test func keysAreAcceptedAsBearerOrXAPIKey() async throws {
        try await Harness.run { h in
            let key = try await h.key()
            let bearer = try await h.request("/v1/chat/completions", key: key, body: Harness.chat())
            #expect(bearer.status == 200)
            let xapi = try await h.request("/v1/chat/completions", body: Harness.chat(), headers: [("x-api-key", key)])
            #expect(xapi.status == 200)
            let lower = try await h.request("/v1/chat/completions", body: Harness.chat(), headers: [("authorization", "bearer \(key)")])
            #expect(lower.status == 200)
        }
    }

    /// The credential headers read in one pass must read as the fields' own subscripts read them.
    @Test func credentialHeadersReadInOnePassAsSubscriptsReadThem() {
        let cases: [HTTPFields] = [
            [.authorization: "Bearer sy-a"],
            [.init("X-Api-Key")!: "sy-b", .contentType: "application/json"],
            [.authorization: "Bearer sy-a", .authorization: "Bearer sy-c", .xGoogAPIKey: "g"],
            [.xAPIKey: "1", .xGoogAPIKey: "2", .xAPIKey: "3", .authorization: ""],
            [:],
        ]
        for fields in cases {
            let view = HTTPFieldsView(headers: fields, queryKey: "q")
            #expect(view.authorization == fields[.authorization])
            #expect(view.apiKey == fields[.xAPIKey])
            #expect(view.googAPIKey == fields[.xGoogAPIKey])
            #expect(view.queryKey == "q")
        }
    }

    @Test func authFailuresAre401InOpenAIFormat() async throws {
        try await Harness.run { h in
            let missing = try await h.request("/v1/chat/completions", body: Harness.chat())
            #expect(missing.status == 401)
            #expect(missing.errorCode == "invalid_api_key")
            #expect(missing.json?["error"]?["message"]?.stringValue?.contains("missing API key") == true)

            let wrong = try await h.request("/v1/chat/completions", key: "sy-notakey", body: Harness.chat())
            #expect(wrong.status == 401)
            #expect(wrong.json?["error"]?["type"]?.stringValue == "authentication_error")

            let basic = try await h.request("/v1/chat/completions", body: Harness.chat(), headers: [("authorization", "Basic Zm9vOmJhcg==")])
            #expect(basic.status == 401)
            #expect(basic.json?["error"]?["message"]?.stringValue?.contains("malformed Authorization") == true)

            let huge = try await h.request("/v1/chat/completions", key: String(repeating: "k", count: 10_000), body: Harness.chat())
            #expect(huge.status == 401)
        }
    }

    @Test func revokedKeyStopsAtOnceViaAdminAPI() async throws {
        try await Harness.run { h in
            let created = try await h.store.createKey(name: "r", userEmail: nil, prefix: "sy-")
            #expect(try await h.request("/v1/chat/completions", key: created.secret, body: Harness.chat()).status == 200)
            let revoke = try await h.request(.DELETE, "/admin/v1/keys/\(created.record.id)", key: "test-admin-key-0123456789")
            #expect(revoke.status == 200)
            let after = try await h.request("/v1/chat/completions", key: created.secret, body: Harness.chat())
            #expect(after.status == 401)
            #expect(after.json?["error"]?["message"]?.stringValue == "this API key has been revoked")
        }
    }

    @Test func revocationByAnotherProcessIsPickedUp() async throws {
        // The CLI writes the database directly; the running gateway notices through the auth generation.
        try await Harness.run { h in
            let created = try await h.store.createKey(name: "r", userEmail: nil, prefix: "sy-")
            #expect(try await h.request("/v1/chat/completions", key: created.secret, body: Harness.chat()).status == 200)
            _ = try await h.store.revokeKey(id: created.record.id)
            let stopped = try await h.eventually(timeout: .seconds(10)) {
                try await h.request("/v1/chat/completions", key: created.secret, body: Harness.chat()).status == 401
            }
            #expect(stopped)
        }
    }

    @Test func adminAPIRequiresTheAdminKeyAndCreatesKeys() async throws {
        try await Harness.run { h in
            #expect(try await h.request(.GET, "/admin/v1/keys").status == 401)
            #expect(try await h.request(.GET, "/admin/v1/keys", key: "wrong-admin-key-000000").status == 401)
            let created = try await h.request("/admin/v1/keys", key: "test-admin-key-0123456789", body: #"{"name":"ci","user":"dev@example.com"}"#)
            #expect(created.status == 201)
            let secret = try #require(created.json?["key"]?.stringValue)
            #expect(secret.hasPrefix("sy-"))
            #expect(created.json?["user"]?.stringValue == "dev@example.com")
            #expect(try await h.request("/v1/chat/completions", key: secret, body: Harness.chat()).status == 200)
            let list = try await h.request(.GET, "/admin/v1/keys", key: "test-admin-key-0123456789")
            #expect(list.json?["data"]?.arrayValue?.count == 1)
            #expect(!list.body.contains(secret))
            let bad = try await h.request("/admin/v1/keys", key: "test-admin-key-0123456789", body: #"{"name":""}"#)
            #expect(bad.status == 400)
            #expect(try await h.request(.DELETE, "/admin/v1/keys/key_nope", key: "test-admin-key-0123456789").status == 404)
        }
    }

    @Test func badRequestsAre400WithAClearMessage() async throws {
        try await Harness.run { h in
            let key = try await h.key()
            let cases: [(String, String, String)] = [
                ("{not json", "invalid_json", "invalid JSON"),
                ("", "invalid_json", "empty"),
                ("[1,2]", "invalid_json", "JSON object"),
                (#"{"messages":[]}"#, "missing_required_parameter", "`model`"),
                (#"{"model":"gpt-5.1"}"#, "missing_required_parameter", "`messages`"),
                (#"{"model":42,"messages":[]}"#, "invalid_type", "`model` must be a string"),
                (#"{"model":"gpt-5.1","messages":"hi"}"#, "invalid_type", "`messages` must be an array"),
                (#"{"model":"gpt-5.1","messages":[],"stream":"yes"}"#, "invalid_type", "`stream` must be a boolean"),
            ]
            for (body, code, text) in cases {
                let r = try await h.request("/v1/chat/completions", key: key, body: body)
                #expect(r.status == 400, "\(body)")
                #expect(r.errorCode == code, "\(body)")
                #expect(r.json?["error"]?["message"]?.stringValue?.contains(text) == true, "\(body): \(r.body)")
                #expect(r.json?["error"]?["type"]?.stringValue == "invalid_request_error")
            }
        }
    }

    @Test func deepJSONIsRejected() async throws {
        try await Harness.run { h in
            let key = try await h.key()
            let deep = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
            let r = try await h.request("/v1/chat/completions", key: key, body: #"{"model":"gpt-5.1","messages":\#(deep)}"#)
            #expect(r.status == 400)
            #expect(r.json?["error"]?["message"]?.stringValue?.contains("nesting deeper than 64") == true)
        }
    }

    @Test func unknownModelIs404() async throws {
        try await Harness.run { h in
            let key = try await h.key()
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(model: "gpt-9"))
            #expect(r.status == 404)
            #expect(r.errorCode == "model_not_found")
            #expect(r.json?["error"]?["param"]?.stringValue == "model")
        }
    }

    @Test func bodyOverTheLimitIs413() async throws {
        try await Harness.run(configure: { c, _ in c.limits.maxBodyBytes = 4096 }) { h in
            let key = try await h.key()
            let big = Harness.chat(content: String(repeating: "x", count: 8000))
            let r = try await h.request("/v1/chat/completions", key: key, body: big)
            #expect(r.status == 413)
            #expect(r.errorCode == "request_too_large")
            // Just under the limit is fine.
            let ok = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(content: String(repeating: "x", count: 3000)))
            #expect(ok.status == 200)
        }
    }

    @Test func oversizedHeadersAreRejected() async throws {
        try await Harness.run(configure: { c, _ in c.limits.maxHeaderBytes = 8192 }) { h in
            let key = try await h.key()
            do {
                let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(), headers: [("x-junk", String(repeating: "a", count: 20_000))])
                #expect(r.status == 400 || r.status == 431)
            } catch {
                // Closing the connection without a response is also a rejection.
            }
            #expect(try await h.request("/v1/chat/completions", key: key, body: Harness.chat()).status == 200)
        }
    }

    @Test func upstreamErrorsPassThroughWithStatusAndMessage() async throws {
        // With retries off, the provider's one answer is the client's (routing tests cover retries).
        try await Harness.run(configure: { c, _ in c.routing.retries = 0 }) { h in
            let key = try await h.key()
            let limited = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(content: "[[mock status=429 retry_after=7 message=slow_down]] hi"))
            #expect(limited.status == 429)
            #expect(limited.headers.first(name: "retry-after") == "7")
            #expect(limited.json?["error"]?["message"]?.stringValue == "slow_down")
            let bad = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(content: "[[mock status=400 message=bad_param]] hi"))
            #expect(bad.status == 400)
            #expect(bad.json?["error"]?["message"]?.stringValue == "bad_param")
            let down = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(content: "[[mock status=503]] hi"))
            #expect(down.status == 503)
        }
    }

    @Test func upstreamRejectingTheGatewayKeyIs502NotTheClientsFault() async throws {
        try await Harness.run(mock: .init(requiredKey: "the-right-key")) { h in
            let key = try await h.key()
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat())
            #expect(r.status == 502)
            #expect(r.errorCode == "upstream_auth_failed")
        }
    }

    @Test func unreachableUpstreamIs502() async throws {
        try await Harness.run(configure: { c, _ in
            c.providers[0].baseURL = "http://127.0.0.1:1/v1"
        }) { h in
            let key = try await h.key()
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat())
            #expect(r.status == 502)
            #expect(r.errorCode == "upstream_unreachable")
        }
    }

    @Test func slowUpstreamIs504() async throws {
        try await Harness.run(configure: { c, _ in
            c.routing.timeouts.firstByte = .init(milliseconds: 300)
        }) { h in
            let key = try await h.key()
            let r = try await h.request("/v1/chat/completions", key: key, body: Harness.chat(content: "[[mock delay_ms=3000]] hi"))
            #expect(r.status == 504)
            #expect(r.errorCode == "upstream_timeout")
            #expect(r.json?["error"]?["type"]?.stringValue == "timeout_error")
        }
    }
}
