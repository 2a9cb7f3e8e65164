import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization
import SwitchyardCore
import SwitchyardHTTP

extension Gateway {
    /// Runs a streaming call so that a client waiting a long time for the first byte hears from the
    /// gateway: if the answer (or an error) comes within one `routing.heartbeat`, it is returned as it
    /// is; otherwise the gateway commits to a 200 event stream and sends a keep-alive every heartbeat
    /// — an SSE comment (`: ping`) for OpenAI clients, `event: ping` for Anthropic ones, a blank line
    /// for Gemini ones, each a no-op to that format's SDK — until the answer comes, then relays it. An error after that point
    /// is an error event in the client's format. A client that leaves cancels the work (the provider
    /// request, an ensemble's proposers), unless the request is billed in full, in which case it runs on.
    func withHeartbeats(
        _ call: ClientCall, target: ResolvedModel, context: GatewayContext, _ work: @escaping @Sendable () async throws -> Response
    ) async throws -> Response {
        let interval = config.routing.heartbeat.duration
        let pending = Pending<Response>()
        let task = Task { await pending.complete(Result(catching: { try await work() })) }
        if let ready = await pending.wait(for: interval) { return try ready.get() }

        let log = context.log
        log.waitForBody()
        let format = call.format
        let channel = context.channel
        let keepsRunning = drainsOnLeave(target)
        let headers: HTTPFields = [
            .contentType: "text/event-stream; charset=utf-8",
            .cacheControl: "no-cache",
            HTTPField.Name("x-accel-buffering")!: "no",
        ]
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            func body() async throws {
                try await writer.write(Self.ping(format))
                var result = await pending.wait(for: interval)
                while result == nil {
                    try await writer.write(Self.ping(format))
                    result = await pending.wait(for: interval)
                }
                switch result! {
                case .success(let inner) where (200..<300).contains(inner.status.code):
                    log.markFirstByte()
                    try await inner.body.write(writer)
                case .success(let inner):
                    // The status line is sent: the error becomes an event in the stream's own format.
                    let collector = Collector()
                    try await inner.body.write(collector)
                    try await writer.write(Self.errorEvent(format, body: collector.buffer.value))
                    try await writer.finish(nil)
                case .failure(let error):
                    let e = GatewayError(error, method: .post, path: "")
                    log.set(errorCode: e.code)
                    try await writer.write(StreamErrors.event(format, e))
                    try await writer.finish(nil)
                }
            }
            if keepsRunning {
                try await ConnectionCloseWatcher.watching(channel, onClose: { log.clientLeft() }, body)
            } else {
                try await withTaskCancellationHandler {
                    try await ConnectionCloseWatcher.cancellingOnClose(channel, body)
                } onCancel: {
                    task.cancel()
                }
            }
        })
    }

    /// A keep-alive the client's SDK ignores: Anthropic's `ping` event; an SSE comment for OpenAI
    /// clients; a blank line for Gemini clients — the google-genai SDK reads any other non-`data:`
    /// line, comments included, as JSON, while a blank line (an empty SSE event) is skipped everywhere.
    static func ping(_ format: WireFormat) -> ByteBuffer {
        switch format {
        case .anthropic: ByteBuffer(string: "event: ping\ndata: {\"type\": \"ping\"}\n\n")
        case .openAI, .responses: ByteBuffer(string: ": ping\n\n")
        case .gemini: ByteBuffer(string: "\n")
        }
    }

    /// An error body already in the client's format, as a stream event.
    static func errorEvent(_ format: WireFormat, body: ByteBuffer) -> ByteBuffer {
        var out = ByteBuffer()
        if format == .anthropic {
            SSEEvent.write(event: "error", data: body, into: &out)
        } else {
            out.writeStaticString("data: ")
            out.writeImmutableBuffer(body)
            out.writeStaticString("\n\n")
        }
        return out
    }
}

/// Collects a response body written to it.
struct Collector: ResponseBodyWriter {
    final class Box: @unchecked Sendable { var value = ByteBuffer() }
    let buffer = Box()

    mutating func write(_ part: ByteBuffer) async throws {
        var part = part
        buffer.value.writeBuffer(&part)
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
}

/// A result another task will deliver, waited for with a timeout (the waiter can come back later).
final class Pending<T: Sendable>: Sendable {
    private struct State {
        var result: Result<T, any Error>?
        var waiter: CheckedContinuation<Result<T, any Error>?, Never>?
        var generation = 0
        /// The timer of the current wait, cancelled when the result comes first. It is an event-loop
        /// timer (`LoopTimer`): a `Task.sleep` here armed a Dispatch timer on every stream's path to its
        /// first byte, and a cancelled one stayed in Dispatch for the whole heartbeat interval.
        var timer: Scheduled<Void>?
    }

    private let state = Mutex(State())

    func complete(_ result: Result<T, any Error>) {
        let (waiter, timer) = state.withLock { s -> (CheckedContinuation<Result<T, any Error>?, Never>?, Scheduled<Void>?) in
            s.result = result
            defer {
                s.waiter = nil
                s.timer = nil
            }
            return (s.waiter, s.timer)
        }
        timer?.cancel()
        waiter?.resume(returning: result)
    }

    /// Whether a wait's timer is armed (a wait that got its result must leave none behind).
    var timerArmed: Bool { state.withLock { $0.timer != nil } }

    /// The result if it arrives within `timeout`; nil otherwise (it may still arrive later).
    func wait(for timeout: Duration) async -> Result<T, any Error>? {
        await withCheckedContinuation { (c: CheckedContinuation<Result<T, any Error>?, Never>) in
            let (ready, generation) = state.withLock { s -> (Result<T, any Error>??, Int) in
                if let r = s.result { return (.some(r), s.generation) }
                s.generation += 1
                s.waiter = c
                return (nil, s.generation)
            }
            if let ready {
                c.resume(returning: ready)
                return
            }
            let timer = LoopTimer.after(timeout) {
                let expired = self.state.withLock { s -> CheckedContinuation<Result<T, any Error>?, Never>? in
                    guard s.generation == generation, let w = s.waiter else { return nil }
                    s.waiter = nil
                    s.timer = nil
                    return w
                }
                expired?.resume(returning: nil)
            }
            let finished = state.withLock { s -> Bool in
                guard s.generation == generation, s.waiter != nil else { return true }
                s.timer = timer
                return false
            }
            if finished { timer.cancel() }
        }
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do {
            self = .success(try await body())
        } catch {
            self = .failure(error)
        }
    }
}
