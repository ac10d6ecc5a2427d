package edgevlm.core

/**
 * Image preprocessing, bit-exact with docs/bundle-spec.md section 4: Pillow's 8-bit bicubic resize
 * (`libImaging/Resample.c`: separable passes, 22-bit fixed-point coefficients, horizontal first into an 8-bit
 * intermediate) and float32 normalisation. No platform scaler (Android's `createScaledBitmap`, Core Image) gives
 * these bytes, so the app shell decodes a photo to RGB at its own size and hands it here.
 *
 * Layouts: RGB levels are HWC bytes (`ByteArray`, read unsigned); pixel values are CHW float32, channels R, G, B.
 */
class Preprocess(val size: Int, val mean: DoubleArray, val std: DoubleArray, val rescale: Double) {

    /** `width` x `height` RGB levels → `size` x `size` RGB levels; an image already that size is returned as is. */
    fun resized(rgb: ByteArray, width: Int, height: Int): ByteArray {
        if (width < 1 || height < 1 || rgb.size != width * height * 3) {
            throw EdgeVLMError("an RGB image of $width x $height needs ${width * height * 3} bytes, got ${rgb.size}")
        }
        val horizontal = if (width == size) rgb else resizePass(rgb, width, height, horizontal = true)
        return if (height == size) horizontal else resizePass(horizontal, size, height, horizontal = false)
    }

    /** `size` x `size` RGB levels → pixel_values, CHW float32: `(float(level) * rescale - mean[c]) / std[c]`. */
    fun normalize(levels: ByteArray): FloatArray {
        val plane = size * size
        if (levels.size != plane * 3) throw EdgeVLMError("expected $size x $size RGB levels, got ${levels.size} bytes")
        val out = FloatArray(plane * 3)
        val scale = rescale.toFloat()
        for (c in 0 until 3) {
            val m = mean[c].toFloat()
            val s = std[c].toFloat()
            for (p in 0 until plane) {
                val x = (levels[p * 3 + c].toInt() and 0xFF).toFloat() * scale
                out[c * plane + p] = (x - m) / s
            }
        }
        return out
    }

    /** One pass along x (`horizontal`) or y of an HWC image, from its `width` or `height` to [size]. */
    private fun resizePass(src: ByteArray, width: Int, height: Int, horizontal: Boolean): ByteArray {
        val inSize = if (horizontal) width else height
        val outW = if (horizontal) size else width
        val outH = if (horizontal) height else size
        val taps = Taps(inSize, size)
        val out = ByteArray(outW * outH * 3)
        // step between neighbouring input samples along the pass, in bytes
        val stride = if (horizontal) 3 else width * 3
        for (y in 0 until outH) for (x in 0 until outW) {
            val i = if (horizontal) x else y
            val base = if (horizontal) y * width * 3 else x * 3 // the sample at index 0 along the pass
            val first = taps.start[i]
            val k = taps.weights[i]
            for (c in 0 until 3) {
                var acc = 1 shl (PRECISION_BITS - 1)
                for (j in k.indices) acc += (src[base + (first + j) * stride + c].toInt() and 0xFF) * k[j]
                out[(y * outW + x) * 3 + c] = (acc shr PRECISION_BITS).coerceIn(0, 255).toByte()
            }
        }
        return out
    }

    /** Pillow's bicubic taps for one pass: for output sample i, the first input index and fixed-point weights. */
    private class Taps(inSize: Int, outSize: Int) {
        val start = IntArray(outSize)
        val weights = Array(outSize) { IntArray(0) }

        init {
            val scale = inSize.toDouble() / outSize
            val filterscale = maxOf(scale, 1.0)
            val support = 2.0 * filterscale
            for (i in 0 until outSize) {
                val center = (i + 0.5) * scale
                val xmin = maxOf(0, (center - support + 0.5).toInt())
                val count = minOf(inSize, (center + support + 0.5).toInt()) - xmin
                val w = DoubleArray(count) { j -> cubic((j + xmin - center + 0.5) / filterscale) }
                val total = w.sum()
                if (total != 0.0) for (j in w.indices) w[j] /= total
                start[i] = xmin
                weights[i] = IntArray(count) { j ->
                    val v = w[j] * (1 shl PRECISION_BITS)
                    (if (w[j] >= 0) v + 0.5 else v - 0.5).toInt()
                }
            }
        }

        private fun cubic(t: Double): Double {
            val a = -0.5
            val x = Math.abs(t)
            return when {
                x < 1.0 -> ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                x < 2.0 -> (((x - 5.0) * x + 8.0) * x - 4.0) * a
                else -> 0.0
            }
        }
    }

    private companion object {
        const val PRECISION_BITS = 32 - 8 - 2
    }
}
