package edgevlm.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import java.io.File
import java.nio.file.Files

/** What the golden vectors do not pin: decoding, the pre-tokenizer's whitespace rule, refusing other tokenizers. */
class TokenizerTests {
    private val tokenizer = Tokenizer.load(File(Goldens.dir, "tokenizer.json"))

    @Test
    fun testDecodeInvertsEncode() {
        for (case in Goldens.cases("text") + Goldens.cases("prompts")) {
            val text = case.optString("prompt", case.getString(if (case.has("text")) "text" else "question"))
            if ("<s>" in text || "<image>" in text) continue // special tokens decode to nothing; <image> is a marker
            assertEquals(text, tokenizer.decode(tokenizer.encode(text)))
        }
    }

    @Test
    fun testDecodeDropsSpecialTokensAndRepairsBytes() {
        val ids = tokenizer.encode("<s>red</s>")
        assertEquals(4, ids.size)
        assertEquals("red", tokenizer.decode(ids))
        val bytes = tokenizer.encode("é") // two byte-level tokens or one merged: cut the UTF-8 sequence in half
        val first = tokenizer.decode(intArrayOf(bytes[0]))
        assertTrue(first, bytes.size == 1 || first == "\uFFFD")
    }

    @Test
    fun testPreTokenizerWhitespace() {
        // `\s+(?!\S)` leaves the last space of a run to the word after it; a run at the end stays whole
        assertEquals(listOf("a", " ", " b", "  "), Tokenizer.preTokenize("a  b  "))
        assertEquals(listOf("it", "'s", " 12", "\t", "x", "!?"), Tokenizer.preTokenize("it's 12\tx!?"))
        assertEquals(listOf("中文", " 🙂", "\u00A0", "x"), Tokenizer.preTokenize("中文 🙂\u00A0x"))
    }

    @Test
    fun testRefusesOtherTokenizers() {
        val dir = Files.createTempDirectory("edgevlm-tok").toFile()
        try {
            val file = File(dir, "tokenizer.json")
            val json = org.json.JSONObject(File(Goldens.dir, "tokenizer.json").readText())
            json.getJSONObject("model").put("type", "WordPiece")
            file.writeText(json.toString())
            try {
                Tokenizer.load(file)
                fail("loaded a WordPiece tokenizer")
            } catch (e: EdgeVLMError) {
                assertEquals(file, e.file)
                assertTrue(e.message!!, "model type 'WordPiece'" in e.message!!)
            }
        } finally {
            dir.deleteRecursively()
        }
    }

    @Test
    fun testEncodeMatchesAddedTokensLongestFirst() {
        assertArrayEquals(intArrayOf(1), tokenizer.encode("</s>"))
        assertArrayEquals(intArrayOf(0, 1, 2), tokenizer.encode("<s></s><pad>"))
    }
}
