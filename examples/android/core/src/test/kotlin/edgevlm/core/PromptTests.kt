package edgevlm.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.fail
import org.junit.Test

/** The template rules the goldens' template (image first) does not reach, and the one-image rule. */
class PromptTests {
    private val qfirst = Template("edgevlm-qfirst", "", "USER: ", " ASSISTANT:", " ", imageLast = true)

    @Test
    fun testImageLastTemplate() {
        assertEquals("USER: Look at  and say\n<image> ASSISTANT:", qfirst.prompt("Look at <image> and say"))
        assertEquals("USER: Is it red?\n<image> ASSISTANT:", qfirst.prompt("<image>\n Is it red?  "))
        assertEquals("USER: Is it red?\n<image> ASSISTANT:", qfirst.prompt("Is it red?"))
    }

    @Test
    fun testSplitNeedsExactlyOneImage() {
        val (before, after) = splitAtImage(intArrayOf(0, 5, IMAGE_TOKEN_INDEX, 6))
        assertArrayEquals(intArrayOf(0, 5), before)
        assertArrayEquals(intArrayOf(6), after)
        for (ids in listOf(intArrayOf(0, 5), intArrayOf(IMAGE_TOKEN_INDEX, 1, IMAGE_TOKEN_INDEX))) {
            try {
                splitAtImage(ids)
                fail("split ${ids.toList()}")
            } catch (e: EdgeVLMError) {
                assertEquals(true, "exactly one image placeholder" in e.message!!)
            }
        }
    }

    @Test
    fun testStripSpaceIsPythons() {
        assertEquals("a b", " \t\u00A0\u3000a b\u001F\n".stripSpace())
        assertEquals("", "  ".stripSpace())
    }
}
