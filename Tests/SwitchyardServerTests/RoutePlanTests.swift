import NIOCore
import NIOHTTP1
import SwitchyardCore
import Testing

@testable import SwitchyardServer
@testable import SwitchyardStore

/// Routing's decisions (`RoutePlan`) without any I/O or waiting: what is tried, in which order, after
/// which wait, and when routing gives up. (RoutingTests drives the same decisions end to end.)
@Suite("Route plan")
struct RoutePlanTests {
    static func gateway(_ models: String) async throws -> Gateway {
        let yaml = """
            providers:
              - {name: a, type: openai, base_url: "http://127.0.0.1:1/v1"}
              - {name: b, type: openai, base_url: "http://127.0.0.1:1/v1"}
            models:
            \(models)
            routing:
              max_retry_wait: 1s
            """
        let config = try YAMLConfigDecoder(environment: [:]).decode(GatewayConfig.self, from: yaml)
        return Gateway(config: config, store: try await SQLiteStore.open(.sqliteMemory, logger: Harness.quiet), logger: Harness.quiet)
    }

    static func plan(_ g: Gateway, _ model: String) throws -> RoutePlan {
        RoutePlan(target: try g.resolve(model), models: g.models, routing: g.config.routing)
    }

    static func attempt(_ step: RoutePlan.Step, sourceLocation: SourceLocation = #_sourceLocation) -> Attempt? {
        guard case .attempt(let a) = step else {
            Issue.record("expected an attempt, got \(step)", sourceLocation: sourceLocation)
            return nil
        }
        return a
    }

    static func upstream(_ status: Int, retryAfter: String? = nil, _ a: Attempt) -> AttemptOutcome<Never> {
        var headers = HTTPHeaders()
        if let retryAfter { headers.add(name: "retry-after", value: retryAfter) }
        return .upstreamError(status: status, headers: headers, body: .init(), provider: a.provider)
    }

    @Test func aRetryableFailureMovesToAnUntriedDeploymentAfterABackoff() async throws {
        let g = try await Self.gateway("""
              - name: m
                retries: 1
                strategy: ordered
                deployments: [{provider: a}, {provider: b}]
            """)
        var plan = try Self.plan(g, "m")
        let first = try #require(Self.attempt(plan.next(now: EpochClock.nowMilliseconds())))
        #expect(first.provider.name == "a")
        guard case .goOn = plan.record(Self.upstream(503, first), of: first) else { Issue.record("503 ended routing"); return }
        guard case .wait(let backoff) = plan.next(now: EpochClock.nowMilliseconds()) else { Issue.record("no backoff"); return }
        #expect((0...100).contains(backoff))
        let second = try #require(Self.attempt(plan.next(now: EpochClock.nowMilliseconds())))
        #expect(second.provider.name == "b", "the untried deployment comes next")
        guard case .goOn = plan.record(.transportError(GatewayError.invalidRequest("down")), of: second) else { Issue.record("stopped"); return }
        guard case .finished(.attempt(.transportError)) = plan.next(now: EpochClock.nowMilliseconds()) else {
            Issue.record("two attempts (1 + retries) should end with the last failure"); return
        }
        #expect(first.deployment.inFlight == 0 && second.deployment.inFlight == 0, "every lease was given back")
    }

    @Test func aFailureThatIsNotRetryableEndsRouting() async throws {
        let g = try await Self.gateway("""
              - name: m
                retries: 3
                deployments: [{provider: a}, {provider: b}]
            """)
        var plan = try Self.plan(g, "m")
        let first = try #require(Self.attempt(plan.next(now: EpochClock.nowMilliseconds())))
        guard case .stop(.attempt(.upstreamError(400, _, _, _))) = plan.record(Self.upstream(400, first), of: first) else {
            Issue.record("a 400 should end routing"); return
        }
        #expect(first.deployment.inFlight == 0)
    }

    @Test func aRetryAfterLongerThanTheMaximumWaitMovesToTheFallback() async throws {
        let g = try await Self.gateway("""
              - name: m
                retries: 2
                fallbacks: [f]
                deployments: [{provider: a}]
              - name: f
                deployments: [{provider: b}]
            """)
        var plan = try Self.plan(g, "m")
        let first = try #require(Self.attempt(plan.next(now: EpochClock.nowMilliseconds())))
        guard case .goOn = plan.record(Self.upstream(429, retryAfter: "30", first), of: first) else { Issue.record("stopped"); return }
        // `a` is skipped for 30 s, longer than max_retry_wait (1 s): the fallback, after a backoff.
        guard case .wait(let backoff) = plan.next(now: EpochClock.nowMilliseconds()) else { Issue.record("no backoff"); return }
        #expect((0...100).contains(backoff))
        let second = try #require(Self.attempt(plan.next(now: EpochClock.nowMilliseconds())))
        #expect(second.provider.name == "b" && second.clientModel == "f")
        second.lease.release()
    }

    @Test func whenNothingCanTakeTheCallRoutingEndsWithTheSoonestTime() async throws {
        let g = try await Self.gateway("""
              - name: m
                deployments: [{provider: a, requests_per_minute: 1}]
            """)
        var plan = try Self.plan(g, "m")
        let only = try #require(Self.attempt(plan.next(now: EpochClock.nowMilliseconds())))
        only.lease.succeeded()
        only.lease.release()
        // The minute's one request is spent: a new call finds nothing within max_retry_wait.
        var next = try Self.plan(g, "m")
        let now = EpochClock.nowMilliseconds()
        guard case .finished(.unavailable(let at)) = next.next(now: now) else { Issue.record("expected unavailable"); return }
        #expect(at.map { $0 > now + 50_000 && $0 <= now + 60_000 } == true, "\(String(describing: at))")
    }
}
