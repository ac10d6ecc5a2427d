package edgevlm.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Test
import java.io.File

/** Every case of tests/goldens/vectors.json a client can check without an engine (tests/goldens/README.md). */
class GoldenTests {
    private val tokenizer = Tokenizer.load(File(Goldens.dir, "tokenizer.json"))

    @Test
    fun testGoldenText() {
        val cases = Goldens.cases("text")
        for (case in cases) {
            val text = case.getString("text")
            assertArrayEquals("encode(${quote(text)})", Goldens.ints(case.getJSONArray("ids")), tokenizer.encode(text))
        }
        Goldens.checked("text", cases.size)
    }

    @Test
    fun testGoldenPrompts() {
        val bundle = ModelBundle.open(File(Goldens.dir, "bundles/gguf-q4_0"))
        val cases = Goldens.cases("prompts")
        for (case in cases) {
            val question = case.getString("question")
            assertEquals(case.getString("prompt"), bundle.prompt.template.prompt(question))
            val ids = bundle.promptIds(question)
            assertArrayEquals("prompt ids of ${quote(question)}", Goldens.ints(case.getJSONArray("ids")), ids)
            assertEquals(case.getInt("image_index"), ids.indexOf(IMAGE_TOKEN_INDEX))
        }
        Goldens.checked("prompts", cases.size)
    }

    @Test
    fun testGoldenImages() {
        val pre = ModelBundle.open(File(Goldens.dir, "bundles/gguf-q4_0"), checkFiles = false).preprocess
        val cases = Goldens.cases("images")
        for (case in cases) {
            val file = case.getString("file")
            val rgb = Goldens.rgb(file)
            assertEquals("$file decoded", case.getString("rgb_sha256"), sha256(rgb.bytes))
            val size = case.getInt("size")
            assertEquals(size, pre.size)
            val resized = pre.resized(rgb.bytes, rgb.width, rgb.height)
            val rs = case.getJSONArray("resized_samples")
            for (k in 0 until rs.length()) {
                val (y, x, c, v) = Goldens.ints(rs.getJSONArray(k)).toList()
                assertEquals("$file resized[$y, $x, $c]", v, resized[(y * size + x) * 3 + c].toInt() and 0xFF)
            }
            assertEquals("$file resized bytes", case.getString("resized_sha256"), sha256(resized))
            val pixels = pre.normalize(resized)
            val ps = case.getJSONArray("pixel_values_samples")
            for (k in 0 until ps.length()) {
                val s = ps.getJSONArray(k)
                val (c, y, x) = listOf(s.getInt(0), s.getInt(1), s.getInt(2))
                assertEquals("$file pixel_values[$c, $y, $x]", s.getDouble(3).toFloat(), pixels[(c * size + y) * size + x], 0f)
            }
            assertEquals("$file pixel_values", case.getString("pixel_values_sha256"), sha256(Goldens.floatBytes(pixels)))
        }
        Goldens.checked("images", cases.size)
    }

    /** Each golden bundle opens (manifest checks, every file's sha256), and its recorded run's prompt and text. */
    @Test
    fun testGoldenBundles() {
        val cases = Goldens.cases("bundles")
        val opened = HashMap<String, ModelBundle>()
        for (case in cases) {
            val dir = case.getString("dir")
            val bundle = opened.getOrPut(dir) { ModelBundle.open(File(Goldens.dir, dir)) }
            assertEquals("$dir format", case.getString("format"), bundle.manifest.format)
            val (before, after) = splitAtImage(bundle.promptIds(case.getString("question")))
            assertEquals("$dir prompt positions", case.getInt("prompt_positions"), before.size + bundle.prompt.imageTokens + after.size)
            assertEquals("$dir text of greedy ids", case.getString("text"), bundle.tokenizer.decode(Goldens.ints(case.getJSONArray("greedy_ids"))))
        }
        Goldens.checked("bundles", cases.size)
    }

    private fun quote(s: String) = org.json.JSONObject.quote(s)
}
