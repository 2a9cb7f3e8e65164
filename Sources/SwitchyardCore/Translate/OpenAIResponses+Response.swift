import NIOCore

/// OpenAI Responses ↔ canonical: whole responses, usage, and the two stream directions.
extension OpenAIResponses {
    // MARK: Usage

    /// Reads a Responses `usage` object; nil when absent.
    public static func usage(_ value: JSONValue?) -> TokenUsage? {
        guard let u = value?.objectValue else { return nil }
        return TokenUsage(
            inputTokens: u["input_tokens"]?.intValue ?? 0, outputTokens: u["output_tokens"]?.intValue ?? 0,
            cachedInputTokens: u["input_tokens_details"]?["cached_tokens"]?.intValue ?? 0,
            reasoningTokens: u["output_tokens_details"]?["reasoning_tokens"]?.intValue ?? 0)
    }

    public static func usageJSON(_ u: TokenUsage) -> JSONValue {
        [
            "input_tokens": .int(u.inputTokens), "input_tokens_details": ["cached_tokens": .int(u.cachedInputTokens)],
            "output_tokens": .int(u.outputTokens), "output_tokens_details": ["reasoning_tokens": .int(u.reasoningTokens)],
            "total_tokens": .int(u.inputTokens + u.outputTokens),
        ]
    }

    // MARK: Whole responses

    /// Decodes a provider's Responses answer.
    public static func decodeResponse(_ body: JSONObject) throws(GatewayError) -> ChatResponse {
        if body["status"]?.stringValue == "failed" {
            throw GatewayError(status: 502, category: .upstream, code: body["error"]?["code"]?.stringValue ?? "upstream_error",
                               message: body["error"]?["message"]?.stringValue ?? "the provider's response failed")
        }
        var content: [ContentPart] = []
        var sawCall = false
        for item in body["output"]?.arrayValue ?? [] {
            switch item["type"]?.stringValue {
            case "message":
                for part in item["content"]?.arrayValue ?? [] {
                    if let t = part["text"]?.stringValue ?? part["refusal"]?.stringValue { content.append(.text(t)) }
                }
            case "reasoning":
                if let obj = item.objectValue { content.append(reasoningPart(obj)) }
            case "function_call":
                sawCall = true
                content.append(.toolCall(
                    id: item["call_id"]?.stringValue ?? "", name: item["name"]?.stringValue ?? "", arguments: item["arguments"]?.stringValue ?? "{}"))
            default: continue
            }
        }
        return ChatResponse(
            id: body["id"]?.stringValue ?? TranslateSupport.randomID("resp_"), model: body["model"]?.stringValue ?? "",
            content: content, finish: finishReason(status: body["status"]?.stringValue, incomplete: body["incomplete_details"]?["reason"]?.stringValue, sawCall: sawCall),
            usage: usage(body["usage"]), created: body["created_at"]?.intValue)
    }

    static func finishReason(status: String?, incomplete: String?, sawCall: Bool) -> FinishReason {
        if status == "incomplete" { return incomplete == "content_filter" ? .contentFilter : .length }
        return sawCall ? .toolCalls : .stop
    }

    /// The output items of a canonical answer, as a Responses client sees them.
    static func outputItems(_ content: [ContentPart]) -> [JSONValue] {
        var items: [JSONValue] = []
        var text = ""
        func flush() {
            if !text.isEmpty { items.append(messageItem(id: TranslateSupport.randomID("msg_"), text: text, status: "completed")) }
            text = ""
        }
        for part in content {
            switch part {
            case .text(let t, _): text += t
            case .thinking(let t, let signature):
                flush()
                items.append(reasoningItem(id: TranslateSupport.randomID("rs_"), summary: t, encrypted: signature.map { wrappedSignature + $0 }))
            case .redactedThinking(let data):
                flush()
                items.append(reasoningItem(id: TranslateSupport.randomID("rs_"), summary: "", encrypted: wrappedRedacted + data))
            case .toolCall(let id, let name, let arguments):
                flush()
                items.append(functionCallItem(id: "fc_" + id.filter { $0.isLetter || $0.isNumber }, callID: id, name: name, arguments: arguments, status: "completed"))
            default: continue
            }
        }
        flush()
        return items
    }

