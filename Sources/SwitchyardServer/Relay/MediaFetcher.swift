#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import SwitchyardCore

/// Fetches image and document URLs that clients put in requests, for providers that only take inline
/// data (Gemini). Guards against SSRF: only http(s); every address the name resolves to must be public
/// (unless `media.allow_private_networks`); the connection is pinned to the vetted address (no DNS
/// rebinding window); redirects are followed by hand, each target vetted again; size and time are bounded.
final class MediaFetcher: Sendable {
    let config: MediaConfig
    let logger: Logger
    static let maxRedirects = 3

    init(config: MediaConfig, logger: Logger) {
        self.config = config
        self.logger = logger
    }

    func shutdown() async {}

    /// Replaces URL media in the request's messages with inline data.
    func inline(_ request: inout ChatRequest, images: Bool, documents: Bool) async throws(GatewayError) {
        for i in request.messages.indices {
            for j in request.messages[i].content.indices {
                request.messages[i].content[j] = try await inline(request.messages[i].content[j], images: images, documents: documents)
            }
        }
    }

    /// Whether ``inline(_:images:documents:)`` would fetch anything for `request`.
    static func needsFetching(_ request: ChatRequest, images: Bool, documents: Bool) -> Bool {
        func fetches(_ part: ContentPart) -> Bool {
            switch part {
            case .image(.url, _, _): return images
            case .document(.url, _, _): return documents
            case .toolResult(let r): return r.content.contains(where: fetches)
            default: return false
            }
        }
        return request.messages.contains { $0.content.contains(where: fetches) }
    }

    private func inline(_ part: ContentPart, images: Bool, documents: Bool) async throws(GatewayError) -> ContentPart {
        switch part {
        case .image(.url(let url), let detail, let cache) where images:
            let (mt, data) = try await fetch(url, accept: "image/")
            return .image(.base64(mediaType: mt, data: data), detail: detail, cacheControl: cache)
        case .document(.url(let url), let title, let cache) where documents:
            let (mt, data) = try await fetch(url, accept: nil)
            return .document(.base64(mediaType: mt, data: data), title: title, cacheControl: cache)
        case .toolResult(var r):
            for k in r.content.indices { r.content[k] = try await inline(r.content[k], images: images, documents: documents) }
            return .toolResult(r)
        default:
            return part
        }
    }

    static func failure(_ message: String) -> GatewayError {
        GatewayError(status: 400, category: .invalidRequest, code: "invalid_media_url", message: message)
    }

