import HTTPTypes
import Hummingbird
import NIOCore
import SwitchyardCore

extension Gateway {
    /// `POST /v1/chat/completions`: OpenAI Chat Completions, for every model whatever its provider.
    ///
    /// Only what routing needs is parsed (`model`, `messages`, `stream`); see ``relay(_:context:)``.
    func chatCompletions(_ request: Request, context: GatewayContext) async throws -> Response {
        let read = try await readClientBody(request, context: context)
        let doc = read.doc
        let model = try requireString(doc, "model")
        guard let messages = doc.member("messages") else { throw GatewayError.missingField("messages") }
        guard messages.kind == .array else { throw GatewayError.invalidField("messages", "`messages` must be an array of message objects") }
        let call = ClientCall(
            format: .openAI, principal: read.principal, request: read.request, body: read.body, doc: doc, model: model, stream: try streamFlag(doc), forwardHeaders: [])
        return try await relay(call, context: context)
    }

    /// What a model call is read into before its route looks at it.
    struct ClientBody {
        let principal: Principal
        /// The request with its body collected.
        let request: Request
        var body: ByteBuffer
        var doc: ScannedObject
    }

    /// The start of every model route: the caller's key (checked before the body is read), the body
    /// within the size limit (its size logged), and its JSON members.
    func readClientBody(_ request: Request, context: GatewayContext) async throws -> ClientBody {
        let principal = try await authenticate(request, context: context)
        var request = request
        let body = try await collectBody(&request)
        context.log.set(bytesIn: body.readableBytes)
        return ClientBody(principal: principal, request: request, body: body, doc: try scan(body))
    }

    /// Collects the request body within the configured limit (413 beyond it).
    func collectBody(_ request: inout Request) async throws -> ByteBuffer {
        let limit = config.limits.maxBodyBytes
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            throw GatewayError.bodyTooLarge(limit: limit)
        }
        do {
            return try await request.collectBody(upTo: limit)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw GatewayError.bodyTooLarge(limit: limit)
        } catch is NIOTooManyBytesError {
            // A chunked body (no `Content-Length`) is only found too large while it is read, and
            // SwiftNIO's collector says so with its own error.
            throw GatewayError.bodyTooLarge(limit: limit)
        }
    }

    /// Validates the body as a JSON object (depth-bounded) and locates its top-level members.
    func scan(_ body: ByteBuffer) throws(GatewayError) -> ScannedObject {
        do {
            return try ScannedObject(body, maxDepth: config.limits.maxJSONDepth)
        } catch {
            throw GatewayError.invalidJSON(error)
        }
    }

    func requireString(_ doc: ScannedObject, _ name: StaticString) throws(GatewayError) -> String {
        guard let m = doc.member(name) else { throw GatewayError.missingField("\(name)") }
        guard m.kind == .string else { throw GatewayError.invalidField("\(name)", "`\(name)` must be a string") }
        return doc.stringValue(m)
    }

    func streamFlag(_ doc: ScannedObject) throws(GatewayError) -> Bool {
        switch doc.member("stream")?.kind {
        case .true?: return true
        case .false?, .null?, nil: return false
        default: throw GatewayError.invalidField("stream", "`stream` must be a boolean")
        }
    }
}
