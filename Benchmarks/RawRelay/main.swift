// A reverse proxy written directly on SwiftNIO's HTTP/1.1 codec, for `scripts/bench` only: the floor a
// Swift relay can reach on the machine, next to nginx's. No auth, no limits, no metering, no
// translation, no timeouts or pools: each client connection gets one keep-alive upstream connection on
// its own event loop, and request and response parts are forwarded as they arrive (so streams relay
// event by event). Not part of the product.
//
//   raw-relay --port 0 --upstream http://127.0.0.1:8090
#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOHTTP1
import NIOPosix

/// The client's side: forwards request parts to this connection's upstream connection (opened on first use).
final class ClientSide: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let upstream: SocketAddress
    var upstreamChannel: Channel?
    var pending: [HTTPClientRequestPart] = []
    var connecting = false

    init(upstream: SocketAddress) { self.upstream = upstream }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part: HTTPClientRequestPart
        switch unwrapInboundIn(data) {
        case .head(let head): part = .head(head)
        case .body(let buffer): part = .body(.byteBuffer(buffer))
        case .end(let trailers): part = .end(trailers)
        }
        if let channel = upstreamChannel {
            forward(part, to: channel)
            return
        }
        pending.append(part)
        guard !connecting else { return }
        connecting = true
        let client = context.channel
        ClientBootstrap(group: context.eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(UpstreamSide(client: client))
                }
            }
            .connect(to: upstream)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    self.upstreamChannel = channel
                    for part in self.pending { self.forward(part, to: channel) }
                    self.pending.removeAll()
                case .failure:
                    client.close(promise: nil)
                }
            }
    }

    func forward(_ part: HTTPClientRequestPart, to channel: Channel) {
        if case .end = part {
            channel.writeAndFlush(part, promise: nil)
        } else {
            channel.write(part, promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        upstreamChannel?.close(promise: nil)
        context.fireChannelInactive()
    }
}

/// The upstream's side: forwards response parts to the client as they arrive.
final class UpstreamSide: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    let client: Channel

    init(client: Channel) { self.client = client }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): client.write(HTTPServerResponsePart.head(head), promise: nil)
        case .body(let buffer): client.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(buffer)), promise: nil)
        case .end(let trailers): client.writeAndFlush(HTTPServerResponsePart.end(trailers), promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        client.close(promise: nil)
        context.fireChannelInactive()
    }
}

var port = 0
var upstreamURL = ""
var args = CommandLine.arguments.dropFirst().makeIterator()
while let arg = args.next() {
    switch arg {
    case "--port": port = Int(args.next() ?? "") ?? 0
    case "--upstream": upstreamURL = args.next() ?? ""
    default: fatalError("usage: raw-relay --port N --upstream http://HOST:PORT")
    }
}
guard upstreamURL.hasPrefix("http://"), let colon = upstreamURL.lastIndex(of: ":"),
      let upstreamPort = Int(upstreamURL[upstreamURL.index(after: colon)...].prefix { $0.isNumber })
else { fatalError("--upstream must be http://HOST:PORT") }
let upstreamHost = String(upstreamURL.dropFirst("http://".count)[..<colon])
let upstream = try SocketAddress.makeAddressResolvingHost(upstreamHost, port: upstreamPort)

let server = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    .serverChannelOption(.backlog, value: 4096)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
            try channel.pipeline.syncOperations.addHandler(ClientSide(upstream: upstream))
        }
    }
    .bind(host: "127.0.0.1", port: port)
    .wait()
print("listening on http://127.0.0.1:\(server.localAddress?.port ?? 0)")
fflush(stdout)
try server.closeFuture.wait()
