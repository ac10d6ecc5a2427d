import XCTest
@testable import EdgeVLMKit

/// The template rules the goldens' template (image first) does not reach, and the one-image rule.
final class PromptTests: XCTestCase {
    let qfirst = Template(name: "edgevlm-qfirst", system: "", user: "USER: ", assistant: " ASSISTANT:", answerPrefix: " ", imageLast: true)

    func testImageLastTemplate() {
        XCTAssertEqual(qfirst.prompt("Look at <image> and say"), "USER: Look at  and say\n<image> ASSISTANT:")
        XCTAssertEqual(qfirst.prompt("<image>\n Is it red?  "), "USER: Is it red?\n<image> ASSISTANT:")
        XCTAssertEqual(qfirst.prompt("Is it red?"), "USER: Is it red?\n<image> ASSISTANT:")
    }

    func testSplitNeedsExactlyOneImage() throws {
        let (before, after) = try splitAtImage([0, 5, IMAGE_TOKEN_INDEX, 6])
        XCTAssertEqual(before, [0, 5])
        XCTAssertEqual(after, [6])
        for ids in [[0, 5], [IMAGE_TOKEN_INDEX, 1, IMAGE_TOKEN_INDEX]] {
            XCTAssertThrowsError(try splitAtImage(ids)) { e in
                XCTAssertTrue("\(e)".contains("exactly one image placeholder"))
            }
        }
    }

    func testStripSpaceIsPythons() {
        XCTAssertEqual(" \t\u{00A0}\u{3000}a b\u{001F}\n".stripSpace(), "a b")
        XCTAssertEqual("  ".stripSpace(), "")
    }
}
