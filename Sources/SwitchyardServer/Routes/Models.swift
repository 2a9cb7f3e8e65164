import Hummingbird
import SwitchyardCore

extension Gateway {
    /// `GET /v1/models`: the catalog the key may use (its plan and its own model list), in the caller's format: Anthropic's list when the
    /// request carries `anthropic-version` (Claude Code's model discovery), Gemini's for Gemini clients
    /// (`/v1beta/models`, or `x-goog-api-key`), OpenAI's otherwise.
    func listModels(_ request: Request, context: GatewayContext, format: WireFormat? = nil) async throws -> Response {
        let principal = try await authenticate(request, context: context)
        let modelOrder = self.modelOrder.filter { principal.allows($0.name) }
        switch format ?? WireFormat.of(request) {
        case .openAI, .responses:
            let data: [JSONValue] = modelOrder.map { route in
                ["id": .string(route.name), "object": "model", "created": .int(catalogCreated), "owned_by": .string((route.deployments.first?.provider.name ?? "switchyard"))]
            }
            return Self.json(["object": "list", "data": .array(data)])
        case .anthropic:
            let created = EpochClock.iso8601(Int64(catalogCreated) * 1000)
            let data: [JSONValue] = modelOrder.map { route in
                ["type": "model", "id": .string(route.name), "display_name": .string(route.name), "created_at": .string(created)]
            }
            var body: JSONObject = ["data": .array(data), "has_more": false]
            body["first_id"] = modelOrder.first.map { .string($0.name) } ?? .null
            body["last_id"] = modelOrder.last.map { .string($0.name) } ?? .null
            return Self.json(.object(body))
        case .gemini:
            let models: [JSONValue] = modelOrder.map { route in
                [
                    "name": .string("models/\(route.name)"), "displayName": .string(route.name), "version": "001",
                    "description": .string("\(route.name) served by \((route.deployments.first?.provider.name ?? "switchyard"))"),
                    "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
                ]
            }
            return Self.json(["models": .array(models)])
        }
    }
}
