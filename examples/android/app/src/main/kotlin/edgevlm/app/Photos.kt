package edgevlm.app

import android.graphics.Bitmap
import android.graphics.BitmapFactory
import edgevlm.core.EdgeVLMError
import java.io.InputStream

/**
 * A picked photo as 8-bit RGB levels at its own size. The core resizes it (docs/bundle-spec.md section 4, bit-exact
 * with Pillow); a platform scaler would give other pixels than the model was trained on, so none is used here
 * (tests/test_examples.py fails on one). Alpha is dropped, not composited, as Pillow's `convert("RGB")` does; EXIF
 * orientation is not applied, as the spec says.
 */
class Photo(val rgb: ByteArray, val width: Int, val height: Int)

fun decodePhoto(input: InputStream): Photo {
    val options = BitmapFactory.Options().apply {
        inScaled = false // no density scaling
        inPremultiplied = false // straight alpha: the colour levels stay as the file has them
        inPreferredConfig = Bitmap.Config.ARGB_8888
    }
    val bitmap = BitmapFactory.decodeStream(input, null, options) ?: throw EdgeVLMError("cannot decode the picked image")
    return rgbLevels(bitmap)
}

fun rgbLevels(bitmap: Bitmap): Photo {
    val w = bitmap.width
    val h = bitmap.height
    val argb = IntArray(w * h)
    bitmap.getPixels(argb, 0, w, 0, 0, w, h)
    val rgb = ByteArray(w * h * 3)
    for (i in argb.indices) {
        rgb[i * 3] = (argb[i] shr 16).toByte()
        rgb[i * 3 + 1] = (argb[i] shr 8).toByte()
        rgb[i * 3 + 2] = argb[i].toByte()
    }
    return Photo(rgb, w, h)
}
