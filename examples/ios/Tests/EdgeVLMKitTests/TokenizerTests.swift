import XCTest
@testable import EdgeVLMKit

/// What the golden vectors do not pin: decoding, the pre-tokenizer's whitespace rule, refusing other tokenizers.
final class TokenizerTests: XCTestCase {
    let tokenizer = try! Tokenizer.load(Goldens.dir.appendingPathComponent("tokenizer.json"))

    func testDecodeInvertsEncode() {
        for c in Goldens.cases("text") + Goldens.cases("prompts") {
            let text = (c["prompt"] ?? c["text"] ?? c["question"]) as! String
            if text.contains("<s>") || text.contains("<image>") { continue } // special tokens decode to nothing
            XCTAssertEqual(tokenizer.decode(tokenizer.encode(text)), text)
        }
    }

    func testDecodeDropsSpecialTokensAndRepairsBytes() {
        let ids = tokenizer.encode("<s>red</s>")
        XCTAssertEqual(ids.count, 4)
        XCTAssertEqual(tokenizer.decode(ids), "red")
        let bytes = tokenizer.encode("é") // two byte-level tokens or one merged: cut the UTF-8 sequence in half
        let first = tokenizer.decode([bytes[0]])
        XCTAssertTrue(bytes.count == 1 || first == "\u{FFFD}", first)
    }

    func testPreTokenizerWhitespace() {
        // `\s+(?!\S)` leaves the last space of a run to the word after it; a run at the end stays whole
        XCTAssertEqual(Tokenizer.preTokenize("a  b  "), ["a", " ", " b", "  "])
        XCTAssertEqual(Tokenizer.preTokenize("it's 12\tx!?"), ["it", "'s", " 12", "\t", "x", "!?"])
        XCTAssertEqual(Tokenizer.preTokenize("中文 🙂\u{00A0}x"), ["中文", " 🙂", "\u{00A0}", "x"])
    }

    func testRefusesOtherTokenizers() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("edgevlm-tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("tokenizer.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: Goldens.dir.appendingPathComponent("tokenizer.json"))) as! [String: Any]
        var model = json["model"] as! [String: Any]
        model["type"] = "WordPiece"
        json["model"] = model
        try JSONSerialization.data(withJSONObject: json).write(to: file)
        XCTAssertThrowsError(try Tokenizer.load(file)) { e in
            let e = e as! EdgeVLMError
            XCTAssertEqual(e.file, file)
            XCTAssertTrue(e.description.contains("model type 'WordPiece'"), e.description)
        }
    }

    func testEncodeMatchesAddedTokensLongestFirst() {
        XCTAssertEqual(tokenizer.encode("</s>"), [1])
        XCTAssertEqual(tokenizer.encode("<s></s><pad>"), [0, 1, 2])
    }
}
