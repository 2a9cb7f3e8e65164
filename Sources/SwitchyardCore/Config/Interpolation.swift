/// `${VAR}` / `${VAR:-default}` expansion of config values from the environment.
enum Interpolation {
    /// Expands references in `text`. `$$` is a literal `$`. A reference to an unset variable without a
    /// default is an error, so a missing secret is caught at startup rather than sent upstream empty.
    static func expand(_ text: String, environment: [String: String], onError: (String) -> ConfigError) throws -> String {
        guard text.contains("$") else { return text }
        var out = ""
        var i = text.startIndex
        while i < text.endIndex {
            let c = text[i]
            guard c == "$" else {
                out.append(c)
                i = text.index(after: i)
                continue
            }
            let next = text.index(after: i)
            if next < text.endIndex, text[next] == "$" {
                out.append("$")
                i = text.index(after: next)
                continue
            }
            guard next < text.endIndex, text[next] == "{" else {
                out.append(c)
                i = next
                continue
            }
            guard let close = text[next...].firstIndex(of: "}") else {
                throw onError("unterminated `${` in `\(text)`")
            }
            let body = text[text.index(after: next)..<close]
            let name: Substring
            var fallback: Substring?
            if let sep = body.firstRange(of: ":-") {
                name = body[body.startIndex..<sep.lowerBound]
                fallback = body[sep.upperBound...]
            } else {
                name = body
            }
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                throw onError("invalid variable reference `${\(body)}`")
            }
            if let value = environment[String(name)], !(value.isEmpty && fallback != nil) {
                out += value
            } else if let fallback {
                out += fallback
            } else {
                throw onError("environment variable \(name) is not set (write ${\(name):-} to allow it to be empty)")
            }
            i = text.index(after: close)
        }
        return out
    }
}
