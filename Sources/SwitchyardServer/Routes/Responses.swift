import Hummingbird
import Logging
import NIOCore
import Synchronization
import SwitchyardCore
import SwitchyardStore

extension Gateway {
    /// `POST /v1/responses`: the OpenAI Responses API, for every model whatever its provider.
    ///
    /// `previous_response_id` is resolved here, from the conversations the gateway keeps: the stored
    /// items are put in front of the new `input`, so every provider (and every deployment) sees the
    /// whole conversation. The answer is kept (unless `store: false`) for the next turn.
    func responses(_ request: Request, context: GatewayContext) async throws -> Response {
        var read = try await readClientBody(request, context: context)
        let principal = read.principal
        let model = try requireString(read.doc, "model")
        guard let input = read.doc.member("input") else { throw GatewayError.missingField("input") }
        guard input.kind == .string || input.kind == .array else {
            throw GatewayError.invalidField("input", "`input` must be a string or an array of input items")
        }
        let history = try await expandPreviousResponse(&read.body, &read.doc, input: input, keyID: principal.key.id)
        let doc = read.doc
        var call = ClientCall(
            format: .responses, principal: principal, request: read.request, body: read.body, doc: doc, model: model, stream: try streamFlag(doc), forwardHeaders: [])
        if doc.member("store")?.kind != .false, responseArchive.enabled {
            // The conversation is only parsed when it is kept.
            let items = history ?? Self.inputItems(doc, input)
            call.recorder = ResponseRecorder(archive: responseArchive, keyID: principal.key.id, model: model, input: items)
        }
        return try await relay(call, context: context)
    }

    /// `POST /v1/responses/compact`: compacts a conversation through a model served by the Responses
    /// API (OpenAI's own endpoint); other models answer 400.
    func compactResponse(_ request: Request, context: GatewayContext) async throws -> Response {
        var read = try await readClientBody(request, context: context)
        let model = try requireString(read.doc, "model")
        let target = try resolve(model)
        guard target.route.ensemble == nil, !target.route.deployments.isEmpty,
            target.route.deployments.allSatisfy({ $0.provider.format == .responses })
        else {
            throw GatewayError.invalidRequest(
                "`/responses/compact` needs a model served through the OpenAI Responses API (provider type `openai-responses`); `\(model)` is not",
                code: "unsupported_operation", param: "model")
        }
        if let input = read.doc.member("input") { _ = try await expandPreviousResponse(&read.body, &read.doc, input: input, keyID: read.principal.key.id) }
        // Routed, limited and billed like any call; the provider's own endpoint does the work.
        var call = ClientCall(
            format: .responses, principal: read.principal, request: read.request, body: read.body, doc: read.doc, model: model, stream: false, forwardHeaders: [])
        call.operation = .compact
        return try await relay(call, context: context)
    }

    /// Resolves `previous_response_id`: the stored conversation goes in front of `input` and the field
    /// is removed. Returns the request's whole conversation as items, or nil when there was none to resolve.
    func expandPreviousResponse(_ body: inout ByteBuffer, _ doc: inout ScannedObject, input: JSONScanner.Member, keyID: String) async throws -> [JSONValue]? {
        guard let previous = doc.member("previous_response_id"), previous.kind != .null else { return nil }
        guard previous.kind == .string else { throw GatewayError.invalidField("previous_response_id", "`previous_response_id` must be a string") }
        let id = doc.stringValue(previous)
        guard responseArchive.enabled else {
            throw GatewayError.invalidRequest(
                "this gateway keeps no responses (`responses.retention` is 0), so `previous_response_id` cannot be resolved; send the whole conversation in `input`",
                code: "previous_response_not_supported", param: "previous_response_id")
        }
        guard let history = try await responseArchive.load(id: id, keyID: keyID) else {
            var e = GatewayError.invalidRequest("Previous response with id '\(id)' not found.", code: "previous_response_not_found", param: "previous_response_id")
            e.status = 404
            throw e
        }
        let items = history + Self.inputItems(doc, input)
        var editor = doc.editor()
        editor.replaceValue(of: input, with: JSONValue.array(items).jsonString)
        editor.remove(previous)
        body = editor.result()
        doc = try scan(body)
        return items
    }

    /// The request's input as items (a string is one user message).
    static func inputItems(_ doc: ScannedObject, _ input: JSONScanner.Member) -> [JSONValue] {
        if input.kind == .string { return [["role": "user", "content": .string(doc.stringValue(input))]] }
        return (try? JSONValue.parse(doc.rawValue(input)))?.arrayValue ?? []
    }
}

/// Conversations kept for `previous_response_id`: written to the store in the background, and
/// readable at once from memory until they are (so a client's next turn never races the write).
final class ResponseArchive: Sendable {
    let store: any GatewayStore
    let retention: ConfigDuration
    let logger: Logger
    private let pending = Mutex<[String: (keyID: String, items: [JSONValue])]>([:])

    init(store: any GatewayStore, retention: ConfigDuration, logger: Logger) {
        self.store = store
        self.retention = retention
        self.logger = logger
    }

    var enabled: Bool { retention.milliseconds > 0 }

    func save(id: String, keyID: String, model: String, items: [JSONValue]) {
        pending.withLock { $0[id] = (keyID, items) }
        let now = EpochClock.nowMilliseconds()
        let text = JSONValue.array(items).jsonString
        Task {
            do {
                try await store.saveResponse(id: id, keyID: keyID, model: model, items: text, createdAt: now, expiresAt: now + retention.milliseconds)
            } catch {
                logger.error("could not store a response", metadata: ["response_id": .string(id), "error": .string("\(error)")])
            }
            _ = pending.withLock { $0.removeValue(forKey: id) }
        }
    }

    func load(id: String, keyID: String) async throws -> [JSONValue]? {
        if let p = pending.withLock({ $0[id] }) { return p.keyID == keyID ? p.items : nil }
        guard let text = try await store.loadResponse(id: id, keyID: keyID, now: EpochClock.nowMilliseconds()) else { return nil }
        return (try? JSONValue.parse(text))?.arrayValue
    }

    func purge() async {
        do {
            let n = try await store.purgeResponses(now: EpochClock.nowMilliseconds())
            if n > 0 { logger.info("expired stored responses", metadata: ["count": .stringConvertible(n)]) }
        } catch {
            logger.warning("could not purge stored responses", metadata: ["error": .string("\(error)")])
        }
    }
}

/// Keeps one finished response with the conversation that led to it.
struct ResponseRecorder: Sendable {
    let archive: ResponseArchive
    let keyID: String
    let model: String
    let input: [JSONValue]

    /// Records a final `response` object (completed or incomplete; failed ones are not kept).
    func record(_ response: JSONValue?) {
        guard let response, let id = response["id"]?.stringValue, response["status"]?.stringValue != "failed" else { return }
        let output = (response["output"]?.arrayValue ?? []).filter { $0["type"]?.stringValue != nil }
        archive.save(id: id, keyID: keyID, model: model, items: input + output)
    }

    func record(_ bytes: ByteBuffer?) {
        guard let bytes else { return }
        record(try? JSONValue.parse(bytes))
    }
}
