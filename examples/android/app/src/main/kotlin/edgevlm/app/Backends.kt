package edgevlm.app

import edgevlm.core.Backend
import edgevlm.core.EdgeVLMError
import edgevlm.core.ModelBundle
import edgevlm.jni.NativeBackend

/**
 * Engines by bundle format (`manifest.format`): the core builds prompts, resizes images and picks every token; a
 * [Backend] only runs the model. GGUF runs in llama.cpp through the native library over JNI ([NativeBackend],
 * `libedgevlm_jni.so` built from native/ with the NDK). ExecuTorch goes through the same class wherever the
 * native library is built with ExecuTorch, which is the x86_64 host build only: an arm64 ExecuTorch runtime is
 * not built by this project (native/README.md), so the phone build lists gguf alone. This app shell has not been
 * built (no Android SDK on the development machines); the JVM test tests/test_android_jni.py runs NativeBackend.
 */
object Backends {
    private val byFormat: Map<String, (ModelBundle) -> Backend> = mapOf(
        "gguf" to { bundle -> NativeBackend(bundle) },
    )

    fun open(bundle: ModelBundle): Backend {
        val make = byFormat[bundle.manifest.format] ?: throw EdgeVLMError(
            "no backend for ${bundle.manifest.format} bundles in this build " +
                "(built: ${byFormat.keys.sorted().joinToString(", ").ifEmpty { "none yet" }})",
            bundle.dir,
        )
        return make(bundle)
    }
}
