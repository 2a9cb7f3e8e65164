import NIOCore
import NIOEmbedded
import SwitchyardHTTP
import Testing

/// Flushes gathered per event-loop round (`DeferredFlush`): the first of a round goes at once, the
/// others when the loop has handled its current events; each is flushed exactly once.
@Suite struct DeferredFlushTests {
    /// Counts the flushes that pass it towards the channel's head; `context` is the context of a
    /// handler after it, which flushes as the gateway's handlers do.
    final class Recorder: ChannelOutboundHandler, @unchecked Sendable {
        typealias OutboundIn = NIOAny
        var flushes = 0
        var context: ChannelHandlerContext!
        /// Runs after each flush (on the loop).
        var onFlush: (() -> Void)?

        final class Writer: ChannelInboundHandler, @unchecked Sendable {
            typealias InboundIn = NIOAny
            let added: (ChannelHandlerContext) -> Void
            init(_ added: @escaping (ChannelHandlerContext) -> Void) { self.added = added }
            func handlerAdded(context: ChannelHandlerContext) { added(context) }
        }

        func flush(context: ChannelHandlerContext) {
            flushes += 1
            context.flush()
            onFlush?()
        }

        static func on(_ loop: EmbeddedEventLoop) throws -> Recorder {
            let recorder = Recorder()
            let channel = EmbeddedChannel(loop: loop)
            try channel.pipeline.syncOperations.addHandler(recorder)
            try channel.pipeline.syncOperations.addHandler(Writer { recorder.context = $0 })
            return recorder
        }
    }

    @Test func theFirstFlushOfARoundGoesAtOnceTheOthersWhenTheRoundEnds() throws {
        let loop = EmbeddedEventLoop()
        let (a, b, c) = (try Recorder.on(loop), try Recorder.on(loop), try Recorder.on(loop))
        DeferredFlush.flush(a.context)
        #expect(a.flushes == 1, "nothing else is written in this round: it must not wait")
        DeferredFlush.flush(b.context)
        DeferredFlush.flush(c.context)
        #expect(b.flushes == 0 && c.flushes == 0, "later flushes wait for the round's end")
        loop.run()
        #expect(a.flushes == 1 && b.flushes == 1 && c.flushes == 1)

        // The next round starts over.
        DeferredFlush.flush(c.context)
        #expect(c.flushes == 2)
        loop.run()
        #expect(a.flushes == 1 && b.flushes == 1 && c.flushes == 2)
    }

    @Test func aRoundOfAnotherLoopOnTheSameThreadHoldsNothingBack() throws {
        let (first, second) = (EmbeddedEventLoop(), EmbeddedEventLoop())
        let (a, b) = (try Recorder.on(first), try Recorder.on(second))
        DeferredFlush.flush(a.context)
        // `first` has not ended its round; `second`'s flush must not wait for it.
        DeferredFlush.flush(b.context)
        #expect(a.flushes == 1 && b.flushes == 1)
        first.run()
        second.run()
    }

    @Test func aFlushAskedForWhileTheRoundEndsIsDoneBeforeItEnds() throws {
        let loop = EmbeddedEventLoop()
        let (a, b, c) = (try Recorder.on(loop), try Recorder.on(loop), try Recorder.on(loop))
        // Flushing b makes a handler write to c (as a relay writes to the other side).
        b.onFlush = { DeferredFlush.flush(c.context) }
        DeferredFlush.flush(a.context)
        DeferredFlush.flush(b.context)
        loop.run()
        #expect(a.flushes == 1 && b.flushes == 1 && c.flushes == 1)
        // And the round did end: the next flush goes at once.
        DeferredFlush.flush(a.context)
        #expect(a.flushes == 2)
        loop.run()
    }
}
