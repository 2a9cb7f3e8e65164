// The "naive Hummingbird + AsyncHTTPClient relay", for `scripts/bench` only: what a relay
// written the obvious way on Swift's server frameworks costs on this machine, next to nginx and the
// raw SwiftNIO relay. Each request's body is collected, sent with `HTTPClient.execute` (its default
// connection pool, keep-alive), and the answer's body is streamed back as it arrives. No auth, no
// limits, no metering, no translation. Not part of the product.
//
//   naive-relay --port 0 --upstream http://127.0.0.1:8090
#if canImport(Glibc)
import Glibc
#endif
import AsyncHTTPClient
import Hummingbird
import HTTPTypes
import NIOCore
import NIOHTTP1

/// Fields that describe the hop, not the message: each side sets its own.
let hopFields: Set<String> = ["connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade", "te", "trailer", "proxy-connection"]

var arguments = CommandLine.arguments.dropFirst().makeIterator()
var port = 0
var upstream = ""
while let arg = arguments.next() {
    switch arg {
    case "--port": port = Int(arguments.next() ?? "") ?? 0
    case "--upstream": upstream = arguments.next() ?? ""
    default: fatalError("usage: naive-relay --port N --upstream http://HOST:PORT")
    }
}
guard !upstream.isEmpty else { fatalError("usage: naive-relay --port N --upstream http://HOST:PORT") }
let base = upstream

let client = HTTPClient(eventLoopGroupProvider: .singleton)
let router = Router()
router.on("**", method: .post) { request, _ -> Response in
    let body = try await request.body.collect(upTo: 64 << 20)
    var outbound = HTTPClientRequest(url: base + request.uri.description)
    outbound.method = .POST
    for field in request.headers where !hopFields.contains(field.name.canonicalName) {
        outbound.headers.add(name: field.name.rawName, value: field.value)
    }
    outbound.body = .bytes(body)
    let answer = try await client.execute(outbound, timeout: .seconds(120))
    var fields = HTTPFields()
    for (name, value) in answer.headers where !hopFields.contains(name.lowercased()) {
        if let name = HTTPField.Name(name) { fields.append(HTTPField(name: name, value: value)) }
    }
    if let length = answer.headers.first(name: "content-length") { fields[.contentLength] = length }
    return Response(status: .init(code: Int(answer.status.code)), headers: fields, body: ResponseBody(asyncSequence: answer.body))
}
let app = Application(
    router: router,
    configuration: .init(address: .hostname("127.0.0.1", port: port)),
    onServerRunning: { channel in
        print("listening on http://127.0.0.1:\(channel.localAddress?.port ?? 0)")
        fflush(nil)
    }
)
try await app.runService()
try await client.shutdown().get()
