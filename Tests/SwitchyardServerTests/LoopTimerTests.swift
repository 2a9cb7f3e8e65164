import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SwitchyardHTTP
import Testing

@testable import SwitchyardServer

/// Sleeps and timeouts on event-loop timers (`LoopTimer`), and the heartbeat's wait that uses them.
@Suite struct LoopTimerTests {
    @Test func aSleepLastsAtLeastItsDuration() async throws {
        let start = ContinuousClock.now
        try await LoopTimer.sleep(for: .milliseconds(60))
        #expect(ContinuousClock.now - start >= .milliseconds(60))
    }

    @Test func aCancelledSleepThrowsCancellationErrorWithoutWaitingOutItsDuration() async throws {
        let sleeper = Task { try await LoopTimer.sleep(for: .seconds(600)) }
        try await LoopTimer.sleep(for: .milliseconds(20))
        sleeper.cancel()
        await #expect(throws: CancellationError.self) { try await sleeper.value }
    }

    @Test func aTaskCancelledBeforeItSleepsDoesNotSleep() async throws {
        let sleeper = Task {
            while !Task.isCancelled { await Task.yield() }
            try await LoopTimer.sleep(for: .seconds(600))
        }
        sleeper.cancel()
        await #expect(throws: CancellationError.self) { try await sleeper.value }
    }

    @Test func aTimerRunsOnAnEventLoopUnlessCancelledFirst() async throws {
        let ran = NIOLockedValueBox<[String]>([])
        let fired = NIOLockedValueBox<(any EventLoop)?>(nil)
        let cancelled = LoopTimer.after(.milliseconds(30)) { ran.withLockedValue { $0.append("cancelled") } }
        cancelled.cancel()
        let done = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Void.self)
        LoopTimer.after(.milliseconds(60)) {
            ran.withLockedValue { $0.append("kept") }
            fired.withLockedValue { $0 = MultiThreadedEventLoopGroup.currentEventLoop }
            done.succeed()
        }
        try await done.futureResult.get()
        #expect(ran.withLockedValue { $0 } == ["kept"])
        #expect(fired.withLockedValue { $0 } != nil)
    }

    @Test func aHeartbeatWaitReturnsTheResultAndDisarmsItsTimer() async throws {
        let pending = Pending<Int>()
        let waiter = Task { await pending.wait(for: .seconds(600)) }
        while !pending.timerArmed { try await LoopTimer.sleep(for: .milliseconds(1)) }
        pending.complete(.success(7))
        let result = await waiter.value
        #expect(try result?.get() == 7)
        #expect(!pending.timerArmed)
    }

    @Test func aHeartbeatWaitWithoutAResultEndsAtItsTimeoutAndTheResultComesLater() async throws {
        let pending = Pending<Int>()
        let start = ContinuousClock.now
        #expect(await pending.wait(for: .milliseconds(50)) == nil)
        #expect(ContinuousClock.now - start >= .milliseconds(50))
        #expect(!pending.timerArmed)
        pending.complete(.success(3))
        #expect(try await pending.wait(for: .seconds(600))?.get() == 3)
    }
}
