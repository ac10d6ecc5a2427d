package edgevlm.core

/**
 * Greedy generation over one engine (docs/bundle-spec.md section 6, step 5; edgevlm/runtimes/base.py's loop):
 * the core builds the prompt, resizes the image and decides every token; a [Backend] only runs the model.
 * Backends: the native library through JNI (GGUF via llama.cpp, ExecuTorch where built); any other engine
 * (an ExecuTorch AAR, ONNX Runtime Android) implements the same two calls.
 */
interface Backend : AutoCloseable {
    /**
     * Starts a new prompt at position 0: the ids before the image, the image, the ids after it. Returns the
     * logits of the last position. [image] holds the resized levels; an engine that takes pixel values gets them
     * from [ResizedImage.pixelValues], so normalisation stays the core's.
     */
    fun prefill(before: IntArray, image: ResizedImage, after: IntArray): FloatArray

    /** Feeds [token] at [position] (the KV cache holds every position before it); the logits there. */
    fun decode(token: Int, position: Int): FloatArray
}

/** An image resized to the bundle's size (HWC RGB levels) with the bundle's normalisation at hand. */
class ResizedImage(val levels: ByteArray, val preprocess: Preprocess) {
    val size: Int get() = preprocess.size

    /** CHW float32 pixel values, computed on first use. */
    val pixelValues: FloatArray by lazy { preprocess.normalize(levels) }
}

/** One answer: its token ids (EOS excluded), text, and timing as the app shows it. */
class Answer(val ids: IntArray, val text: String, val ttftMs: Double, val decodeMs: Double) {
    /** Decode speed over the tokens after the first, which prefill produced. */
    val tokensPerSecond: Double get() = if (ids.size > 1 && decodeMs > 0) (ids.size - 1) * 1000.0 / decodeMs else 0.0
}

class Generator(private val bundle: ModelBundle, private val backend: Backend) {

    /**
     * Answers [question] about an RGB image (HWC levels, `width` x `height`), greedily. [onToken] gets each new
     * id and the answer's text so far, for streaming. `stopAtEos = false` runs exactly [maxNewTokens] tokens
     * (the goldens' greedy_ids are recorded that way).
     */
    fun answer(
        question: String,
        rgb: ByteArray,
        width: Int,
        height: Int,
        maxNewTokens: Int = 32,
        stopAtEos: Boolean = true,
        onToken: (id: Int, textSoFar: String) -> Unit = { _, _ -> },
    ): Answer {
        val t0 = System.nanoTime()
        val (before, after) = splitAtImage(bundle.promptIds(question))
        val image = ResizedImage(bundle.preprocess.resized(rgb, width, height), bundle.preprocess)
        val positions = before.size + bundle.prompt.imageTokens + after.size
        val limit = bundle.manifest.maxContext
        if (positions >= limit) throw EdgeVLMError("prompt of $positions positions does not fit the bundle's context of $limit", bundle.dir)
        var logits = backend.prefill(before, image, after)
        val ttftMs = (System.nanoTime() - t0) / 1e6
        val t1 = System.nanoTime()
        val ids = ArrayList<Int>()
        var position = positions
        while (ids.size < maxNewTokens && position < limit) {
            val next = argmax(logits)
            if (stopAtEos && next == bundle.prompt.eosId) break
            ids.add(next)
            onToken(next, bundle.tokenizer.decode(ids.toIntArray()).stripSpace())
            if (ids.size == maxNewTokens) break
            logits = backend.decode(next, position++)
        }
        val out = ids.toIntArray()
        return Answer(out, bundle.tokenizer.decode(out).stripSpace(), ttftMs, (System.nanoTime() - t1) / 1e6)
    }
}

/** The index of the largest value, the lowest among equal maxima. */
fun argmax(values: FloatArray): Int {
    var best = 0
    for (i in 1 until values.size) if (values[i] > values[best]) best = i
    return best
}
