package edgevlm.jni

import edgevlm.core.EdgeVLMError
import edgevlm.core.Generator
import edgevlm.core.Goldens
import edgevlm.core.ModelBundle
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import java.io.File

/**
 * The core's Generator over [NativeBackend] (JNI → libedgevlm_jni → the native library) on the golden bundles
 * the native library runs: exactly `new_tokens` greedy ids (EOS does not stop them, as vectors.json records
 * them), equal to Python's. Run by tests/test_android_jni.py in a plain JVM.
 */
class NativeBackendTests {
    private val formats = (System.getProperty("edgevlm.jni.formats") ?: "gguf").split(",").toSet()

    @Test
    fun testGoldenBundlesAnswerWithPythonsIds() {
        val cases = Goldens.cases("bundles").filter { it.getString("format") in formats }
        assertTrue("no golden bundles of $formats", cases.isNotEmpty())
        val newTokens = Goldens.vectors.getInt("new_tokens")
        for ((dir, group) in cases.groupBy { it.getString("dir") }) {
            val bundle = ModelBundle.open(File(Goldens.dir, dir))
            NativeBackend(bundle, threads = 2).use { backend ->
                val generator = Generator(bundle, backend)
                for (case in group) {
                    val image = Goldens.rgb(case.getString("image"))
                    val answer = generator.answer(case.getString("question"), image.bytes, image.width, image.height,
                                                  maxNewTokens = newTokens, stopAtEos = false)
                    val want = Goldens.ints(case.getJSONArray("greedy_ids"))
                    println("jni $dir ${case.getString("image")}: ${answer.ids.joinToString(",")} " +
                            "(python ${want.joinToString(",")}) ${"%.1f".format(answer.ttftMs)} ms to the first token")
                    assertArrayEquals("$dir ${case.getString("image")}", want, answer.ids)
                }
            }
        }
        println("golden jni bundles: ${cases.size}")
    }

    @Test
    fun testClosedBackendRefusesCalls() {
        val bundle = ModelBundle.open(File(Goldens.dir, "bundles/gguf-q4_0"))
        val backend = NativeBackend(bundle, threads = 1)
        backend.close()
        try {
            backend.decode(0, 0)
            fail("decode after close")
        } catch (e: EdgeVLMError) {
            assertTrue(e.message!!, "closed" in e.message!!)
        }
    }

    @Test
    fun testEngineErrorsBecomeEdgeVLMError() {
        val bundle = ModelBundle.open(File(Goldens.dir, "bundles/gguf-q4_0"))
        NativeBackend(bundle, threads = 1).use { backend ->
            try {
                backend.decode(-1, 0)
                fail("a token outside the vocabulary")
            } catch (e: EdgeVLMError) {
                assertTrue(e.message!!, "outside the vocabulary" in e.message!!)
                assertEquals(1, e.message!!.lines().size)
            }
        }
    }
}
