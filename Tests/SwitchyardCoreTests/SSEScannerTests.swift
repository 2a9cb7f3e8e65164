import Foundation
import NIOCore
import Testing
@testable import SwitchyardCore

@Suite("SSE scanner")
struct SSEScannerTests {
    /// Feeds `text` in pieces of `size` bytes and collects every event.
    func events(_ text: String, pieceSize: Int) throws -> [SSEEvent] {
        var scanner = SSEScanner()
        var out: [SSEEvent] = []
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            let end = min(bytes.count, i + pieceSize)
            scanner.feed(ByteBuffer(bytes: bytes[i..<end]))
            while let e = try scanner.next() { out.append(e) }
            i = end
        }
        if let e = scanner.finish() { out.append(e) }
        return out
    }

    @Test(arguments: [1, 2, 3, 7, 1000])
    func parsesEventsAcrossAnyChunking(pieceSize: Int) throws {
        let text = "event: message_start\ndata: {\"a\":1}\n\n: ping\n\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n"
        let evs = try events(text, pieceSize: pieceSize)
        #expect(evs.count == 4)
        #expect(evs[0].event == "message_start")
        #expect(evs[0].dataString == "{\"a\":1}")
        #expect(evs[1].isCommentOnly)
        #expect(evs[2].dataString == "line1\nline2")
        #expect(evs[3].isDoneSentinel)
        // Raw bytes reproduce the stream exactly.
        #expect(evs.map { String(buffer: $0.raw) }.joined() == text)
    }

    @Test(arguments: [1, 2, 5, 100])
    func handlesCRLFAndCRLineEndings(pieceSize: Int) throws {
        let evs = try events("data: a\r\n\r\ndata: b\r\rdata:c\n\n", pieceSize: pieceSize)
        #expect(evs.map(\.dataString) == ["a", "b", "c"])
    }

    @Test func stripsOnlyOneLeadingSpace() throws {
        let evs = try events("data:  two spaces\ndata:none\n\n", pieceSize: 100)
        #expect(evs.first?.dataString == " two spaces\nnone")
    }

    @Test func ignoresUnknownFieldsAndKeepsId() throws {
        let evs = try events("id: 7\nretry: 100\nfoo: bar\ndata: x\n\n", pieceSize: 3)
        #expect(evs.first?.id == "7")
        #expect(evs.first?.dataString == "x")
    }

    @Test func holdsPartialEventUntilComplete() throws {
        var scanner = SSEScanner()
        scanner.feed(ByteBuffer(string: "data: {\"par"))
        #expect(try scanner.next() == nil)
        scanner.feed(ByteBuffer(string: "tial\":true}\n"))
        #expect(try scanner.next() == nil)
        scanner.feed(ByteBuffer(string: "\n"))
        #expect(try scanner.next()?.dataString == "{\"partial\":true}")
    }

    @Test func finishDispatchesUnterminatedEvent() throws {
        let evs = try events("data: last", pieceSize: 4)
        #expect(evs.map(\.dataString) == ["last"])
    }

    @Test func boundsEventSize() {
        var scanner = SSEScanner(maxEventBytes: 64)
        scanner.feed(ByteBuffer(string: "data: " + String(repeating: "x", count: 100)))
        #expect(throws: SSEScanner.EventTooLarge.self) { try scanner.next() }
    }

    @Test func writesCanonicalEvents() {
        var out = ByteBuffer()
        SSEEvent.write(event: "ping", data: "{}", into: &out)
        SSEEvent.write(event: nil, data: "a\nb", into: &out)
        #expect(String(buffer: out) == "event: ping\ndata: {}\n\ndata: a\ndata: b\n\n")
    }

    /// A stream's events arrive in the socket's receive buffer, which SwiftNIO reuses for the next read
    /// only if nobody holds it any more; otherwise it allocates another and pools that too. A scanner
    /// that kept an empty slice of each chunk made every upstream connection hold two to four buffers.
    @Test func drainedChunksAreLetGoSoTheReceiveBufferIsReused() throws {
        var pool = NIOPooledRecvBufferAllocator(capacity: 4, recvAllocator: FixedSizeRecvByteBufferAllocator(capacity: 512))
        var scanner = SSEScanner()
        for n in 0..<10 {
            let (chunk, _) = pool.buffer(allocator: ByteBufferAllocator()) { $0.writeString("data: {\"n\":\(n)}\n\n") }
            scanner.feed(chunk)
            #expect(try scanner.next()?.dataString == "{\"n\":\(n)}")
            #expect(try scanner.next() == nil)
        }
        #expect(pool.count == 1)
        // A partial event still holds its bytes until it completes.
        let (head, _) = pool.buffer(allocator: ByteBufferAllocator()) { $0.writeString("data: par") }
        scanner.feed(head)
        #expect(try scanner.next() == nil)
        let (tail, _) = pool.buffer(allocator: ByteBufferAllocator()) { $0.writeString("tial\n\n") }
        scanner.feed(tail)
        #expect(try scanner.next()?.dataString == "partial")
    }
}

@Suite("Passthrough stream relay")
struct PassthroughStreamRelayTests {
    let stream = """
        data: {"id":"c1","object":"chat.completion.chunk","model":"upstream-2025","choices":[{"index":0,"delta":{"content":"Hi"}}]}

        : keep-alive

        data: {"id":"c1","object":"chat.completion.chunk","model":"upstream-2025","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4}}}

        data: [DONE]


        """

    @Test(arguments: [1, 9, 64, 4096])
    func rewritesModelAndReadsUsage(pieceSize: Int) throws {
        var relay = PassthroughStreamRelay(format: .openAI, clientModel: "gpt-5.1")
        var out = ""
        let bytes = Array(stream.utf8)
        var i = 0
        while i < bytes.count {
            let end = min(bytes.count, i + pieceSize)
            out += String(buffer: try relay.process(ByteBuffer(bytes: bytes[i..<end])))
            i = end
        }
        out += String(buffer: relay.finish())
        #expect(!out.contains("upstream-2025"))
        #expect(out.components(separatedBy: "\"model\":\"gpt-5.1\"").count == 3)
        #expect(out.contains(": keep-alive\n\n"))
        #expect(out.hasSuffix("data: [DONE]\n\n"))
        #expect(relay.sawEnd)
        #expect(relay.usage == TokenUsage(inputTokens: 12, outputTokens: 3, cachedInputTokens: 4))
    }

    @Test func passesEventsThroughByteExactWhenModelMatches() throws {
        var relay = PassthroughStreamRelay(format: .openAI, clientModel: "upstream-2025")
        let out = try relay.process(ByteBuffer(string: stream))
        #expect(String(buffer: out) + String(buffer: relay.finish()) == stream)
    }

    @Test func explicitZeroUsageIsZeroNotUnknown() throws {
        var relay = PassthroughStreamRelay(format: .openAI, clientModel: "m")
        _ = try relay.process(ByteBuffer(string: "data: {\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":0}}\n\n"))
        #expect(relay.usage == TokenUsage())
        var none = PassthroughStreamRelay(format: .openAI, clientModel: "m")
        _ = try none.process(ByteBuffer(string: "data: {\"usage\":null}\n\n"))
        #expect(none.usage == nil)
    }
}
