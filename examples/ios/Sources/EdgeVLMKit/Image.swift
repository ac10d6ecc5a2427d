import Foundation

/// Image preprocessing, bit-exact with docs/bundle-spec.md section 4: Pillow's 8-bit bicubic resize
/// (`libImaging/Resample.c`: separable passes, 22-bit fixed-point coefficients, horizontal first into an 8-bit
/// intermediate) and float32 normalisation. No platform scaler (Core Image, UIGraphicsImageRenderer) gives these
/// bytes, so the app decodes a photo to RGB at its own size and hands it here.
///
/// Layouts: RGB levels are HWC bytes; pixel values are CHW float32, channels R, G, B.
public struct Preprocess {
    public let size: Int
    public let mean: [Double]
    public let std: [Double]
    public let rescale: Double

    static let PRECISION_BITS = 32 - 8 - 2

    /// `width` x `height` RGB levels → `size` x `size` RGB levels; an image already that size is returned as is.
    public func resized(_ rgb: [UInt8], width: Int, height: Int) throws -> [UInt8] {
        if width < 1 || height < 1 || rgb.count != width * height * 3 {
            throw EdgeVLMError("an RGB image of \(width) x \(height) needs \(width * height * 3) bytes, got \(rgb.count)")
        }
        let horizontal = width == size ? rgb : resizePass(rgb, width, height, horizontal: true)
        return height == size ? horizontal : resizePass(horizontal, size, height, horizontal: false)
    }

    /// `size` x `size` RGB levels → pixel_values, CHW float32: `(Float(level) * rescale - mean[c]) / std[c]`.
    public func normalize(_ levels: [UInt8]) throws -> [Float] {
        let plane = size * size
        if levels.count != plane * 3 { throw EdgeVLMError("expected \(size) x \(size) RGB levels, got \(levels.count) bytes") }
        var out = [Float](repeating: 0, count: plane * 3)
        let scale = Float(rescale)
        for c in 0..<3 {
            let m = Float(mean[c])
            let s = Float(std[c])
            for p in 0..<plane {
                let x = Float(levels[p * 3 + c]) * scale
                out[c * plane + p] = (x - m) / s
            }
        }
        return out
    }

    /// One pass along x (`horizontal`) or y of an HWC image, from its `width` or `height` to `size`.
    private func resizePass(_ src: [UInt8], _ width: Int, _ height: Int, horizontal: Bool) -> [UInt8] {
        let inSize = horizontal ? width : height
        let outW = horizontal ? size : width
        let outH = horizontal ? height : size
        let taps = Taps(inSize, size)
        var out = [UInt8](repeating: 0, count: outW * outH * 3)
        // step between neighbouring input samples along the pass, in bytes
        let stride = horizontal ? 3 : width * 3
        for y in 0..<outH {
            for x in 0..<outW {
                let i = horizontal ? x : y
                let base = horizontal ? y * width * 3 : x * 3 // the sample at index 0 along the pass
                let first = taps.start[i]
                let k = taps.weights[i]
                for c in 0..<3 {
                    var acc: Int32 = 1 << Int32(Preprocess.PRECISION_BITS - 1)
                    for j in 0..<k.count { acc = acc &+ Int32(src[base + (first + j) * stride + c]) &* k[j] }
                    out[(y * outW + x) * 3 + c] = UInt8(min(max(acc >> Int32(Preprocess.PRECISION_BITS), 0), 255))
                }
            }
        }
        return out
    }

    /// Pillow's bicubic taps for one pass: for output sample i, the first input index and fixed-point weights.
    private struct Taps {
        var start: [Int]
        var weights: [[Int32]]

        init(_ inSize: Int, _ outSize: Int) {
            start = [Int](repeating: 0, count: outSize)
            weights = [[Int32]](repeating: [], count: outSize)
            let scale = Double(inSize) / Double(outSize)
            let filterscale = max(scale, 1.0)
            let support = 2.0 * filterscale
            for i in 0..<outSize {
                let center = (Double(i) + 0.5) * scale
                let xmin = max(0, Int(center - support + 0.5))
                let count = min(inSize, Int(center + support + 0.5)) - xmin
                var w = (0..<count).map { j in Taps.cubic((Double(j + xmin) - center + 0.5) / filterscale) }
                let total = w.reduce(0.0, +)
                if total != 0.0 { w = w.map { $0 / total } }
                start[i] = xmin
                weights[i] = w.map { wj in
                    let v = wj * Double(1 << Preprocess.PRECISION_BITS)
                    return Int32(wj >= 0 ? v + 0.5 : v - 0.5)
                }
            }
        }

        static func cubic(_ t: Double) -> Double {
            let a = -0.5
            let x = abs(t)
            if x < 1.0 { return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0 }
            if x < 2.0 { return (((x - 5.0) * x + 8.0) * x - 4.0) * a }
            return 0.0
        }
    }
}
