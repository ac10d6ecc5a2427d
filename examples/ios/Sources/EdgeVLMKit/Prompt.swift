import Foundation

/// The prompt and the image splice, docs/bundle-spec.md section 6 (edgevlm/bundle/template.py, tokenizer.py):
/// the question becomes one user turn, the rendered prompt is split at `<image>` and each text piece is
/// tokenized on its own, with `IMAGE_TOKEN_INDEX` marking where the image embeddings go.
public let IMAGE_PLACEHOLDER = "<image>"

/// LLaVA's placeholder id: never a vocabulary id, never passed to a model.
public let IMAGE_TOKEN_INDEX = -200

/// The manifest's `prompt.template`.
public struct Template: Equatable {
    public let name: String
    public let system: String
    public let user: String
    public let assistant: String
    public let answerPrefix: String
    public let imageLast: Bool

    public init(name: String, system: String, user: String, assistant: String, answerPrefix: String, imageLast: Bool) {
        self.name = name
        self.system = system
        self.user = user
        self.assistant = assistant
        self.answerPrefix = answerPrefix
        self.imageLast = imageLast
    }

    /// One user turn whose text holds `<image>`, ending where the answer begins.
    public func prompt(_ question: String) -> String {
        let turn: String
        if imageLast {
            turn = question.replacingOccurrences(of: "\(IMAGE_PLACEHOLDER)\n", with: "", options: .literal)
                .replacingOccurrences(of: IMAGE_PLACEHOLDER, with: "", options: .literal).stripSpace() + "\n" + IMAGE_PLACEHOLDER
        } else if question.range(of: IMAGE_PLACEHOLDER, options: .literal) == nil {
            turn = "\(IMAGE_PLACEHOLDER)\n\(question)"
        } else {
            turn = question
        }
        return system + user + turn + assistant
    }
}

/// The manifest's `prompt` section.
public struct PromptSpec {
    public let template: Template
    public let imageTokens: Int
    public let bosId: Int
    public let eosId: Int
    public let padId: Int
    public let addBos: Bool

    /// BOS (when the bundle adds one), then the text pieces around `<image>`, `IMAGE_TOKEN_INDEX` between them.
    public func ids(_ tokenizer: Tokenizer, _ prompt: String) -> [Int] {
        var ids: [Int] = addBos ? [bosId] : []
        for (i, piece) in prompt.components(separatedBy: IMAGE_PLACEHOLDER).enumerated() {
            if i > 0 { ids.append(IMAGE_TOKEN_INDEX) }
            ids += tokenizer.encode(piece)
        }
        return ids
    }
}

/// Prompt ids → (ids before the image, ids after it); a prompt needs exactly one `IMAGE_TOKEN_INDEX`.
public func splitAtImage(_ ids: [Int]) throws -> ([Int], [Int]) {
    let n = ids.filter { $0 == IMAGE_TOKEN_INDEX }.count
    if n != 1 { throw EdgeVLMError("a prompt needs exactly one image placeholder \(IMAGE_PLACEHOLDER), got \(n)") }
    let at = ids.firstIndex(of: IMAGE_TOKEN_INDEX)!
    return (Array(ids[..<at]), Array(ids[(at + 1)...]))
}

extension String {
    /// Python's `str.strip()`, which the reference applies to questions (image_last) and to answers.
    public func stripSpace() -> String {
        let c = Array(unicodeScalars)
        var start = 0
        var end = c.count
        while start < end && isPythonSpace(c[start].value) { start += 1 }
        while end > start && isPythonSpace(c[end - 1].value) { end -= 1 }
        var kept = String.UnicodeScalarView()
        kept.append(contentsOf: c[start..<end])
        return String(kept)
    }
}

/// Python's `str.isspace()` for one character.
func isPythonSpace(_ c: UInt32) -> Bool {
    (0x09...0x0D).contains(c) || (0x1C...0x20).contains(c) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
        (0x2000...0x200A).contains(c) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000
}
