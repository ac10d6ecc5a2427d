import Foundation

/// The bundle's `tokenizer.json` (docs/bundle-spec.md section 5): byte-level BPE as Hugging Face `tokenizers`
/// runs it, without the library. Added tokens written in the text are matched first (leftmost, longest), the rest
/// is split by GPT-2's pre-tokenizer regex
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, each piece's UTF-8 bytes become
/// GPT-2's byte→unicode characters and are merged by rank. The regex is a hand-written scanner over code points,
/// so regex dialects cannot disagree on `\s`. A tokenizer this code does not implement is refused.
public final class Tokenizer {
    private let vocab: [String: Int]
    private let ranks: [String: Int]
    private let added: [[UInt32]: Int]
    private let specialIds: Set<Int>
    private let tokens: [Int: String]
    private let ignoreMerges: Bool
    private var cache: [String: [Int]] = [:]
    private let longestAdded: Int

    private init(vocab: [String: Int], ranks: [String: Int], added: [[UInt32]: Int], specialIds: Set<Int>,
                 tokens: [Int: String], ignoreMerges: Bool) {
        self.vocab = vocab
        self.ranks = ranks
        self.added = added
        self.specialIds = specialIds
        self.tokens = tokens
        self.ignoreMerges = ignoreMerges
        self.longestAdded = added.keys.map(\.count).max() ?? 0
    }

    /// The ids of `text` with no special tokens added around it; added tokens in the text are matched as such.
    public func encode(_ text: String) -> [Int] {
        let c = text.unicodeScalars.map(\.value)
        var ids: [Int] = []
        var start = 0 // first code point not yet encoded
        var i = 0
        while i < c.count {
            guard let match = addedAt(c, i) else {
                i += 1
                continue
            }
            encodeText(Array(c[start..<i]), &ids)
            ids.append(added[match]!)
            i += match.count
            start = i
        }
        encodeText(Array(c[start...]), &ids)
        return ids
    }

    /// The text of `ids`, special tokens dropped (bytes joined, then UTF-8; invalid sequences become U+FFFD).
    public func decode(_ ids: [Int]) -> String {
        var bytes: [UInt8] = []
        for id in ids {
            if specialIds.contains(id) { continue }
            guard let token = tokens[id] else { continue }
            let raw = token.unicodeScalars.map { Tokenizer.UNICODE_TO_BYTE[$0.value] }
            if raw.allSatisfy({ $0 != nil }) { bytes += raw.map { $0! } } else { bytes += Array(token.utf8) }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private func addedAt(_ c: [UInt32], _ i: Int) -> [UInt32]? {
        var n = min(longestAdded, c.count - i)
        while n >= 1 {
            let s = Array(c[i..<(i + n)])
            if added[s] != nil { return s }
            n -= 1
        }
        return nil
    }

    private func encodeText(_ c: [UInt32], _ out: inout [Int]) {
        for word in Tokenizer.preTokenize(c) {
            let key = scalarString(word)
            if let ids = cache[key] {
                out += ids
            } else {
                let ids = bpe(key)
                cache[key] = ids
                out += ids
            }
        }
    }

    private func bpe(_ word: String) -> [Int] {
        var symbols = Array(word.utf8).map { Tokenizer.BYTE_TO_UNICODE[Int($0)] }
        let whole = symbols.joined()
        if ignoreMerges, let id = vocab[whole] { return [id] }
        while symbols.count > 1 {
            var best = -1
            var bestRank = Int.max
            for j in 0..<(symbols.count - 1) {
                guard let rank = ranks[symbols[j] + " " + symbols[j + 1]] else { continue }
                if rank < bestRank {
                    bestRank = rank
                    best = j
                }
            }
            if best < 0 { break }
            symbols[best] = symbols[best] + symbols.remove(at: best + 1)
        }
        return symbols.map { vocab[$0]! } // every byte and merge result: checked at load
    }

    /// GPT-2's byte → printable character table: printable Latin-1 bytes map to themselves, the rest to 256+.
    static let BYTE_TO_UNICODE: [String] = {
        let keep = Set(Array(33...126) + Array(161...172) + Array(174...255))
        var next: UInt32 = 256
        return (0..<256).map { b in
            let cp: UInt32
            if keep.contains(b) { cp = UInt32(b) } else { cp = next; next += 1 }
            return String(Character(Unicode.Scalar(cp)!))
        }
    }()
    static let UNICODE_TO_BYTE: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for (b, s) in BYTE_TO_UNICODE.enumerated() { map[s.unicodeScalars.first!.value] = UInt8(b) }
        return map
    }()

    public static func load(_ file: URL) throws -> Tokenizer {
        guard let data = FileManager.default.contents(atPath: file.path) else {
            throw EdgeVLMError("tokenizer file not found", file: file)
        }
        guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw EdgeVLMError("not a valid tokenizer.json (not a JSON object)", file: file)
        }
        return try parse(root, file)
    }

