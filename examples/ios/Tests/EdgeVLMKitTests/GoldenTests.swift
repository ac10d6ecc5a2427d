import XCTest
@testable import EdgeVLMKit

/// Every case of tests/goldens/vectors.json a client can check without an engine (tests/goldens/README.md).
final class GoldenTests: XCTestCase {
    let tokenizer = try! Tokenizer.load(Goldens.dir.appendingPathComponent("tokenizer.json"))

    func testGoldenText() throws {
        let cases = Goldens.cases("text")
        for c in cases {
            let text = c["text"] as! String
            XCTAssertEqual(tokenizer.encode(text), Goldens.ints(c["ids"]), "encode(\(text.debugDescription))")
        }
        Goldens.checked("text", cases.count)
    }

    func testGoldenPrompts() throws {
        let bundle = try ModelBundle.open(Goldens.dir.appendingPathComponent("bundles/gguf-q4_0"))
        let cases = Goldens.cases("prompts")
        for c in cases {
            let question = c["question"] as! String
            XCTAssertEqual(bundle.prompt.template.prompt(question), c["prompt"] as! String)
            let ids = bundle.promptIds(question)
            XCTAssertEqual(ids, Goldens.ints(c["ids"]), "prompt ids of \(question.debugDescription)")
            XCTAssertEqual(ids.firstIndex(of: IMAGE_TOKEN_INDEX), (c["image_index"] as! NSNumber).intValue)
        }
        Goldens.checked("prompts", cases.count)
    }

    func testGoldenImages() throws {
        let pre = try ModelBundle.open(Goldens.dir.appendingPathComponent("bundles/gguf-q4_0"), checkFiles: false).preprocess
        let cases = Goldens.cases("images")
        for c in cases {
            let file = c["file"] as! String
            let rgb = Goldens.rgb(file)
            XCTAssertEqual(sha256(rgb.bytes), c["rgb_sha256"] as! String, "\(file) decoded")
            let size = (c["size"] as! NSNumber).intValue
            XCTAssertEqual(pre.size, size)
            let resized = try pre.resized(rgb.bytes, width: rgb.width, height: rgb.height)
            for s in c["resized_samples"] as! [[NSNumber]] {
                let (y, x, ch, v) = (s[0].intValue, s[1].intValue, s[2].intValue, s[3].intValue)
                XCTAssertEqual(Int(resized[(y * size + x) * 3 + ch]), v, "\(file) resized[\(y), \(x), \(ch)]")
            }
            XCTAssertEqual(sha256(resized), c["resized_sha256"] as! String, "\(file) resized bytes")
            let pixels = try pre.normalize(resized)
            for s in c["pixel_values_samples"] as! [[NSNumber]] {
                let (ch, y, x) = (s[0].intValue, s[1].intValue, s[2].intValue)
                XCTAssertEqual(pixels[(ch * size + y) * size + x], Float(s[3].doubleValue), "\(file) pixel_values[\(ch), \(y), \(x)]")
            }
            XCTAssertEqual(sha256(Goldens.floatBytes(pixels)), c["pixel_values_sha256"] as! String, "\(file) pixel_values")
        }
        Goldens.checked("images", cases.count)
    }

    /// Each golden bundle opens (manifest checks, every file's sha256), and its recorded run's prompt and text.
    func testGoldenBundles() throws {
        let cases = Goldens.cases("bundles")
        var opened: [String: ModelBundle] = [:]
        for c in cases {
            let dir = c["dir"] as! String
            let bundle = try opened[dir] ?? ModelBundle.open(Goldens.dir.appendingPathComponent(dir))
            opened[dir] = bundle
            XCTAssertEqual(bundle.manifest.format, c["format"] as! String, "\(dir) format")
            let (before, after) = try splitAtImage(bundle.promptIds(c["question"] as! String))
            XCTAssertEqual(before.count + bundle.prompt.imageTokens + after.count, (c["prompt_positions"] as! NSNumber).intValue,
                           "\(dir) prompt positions")
            XCTAssertEqual(bundle.tokenizer.decode(Goldens.ints(c["greedy_ids"])), c["text"] as! String, "\(dir) text of greedy ids")
        }
        Goldens.checked("bundles", cases.count)
    }
}
