package edgevlm.app

import edgevlm.core.Backend
import edgevlm.core.ModelBundle
import edgevlm.core.EdgeVLMError

/**
 * Engines by bundle format (`manifest.format`): the core builds prompts, resizes images and picks every token; a
 * [Backend] only runs the model. The JNI backend over the native library (GGUF through llama.cpp, ExecuTorch
 * where built; issue 15's C API) registers here next; until then this build reads, checks and tokenizes bundles
 * but answers with none (examples/README.md says what ran where).
 */
object Backends {
    private val byFormat: Map<String, (ModelBundle) -> Backend> = emptyMap()

    fun open(bundle: ModelBundle): Backend {
        val make = byFormat[bundle.manifest.format] ?: throw EdgeVLMError(
            "no backend for ${bundle.manifest.format} bundles in this build " +
                "(built: ${byFormat.keys.sorted().joinToString(", ").ifEmpty { "none yet" }})",
            bundle.dir,
        )
        return make(bundle)
    }
}
