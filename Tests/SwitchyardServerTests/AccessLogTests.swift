import Foundation
import Logging
import NIOCore
import SwitchyardCore
import Testing

@testable import SwitchyardServer

/// The access line (`RequestLog.emit`): written by `SwitchyardLogHandler.logAccess` straight into bytes,
/// and the same bytes as swift-log's general path (`logger.info` with the line as metadata) would give.
@Suite(.timeLimit(.minutes(1))) struct AccessLogTests {
    /// A line with every kind of value, and strings that need escaping.
    static func sampleLine() -> AccessLogLine {
        var line = AccessLogLine()
        line.add("request_id", .string("req-1"))
        line.add("path", .string("/v1/chat \"quoted\"\n\u{1}é"))
        line.add("status", .int(200))
        line.add("duration_ms", .millis(1_234_567_890))
        line.add("ttfb_ms", .millis(5_000))
        line.add("stream", .bool(false))
        line.add("input_tokens", .int(0))
        line.add("delta", .int(-42))
        line.add("big", .int(Int.max))
        return line
    }

    /// A logger on a `SwitchyardLogHandler` whose lines go to a pipe; `lines` reads what it wrote.
    final class Captured {
        let fds: (read: Int32, write: Int32)
        let writer: LogWriter
        var logger: Logger

        init(format: SwitchyardLogHandler.Format, level: Logger.Level = .info, metadata: Logger.Metadata = [:]) throws {
            var fds: [Int32] = [0, 0]
            try #require(pipe(&fds) == 0)
            self.fds = (fds[0], fds[1])
            let writer = LogWriter(fd: fds[1], capacity: 1 << 20, batchPauseMicroseconds: 0) { _ in ByteBuffer() }
            self.writer = writer
            var handler = SwitchyardLogHandler(label: "test", level: level, format: format, writer: writer)
            handler.metadata = metadata
            logger = Logger(label: "test", factory: { _ in handler })
        }

        deinit {
            close(fds.read)
            close(fds.write)
        }

        /// Everything written so far (the pipe is drained without blocking once the writer flushed).
        func text() -> String {
            #expect(writer.flush(timeout: 5))
            _ = fcntl(fds.read, F_SETFL, O_NONBLOCK)
            var out = [UInt8]()
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(fds.read, &chunk, chunk.count)
                if n <= 0 { break }
                out += chunk[0..<n]
            }
            return String(decoding: out, as: UTF8.self)
        }
    }

    /// The line without its timestamp (24 characters, at the start of a text line or in `"ts"`).
    static func withoutTimestamp(_ line: Substring, format: SwitchyardLogHandler.Format) -> String {
        switch format {
        case .json: String(line.prefix(7)) + String(line.dropFirst(7 + 24))
        case .text: String(line.dropFirst(24))
        }
    }

    @Test(arguments: [SwitchyardLogHandler.Format.json, .text], [Logger.Metadata(), ["zone": "eu", "app": "sy"]])
    func theDirectLineIsTheLineSwiftLogWouldWrite(format: SwitchyardLogHandler.Format, metadata: Logger.Metadata) throws {
        let captured = try Captured(format: format, metadata: metadata)
        #expect(SwitchyardLogHandler.logAccess(Self.sampleLine(), message: "request", to: captured.logger))
        captured.logger.info("request", metadata: ["access": .stringConvertible(Self.sampleLine())])
        let lines = captured.text().split(separator: "\n")
        try #require(lines.count == 2)
        #expect(Self.withoutTimestamp(lines[0], format: format) == Self.withoutTimestamp(lines[1], format: format))
    }

    @Test func theJSONLineHasEveryMemberInOrderWithExactNumbers() throws {
        let captured = try Captured(format: .json)
        #expect(SwitchyardLogHandler.logAccess(Self.sampleLine(), message: "request", to: captured.logger))
        let text = captured.text()
        let line = Self.withoutTimestamp(text.dropLast(), format: .json)
        #expect(line == #"{"ts":"","level":"info","msg":"request","request_id":"req-1","path":"/v1/chat \"quoted\"\n\u0001é","#
            + #""status":200,"duration_ms":1234.567,"ttfb_ms":0.005,"stream":false,"input_tokens":0,"delta":-42,"#
            + #""big":9223372036854775807}"#)
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        let ts = try #require(object?["ts"] as? String)
        #expect(EpochClock.parseISO8601(ts) != nil && ts.count == 24)
    }

    @Test func aLevelAboveInfoWritesNothingAndAnotherHandlerFallsBack() throws {
        let quiet = try Captured(format: .json, level: .warning)
        #expect(SwitchyardLogHandler.logAccess(Self.sampleLine(), message: "request", to: quiet.logger))
        #expect(quiet.text().isEmpty)
        let other = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        #expect(!SwitchyardLogHandler.logAccess(Self.sampleLine(), message: "request", to: other))
    }

    @Test(arguments: [0, 7, 9, 10, 99, 100, 12_345, -1, -10, Int.max, Int.min])
    func decimalsAreSpelledAsStringSpellsThem(n: Int) {
        var out = ByteBuffer()
        AccessLogLine.writeDecimal(n, into: &out)
        #expect(String(buffer: out) == String(n))
    }

    @Test func timestampsWrittenIntoABufferMatchTheStringForm() {
        var out = ByteBuffer()
        EpochClock.writeISO8601Millis(1_795_286_580_123, into: &out)
        #expect(String(buffer: out) == "2026-11-21T18:43:00.123Z")
        #expect(EpochClock.iso8601Millis(1_795_286_580_007) == "2026-11-21T18:43:00.007Z")
    }
}
