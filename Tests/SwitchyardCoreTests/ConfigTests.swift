import Foundation
import Testing
@testable import SwitchyardCore

@Suite("Configuration")
struct ConfigTests {
    func load(_ yaml: String, env: [String: String] = [:]) throws -> GatewayConfig {
        try YAMLConfigDecoder(environment: env).decode(GatewayConfig.self, from: yaml)
    }

    func error(_ yaml: String, env: [String: String] = [:]) -> ConfigError? {
        do {
            _ = try load(yaml, env: env)
            return nil
        } catch let e as ConfigError {
            return e
        } catch {
            Issue.record("unexpected error type \(error)")
            return nil
        }
    }

    let sample = """
        listen: "127.0.0.1:4000"
        database: "sqlite:switchyard.db"
        admin_key: "${SWITCHYARD_ADMIN_KEY}"
        path_prefixes: ["/api/proxy"]
        providers:
          - name: openai
            type: openai
            base_url: "https://api.openai.com/v1/"
            api_key: "${OPENAI_API_KEY}"
        models:
          - name: gpt-5.1
            provider: openai
          - name: fast
            provider: openai
            upstream: gpt-5.1-mini
        routing:
          timeouts: {connect: 2s, first_byte: 90s, idle: 500ms}
        limits:
          max_body_size: 10MB
        """

    @Test func decodesTheDocumentedShape() throws {
        let c = try load(sample, env: ["SWITCHYARD_ADMIN_KEY": "admin-key-of-sixteen", "OPENAI_API_KEY": "sk-test"])
        #expect(c.listen == ListenAddress(host: "127.0.0.1", port: 4000))
        #expect(c.database == .sqlite(path: "switchyard.db"))
        #expect(c.adminKey == "admin-key-of-sixteen")
        #expect(c.providers[0].apiKey == "sk-test")
        #expect(c.providers[0].baseURL == "https://api.openai.com/v1")  // trailing slash normalised
        #expect(c.models[0].upstream == nil)  // defaults to the name (resolved per request)
        #expect(c.models[1].upstream == "gpt-5.1-mini")
        #expect(c.routing.timeouts.connect.milliseconds == 2000)
        #expect(c.routing.timeouts.idle.milliseconds == 500)
        #expect(c.limits.maxBodyBytes == 10 << 20)
        #expect(c.pathPrefixes == ["/api/proxy"])
        #expect(c.keyPrefix == "sy-")
    }

    @Test func theLogBufferHasADefaultAndAFloor() throws {
        #expect(try load("listen: \"127.0.0.1:4000\"\n").log.buffer.bytes == 4 << 20)
        #expect(try load("log:\n  buffer: 256KB\n").log.buffer.bytes == 256 << 10)
        let e = try #require(error("log:\n  buffer: 1KB\n"))
        #expect(e.path == "log.buffer")
        #expect(e.message.contains("at least 4KB"))
    }

    @Test func unknownKeyNamesKeyAndLine() throws {
        let e = try #require(error("listen: \"127.0.0.1:4000\"\nproviders:\n  - name: a\n    type: openai\n    base_url: http://x\n    api_kee: k\n"))
        #expect(e.line == 6)
        #expect(e.path == "providers[0].api_kee")
        #expect(e.message.contains("unknown key `api_kee`"))
        #expect(e.description.contains("line 6"))
    }

    @Test func wrongTypeNamesKeyAndLine() throws {
        let e = try #require(error("limits:\n  max_json_depth: deep\n"))
        #expect(e.line == 2)
        #expect(e.path == "limits.max_json_depth")
        #expect(e.message.contains("expected an integer"))
        let e2 = try #require(error("providers: {name: x}\n"))
        #expect(e2.message.contains("expected a list"))
        #expect(e2.line == 1)
    }

