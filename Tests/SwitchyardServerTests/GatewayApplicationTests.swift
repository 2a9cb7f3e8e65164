import Foundation
import NIOHTTP1
import SwitchyardCore
import Testing

@testable import SwitchyardServer

/// The application around the router (`GatewayApplication`): every response, answered or refused,
/// carries a current `Date` header in IMF-fixdate form.
@Suite struct GatewayApplicationTests {
    @Test func datesAreFormattedAsIMFFixdate() {
        #expect(EpochClock.httpDate(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(EpochClock.httpDate(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(EpochClock.httpDate(1_798_761_599) == "Thu, 31 Dec 2026 23:59:59 GMT")
    }

    @Test func everyResponseCarriesTheCurrentDate() async throws {
        try await Harness.run { h in
            let key = try await h.key()
            let answered = try await h.request("/v1/chat/completions", key: key, body: Harness.chat())
            let refused = try await h.request("/v1/chat/completions", body: Harness.chat())
            #expect(answered.status == 200 && refused.status == 401)
            let now = Int(Date().timeIntervalSince1970)
            let recent = Set((now - 5...now + 1).map(EpochClock.httpDate))
            for response in [answered, refused] {
                let dates = response.headers["date"]
                #expect(dates.count == 1 && recent.contains(dates[0]), "\(dates)")
            }
        }
    }
}