    static func messageItem(id: String, text: String?, status: String) -> JSONValue {
        let content: [JSONValue] = text.map { [["type": "output_text", "text": .string($0), "annotations": [], "logprobs": []]] } ?? []
        return ["id": .string(id), "type": "message", "status": .string(status), "role": "assistant", "content": .array(content)]
    }

    static func reasoningItem(id: String, summary: String, encrypted: String?) -> JSONValue {
        var item: JSONObject = ["id": .string(id), "type": "reasoning"]
        item["summary"] = summary.isEmpty ? .array([]) : [["type": "summary_text", "text": .string(summary)]]
        if let encrypted { item["encrypted_content"] = .string(encrypted) }
        return .object(item)
    }

    static func functionCallItem(id: String, callID: String, name: String, arguments: String, status: String) -> JSONValue {
        ["id": .string(id), "type": "function_call", "status": .string(status), "arguments": .string(arguments), "call_id": .string(callID), "name": .string(name)]
    }

    /// A `response` object.
    public static func responseObject(
        id: String, model: String, created: Int, status: String, output: [JSONValue], usage: TokenUsage?,
        incomplete: String? = nil, error: GatewayError? = nil
    ) -> JSONValue {
        var r: JSONObject = ["id": .string(id), "object": "response", "created_at": .int(created), "status": .string(status)]
        r["background"] = false
        r["error"] = error.map { ["code": .string($0.code), "message": .string($0.message)] } ?? .null
        r["incomplete_details"] = incomplete.map { ["reason": .string($0)] } ?? .null
        r["instructions"] = .null
        r["max_output_tokens"] = .null
        r["model"] = .string(model)
        r["output"] = .array(output)
        r["parallel_tool_calls"] = true
        r["previous_response_id"] = .null
        r["reasoning"] = ["effort": .null, "summary": .null]
        r["store"] = true
        r["text"] = ["format": ["type": "text"]]
        r["tool_choice"] = "auto"
        r["tools"] = []
        r["truncation"] = "disabled"
        r["usage"] = usage.map(usageJSON) ?? .null
        r["metadata"] = .object([:])
        return .object(r)
    }

    /// Encodes a canonical answer for a Responses client.
    public static func encodeResponse(_ r: ChatResponse, model: String, created: Int) -> JSONObject {
        let incomplete: String?
        switch r.finish {
        case .length: incomplete = "max_output_tokens"
        case .contentFilter: incomplete = "content_filter"
        default: incomplete = nil
        }
        let id = r.id.hasPrefix("resp_") ? r.id : TranslateSupport.randomID("resp_")
        return responseObject(
            id: id, model: model, created: created, status: incomplete == nil ? "completed" : "incomplete",
            output: outputItems(r.content), usage: r.usage, incomplete: incomplete
        ).objectValue ?? [:]
    }

    /// An `error` stream event (for failures the stream encoder did not see).
    static func errorEvent(_ e: GatewayError, sequence: Int) -> ByteBuffer {
        var out = ByteBuffer()
        var data: JSONObject = ["type": "error", "sequence_number": .int(sequence), "code": .string(e.code), "message": .string(e.message)]
        data["param"] = e.param.map { .string($0) } ?? .null
        SSEEvent.write(event: "error", data: JSONValue.object(data).jsonBuffer, into: &out)
        return out
    }
}

/// A Responses provider's event stream as canonical events.
public struct ResponsesStreamDecoder: SSEEventDecoder, Sendable {
    var scanner = SSEScanner()
    private var nextBlock = 0
    /// Canonical block of each output item (reasoning, function call) and of each message text part.
    private var itemBlocks: [Int: Int] = [:]
    private var textBlocks: [String: Int] = [:]
    private var summaryIndex: [Int: Int] = [:]
    private var argumentsSeen: Set<Int> = []
    private var sawCall = false
    private var started = false
    private var finished = false

    public init() {}

    public mutating func feed(_ chunk: ByteBuffer) throws -> [StreamEvent] {
        try decode(chunk)
    }

