import CoreGraphics
import Foundation
import ImageIO
@testable import EdgeVLMKit

/// tests/goldens/ as the XCTests read it: vectors.json, the PNGs decoded to RGB (ImageIO's decoded bytes, no
/// drawing), and float32 arrays hashed as Python hashes them (little-endian bytes). The directory is
/// `EDGEVLM_GOLDENS`, or the repository's tests/goldens found from this file's path.
enum Goldens {
    static let dir: URL = ProcessInfo.processInfo.environment["EDGEVLM_GOLDENS"].map { URL(fileURLWithPath: $0) }
        ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("tests/goldens")
    static let vectors: [String: Any] = try! JSONSerialization.jsonObject(
        with: Data(contentsOf: dir.appendingPathComponent("vectors.json"))) as! [String: Any]

    static func cases(_ group: String) -> [[String: Any]] { vectors[group] as! [[String: Any]] }

    /// Tells a log reader how many cases of a vectors.json group a test checked (the JUnit suite prints the same).
    static func checked(_ group: String, _ n: Int) { print("golden \(group): \(n)") }

    static func ints(_ a: Any?) -> [Int] { (a as! [NSNumber]).map(\.intValue) }

    struct Rgb {
        let bytes: [UInt8]
        let width: Int
        let height: Int
    }

    static func rgb(_ file: String) -> Rgb {
        let url = dir.appendingPathComponent(file)
        let source = CGImageSourceCreateWithURL(url as CFURL, nil)!
        let image = CGImageSourceCreateImageAtIndex(source, 0, nil)!
        precondition(image.bitsPerComponent == 8 && (image.bitsPerPixel == 24 || image.bitsPerPixel == 32)
                     && image.byteOrderInfo == .orderDefault, "\(file): not 8-bit RGB(A) in byte order")
        let data = image.dataProvider!.data! as Data
        let step = image.bitsPerPixel / 8
        let alphaFirst = [.first, .premultipliedFirst, .noneSkipFirst].contains(image.alphaInfo)
        var out = [UInt8](repeating: 0, count: image.width * image.height * 3)
        for y in 0..<image.height {
            for x in 0..<image.width {
                let at = y * image.bytesPerRow + x * step + (step == 4 && alphaFirst ? 1 : 0)
                for c in 0..<3 { out[(y * image.width + x) * 3 + c] = data[at + c] }
            }
        }
        return Rgb(bytes: out, width: image.width, height: image.height)
    }

    static func floatBytes(_ values: [Float]) -> [UInt8] {
        values.flatMap { v -> [UInt8] in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
    }
}
