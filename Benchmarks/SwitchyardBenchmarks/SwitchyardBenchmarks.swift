// Microbenchmarks of the gateway's per-request code that does not touch a socket: scanning a request's
// head, relaying an SSE stream as bytes, translating requests and streams between formats, checking a
// presented key, and encoding a ledger journal line.
//
//   swift package --disable-sandbox benchmark --target SwitchyardBenchmarks                       # run them all
//   swift package --disable-sandbox benchmark baseline update main --target SwitchyardBenchmarks  # keep a baseline …
//   swift package --disable-sandbox benchmark baseline compare main --target SwitchyardBenchmarks # … and compare against it
// (`--target`: without it the plugin also starts `raw-relay`, which lives under Benchmarks/ but is not a suite.)
//
// CI builds this target (so it cannot rot) but does not run it: timings need a quiet machine.
import Benchmark
import NIOCore
import SwitchyardCore
import SwitchyardStore

let smallChat = ByteBuffer(string: #"{"model":"gpt-5.1","max_tokens":64,"stream":false,"temperature":0.3,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello! What is the weather in Paris today, and should I bring an umbrella?"}]}"#)

/// A chat body of about 100 KB (a coding agent's long conversation).
let largeChat: ByteBuffer = {
    var messages: [String] = []
    for i in 0..<200 {
        // JSON-escaped quotes inside the content (a bare quote would end the string).
        let text = String(repeating: "line \(i) of a long conversation with \\\"quotes\\\" and unicode ✓; ", count: 8)
        messages.append(#"{"role":"\#(i % 2 == 0 ? "user" : "assistant")","content":"\#(text)"}"#)
    }
    return ByteBuffer(string: #"{"model":"claude-sonnet-4-6","stream":true,"messages":[\#(messages.joined(separator: ","))]}"#)
}()

/// An OpenAI stream of 200 content chunks and its end.
let openAIStream: ByteBuffer = {
    var s = ""
    for i in 0..<200 {
        s += #"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"gpt-5.1-2025","choices":[{"index":0,"delta":{"content":"word\#(i) "},"finish_reason":null}]}"# + "\n\n"
    }
    s += #"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"gpt-5.1-2025","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":200,"total_tokens":212}}"# + "\n\ndata: [DONE]\n\n"
    return ByteBuffer(string: s)
}()

/// An Anthropic stream of 200 text deltas.
let anthropicStream: ByteBuffer = {
    var s = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-6\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n"
    s += "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
    for i in 0..<200 {
        s += "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"word\(i) \"}}\n\n"
    }
    s += "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
    s += "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":200}}\n\n"
    s += "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
    return ByteBuffer(string: s)
}()

/// Feeds a stream in network-sized pieces, as the relay sees it.
func pieces(_ buffer: ByteBuffer, size: Int = 1400) -> [ByteBuffer] {
    var out: [ByteBuffer] = []
    var b = buffer
    while b.readableBytes > 0 { out.append(b.readSlice(length: min(size, b.readableBytes))!) }
    return out
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput], maxDuration: .seconds(2), maxIterations: 1_000_000)

    Benchmark("Scan a small chat request's head (model, stream, messages)") { benchmark in
        for _ in benchmark.scaledIterations {
            let doc = try ScannedObject(smallChat)
            blackHole(doc.member("model"))
            blackHole(doc.member("stream"))
        }
    }

    Benchmark("Scan a 100 KB chat request's head") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try ScannedObject(largeChat, maxDepth: 64).member("model"))
        }
    }

    Benchmark("Splice the upstream model into a small request") { benchmark in
        let doc = try ScannedObject(smallChat)
        for _ in benchmark.scaledIterations {
            var editor = doc.editor()
            editor.replaceValue(of: doc.member("model")!, with: JSONString.literal("gpt-5.1-2025-11-13"))
            blackHole(editor.result())
        }
    }

    let openAIPieces = pieces(openAIStream)
    Benchmark("Relay a 200-chunk OpenAI stream as bytes (model rewrite, usage capture)") { benchmark in
        for _ in benchmark.scaledIterations {
            var relay = PassthroughStreamRelay(format: .openAI, clientModel: "gpt-5.1")
            for p in openAIPieces { blackHole(try relay.process(p)) }
            blackHole(relay.finish())
        }
    }

    let anthropicPieces = pieces(anthropicStream)
    let request = try! OpenAIChat.decodeRequest(JSONValue.parse(smallChat).objectValue!)
    Benchmark("Translate a 200-delta Anthropic stream for an OpenAI client") { benchmark in
        for _ in benchmark.scaledIterations {
            var stream = TranslatingStream(from: .anthropic, to: .openAI, request: request, clientModel: "claude", created: 1_767_225_600)
            for p in anthropicPieces { blackHole(try stream.process(p)) }
            blackHole(stream.finish())
        }
    }

    Benchmark("Translate a 200-delta Anthropic stream for a Responses client") { benchmark in
        for _ in benchmark.scaledIterations {
            var stream = TranslatingStream(from: .anthropic, to: .responses, request: request, clientModel: "claude", created: 1_767_225_600)
            for p in anthropicPieces { blackHole(try stream.process(p)) }
            blackHole(stream.finish())
        }
    }

    Benchmark("Translate a small request OpenAI → Anthropic") { benchmark in
        for _ in benchmark.scaledIterations {
            let decoded = try OpenAIChat.decodeRequest(JSONValue.parse(smallChat).objectValue!)
            blackHole(JSONValue.object(try AnthropicMessages.encodeRequest(decoded, model: "claude-sonnet-4-6", options: .init())).jsonBuffer)
        }
    }

    Benchmark("Check and hash a presented API key") { benchmark in
        let header = "Bearer sy-5syd0Q8s0a5N8fqSnjCB8GfS7HrhPUpnvOyHAjvjgLn"
        for _ in benchmark.scaledIterations {
            let presented = header.dropFirst(7)
            if APIKeys.isPlausible(presented) { blackHole(APIKeys.hash(presented)) }
        }
    }

    Benchmark("Encode a settlement's ledger journal line") { benchmark in
        let usage = UsageRecord(
            id: "res_0Bk2mZ9qLw3xYp7Tr4Ns8Vd", requestID: "req_0Bk2mZ9qLw3xYp7Tr4Ns8Vc", createdAt: 1_767_225_600_123, userID: "usr_3kTMd9Qx2bZr",
            keyID: "key_3kTMd9Qx2bZr", model: "gpt-5.1", provider: "openai", upstreamModel: "gpt-5.1-2025", inputTokens: 12, outputTokens: 64,
            cachedTokens: 0, credits: 1_250, status: 200, outcome: "ok", latencyMs: 3)
        let settlement = LedgerOperation.settle(Settlement(.charge(cost: 1_250), usage: usage))
        for _ in benchmark.scaledIterations {
            blackHole(LedgerJournalCodec.encode(settlement))
        }
    }

    Benchmark("SSE scanner over a 200-event stream") { benchmark in
        for _ in benchmark.scaledIterations {
            var scanner = SSEScanner()
            for p in openAIPieces {
                scanner.feed(p)
                while let event = try scanner.next() { blackHole(event) }
            }
        }
    }
}
