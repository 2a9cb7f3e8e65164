import Hummingbird
import SwitchyardCore

extension Gateway {
    /// `GET /v1/models`: the catalog in OpenAI's list format (the models the caller's key may use).
    func listModels(_ request: Request, context: GatewayContext) async throws -> Response {
        _ = try await authenticate(request, context: context)
        let data: [JSONValue] = modelOrder.map { route in
            ["id": .string(route.name), "object": "model", "created": .int(catalogCreated), "owned_by": .string(route.provider.name)]
        }
        return Self.json(["object": "list", "data": .array(data)])
    }
}
