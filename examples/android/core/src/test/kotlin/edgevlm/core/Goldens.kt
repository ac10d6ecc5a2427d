package edgevlm.core

import org.json.JSONArray
import org.json.JSONObject
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import javax.imageio.ImageIO

/**
 * tests/goldens/ as the JUnit suite reads it: vectors.json, the PNGs decoded to RGB (javax.imageio, test-only:
 * the app decodes with BitmapFactory), and float32 arrays hashed as Python hashes them (little-endian bytes).
 * The directory comes from the `edgevlm.goldens` system property (tests/test_android_core.py and Gradle set it).
 */
object Goldens {
    val dir: File = File(System.getProperty("edgevlm.goldens") ?: error("set -Dedgevlm.goldens=<repo>/tests/goldens"))
    val vectors: JSONObject by lazy { JSONObject(File(dir, "vectors.json").readText()) }

    fun cases(group: String): List<JSONObject> = vectors.getJSONArray(group).let { a -> List(a.length()) { a.getJSONObject(it) } }

    /** Tells the pytest driver how many cases of a vectors.json group a test checked. */
    fun checked(group: String, n: Int) = println("golden $group: $n")

    fun ints(a: JSONArray): IntArray = IntArray(a.length()) { a.getInt(it) }

    class Rgb(val bytes: ByteArray, val width: Int, val height: Int)

    fun rgb(file: String): Rgb {
        val image = ImageIO.read(File(dir, file)) ?: error("cannot decode $file")
        val out = ByteArray(image.width * image.height * 3)
        for (y in 0 until image.height) for (x in 0 until image.width) {
            val p = image.getRGB(x, y)
            val at = (y * image.width + x) * 3
            out[at] = (p shr 16).toByte()
            out[at + 1] = (p shr 8).toByte()
            out[at + 2] = p.toByte()
        }
        return Rgb(out, image.width, image.height)
    }

    fun floatBytes(values: FloatArray): ByteArray =
        ByteBuffer.allocate(values.size * 4).order(ByteOrder.LITTLE_ENDIAN).apply { values.forEach { putFloat(it) } }.array()
}
