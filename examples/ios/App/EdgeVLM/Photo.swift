import CoreGraphics
import EdgeVLMKit
import Foundation
import ImageIO

/// A picked photo as 8-bit RGB levels at its own size. EdgeVLMKit resizes it (docs/bundle-spec.md section 4,
/// bit-exact with Pillow); a platform scaler would give other pixels than the model was trained on, so none is
/// used here (tests/test_examples.py fails on one). Alpha is dropped, not composited, as Pillow's
/// `convert("RGB")` does; EXIF orientation is not applied, as the spec says.
struct Photo {
    let rgb: [UInt8]
    let width: Int
    let height: Int
    let cgImage: CGImage // for display only

    init(data: Data) throws {
        guard let source = CGImageSourceCreateWithData(data as CFData, nil),
              let image = CGImageSourceCreateImageAtIndex(source, 0, nil) else {
            throw EdgeVLMError("cannot decode the picked image")
        }
        (rgb, width, height, cgImage) = (try Photo.levels(image), image.width, image.height, image)
    }

    /// The decoder's own 8-bit bytes when it gave 8-bit RGB(A); anything else (16-bit, grey, HEIC's formats) is
    /// redrawn into 8-bit RGBA at the same size, a format conversion, not a resize.
    private static func levels(_ image: CGImage) throws -> [UInt8] {
        let w = image.width
        let h = image.height
        var step = image.bitsPerPixel / 8
        var rowBytes = image.bytesPerRow
        var alphaFirst = [.first, .premultipliedFirst, .noneSkipFirst].contains(image.alphaInfo)
        var bytes: [UInt8]
        let plain = image.bitsPerComponent == 8 && (step == 3 || step == 4) && image.byteOrderInfo == .orderDefault
        if plain, let data = image.dataProvider?.data as Data? {
            bytes = [UInt8](data)
        } else {
            (step, rowBytes, alphaFirst) = (4, w * 4, false)
            bytes = [UInt8](repeating: 0, count: h * rowBytes)
            let drawn = bytes.withUnsafeMutableBytes { buffer -> Bool in
                guard let context = CGContext(data: buffer.baseAddress, width: w, height: h, bitsPerComponent: 8,
                                              bytesPerRow: rowBytes, space: CGColorSpace(name: CGColorSpace.sRGB)!,
                                              bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue) else { return false }
                context.draw(image, in: CGRect(x: 0, y: 0, width: w, height: h)) // same size: no scaling
                return true
            }
            if !drawn { throw EdgeVLMError("cannot convert the picked image to 8-bit RGB") }
        }
        var out = [UInt8](repeating: 0, count: w * h * 3)
        for y in 0..<h {
            for x in 0..<w {
                let at = y * rowBytes + x * step + (step == 4 && alphaFirst ? 1 : 0)
                for c in 0..<3 { out[(y * w + x) * 3 + c] = bytes[at + c] }
            }
        }
        return out
    }
}
