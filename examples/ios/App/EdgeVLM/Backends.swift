import EdgeVLMKit
import Foundation

/// Engines by bundle format (`manifest.format`): EdgeVLMKit builds prompts, resizes images and picks every token;
/// a `Backend` only runs the model. The native library's GGUF backend (a C module map over issue 15's C API)
/// registers here when that library lands.
enum Backends {
    static let byFormat: [String: (ModelBundle) throws -> Backend] = [
        "coreml": { try CoreMLBackend(bundle: $0) },
    ]

    static func open(_ bundle: ModelBundle) throws -> Backend {
        guard let make = byFormat[bundle.manifest.format] else {
            throw EdgeVLMError("no backend for \(bundle.manifest.format) bundles in this build " +
                               "(built: \(byFormat.keys.sorted().joined(separator: ", ")))", file: bundle.dir)
        }
        return try make(bundle)
    }
}
