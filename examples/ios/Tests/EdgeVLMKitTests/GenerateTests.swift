import XCTest
@testable import EdgeVLMKit

/// The greedy loop's own rules (spec section 6, step 5), over a scripted `Backend` whose logits are chosen to hit
/// each rule: argmax ties, EOS, max_new_tokens, max_context. This tests the kit's loop, not an engine.
final class GenerateTests: XCTestCase {
    static let VOCAB = 448 // the golden tokenizer's size
    let bundle = try! ModelBundle.open(Goldens.dir.appendingPathComponent("bundles/gguf-q4_0"))
    let image = Goldens.rgb("images/upscale-37x23.png")

    /// Logits that make `script[step]` the argmax at each step (ties with a higher id included).
    final class Scripted: Backend {
        let script: [Int]
        var positions: [Int] = []
        var prefilled: ResizedImage?
        private var step = 0

        init(_ script: [Int]) { self.script = script }

        private func logits() -> [Float] {
            var l = [Float](repeating: 0, count: GenerateTests.VOCAB)
            let want = script[min(step, script.count - 1)]
            step += 1
            l[want] = 1
            if want + 1 < l.count { l[want + 1] = 1 } // a tie: the lower id wins
            return l
        }

        func prefill(before: [Int], image: ResizedImage, after: [Int]) throws -> [Float] {
            prefilled = image
            return logits()
        }

        func decode(token: Int, position: Int) throws -> [Float] {
            positions.append(position)
            return logits()
        }
    }

    private func answer(_ backend: Backend, _ maxNewTokens: Int, stopAtEos: Bool = true, question: String = "Describe the image.") throws -> Answer {
        try Generator(bundle: bundle, backend: backend).answer(question, rgb: image.bytes, width: image.width, height: image.height,
                                                               maxNewTokens: maxNewTokens, stopAtEos: stopAtEos)
    }

    func testStopsAtEosWithoutEmittingIt() throws {
        let backend = Scripted([311, 319, bundle.prompt.eosId, 28])
        let a = try answer(backend, 8)
        XCTAssertEqual(a.ids, [311, 319])
        XCTAssertEqual(a.text, bundle.tokenizer.decode([311, 319]).stripSpace())
        XCTAssertEqual(backend.positions, [155, 156])
        XCTAssertEqual(backend.prefilled?.size, bundle.preprocess.size)
    }

    func testRunsExactlyMaxNewTokensWhenEosDoesNotStop() throws {
        let backend = Scripted([311, bundle.prompt.eosId, 28])
        XCTAssertEqual(try answer(backend, 4, stopAtEos: false).ids, [311, bundle.prompt.eosId, 28, 28])
        XCTAssertEqual(backend.positions, [155, 156, 157]) // no decode after the last token
    }

    func testStopsAtTheContextLimit() throws {
        let room = bundle.manifest.maxContext - 155
        XCTAssertEqual(try answer(Scripted([28]), room + 10).ids.count, room)
    }

    func testRefusesAPromptLongerThanTheContext() {
        XCTAssertThrowsError(try answer(Scripted([28]), 4, question: String(repeating: "word ", count: 200))) { e in
            XCTAssertTrue("\(e)".contains("does not fit the bundle's context"), "\(e)")
        }
    }

    func testArgmaxTakesTheLowestOfEqualMaxima() {
        XCTAssertEqual(argmax([0, 3, 3, -1]), 1)
        XCTAssertEqual(argmax([2]), 0)
    }
}
