import Foundation

/// Greedy generation over one engine (docs/bundle-spec.md section 6, step 5; edgevlm/runtimes/base.py's loop):
/// the kit builds the prompt, resizes the image and decides every token; a `Backend` only runs the model.
/// Backends: `CoreMLBackend` (the bundle's VisionEncoder / stateful TextDecoder); the native library's GGUF backend
/// through a C module map joins when the native library (issue 15) lands.
public protocol Backend: AnyObject {
    /// Starts a new prompt at position 0: the ids before the image, the image, the ids after it. Returns the
    /// logits of the last position. An engine that takes pixel values gets them from `ResizedImage.pixelValues()`,
    /// so normalisation stays the kit's.
    func prefill(before: [Int], image: ResizedImage, after: [Int]) throws -> [Float]

    /// Feeds `token` at `position` (the KV cache holds every position before it); the logits there.
    func decode(token: Int, position: Int) throws -> [Float]
}

/// An image resized to the bundle's size (HWC RGB levels) with the bundle's normalisation at hand.
public final class ResizedImage {
    public let levels: [UInt8]
    public let preprocess: Preprocess
    public var size: Int { preprocess.size }

    public init(levels: [UInt8], preprocess: Preprocess) {
        self.levels = levels
        self.preprocess = preprocess
    }

    /// CHW float32 pixel values.
    public func pixelValues() throws -> [Float] { try preprocess.normalize(levels) }
}

/// One answer: its token ids (EOS excluded), text, and timing as the app shows it.
public struct Answer {
    public let ids: [Int]
    public let text: String
    public let ttftMs: Double
    public let decodeMs: Double

    /// Decode speed over the tokens after the first, which prefill produced.
    public var tokensPerSecond: Double { ids.count > 1 && decodeMs > 0 ? Double(ids.count - 1) * 1000.0 / decodeMs : 0 }
}

public final class Generator {
    private let bundle: ModelBundle
    private let backend: Backend

    public init(bundle: ModelBundle, backend: Backend) {
        self.bundle = bundle
        self.backend = backend
    }

    /// Answers `question` about an RGB image (HWC levels, `width` x `height`), greedily. `onToken` gets each new
    /// id and the answer's text so far, for streaming. `stopAtEos = false` runs exactly `maxNewTokens` tokens
    /// (the goldens' greedy_ids are recorded that way).
    public func answer(
        _ question: String,
        rgb: [UInt8],
        width: Int,
        height: Int,
        maxNewTokens: Int = 32,
        stopAtEos: Bool = true,
        onToken: (Int, String) -> Void = { _, _ in }
    ) throws -> Answer {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let (before, after) = try splitAtImage(bundle.promptIds(question))
        let image = ResizedImage(levels: try bundle.preprocess.resized(rgb, width: width, height: height), preprocess: bundle.preprocess)
        let positions = before.count + bundle.prompt.imageTokens + after.count
        let limit = bundle.manifest.maxContext
        if positions >= limit {
            throw EdgeVLMError("prompt of \(positions) positions does not fit the bundle's context of \(limit)", file: bundle.dir)
        }
        var logits = try backend.prefill(before: before, image: image, after: after)
        let ttftMs = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
        let t1 = DispatchTime.now().uptimeNanoseconds
        var ids: [Int] = []
        var position = positions
        while ids.count < maxNewTokens && position < limit {
            let next = argmax(logits)
            if stopAtEos && next == bundle.prompt.eosId { break }
            ids.append(next)
            onToken(next, bundle.tokenizer.decode(ids).stripSpace())
            if ids.count == maxNewTokens { break }
            logits = try backend.decode(token: next, position: position)
            position += 1
        }
        return Answer(ids: ids, text: bundle.tokenizer.decode(ids).stripSpace(), ttftMs: ttftMs,
                      decodeMs: Double(DispatchTime.now().uptimeNanoseconds - t1) / 1e6)
    }
}

/// The index of the largest value, the lowest among equal maxima.
public func argmax(_ values: [Float]) -> Int {
    var best = 0
    for i in 1..<max(values.count, 1) where values[i] > values[best] { best = i }
    return best
}