    @Test func interpolatesEnvironmentWithDefaults() throws {
        let yaml = "admin_key: \"${ADMIN:-fallback-admin-key-123}\"\nkey_prefix: \"${PREFIX:-sk-}\"\npath_prefixes: [\"$${NOT_A_VAR}\"]\n"
        let e = error(yaml)
        // `$$` escapes: "/..." check fails because the prefix does not start with "/".
        #expect(e?.path == "path_prefixes[0]")
        #expect(e?.message.contains("starts with `/`") == true, "`$$` must yield a literal `$`, not a variable lookup")
        let c = try load("admin_key: \"${ADMIN:-fallback-admin-key-123}\"\nkey_prefix: \"${PREFIX:-sk-}\"\n", env: ["PREFIX": "omni_"])
        #expect(c.adminKey == "fallback-admin-key-123")
        #expect(c.keyPrefix == "omni_")
    }

    @Test func missingVariableIsAnError() throws {
        let e = try #require(error("admin_key: \"${NOPE_NOT_SET}\"\n"))
        #expect(e.message.contains("NOPE_NOT_SET"))
        #expect(e.line == 1)
        #expect(e.path == "admin_key")
    }

    @Test func modelMustNameAKnownProvider() throws {
        let e = try #require(error("providers:\n  - {name: a, type: mock}\nmodels:\n  - name: m\n    provider: b\n"))
        #expect(e.line == 5)
        #expect(e.message.contains("provider `b`"))
    }

    @Test func rejectsBadValues() {
        #expect(error("listen: \"nope\"\n")?.message.contains("host:port") == true)
        #expect(error("database: \"mysql://x\"\n")?.message.contains("sqlite:") == true)
        #expect(error("providers:\n  - {name: a, type: bogus, base_url: http://x}\n")?.message.contains("unknown provider type `bogus`") == true)
        #expect(error("providers:\n  - {name: a, type: openai}\n")?.message.contains("base_url is required") == true)
        #expect(error("providers:\n  - {name: a, type: openai, base_url: \"ftp://x\"}\n")?.message.contains("http://") == true)
        #expect(error("providers:\n  - {name: a, type: mock}\n  - {name: a, type: mock}\n")?.message.contains("duplicate provider") == true)
        #expect(error("routing:\n  timeouts: {connect: soon}\n")?.message.contains("duration") == true)
        #expect(error("admin_key: short\n")?.message.contains("16") == true)
        #expect(error("path_prefixes: [\"/v1\"]\n") != nil)
        #expect(error("listen: [1, 2\n")?.message.contains("invalid YAML") == true)
    }

    @Test func emptyDocumentGivesDefaults() throws {
        let c = try load("")
        #expect(c.listen.port == 4000)
        #expect(c.providers.isEmpty)
        #expect(c.server.drainTimeout.milliseconds == 30_000)
    }

    @Test func durationsAndSizes() {
        #expect(ConfigDuration.parse("250ms")?.milliseconds == 250)
        #expect(ConfigDuration.parse("1.5s")?.milliseconds == 1500)
        #expect(ConfigDuration.parse("5m")?.milliseconds == 300_000)
        #expect(ConfigDuration.parse("24h")?.milliseconds == 86_400_000)
        #expect(ConfigDuration.parse("30")?.milliseconds == 30_000)
        #expect(ConfigDuration.parse("-1s") == nil)
        #expect(ByteSize.parse("64KB")?.bytes == 65536)
        #expect(ByteSize.parse("10 MiB")?.bytes == 10 << 20)
        #expect(ByteSize.parse("512")?.bytes == 512)
        #expect(ByteSize.parse("lots") == nil)
        #expect(ListenAddress.parse("[::1]:8080") == ListenAddress(host: "::1", port: 8080))
        #expect(ListenAddress.parse(":9000") == ListenAddress(host: "0.0.0.0", port: 9000))
        #expect(UpstreamURL("http://localhost:11434/v1")?.port == 11434)
        #expect(UpstreamURL("https://user@host/") == nil)
    }

