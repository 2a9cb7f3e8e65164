import Foundation
import Logging
import NIOCore
import Testing

@testable import SwitchyardServer

/// The log writer thread (`LogWriter`): whoever logs never waits for stderr; a reader that stalls costs
/// lines, counted and reported, never a blocked caller; lines keep their order.
@Suite(.timeLimit(.minutes(1))) struct LogWriterTests {
    /// A pipe whose kernel buffer holds one page, so that it fills after a few lines.
    static func smallPipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        try #require(pipe(&fds) == 0)
        _ = fcntl(fds[1], 1031 /* F_SETPIPE_SZ, Linux (needs _GNU_SOURCE in C) */, 4096)
        return (fds[0], fds[1])
    }

    static func line(_ i: Int) -> ByteBuffer {
        ByteBuffer(string: "line \(String(i).leftPadded(5)) " + String(repeating: "x", count: 50) + "\n")
    }

    /// Reads from `fd` until `done` says the text so far is complete.
    static func drain(_ fd: Int32, until done: (String) -> Bool) -> String {
        var text = ""
        var chunk = [UInt8](repeating: 0, count: 65536)
        while !done(text) {
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { break }
            text += String(decoding: chunk[0..<n], as: UTF8.self)
        }
        return text
    }

    @Test func aStalledReaderDropsCountedLinesAndNeverBlocksTheCaller() throws {
        let fds = try Self.smallPipe()
        defer { close(fds.read); close(fds.write) }
        let writer = LogWriter(fd: fds.write, capacity: 4096, batchPauseMicroseconds: 0) { ByteBuffer(string: "DROPPED \($0)\n") }
        // 1,000 lines of 62 bytes with nobody reading: the pipe (4 KB) and the buffer (4 KB) take ~130;
        // written directly, the 67th call would block here for good.
        let total = 1000
        for i in 0..<total { writer.append(Self.line(i)) }
        // Not `droppedSinceNotice > 0` here: the writer may already have taken the count for its next
        // notice (it blocks only in the write after that), so the notices in the text are what counts.

        // The reader comes back: every line is either delivered, in order, or counted in a notice.
        func accounted(_ text: String) -> (lines: [Int], dropped: Int) {
            var lines: [Int] = []
            var dropped = 0
            for l in text.split(separator: "\n") {
                if l.hasPrefix("line ") { lines.append(Int(l.dropFirst(5).prefix(5).trimmingCharacters(in: .whitespaces))!) }
                if l.hasPrefix("DROPPED ") { dropped += Int(l.dropFirst(8))! }
            }
            return (lines, dropped)
        }
        let text = Self.drain(fds.read) { text in
            let (lines, dropped) = accounted(text)
            return lines.count + dropped >= total && text.hasSuffix("\n")
        }
        let (lines, dropped) = accounted(text)
        #expect(dropped > 0)
        #expect(lines.count + dropped == total)
        #expect(lines == lines.sorted(), "lines keep the order they were logged in")
        #expect(lines.first == 0)
        #expect(writer.flush(timeout: 5))
    }

    @Test func linesArriveInOrderWhenTheReaderKeepsUp() async throws {
        let fds = try Self.smallPipe()
        defer { close(fds.read); close(fds.write) }
        let writer = LogWriter(fd: fds.write, capacity: 1 << 20) { ByteBuffer(string: "DROPPED \($0)\n") }
        let total = 5000
        let reader = Task.detached { Self.drain(fds.read) { $0.components(separatedBy: "\n").count > total } }
        for i in 0..<total { writer.append(Self.line(i)) }
        #expect(writer.flush(timeout: 10))
        let text = await reader.value
        let expected = (0..<total).map { String(buffer: Self.line($0)) }.joined()
        #expect(text == expected)
    }

    @Test func flushGivesUpOnADescriptorThatTakesNothing() throws {
        let fds = try Self.smallPipe()
        defer { close(fds.read); close(fds.write) }
        let writer = LogWriter(fd: fds.write, capacity: 64 << 10, batchPauseMicroseconds: 0) { _ in ByteBuffer() }
        for i in 0..<1000 { writer.append(Self.line(i)) }
        #expect(!writer.flush(timeout: 0.2), "a full pipe nobody reads cannot be flushed")
        _ = Self.drain(fds.read) { $0.utf8.count >= 1000 * 62 }
        #expect(writer.flush(timeout: 5))
    }

    @Test func theDroppedNoticeIsALogLineInTheConfiguredFormat() throws {
        let json = String(buffer: SwitchyardLogHandler.droppedNotice(42, format: .json))
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        #expect(object?["level"] as? String == "warning")
        #expect(object?["dropped_lines"] as? Int == 42)
        #expect(json.hasSuffix("}\n"))
        let text = String(buffer: SwitchyardLogHandler.droppedNotice(7, format: .text))
        #expect(text.contains(" warning ") && text.contains("dropped_lines=7") && text.hasSuffix("\n"))
    }
}
