package edgevlm.app

import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import edgevlm.core.ModelBundle
import edgevlm.core.sha256
import org.json.JSONObject
import org.junit.Assert.assertEquals
import org.junit.Test
import org.junit.runner.RunWith
import java.io.File

/**
 * The app's own path on a phone or emulator, against tests/goldens pushed into the app's files dir
 * (`adb push tests/goldens /sdcard/Android/data/edgevlm.app/files/goldens`, .github/workflows/android.yml):
 * BitmapFactory's decode gives the PNG's RGB bytes, the core's resize gives the golden pixels on ART, and every
 * golden bundle opens with Android's own org.json and sha256.
 */
@RunWith(AndroidJUnit4::class)
class GoldenOnDeviceTest {
    private val goldens = File(InstrumentationRegistry.getInstrumentation().targetContext.getExternalFilesDir(null), "goldens")
    private val vectors = JSONObject(File(goldens, "vectors.json").readText())

    @Test
    fun testGoldenImagesThroughTheAppDecoder() {
        val pre = ModelBundle.open(File(goldens, "bundles/gguf-q4_0")).preprocess
        val images = vectors.getJSONArray("images")
        for (k in 0 until images.length()) {
            val case = images.getJSONObject(k)
            val photo = File(goldens, case.getString("file")).inputStream().use(::decodePhoto)
            assertEquals(case.getString("file"), case.getString("rgb_sha256"), sha256(photo.rgb))
            val resized = pre.resized(photo.rgb, photo.width, photo.height)
            assertEquals(case.getString("file"), case.getString("resized_sha256"), sha256(resized))
            assertEquals(case.getString("file"), case.getString("pixel_values_sha256"), sha256(floatBytes(pre.normalize(resized))))
        }
    }

    @Test
    fun testGoldenBundlesOpen() {
        val cases = vectors.getJSONArray("bundles")
        val dirs = List(cases.length()) { cases.getJSONObject(it).getString("dir") }.toSortedSet()
        for (dir in dirs) assertEquals(dir, dir.substringAfter('/').substringBefore('-'), ModelBundle.open(File(goldens, dir)).manifest.format)
    }

    private fun floatBytes(values: FloatArray): ByteArray =
        java.nio.ByteBuffer.allocate(values.size * 4).order(java.nio.ByteOrder.LITTLE_ENDIAN)
            .apply { values.forEach { putFloat(it) } }.array()
}
