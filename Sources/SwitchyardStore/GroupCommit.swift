import Synchronization

/// Group commit: operations submitted while a batch is being written join the next batch, so N
/// concurrent requests cost one transaction instead of N, and a lone request adds no waiting.
///
/// The first submitter finds no batch running and writes one itself (its own operation and whatever
/// queued meanwhile); if more arrived while it wrote, it hands the queue to a new task and returns.
public final class GroupCommit<Operation: Sendable, Result: Sendable>: Sendable {
    private final class Ticket: Sendable {
        private enum Slot {
            case empty
            case waiting(CheckedContinuation<Result, any Error>)
            case done(Swift.Result<Result, any Error>)
        }

        private let slot = Mutex(Slot.empty)

        func resolve(_ r: Swift.Result<Result, any Error>) {
            let waiter = slot.withLock { s -> CheckedContinuation<Result, any Error>? in
                if case .waiting(let c) = s {
                    s = .done(r)
                    return c
                }
                s = .done(r)
                return nil
            }
            waiter?.resume(with: r)
        }

        /// The result if it is already in, without suspending.
        var settled: Swift.Result<Result, any Error>? {
            slot.withLock { s in
                if case .done(let r) = s { return r }
                return nil
            }
        }

        var value: Result {
            get async throws {
                try await withCheckedThrowingContinuation { (c: CheckedContinuation<Result, any Error>) in
                    let ready = slot.withLock { s -> Swift.Result<Result, any Error>? in
                        if case .done(let r) = s { return r }
                        s = .waiting(c)
                        return nil
                    }
                    if let ready { c.resume(with: ready) }
                }
            }
        }
    }

    private struct State {
        var pending: [(Operation, Ticket)] = []
        var running = false
    }

    private let state = Mutex(State())
    private let maxBatch: Int
    private let write: @Sendable ([Operation]) async throws -> [Result]

    /// `write` gets a batch and returns one result per operation, in order.
    public init(maxBatch: Int = 256, write: @escaping @Sendable ([Operation]) async throws -> [Result]) {
        self.maxBatch = maxBatch
        self.write = write
    }

    /// Submits one operation and waits for the batch it joined to be written.
    public func submit(_ operation: Operation) async throws -> Result {
        let ticket = Ticket()
        let lead = state.withLock { s -> Bool in
            s.pending.append((operation, ticket))
            if s.running { return false }
            s.running = true
            return true
        }
        if lead {
            await drain(handingOff: true)
            // The leader's own batch is written by now: no suspension to collect the result.
            if let settled = ticket.settled { return try settled.get() }
        }
        return try await ticket.value
    }

    /// Writes batches until the queue is empty; with `handingOff`, writes one and passes the rest on.
    private func drain(handingOff: Bool) async {
        while true {
            let batch = state.withLock { s -> [(Operation, Ticket)] in
                let n = min(maxBatch, s.pending.count)
                let b = Array(s.pending.prefix(n))
                s.pending.removeFirst(n)
                if b.isEmpty { s.running = false }
                return b
            }
            if batch.isEmpty { return }
            do {
                let results = try await write(batch.map(\.0))
                for (i, (_, ticket)) in batch.enumerated() {
                    ticket.resolve(i < results.count ? .success(results[i]) : .failure(GroupCommitError.missingResult))
                }
            } catch {
                for (_, ticket) in batch { ticket.resolve(.failure(error)) }
            }
            if handingOff {
                let more = state.withLock { s -> Bool in
                    if s.pending.isEmpty {
                        s.running = false
                        return false
                    }
                    return true
                }
                if more { Task { await self.drain(handingOff: false) } }
                return
            }
        }
    }
}

public enum GroupCommitError: Error, CustomStringConvertible {
    case missingResult
    public var description: String { "a batch write returned fewer results than operations" }
}
