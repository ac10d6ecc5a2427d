package edgevlm.jni

import edgevlm.core.Backend
import edgevlm.core.EdgeVLMError
import edgevlm.core.ModelBundle
import edgevlm.core.ResizedImage

/**
 * The core's [Backend] over the native library (native/, its stepwise C API) through JNI: GGUF bundles run in
 * llama.cpp, ExecuTorch bundles where the library was built with ExecuTorch (the x86_64 host build). The core
 * builds the prompt ids, resizes the image and picks every token; this class only passes them to the engine.
 *
 * The glue is `libedgevlm_jni` (native/jni/edgevlm_jni.cpp). It is loaded once: from the path in the
 * `edgevlm.jni.library` system property when set (a JVM on Linux: tests/test_android_jni.py), else by name from
 * `java.library.path` (an app's jniLibs). Not thread-safe: one question at a time per backend.
 */
class NativeBackend(private val bundle: ModelBundle, threads: Int = 0) : Backend {
    private var handle: Long = native { open(bundle.dir.path, threads) }
    private val vocab: Int = native { nVocab(handle) }

    override fun prefill(before: IntArray, image: ResizedImage, after: IntArray): FloatArray =
        native { prefill(live(), before, image.levels, image.size, after) }.also { check(it.size == vocab) }

    override fun decode(token: Int, position: Int): FloatArray = native { decode(live(), token, position) }

    override fun close() {
        if (handle != 0L) free(handle)
        handle = 0L
    }

    private fun live(): Long = handle.takeIf { it != 0L } ?: throw EdgeVLMError("the native backend is closed", bundle.dir)

    /** The library's one-line failures (`path: problem`, thrown by the glue as IllegalStateException). */
    private inline fun <T> native(call: Companion.() -> T): T = try {
        Companion.call()
    } catch (e: IllegalStateException) {
        throw EdgeVLMError(e.message ?: "native runner failed")
    }

    companion object {
        init {
            val path = System.getProperty("edgevlm.jni.library")
            if (path != null) System.load(path) else System.loadLibrary("edgevlm_jni")
        }

        @JvmStatic private external fun open(bundleDir: String, threads: Int): Long
        @JvmStatic private external fun nVocab(handle: Long): Int
        @JvmStatic private external fun prefill(handle: Long, before: IntArray, levels: ByteArray, size: Int, after: IntArray): FloatArray
        @JvmStatic private external fun decode(handle: Long, token: Int, position: Int): FloatArray
        @JvmStatic private external fun free(handle: Long)
    }
}