    let plans = """
        providers:
          - {name: p, type: mock}
        models:
          - {name: claude-haiku-4.5, provider: p}
          - {name: omni-fast, provider: p}
          - {name: omni-highest, provider: p}
          - {name: "gpt-*", provider: p}
        plans:
          - name: free
            models: ["claude-haiku-4.5", "omni-fast"]
            requests_per_minute: 70
            requests_per_day: 5000
            concurrent_requests: 1
          - name: pro
            models: ["*"]
            requests_per_minute: 600
            concurrent_requests: 10
            tokens_per_minute: 200000
        default_plan: free
        day_time_zone: Europe/Berlin
        """

    @Test func decodesPlans() throws {
        let c = try load(plans)
        #expect(c.plans.map(\.name) == ["free", "pro"])
        #expect(c.defaultPlan == "free" && c.dayTimeZone == "Europe/Berlin")
        let free = try #require(c.plan(named: "free"))
        #expect(free.limits == LimitValues(requestsPerMinute: 70, requestsPerDay: 5000, concurrentRequests: 1))
        #expect(free.allows("omni-fast") && !free.allows("omni-highest"))
        #expect(c.plan(named: "pro")?.limits.tokensPerMinute == 200_000)
        #expect(c.plan(named: "pro")?.allows("omni-highest") == true)
        #expect(c.knowsModel("gpt-5.1-mini") && c.knowsModel("claude-*") && !c.knowsModel("llama"))
    }

    @Test func withoutPlansEveryoneIsUnlimited() throws {
        let c = try load("")
        #expect(c.plans.map(\.name) == ["unlimited"] && c.defaultPlan == "unlimited")
        #expect(c.plans[0].limits.isEmpty && c.plans[0].allows("anything"))
    }

    @Test func planMistakesNameTheKeyAndLine() {
        let unknownKey = error(plans.replacingOccurrences(of: "concurrent_requests: 1", with: "concurrency: 1"))
        #expect(unknownKey?.message.contains("unknown key `concurrency`") == true)
        #expect(unknownKey?.path == "plans[0].concurrency" && unknownKey?.line == 13)
        let unknownModel = error(plans.replacingOccurrences(of: "\"omni-fast\"]", with: "\"omni-slow\"]"))
        #expect(unknownModel?.message.contains("omni-slow") == true && unknownModel?.path == "plans[0].models[1]")
        let noDefault = error(plans.replacingOccurrences(of: "default_plan: free", with: ""))
        #expect(noDefault?.message.contains("default_plan is required") == true)
        let missingDefault = error(plans.replacingOccurrences(of: "default_plan: free", with: "default_plan: gold"))
        #expect(missingDefault?.message.contains("`gold` is not a defined plan") == true)
        let zero = error(plans.replacingOccurrences(of: "requests_per_minute: 70", with: "requests_per_minute: 0"))
        #expect(zero?.message.contains("at least 1") == true && zero?.path.hasPrefix("plans[0]") == true)
        let duplicate = error(plans.replacingOccurrences(of: "name: pro", with: "name: free"))
        #expect(duplicate?.message.contains("duplicate plan name") == true)
        let zone = error(plans.replacingOccurrences(of: "Europe/Berlin", with: "Europe/Atlantis"))
        #expect(zone?.message.contains("not a known time zone") == true)
        let wrongType = error(plans.replacingOccurrences(of: "requests_per_day: 5000", with: "requests_per_day: many"))
        #expect(wrongType?.line == 12)
    }

