import HTTPTypes
import Hummingbird
import NIOCore
import SwitchyardCore
import SwitchyardStore

extension Gateway {
    /// Registers the admin API under `/admin/v1` (auth: the configured `admin_key`).
    func addAdminRoutes(to router: Router<GatewayContext>) {
        let admin = router.group("/admin/v1")
        admin.get("/keys") { request, _ in
            try self.authenticateAdmin(request)
            let keys = try await self.store.listKeys()
            return Self.json(["object": "list", "data": .array(keys.map(\.json))])
        }
        admin.post("/keys") { request, _ in
            try self.authenticateAdmin(request)
            var request = request
            let body = try await self.collectBody(&request)
            let input = (try? JSONValue.parse(body)) ?? .null
            guard let obj = input.objectValue else { throw GatewayError.invalidRequest("the body must be a JSON object such as {\"name\": \"ci\"}") }
            guard let name = obj["name"]?.stringValue, !name.isEmpty, name.utf8.count <= 200 else {
                throw GatewayError.invalidField("name", "`name` must be a non-empty string of at most 200 bytes")
            }
            var email: String?
            if let user = obj["user"], !user.isNull {
                guard let e = user.stringValue, Self.isPlausibleEmail(e) else { throw GatewayError.invalidField("user", "`user` must be an email address") }
                email = e
            }
            let created = try await self.store.createKey(name: name, userEmail: email, prefix: self.config.keyPrefix)
            self.keyCache.invalidateAll()
            return Self.json(created.json, status: .created)
        }
        admin.delete("/keys/{id}") { request, context in
            try self.authenticateAdmin(request)
            let id = context.parameters.get("id") ?? ""
            guard try await self.store.revokeKey(id: id) else {
                throw GatewayError(status: 404, category: .notFound, code: "key_not_found", message: "no key with id `\(id)`")
            }
            self.keyCache.invalidateAll()
            return Self.json(["id": .string(id), "revoked": true])
        }
    }

    /// Checks the admin key in constant time (SHA-256 of both sides compared without early exit).
    func authenticateAdmin(_ request: Request) throws {
        guard let adminKey = config.adminKey else {
            throw GatewayError(status: 403, category: .permission, code: "admin_disabled",
                               message: "the admin API is disabled: set `admin_key` in the configuration")
        }
        let presented = try Authenticator.credential(HTTPFieldsView(authorization: request.headers[.authorization], apiKey: request.headers[.xAPIKey]))
        guard APIKeys.isPlausible(presented), APIKeys.hash(presented).constantTimeEquals(APIKeys.hash(adminKey)) else {
            throw GatewayError(status: 401, category: .authentication, code: "invalid_admin_key", message: "invalid admin key")
        }
    }

    static func isPlausibleEmail(_ s: String) -> Bool {
        let parts = s.split(separator: "@", omittingEmptySubsequences: false)
        return s.utf8.count <= 254 && parts.count == 2 && !parts[0].isEmpty && parts[1].contains(".")
            && !s.contains(where: { $0.isWhitespace })
    }
}