    public mutating func finish() -> [StreamEvent] {
        decodeEnd()
    }

    private mutating func block() -> Int {
        defer { nextBlock += 1 }
        return nextBlock
    }

    mutating func handle(_ event: SSEEvent, into out: inout [StreamEvent]) {
        guard !finished, let data = event.data, let obj = (try? JSONValue.parse(data))?.objectValue else { return }
        let type = obj["type"]?.stringValue ?? event.event ?? ""
        let oi = obj["output_index"]?.intValue ?? 0
        if !started, type != "error" {
            started = true
            let response = obj["response"]
            out.append(.start(id: response?["id"]?.stringValue ?? "", model: response?["model"]?.stringValue ?? ""))
        }
        switch type {
        case "response.output_item.added":
            switch obj["item"]?["type"]?.stringValue {
            case "reasoning":
                let b = block()
                itemBlocks[oi] = b
                out.append(.thinkingStart(index: b))
            case "function_call":
                sawCall = true
                let b = block()
                itemBlocks[oi] = b
                out.append(.toolCallStart(index: b, id: obj["item"]?["call_id"]?.stringValue ?? "", name: obj["item"]?["name"]?.stringValue ?? ""))
            default: break
            }
        case "response.content_part.added":
            let b = block()
            textBlocks["\(oi):\(obj["content_index"]?.intValue ?? 0)"] = b
            out.append(.textStart(index: b))
        case "response.output_text.delta", "response.refusal.delta":
            if let b = textBlocks["\(oi):\(obj["content_index"]?.intValue ?? 0)"], let d = obj["delta"]?.stringValue { out.append(.textDelta(index: b, d)) }
        case "response.reasoning_summary_text.delta", "response.reasoning_text.delta":
            guard let b = itemBlocks[oi], let d = obj["delta"]?.stringValue else { break }
            let s = obj["summary_index"]?.intValue ?? 0
            if let last = summaryIndex[oi], last != s { out.append(.thinkingDelta(index: b, "\n\n")) }
            summaryIndex[oi] = s
            out.append(.thinkingDelta(index: b, d))
        case "response.function_call_arguments.delta":
            if let b = itemBlocks[oi], let d = obj["delta"]?.stringValue {
                argumentsSeen.insert(oi)
                out.append(.toolCallDelta(index: b, d))
            }
        case "response.output_item.done":
            let item = obj["item"]?.objectValue ?? [:]
            switch item["type"]?.stringValue {
            case "reasoning":
                guard let b = itemBlocks[oi] else { break }
                if case .thinking(_, let sig?) = OpenAIResponses.reasoningPart(item) { out.append(.signatureDelta(index: b, sig)) }
                out.append(.blockStop(index: b))
            case "function_call":
                guard let b = itemBlocks[oi] else { break }
                if !argumentsSeen.contains(oi), let a = item["arguments"]?.stringValue, !a.isEmpty { out.append(.toolCallDelta(index: b, a)) }
                out.append(.blockStop(index: b))
            case "message":
                for (key, b) in textBlocks.sorted(by: { $0.value < $1.value }) where key.hasPrefix("\(oi):") { out.append(.blockStop(index: b)) }
            default: break
            }
        case "response.completed", "response.incomplete":
            let response = obj["response"]
            if let u = OpenAIResponses.usage(response?["usage"]) { out.append(.usage(u)) }
            out.append(.finish(OpenAIResponses.finishReason(
                status: response?["status"]?.stringValue, incomplete: response?["incomplete_details"]?["reason"]?.stringValue, sawCall: sawCall)))
            finished = true
        case "response.failed", "error":
            let e = obj["response"]?["error"] ?? .object(obj)
            out.append(.error(GatewayError(status: 502, category: .upstream, code: e["code"]?.stringValue ?? "upstream_stream_error",
                                           message: e["message"]?.stringValue ?? "the provider's response failed")))
            finished = true
        default: break
        }
    }
}

