import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import SwitchyardCore

/// Tells a running gateway that keys or users changed (after a CLI command wrote the database), so the
/// change applies to the very next request instead of after the next poll of the auth generation.
public enum GatewayNotifier {
    /// Best effort: `POST /admin/v1/cache/invalidate` on the configured listen address with the admin
    /// key, within half a second. Returns whether a gateway acknowledged; failures are silent (the
    /// gateway's own poll picks the change up within a quarter of a second).
    @discardableResult
    public static func invalidateAuthCache(config: GatewayConfig) async -> Bool {
        guard let adminKey = config.adminKey, config.listen.port != 0 else { return false }
        var host = config.listen.host
        if host == "0.0.0.0" { host = "127.0.0.1" }
        if host == "::" { host = "::1" }
        let url = "http://\(host.contains(":") ? "[\(host)]" : host):\(config.listen.port)/admin/v1/cache/invalidate"
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "authorization", value: "Bearer \(adminKey)")
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .milliseconds(300), read: .milliseconds(500))
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        var acknowledged = false
        if let response = try? await client.execute(request, timeout: .milliseconds(500)) {
            _ = try? await response.body.collect(upTo: 4096)
            acknowledged = response.status == .ok
        }
        try? await client.shutdown()
        return acknowledged
    }
}
