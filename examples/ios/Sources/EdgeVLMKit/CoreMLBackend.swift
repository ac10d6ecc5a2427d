import CoreML
import Foundation

/// A Core ML bundle (docs/bundle-spec.md section 7, `coreml`): `VisionEncoder.mlpackage` and the multifunction
/// `TextDecoder.mlpackage` (`text_decoder` with the KV cache as Core ML state, `token_embedding`), iOS 18 /
/// macOS 15. The manifest's `runtime.functions` names each function's file, function name, inputs and outputs,
/// as edgevlm/runtimes/coreml.py reads them; one `MLState` per prompt (Apple's "Stateful Models" guide).
@available(iOS 18.0, macOS 15.0, *)
public final class CoreMLBackend: Backend {
    private struct Function {
        let model: MLModel
        let inputs: [String]
        let output: String
    }

    private let vision: Function
    private let embedding: Function
    private let decoder: Function
    private var state: MLState

    public init(bundle: ModelBundle, units: MLComputeUnits = .all) throws {
        let manifestFile = bundle.dir.appendingPathComponent(ModelBundle.MANIFEST)
        let runtime = Fields(bundle.manifest.runtime, "runtime", manifestFile)
        let functions = try runtime.object("functions")
        func load(_ name: String) throws -> Function {
            let spec = try functions.object(name)
            let file = try spec.path("file")
            let config = MLModelConfiguration()
            config.computeUnits = units
            config.functionName = try spec.string("function")
            let compiled = try MLModel.compileModel(at: bundle.dir.appendingPathComponent(file))
            let names = { (key: String) throws -> [String] in
                guard let list = spec.obj[key] as? [[String: Any]] else { throw spec.fail(key, "expected a list of tensors") }
                return list.compactMap { $0["name"] as? String }
            }
            return Function(model: try MLModel(contentsOf: compiled, configuration: config),
                            inputs: try names("inputs"), output: try names("outputs")[0])
        }
        vision = try load("vision_encoder")
        embedding = try load("token_embedding")
        decoder = try load("text_decoder")
        state = decoder.model.makeState()
    }

    public func prefill(before: [Int], image: ResizedImage, after: [Int]) throws -> [Float] {
        let s = image.size
        let pixels = MLShapedArray<Float>(scalars: try image.pixelValues(), shape: [1, 3, s, s])
        let imageEmbeds = try run(vision, [MLMultiArray(pixels)])
        var parts: [MLShapedArray<Float>] = []
        if !before.isEmpty { parts.append(try embed(before)) }
        parts.append(imageEmbeds)
        if !after.isEmpty { parts.append(try embed(after)) }
        let width = imageEmbeds.shape[2]
        let scalars = parts.flatMap(\.scalars)
        let length = scalars.count / width
        state = decoder.model.makeState() // a new prompt starts from an empty cache
        return try decode(MLShapedArray(scalars: scalars, shape: [1, length, width]), start: 0)
    }

    public func decode(token: Int, position: Int) throws -> [Float] {
        try decode(try embed([token]), start: position)
    }

    private func embed(_ ids: [Int]) throws -> MLShapedArray<Float> {
        try run(embedding, [MLMultiArray(MLShapedArray<Int32>(scalars: ids.map { Int32($0) }, shape: [1, ids.count]))])
    }

    /// Embeddings (1, T, D) at positions start..start+T-1 → the last position's logits. The causal mask
    /// (1, 1, T, start+T) tells the program where the call ends (edgevlm/engines/coreml.py).
    private func decode(_ embeds: MLShapedArray<Float>, start: Int) throws -> [Float] {
        let t = embeds.shape[1]
        let end = start + t
        var mask = [Float](repeating: 0, count: t * end)
        for row in 0..<t { for col in (start + row + 1)..<max(end, start + row + 1) { mask[row * end + col] = -.infinity } }
        let logits = try run(decoder, [MLMultiArray(embeds), MLMultiArray(MLShapedArray(scalars: mask, shape: [1, 1, t, end]))],
                             state: state)
        let vocab = logits.shape[2]
        return Array(logits.scalars[(t - 1) * vocab..<t * vocab])
    }

    private func run(_ f: Function, _ arrays: [MLMultiArray], state: MLState? = nil) throws -> MLShapedArray<Float> {
        var feed: [String: MLFeatureValue] = [:]
        for (name, array) in zip(f.inputs, arrays) { feed[name] = MLFeatureValue(multiArray: array) }
        let input = try MLDictionaryFeatureProvider(dictionary: feed)
        let out = try state.map { try f.model.prediction(from: input, using: $0) } ?? f.model.prediction(from: input)
        guard let array = out.featureValue(for: f.output)?.multiArrayValue else {
            throw EdgeVLMError("Core ML returned no '\(f.output)'")
        }
        return MLShapedArray<Float>(converting: array)
    }
}
