/// Small helpers shared by the format translators.
enum TranslateSupport {
    /// Splits a `data:` URL into media type and base64 payload; nil for other URLs.
    static func parseDataURL(_ url: String) -> (mediaType: String, data: String)? {
        guard url.hasPrefix("data:"), let comma = url.firstIndex(of: ",") else { return nil }
        let meta = url[url.index(url.startIndex, offsetBy: 5)..<comma]
        guard meta.hasSuffix(";base64") else { return nil }
        let mediaType = String(meta.dropLast(";base64".count))
        return (mediaType.isEmpty ? "application/octet-stream" : mediaType, String(url[url.index(after: comma)...]))
    }

    static func dataURL(mediaType: String, data: String) -> String {
        "data:\(mediaType);base64,\(data)"
    }

    /// A JSON number for a Double, written without a spurious fraction for whole numbers.
    static func number(_ d: Double) -> JSONValue {
        if d == d.rounded(), abs(d) < 1e15 { return .number(String(Int(d))) }
        return .number(String(d))
    }

    /// Parses tool-call argument text into a JSON object; invalid or non-object text becomes `{}` with the
    /// text kept under `_raw` only when non-empty, so nothing the model produced is silently lost.
    static func argumentsObject(_ text: String) -> JSONValue {
        let trimmed = text.trimmingCharacters(in: " \n\t\r")
        if trimmed.isEmpty { return .object([:]) }
        if let v = try? JSONValue.parse(trimmed), case .object = v { return v }
        return .object(["_raw": .string(text)])
    }

    static func invalid(_ message: String, param: String? = nil) -> GatewayError {
        GatewayError.invalidRequest(message, code: "invalid_request_error", param: param)
    }

    /// A stable 24-character id suffix.
    static func randomID(_ prefix: String) -> String {
        prefix + APIKeys.idBase62(24)
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}

extension JSONValue {
    /// Text of a string, or of an array of `{"type":"text","text":…}` parts joined by newlines.
    var flattenedText: String? {
        switch self {
        case .string(let s): return s
        case .array(let parts):
            let texts = parts.compactMap { p -> String? in
                if let s = p.stringValue { return s }
                return p["text"]?.stringValue
            }
            return texts.joined(separator: "\n")
        default: return nil
        }
    }
}
