/// Estimates prompt tokens without a tokenizer, for `count_tokens` on models whose provider cannot count.
///
/// Method (calibrated with scripts/measure-token-estimator.py against a real BPE tokenizer): a run of
/// ASCII letters/digits is one token plus one per started 6 characters beyond the fourth (BPE vocabularies
/// hold most common words whole); a run of ASCII punctuation costs one token per started 3 characters
/// (operators and brackets merge); whitespace is free; CJK characters are a token each and other
/// non-ASCII characters half a token. Fixed overheads: 3 tokens per message and 4 per request
/// (role markers), a tool's name and JSON schema counted as text plus 10, images ~1,600 tokens (Anthropic's
/// cost of a ~1.2-megapixel image), documents by size (~1 token per 3 bytes of base64 text after
/// decoding, about 750 per PDF page). See docs/api.md for measured error.
public enum TokenEstimator {
    public static func estimate(_ r: ChatRequest) -> Int {
        var total = 4
        for part in r.system { total += estimate(part) }
        for m in r.messages {
            total += 3
            for part in m.content { total += estimate(part) }
        }
        for t in r.tools {
            total += 10 + text(t.name) + text(t.description ?? "") + text(t.parameters.jsonString)
        }
        return total
    }

    static func estimate(_ part: ContentPart) -> Int {
        switch part {
        case .text(let t, _): return text(t)
        case .textDocument(let t, let title, _): return text(t) + text(title ?? "") + 5
        case .image: return 1600
        case .document(let source, _, _):
            if case .base64(_, let data) = source { return max(100, data.utf8.count * 3 / 4 / 3) }
            return 1500
        case .toolCall(_, let name, let args): return 5 + text(name) + text(args)
        case .toolResult(let r): return 5 + r.content.reduce(0) { $0 + estimate($1) }
        case .thinking(let t, _): return text(t)
        case .redactedThinking(let d): return d.utf8.count / 4
        case .audio(let data, _): return data.utf8.count * 3 / 4 / 32  // ~32 bytes of audio per token
        }
    }

    /// Tokens of plain text.
    public static func text(_ s: String) -> Int {
        var tokens = 0
        var word = 0
        var punct = 0
        var halves = 0
        func flushWord() {
            if word > 0 { tokens += 1 + max(0, (word - 4 + 5) / 6) }
            word = 0
        }
        func flushPunct() {
            if punct > 0 { tokens += (punct + 2) / 3 }
            punct = 0
        }
        for scalar in s.unicodeScalars {
            let v = scalar.value
            if (v >= 0x30 && v <= 0x39) || (v >= 0x41 && v <= 0x5A) || (v >= 0x61 && v <= 0x7A) {
                flushPunct()
                word += 1
            } else if v == 0x20 || v == 0x0A || v == 0x09 || v == 0x0D {
                flushWord()
                flushPunct()
            } else if v < 0x80 {
                flushWord()
                punct += 1
            } else if (0x3000...0x9FFF).contains(v) || (0xAC00...0xD7AF).contains(v) || (0xF900...0xFAFF).contains(v) {
                flushWord()
                flushPunct()
                tokens += 1
            } else {
                flushPunct()
                halves += 1
            }
        }
        flushWord()
        flushPunct()
        return tokens + (halves + 1) / 2
    }
}