/// Canonical events as a Responses event stream: `response.created`, `response.in_progress`, output
/// items with their parts and deltas, and always a terminal `response.completed` (or
/// `response.incomplete` / `response.failed`). Every event's `event:` equals its `type` and carries a
/// `sequence_number`.
public struct ResponsesStreamEncoder: Sendable {
    private enum Kind { case text, thinking, tool }
    private struct Open {
        var kind: Kind
        var outputIndex: Int
        var itemID: String
        var text = ""
        var signature: String?
        var callID = ""
        var name = ""
        var summaryStarted = false
    }

    let model: String
    let created: Int
    let responseID: String
    private var sequence = 0
    private var started = false
    private var ended = false
    private var open: [Int: Open] = [:]
    private var output: [Int: JSONValue] = [:]
    private var nextOutput = 0
    private var usage: TokenUsage?
    private var finishReason: FinishReason?
    /// The final `response` object (after `response.completed`/`incomplete`/`failed`).
    public private(set) var finalResponse: JSONValue?

    public init(model: String, created: Int, responseID: String? = nil) {
        self.model = model
        self.created = created
        self.responseID = responseID ?? TranslateSupport.randomID("resp_")
    }

    private mutating func emit(_ type: String, _ fields: JSONObject, into out: inout ByteBuffer) {
        var data: JSONObject = ["type": .string(type), "sequence_number": .int(sequence)]
        for (k, v) in fields { data[k] = v }
        sequence += 1
        SSEEvent.write(event: type, data: JSONValue.object(data).jsonBuffer, into: &out)
    }

    private func response(status: String, incomplete: String? = nil, error: GatewayError? = nil) -> JSONValue {
        OpenAIResponses.responseObject(
            id: responseID, model: model, created: created, status: status,
            output: output.keys.sorted().compactMap { output[$0] }, usage: usage, incomplete: incomplete, error: error)
    }

    private mutating func start(into out: inout ByteBuffer) {
        guard !started else { return }
        started = true
        emit("response.created", ["response": response(status: "in_progress")], into: &out)
        emit("response.in_progress", ["response": response(status: "in_progress")], into: &out)
    }

    private mutating func addItem(_ kind: Kind, prefix: String, item: (String) -> JSONValue, into out: inout ByteBuffer) -> Open {
        let o = Open(kind: kind, outputIndex: nextOutput, itemID: TranslateSupport.randomID(prefix))
        nextOutput += 1
        emit("response.output_item.added", ["output_index": .int(o.outputIndex), "item": item(o.itemID)], into: &out)
        return o
    }

    public mutating func encode(_ event: StreamEvent, into out: inout ByteBuffer) {
        guard !ended else { return }
        if case .error = event {} else { start(into: &out) }
        switch event {
        case .start: break
        case .textStart(let i):
            let o = addItem(.text, prefix: "msg_", item: { OpenAIResponses.messageItem(id: $0, text: nil, status: "in_progress") }, into: &out)
            emit("response.content_part.added", [
                "item_id": .string(o.itemID), "output_index": .int(o.outputIndex), "content_index": 0,
                "part": ["type": "output_text", "text": "", "annotations": []],
            ], into: &out)
            open[i] = o
        case .textDelta(let i, let t):
            guard var o = open[i] else { return }
            o.text += t
            open[i] = o
            emit("response.output_text.delta", [
                "item_id": .string(o.itemID), "output_index": .int(o.outputIndex), "content_index": 0, "delta": .string(t), "logprobs": [],
            ], into: &out)
        case .thinkingStart(let i):
            open[i] = addItem(.thinking, prefix: "rs_", item: { OpenAIResponses.reasoningItem(id: $0, summary: "", encrypted: nil) }, into: &out)
        case .thinkingDelta(let i, let t):
            guard var o = open[i] else { return }
            if !o.summaryStarted {
                o.summaryStarted = true
                emit("response.reasoning_summary_part.added", [
                    "item_id": .string(o.itemID), "output_index": .int(o.outputIndex), "summary_index": 0, "part": ["type": "summary_text", "text": ""],
                ], into: &out)
            }
            o.text += t
            open[i] = o
            emit("response.reasoning_summary_text.delta", [
                "item_id": .string(o.itemID), "output_index": .int(o.outputIndex), "summary_index": 0, "delta": .string(t),
            ], into: &out)
        case .signatureDelta(let i, let s):
            guard var o = open[i] else { return }
            o.signature = (o.signature ?? "") + s
            open[i] = o
        case .redactedThinking(let i, let data):
            let o = addItem(.thinking, prefix: "rs_", item: { OpenAIResponses.reasoningItem(id: $0, summary: "", encrypted: nil) }, into: &out)
            let item = OpenAIResponses.reasoningItem(id: o.itemID, summary: "", encrypted: OpenAIResponses.wrappedRedacted + data)
            output[o.outputIndex] = item
            emit("response.output_item.done", ["output_index": .int(o.outputIndex), "item": item], into: &out)
        case .toolCallStart(let i, let id, let name):
            var o = addItem(.tool, prefix: "fc_", item: { OpenAIResponses.functionCallItem(id: $0, callID: id, name: name, arguments: "", status: "in_progress") }, into: &out)
            o.callID = id
            o.name = name
            open[i] = o
        case .toolCallDelta(let i, let a):
            guard var o = open[i] else { return }
            o.text += a
            open[i] = o
            emit("response.function_call_arguments.delta", ["item_id": .string(o.itemID), "output_index": .int(o.outputIndex), "delta": .string(a)], into: &out)
        case .blockStop(let i):
            guard let o = open.removeValue(forKey: i) else { return }
            close(o, into: &out)
        case .usage(let u): usage = u
        case .finish(let f): finishReason = f
        case .error(let e):
            start(into: &out)
            for (_, o) in open.sorted(by: { $0.key < $1.key }) { close(o, into: &out) }
            open.removeAll()
            let failed = response(status: "failed", error: e)
            finalResponse = failed
            emit("response.failed", ["response": failed], into: &out)
            ended = true
        }
    }