    private static func parse(_ root: [String: Any], _ file: URL) throws -> Tokenizer {
        func refuse(_ what: String) -> EdgeVLMError {
            EdgeVLMError("\(what): only byte-level BPE tokenizers are implemented", file: file)
        }
        guard let model = root["model"] as? [String: Any] else { throw EdgeVLMError("not a valid tokenizer.json (no model)", file: file) }
        let type = model["type"] as? String ?? ""
        if type != "BPE" { throw refuse("model type '\(type)'") }
        if let normalizer = root["normalizer"], !(normalizer is NSNull) { throw refuse("a normalizer") }
        let pre = root["pre_tokenizer"] as? [String: Any]
        if pre == nil || pre!["type"] as? String != "ByteLevel" || (pre!["add_prefix_space"] as? Bool ?? false)
            || !(pre!["use_regex"] as? Bool ?? true) {
            throw refuse("pre_tokenizer \(root["pre_tokenizer"] ?? "null")")
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let v = model[key] as? String, !v.isEmpty { throw refuse("model.\(key)") }
        }
        if model["byte_fallback"] as? Bool ?? false { throw refuse("model.byte_fallback") }
        if let dropout = model["dropout"], !(dropout is NSNull) { throw refuse("model.dropout") }

        guard let vocabJson = model["vocab"] as? [String: Any], let merges = model["merges"] as? [Any] else {
            throw EdgeVLMError("not a valid tokenizer.json (no model.vocab or model.merges)", file: file)
        }
        let vocab = vocabJson.compactMapValues { ($0 as? NSNumber)?.intValue }
        var ranks: [String: Int] = [:]
        for (r, m) in merges.enumerated() {
            let pair = (m as? [String]).map { $0.joined(separator: " ") } ?? (m as? String ?? "")
            if ranks[pair] == nil { ranks[pair] = r }
        }
        if let missing = BYTE_TO_UNICODE.first(where: { vocab[$0] == nil }) { throw refuse("byte '\(missing)' missing from the vocabulary") }
        if let merge = ranks.keys.sorted().first(where: { vocab[$0.replacingOccurrences(of: " ", with: "")] == nil }) {
            throw refuse("merge '\(merge)' with no vocabulary entry")
        }
        var added: [[UInt32]: Int] = [:]
        var special = Set<Int>()
        for t in root["added_tokens"] as? [[String: Any]] ?? [] {
            let content = t["content"] as? String ?? ""
            if t["lstrip"] as? Bool ?? false || t["rstrip"] as? Bool ?? false || t["single_word"] as? Bool ?? false {
                throw refuse("added token '\(content)' with lstrip / rstrip / single_word")
            }
            let id = (t["id"] as? NSNumber)?.intValue ?? -1
            added[content.unicodeScalars.map(\.value)] = id
            if t["special"] as? Bool ?? false { special.insert(id) }
        }
        var tokens: [Int: String] = [:]
        for (s, id) in vocab { tokens[id] = s }
        for (s, id) in added { tokens[id] = scalarString(s) }
        return Tokenizer(vocab: vocab, ranks: ranks, added: added, specialIds: special, tokens: tokens,
                         ignoreMerges: model["ignore_merges"] as? Bool ?? false)
    }

    /// GPT-2's split (the regex above), in order of its alternatives, over code points.
    static func preTokenize(_ c: [UInt32]) -> [[UInt32]] {
        var words: [[UInt32]] = []
        var i = 0
        while i < c.count {
            let end = matchAt(c, i)
            words.append(Array(c[i..<end]))
            i = end
        }
        return words
    }

    static func preTokenize(_ text: String) -> [String] { preTokenize(text.unicodeScalars.map(\.value)).map(scalarString) }

    static let CONTRACTIONS: [[UInt32]] = ["s", "t", "re", "ve", "m", "ll", "d"].map { $0.unicodeScalars.map(\.value) }

    /// The end of the regex's match at `i` (leftmost-first alternation, as Oniguruma runs it).
    private static func matchAt(_ c: [UInt32], _ i: Int) -> Int {
        if c[i] == 0x27 { // '
            for s in CONTRACTIONS where i + s.count < c.count && (0..<s.count).allSatisfy({ c[i + 1 + $0] == s[$0] }) {
                return i + 1 + s.count
            }
        }
        let j = c[i] == 0x20 ? i + 1 : i // ` ?` before each of the three classes
        if j < c.count {
            for cls in CLASSES where cls(c[j]) { return run(c, j, cls) }
        }
        let k = run(c, i, isWhiteSpace) // `\s+(?!\S)`, else `\s+`
        return k < c.count && k - 1 > i ? k - 1 : k
    }

    static let CLASSES: [(UInt32) -> Bool] = [isLetter, isNumber, isOther]

    private static func run(_ c: [UInt32], _ from: Int, _ cls: (UInt32) -> Bool) -> Int {
        var k = from
        while k < c.count && cls(c[k]) { k += 1 }
        return k
    }

    static func isLetter(_ cp: UInt32) -> Bool {
        switch Unicode.Scalar(cp)?.properties.generalCategory {
        case .uppercaseLetter?, .lowercaseLetter?, .titlecaseLetter?, .modifierLetter?, .otherLetter?: return true
        default: return false
        }
    }

    static func isNumber(_ cp: UInt32) -> Bool {
        switch Unicode.Scalar(cp)?.properties.generalCategory {
        case .decimalNumber?, .letterNumber?, .otherNumber?: return true
        default: return false
        }
    }

    static func isOther(_ cp: UInt32) -> Bool { !isWhiteSpace(cp) && !isLetter(cp) && !isNumber(cp) }

    /// Unicode's White_Space property, what `\s` matches in the Unicode regex engines tokenizers uses.
    static func isWhiteSpace(_ cp: UInt32) -> Bool {
        (0x09...0x0D).contains(cp) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
            (0x2000...0x200A).contains(cp) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000
    }
}

/// A string from code points (each a valid scalar: they come from a Swift string).
func scalarString(_ c: [UInt32]) -> String {
    var view = String.UnicodeScalarView()
    view.append(contentsOf: c.compactMap(Unicode.Scalar.init))
    return String(view)
}
