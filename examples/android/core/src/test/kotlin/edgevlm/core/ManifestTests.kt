package edgevlm.core

import org.json.JSONArray
import org.json.JSONObject
import org.junit.After
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import java.io.File
import java.nio.file.Files

/** Bad bundles: each is refused with one line naming the file and the problem (docs/bundle-spec.md section 2). */
class ManifestTests {
    private val dir: File = Files.createTempDirectory("edgevlm-bundle").toFile().also { tmp ->
        File(Goldens.dir, "bundles/gguf-q4_0").listFiles()!!.forEach { it.copyTo(File(tmp, it.name)) }
    }
    private val manifestFile = File(dir, ModelBundle.MANIFEST)

    @After
    fun cleanUp() {
        dir.deleteRecursively()
    }

    private fun edit(change: JSONObject.() -> Unit) {
        manifestFile.writeText(JSONObject(manifestFile.readText()).apply(change).toString(2))
    }

    private fun refused(file: File, vararg words: String) {
        try {
            ModelBundle.open(dir)
            fail("opened a bad bundle; expected: ${words.joinToString(" ")}")
        } catch (e: EdgeVLMError) {
            val line = e.message!!
            assertFalse("one line: $line", '\n' in line)
            assertEquals(line, file, e.file)
            words.forEach { assertTrue("'$it' in: $line", it in line) }
        }
    }

    @Test
    fun testGoodBundleOpens() {
        assertEquals("gguf", ModelBundle.open(dir).manifest.format)
    }

    @Test
    fun testLegacyManifestWithoutVersionOpens() {
        edit { remove("spec_version") }
        assertEquals("0", ModelBundle.open(dir).manifest.specVersion)
    }

    @Test
    fun testUnknownMajorVersion() {
        edit { put("spec_version", "2.0") }
        refused(manifestFile, "spec_version '2.0' is not one this edgevlm reads (0, 1.x)")
    }

    @Test
    fun testNotJson() {
        manifestFile.writeText("{\"format\": ")
        refused(manifestFile, "not valid JSON")
        manifestFile.writeText("[1, 2]")
        refused(manifestFile, "not a manifest")
    }

    @Test
    fun testPathsOutsideTheBundle() {
        val entry = JSONObject().put("sha256", "0".repeat(64)).put("bytes", 1)
        for (name in listOf("../x", "/etc/passwd", "a\\b", "./tokenizer.json", "a//b", "C:/x", "")) {
            edit { getJSONObject("files").put(name, entry) }
            refused(manifestFile, "file name", if (name.isEmpty()) "''" else name)
            edit { getJSONObject("files").remove(name) }
        }
    }

    @Test
    fun testSymlinkOutOfTheBundle() {
        val outside = File.createTempFile("edgevlm-outside", ".bin").apply { writeText("x"); deleteOnExit() }
        Files.createSymbolicLink(File(dir, "link.bin").toPath(), outside.toPath())
        edit { getJSONObject("files").put("link.bin", JSONObject().put("sha256", sha256(outside)).put("bytes", 1)) }
        refused(manifestFile, "link.bin", "outside the bundle")
    }

    private fun case(words: String, change: JSONObject.() -> Unit) = change to words

    @Test
    fun testSchemaViolations() {
        val cases = listOf(
            case("image.size: required") { getJSONObject("image").remove("size") },
            case("max_context: expected an integer") { put("max_context", "256") },
            case("image.size: expected an integer") { getJSONObject("image").put("size", 2.5) },
            case("image.mean: expected 3 numbers") { getJSONObject("image").put("mean", JSONArray(listOf(0.5, 0.5))) },
            case("image.std: must be > 0") { getJSONObject("image").put("std", JSONArray(listOf(0.5, 0, 0.5))) },
            case("image.resize") { getJSONObject("image").put("resize", "bilinear") },
            case("colour: unknown key") { put("colour", "red") },
            case("prompt.template.extra: unknown key") { getJSONObject("prompt").getJSONObject("template").put("extra", "") },
            case("prompt.add_bos: expected true or false") { getJSONObject("prompt").put("add_bos", "yes") },
            case("prompt.image_placeholder") { getJSONObject("prompt").put("image_placeholder", "<img>") },
            case("format: 'tflite' is not one of") { put("format", "tflite") },
            case("runtime.mmproj: required") { getJSONObject("runtime").remove("mmproj") },
            case("tokenizer.json: not listed") { getJSONObject("files").remove("tokenizer.json") },
            case("files.tokenizer.json.sha256") { getJSONObject("files").getJSONObject("tokenizer.json").put("sha256", "ABC") },
        )
        val good = manifestFile.readText()
        for ((change, words) in cases) {
            edit(change)
            refused(manifestFile, words)
            manifestFile.writeText(good)
        }
    }

    @Test
    fun testFilesCheckedAgainstTheManifest() {
        val tokenizer = File(dir, ModelBundle.TOKENIZER)
        val good = tokenizer.readBytes()
        tokenizer.appendText(" ")
        refused(tokenizer, "truncated or replaced")
        tokenizer.writeBytes(good.copyOf().also { it[10] = (it[10] + 1).toByte() })
        refused(tokenizer, "the file was modified")
        tokenizer.delete()
        refused(tokenizer, "missing")
    }

    @Test
    fun testOnlyListedFilesOpen() {
        val bundle = ModelBundle.open(dir)
        assertEquals(File(dir, "model-q4_0.gguf"), bundle.file("model-q4_0.gguf"))
        try {
            bundle.file("other.gguf")
            fail("a file the manifest does not list")
        } catch (e: EdgeVLMError) {
            assertTrue(e.message!!, "lists no file 'other.gguf'" in e.message!!)
        }
    }
}