    /// Downloads `url`; returns its media type and base64 data.
    func fetch(_ url: String, accept prefix: String?) async throws(GatewayError) -> (String, String) {
        var current = url
        for _ in 0...Self.maxRedirects {
            guard let parsed = UpstreamURL(current) else {
                throw Self.failure("media URL must be an http(s) URL without credentials: \(current.prefix(200))")
            }
            let address = try await vet(parsed.host)
            var c = HTTPClient.Configuration()
            c.redirectConfiguration = .disallow
            c.decompression = .disabled
            c.timeout = .init(connect: .milliseconds(config.fetchTimeout.milliseconds), read: .milliseconds(config.fetchTimeout.milliseconds))
            c.dnsOverride = [parsed.host: address]
            let client = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, configuration: c)
            defer { Task { try? await client.shutdown() } }
            var request = HTTPClientRequest(url: current)
            request.headers.add(name: "user-agent", value: "switchyard/\(SwitchyardVersion.current) (media fetch)")
            do {
                let response = try await client.execute(request, timeout: .milliseconds(config.fetchTimeout.milliseconds))
                let status = Int(response.status.code)
                if (300..<400).contains(status), let location = response.headers.first(name: "location") {
                    current = Self.resolve(location, against: parsed)
                    continue
                }
                guard status == 200 else { throw Self.failure("fetching media at \(current.prefix(200)) returned HTTP \(status)") }
                if let length = response.headers.first(name: "content-length").flatMap(Int.init), length > config.maxBytes {
                    throw Self.failure("media at \(current.prefix(200)) is larger than \(config.maxBytes) bytes")
                }
                let body = try await response.body.collect(upTo: config.maxBytes)
                let mediaType = (response.headers.first(name: "content-type") ?? "application/octet-stream")
                    .split(separator: ";").first.map { String($0).trimmingCharacters(in: .whitespaces).lowercased() } ?? "application/octet-stream"
                if let prefix, !mediaType.hasPrefix(prefix) {
                    throw Self.failure("the URL \(current.prefix(200)) is \(mediaType), not \(prefix)*")
                }
                return (mediaType, Data(body.readableBytesView).base64EncodedString())
            } catch let e as GatewayError {
                throw e
            } catch {
                if "\(error)".contains("tooManyBytes") || "\(error)".contains("TooMany") {
                    throw Self.failure("media at \(current.prefix(200)) is larger than \(config.maxBytes) bytes")
                }
                throw Self.failure("could not fetch media at \(current.prefix(200)): \(UpstreamFailure.describe(error))")
            }
        }
        throw Self.failure("too many redirects fetching media at \(url.prefix(200))")
    }

    static func resolve(_ location: String, against base: UpstreamURL) -> String {
        if location.hasPrefix("http://") || location.hasPrefix("https://") { return location }
        let host = base.host.contains(":") ? "[\(base.host)]" : base.host
        let origin = "\(base.scheme)://\(host)\(base.port.map { ":\($0)" } ?? "")"
        return location.hasPrefix("/") ? origin + location : origin + base.path + "/" + location
    }

    /// Resolves `host` and returns an address that may be contacted; throws when any is private.
    func vet(_ host: String) async throws(GatewayError) -> String {
        let addresses: [String]
        do {
            addresses = try await NIOThreadPool.singleton.runIfActive { try Self.resolve(host) }
        } catch {
            throw Self.failure("cannot resolve media host \(host)")
        }
        guard let first = addresses.first else { throw Self.failure("cannot resolve media host \(host)") }
        if !config.allowPrivateNetworks, let bad = addresses.first(where: { !Self.isPublic($0) }) {
            logger.warning("refused media fetch to a private address", metadata: ["host": .string(host), "address": .string(bad)])
            throw Self.failure("refusing to fetch media from \(host): it resolves to a private or local address")
        }
        return first
    }

    static func resolve(_ host: String) throws -> [String] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let first = result else { throw MediaResolveError() }
        defer { freeaddrinfo(first) }
        var out: [String] = []
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let ai = p {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(ai.pointee.ai_addr, ai.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 {
                let s = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !out.contains(s) { out.append(s) }
            }
            p = ai.pointee.ai_next
        }
        return out
    }

    struct MediaResolveError: Error {}

    /// Whether a numeric address is publicly routable (not loopback, private, link-local, CGNAT,
    /// multicast, reserved, or an IPv6 form of those).
    static func isPublic(_ address: String) -> Bool {
        if let v4 = ipv4(address) { return isPublicV4(v4) }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, address.split(separator: "%").first.map(String.init) ?? address, &v6) == 1 else { return false }
        let b = withUnsafeBytes(of: v6) { Array($0) }
        if b.allSatisfy({ $0 == 0 }) { return false }  // ::
        if b[0..<15].allSatisfy({ $0 == 0 }), b[15] == 1 { return false }  // ::1
        if b[0..<10].allSatisfy({ $0 == 0 }), b[10] == 0xFF, b[11] == 0xFF {  // ::ffff:a.b.c.d
            return isPublicV4((b[12], b[13], b[14], b[15]))
        }
        if b[0] == 0x00, b[1] == 0x64, b[2] == 0xFF, b[3] == 0x9B { return isPublicV4((b[12], b[13], b[14], b[15])) }  // 64:ff9b::/96
        if b[0] & 0xFE == 0xFC { return false }  // fc00::/7 unique local
        if b[0] == 0xFE, b[1] & 0xC0 == 0x80 { return false }  // fe80::/10 link-local
        if b[0] == 0xFF { return false }  // multicast
        if b[0] == 0x20, b[1] == 0x01, b[2] == 0x0D, b[3] == 0xB8 { return false }  // documentation
        return true
    }

    static func ipv4(_ s: String) -> (UInt8, UInt8, UInt8, UInt8)? {
        var a = in_addr()
        guard inet_pton(AF_INET, s, &a) == 1 else { return nil }
        let b = withUnsafeBytes(of: a) { Array($0) }
        return (b[0], b[1], b[2], b[3])
    }

    static func isPublicV4(_ a: (UInt8, UInt8, UInt8, UInt8)) -> Bool {
        switch a {
        case (0, _, _, _), (10, _, _, _), (127, _, _, _): return false
        case (100, 64...127, _, _): return false  // CGNAT
        case (169, 254, _, _): return false
        case (172, 16...31, _, _): return false
        case (192, 0, 0, _), (192, 0, 2, _), (192, 168, _, _): return false
        case (198, 18...19, _, _), (198, 51, 100, _), (203, 0, 113, _): return false
        case (224...255, _, _, _): return false
        default: return true
        }
    }
}
