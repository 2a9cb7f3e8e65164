import Synchronization
import SwitchyardCore

/// Keeps the signed thinking that preceded tool calls, for clients that speak OpenAI Chat Completions.
///
/// Anthropic (and Gemini 3) require the thinking behind a tool call to come back, byte-exact, with the
/// tool's result; the OpenAI format has no place for signatures, and the official SDKs drop unknown
/// message fields. So the gateway remembers them by tool-call id and puts them back when the client
/// returns the call. Bounded (oldest entries go first); per process.
final class ReasoningCache: Sendable {
    private struct State {
        var entries: [String: [ContentPart]] = [:]
        var order: [String] = []
        var head = 0
    }

    private let state = Mutex(State())
    private let capacity: Int

    init(capacity: Int = 50_000) {
        self.capacity = capacity
    }

    /// Remembers the signed thinking of an answer under each of its tool-call ids.
    func store(_ content: [ContentPart]) {
        var thinking: [ContentPart] = []
        var ids: [String] = []
        for part in content {
            switch part {
            case .thinking(_, let sig?) where !sig.isEmpty: thinking.append(part)
            case .redactedThinking: thinking.append(part)
            case .toolCall(let id, _, _): ids.append(id)
            default: break
            }
        }
        guard !thinking.isEmpty, !ids.isEmpty else { return }
        state.withLock { s in
            for id in ids {
                if s.entries[id] == nil {
                    if s.order.count < capacity {
                        s.order.append(id)
                    } else {
                        s.entries[s.order[s.head]] = nil
                        s.order[s.head] = id
                        s.head = (s.head + 1) % capacity
                    }
                }
                s.entries[id] = thinking
            }
        }
    }

    /// Puts remembered thinking back in front of assistant turns whose tool calls came without it.
    func restore(_ request: inout ChatRequest) {
        for i in request.messages.indices where request.messages[i].role == .assistant {
            let content = request.messages[i].content
            let hasThinking = content.contains { part in
                if case .thinking(_, let sig?) = part, !sig.isEmpty { return true }
                if case .redactedThinking = part { return true }
                return false
            }
            guard !hasThinking else { continue }
            guard let firstCall = content.lazy.compactMap({ part -> String? in
                if case .toolCall(let id, _, _) = part { return id } else { return nil }
            }).first else { continue }
            guard let thinking = state.withLock({ $0.entries[firstCall] }) else { continue }
            request.messages[i].content = thinking + content.filter { if case .thinking = $0 { return false } else { return true } }
        }
    }
}
