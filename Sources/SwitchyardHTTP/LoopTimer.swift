import NIOCore
import NIOPosix

/// Sleeps and timeouts on SwiftNIO's event-loop timers instead of `Task.sleep`.
///
/// The long-running commands run Swift Concurrency's jobs on SwiftNIO's event loops, but that takeover
/// covers immediate jobs only: `Task.sleep` still arms a Dispatch timer. Each sleep then wakes Dispatch's
/// manager thread (an `eventfd` write and a context switch, on a request's path when the request sleeps
/// or races a timeout), the wake-up runs on a Dispatch worker that hops back to an event loop, and a
/// cancelled sleep leaves its timer and a small task in Dispatch until the original deadline. A
/// scheduled task on the event loop the caller already runs on is an entry in that loop's timer heap:
/// arming and cancelling it wake no thread.
public enum LoopTimer {
    /// The event loop the caller runs on, or one of the shared group's.
    public static var currentLoop: any EventLoop {
        MultiThreadedEventLoopGroup.currentEventLoop ?? MultiThreadedEventLoopGroup.singleton.any()
    }

    /// Like `Task.sleep(for:)`: returns after `duration`, throws `CancellationError` at once when the
    /// task is cancelled.
    public static func sleep(for duration: Duration) async throws {
        let scheduled = currentLoop.scheduleTask(in: TimeAmount(duration)) {}
        try await withTaskCancellationHandler {
            do {
                try await scheduled.futureResult.get()
            } catch {
                throw CancellationError()
            }
        } onCancel: {
            scheduled.cancel()
        }
    }

    /// Runs `action` on the caller's event loop after `duration`, unless the handle is cancelled first.
    @discardableResult
    public static func after(_ duration: Duration, _ action: @escaping @Sendable () -> Void) -> Scheduled<Void> {
        currentLoop.scheduleTask(in: TimeAmount(duration), action)
    }
}