    private mutating func close(_ o: Open, into out: inout ByteBuffer) {
        let ids: JSONObject = ["item_id": .string(o.itemID), "output_index": .int(o.outputIndex)]
        let item: JSONValue
        switch o.kind {
        case .text:
            var f = ids
            f["content_index"] = 0
            var done = f
            done["text"] = .string(o.text)
            done["logprobs"] = []
            emit("response.output_text.done", done, into: &out)
            var part = f
            part["part"] = ["type": "output_text", "text": .string(o.text), "annotations": []]
            emit("response.content_part.done", part, into: &out)
            item = OpenAIResponses.messageItem(id: o.itemID, text: o.text, status: "completed")
        case .thinking:
            if o.summaryStarted {
                var f = ids
                f["summary_index"] = 0
                var done = f
                done["text"] = .string(o.text)
                emit("response.reasoning_summary_text.done", done, into: &out)
                var part = f
                part["part"] = ["type": "summary_text", "text": .string(o.text)]
                emit("response.reasoning_summary_part.done", part, into: &out)
            }
            item = OpenAIResponses.reasoningItem(id: o.itemID, summary: o.text, encrypted: o.signature.map { OpenAIResponses.wrappedSignature + $0 })
        case .tool:
            var done = ids
            done["name"] = .string(o.name)
            done["arguments"] = .string(o.text)
            emit("response.function_call_arguments.done", done, into: &out)
            item = OpenAIResponses.functionCallItem(id: o.itemID, callID: o.callID, name: o.name, arguments: o.text, status: "completed")
        }
        output[o.outputIndex] = item
        emit("response.output_item.done", ["output_index": .int(o.outputIndex), "item": item], into: &out)
    }

    public mutating func finish(into out: inout ByteBuffer) {
        guard !ended else { return }
        start(into: &out)
        for (_, o) in open.sorted(by: { $0.key < $1.key }) { close(o, into: &out) }
        open.removeAll()
        ended = true
        let final: JSONValue
        switch finishReason {
        case .length?:
            final = response(status: "incomplete", incomplete: "max_output_tokens")
            emit("response.incomplete", ["response": final], into: &out)
        case .contentFilter?:
            final = response(status: "incomplete", incomplete: "content_filter")
            emit("response.incomplete", ["response": final], into: &out)
        default:
            final = response(status: "completed")
            emit("response.completed", ["response": final], into: &out)
        }
        finalResponse = final
    }
}
