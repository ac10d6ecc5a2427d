package edgevlm.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import java.io.File

/**
 * The greedy loop's own rules (spec section 6, step 5), over a scripted [Backend] whose logits are chosen to hit
 * each rule: argmax ties, EOS, max_new_tokens, max_context. This tests the core's loop, not an engine; engines
 * are tested through their real backends (the JNI backend answers the golden GGUF bundles).
 */
class GenerateTests {
    private val bundle = ModelBundle.open(File(Goldens.dir, "bundles/gguf-q4_0"))
    private val image = Goldens.rgb("images/upscale-37x23.png")

    /** Logits that make `script[step]` the argmax at each step (ties with a higher id included). */
    private inner class Scripted(private val script: IntArray) : Backend {
        val positions = ArrayList<Int>()
        var prefilled: ResizedImage? = null
        private var step = 0

        private fun logits(): FloatArray = FloatArray(VOCAB).also {
            val want = script[minOf(step++, script.size - 1)]
            it[want] = 1f
            if (want + 1 < it.size) it[want + 1] = 1f // a tie: the lower id wins
        }

        override fun prefill(before: IntArray, image: ResizedImage, after: IntArray): FloatArray {
            prefilled = image
            return logits()
        }

        override fun decode(token: Int, position: Int): FloatArray {
            positions.add(position)
            return logits()
        }

        override fun close() {}
    }

    private fun answer(backend: Backend, maxNewTokens: Int, stopAtEos: Boolean = true, question: String = "Describe the image.") =
        Generator(bundle, backend).answer(question, image.bytes, image.width, image.height, maxNewTokens, stopAtEos)

    @Test
    fun testStopsAtEosWithoutEmittingIt() {
        val backend = Scripted(intArrayOf(311, 319, bundle.prompt.eosId, 28))
        val answer = answer(backend, 8)
        assertArrayEquals(intArrayOf(311, 319), answer.ids)
        assertEquals(bundle.tokenizer.decode(intArrayOf(311, 319)).stripSpace(), answer.text)
        assertEquals(listOf(155, 156), backend.positions)
        assertEquals(bundle.preprocess.size, backend.prefilled!!.size)
    }

    @Test
    fun testRunsExactlyMaxNewTokensWhenEosDoesNotStop() {
        val backend = Scripted(intArrayOf(311, bundle.prompt.eosId, 28))
        assertArrayEquals(intArrayOf(311, bundle.prompt.eosId, 28, 28), answer(backend, 4, stopAtEos = false).ids)
        assertEquals(listOf(155, 156, 157), backend.positions) // no decode after the last token
    }

    @Test
    fun testStopsAtTheContextLimit() {
        val room = bundle.manifest.maxContext - 155
        assertEquals(room, answer(Scripted(intArrayOf(28)), room + 10).ids.size)
    }

    @Test
    fun testRefusesAPromptLongerThanTheContext() {
        try {
            answer(Scripted(intArrayOf(28)), 4, question = "word ".repeat(200))
            fail("a prompt beyond max_context")
        } catch (e: EdgeVLMError) {
            assertTrue(e.message!!, "does not fit the bundle's context" in e.message!!)
        }
    }

    private companion object {
        const val VOCAB = 448 // the golden tokenizer's size
    }

    @Test
    fun testArgmaxTakesTheLowestOfEqualMaxima() {
        assertEquals(1, argmax(floatArrayOf(0f, 3f, 3f, -1f)))
        assertEquals(0, argmax(floatArrayOf(2f)))
    }
}