    @Test func decodesDeploymentsAliasesEnsemblesAndRouting() throws {
        let c = try load("""
            providers:
              - {name: anthropic-a, type: anthropic, base_url: "https://a.example", api_key: ka}
              - {name: anthropic-b, type: anthropic, base_url: "https://b.example", api_key: kb, requests_per_minute: 50}
              - {name: openai, type: openai, base_url: "https://api.openai.com/v1"}
            models:
              - name: claude-sonnet-4.6
                deployments:
                  - {provider: anthropic-a, upstream: claude-sonnet-4-6, weight: 3}
                  - {provider: anthropic-b, upstream: claude-sonnet-4-6, weight: 1, api_key: own, requests_per_minute: 20}
                strategy: least_busy
                fallbacks: [gpt-5.1]
                timeouts: {first_byte: 90s}
                retries: 4
              - {name: gpt-5.1, provider: openai}
              - {name: sonnet, alias_of: claude-sonnet-4.6}
              - name: omni
                type: ensemble
                proposers: [claude-sonnet-4.6, gpt-5.1]
                aggregator: claude-sonnet-4.6
            routing:
              retries: 1
              timeouts: {connect: 5s, first_byte: 60s, idle: 120s}
              cooldown: {failures: 5, for: 1m}
              heartbeat: 10s
              max_retry_wait: 3s
            """)
        let m = c.models[0]
        #expect(m.deployments.count == 2 && m.deployments[0].weight == 3 && m.deployments[1].apiKey == "own")
        #expect(m.deployments[1].requestsPerMinute == 20 && c.providers[1].requestsPerMinute == 50)
        #expect(m.strategy == .leastBusy && m.fallbacks == ["gpt-5.1"] && m.retries == 4)
        #expect(m.timeouts.resolved(c.routing.timeouts).firstByte.milliseconds == 90_000)
        #expect(m.timeouts.resolved(c.routing.timeouts).idle.milliseconds == 120_000)
        #expect(c.models[2].kind == .alias("claude-sonnet-4.6"))
        #expect(c.models[3].kind == .ensemble(proposers: ["claude-sonnet-4.6", "gpt-5.1"], aggregator: "claude-sonnet-4.6"))
        #expect(c.routing.retries == 1 && c.routing.cooldown.failures == 5 && c.routing.cooldown.duration.milliseconds == 60_000)
        #expect(c.routing.heartbeat.milliseconds == 10_000 && c.routing.maxRetryWait.milliseconds == 3000)
    }

    @Test func routingMistakesAreNamed() throws {
        let providers = "providers:\n  - {name: p, type: openai, base_url: \"http://x\"}\nmodels:\n"
        let cases: [(String, String)] = [
            ("  - name: m\n    deployments: [{provider: nope}]\n", "provider"),
            ("  - name: m\n    deployments: [{provider: p, weight: 0}]\n", "weight"),
            ("  - name: m\n    deployments: []\n", "at least one"),
            ("  - name: m\n    provider: p\n    deployments: [{provider: p}]\n", "not both"),
            ("  - name: m\n    provider: p\n    strategy: random\n", "strategy"),
            ("  - name: m\n    provider: p\n    fallbacks: [ghost]\n", "ghost"),
            ("  - name: m\n    provider: p\n    fallbacks: [m]\n", "its own"),
            ("  - name: m\n    alias_of: ghost\n", "ghost"),
            ("  - name: m\n    alias_of: m2\n    provider: p\n  - {name: m2, provider: p}\n", "alias"),
            ("  - name: m\n    type: ensemble\n    proposers: [p1]\n", "aggregator"),
            ("  - name: m\n    type: ensemble\n    proposers: [ghost]\n    aggregator: m2\n  - {name: m2, provider: p}\n", "ghost"),
            ("  - name: m\n    provider: p\n    timeouts: {idle: 0s}\n", "idle"),
            ("  - name: m\n    provider: p\n    retries: 11\n", "retries"),
        ]
        for (models, expected) in cases {
            let e = error(providers + models)
            #expect(e?.message.contains(expected) == true, "\(models): \(e?.description ?? "no error")")
            #expect(e?.line != nil, "\(models): no line")
        }
        #expect(error("routing:\n  cooldown: {failures: 0}\n") != nil)
        #expect(error("routing:\n  heartbeat: fast\n")?.message.contains("duration") == true)
    }
}
