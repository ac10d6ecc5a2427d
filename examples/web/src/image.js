// Image preprocessing exactly as the bundle's manifest `image` section says, and exactly as Python does it
// (edgevlm/data/images.py): RGB, Pillow's bicubic resize to size x size when the image is not already that
// size, then float32 x = v * rescale, (x - mean) / std per channel, CHW.
//
// The resize is a port of the algorithm in Pillow's libImaging/Resample.c, not the browser's canvas scaling
// (drawImage filters differ per browser and are not specified), so the resized pixels are Pillow's bit for
// bit: separable passes (horizontal into a uint8 intermediate that holds only the rows the vertical pass
// reads, then vertical), the bicubic kernel with a = -0.5 widened by the scale when downscaling, each output
// pixel's weights normalised to sum 1 and turned into 22-bit fixed point, then rounded and clipped to 0..255.
// Plain JS numbers are IEEE doubles like Pillow's C doubles, and every step here keeps Pillow's order of
// operations, so the coefficients are the same doubles and the integer sums the same integers.

const PRECISION_BITS = 32 - 8 - 2; // 8 bits of result, 2 for the kernel's negative lobes / overshoot
const BICUBIC_SUPPORT = 2.0;

function bicubic(x) {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/** Per output index: the first input index, the tap count and the fixed-point weights (Int32). */
function coefficients(inSize, outSize) {
  const scale = inSize / outSize; // box (0, inSize): in0 = 0
  const filterScale = Math.max(scale, 1); // widen the kernel when downscaling (antialiasing)
  const support = BICUBIC_SUPPORT * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(outSize), count = new Int32Array(outSize);
  const weights = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    const inv = 1 / filterScale;
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const n = Math.min(Math.trunc(center + support + 0.5), inSize) - lo;
    let sum = 0;
    for (let i = 0; i < n; i++) {
      w[i] = bicubic((i + lo - center + 0.5) * inv);
      sum += w[i];
    }
    for (let i = 0; i < n; i++) {
      const k = sum !== 0 ? w[i] / sum : w[i];
      // round half away from zero, as C's (int)(k * 2^22 +- 0.5)
      weights[o * ksize + i] = Math.trunc(k < 0 ? -0.5 + k * (1 << PRECISION_BITS) : 0.5 + k * (1 << PRECISION_BITS));
    }
    first[o] = lo;
    count[o] = n;
  }
  return { first, count, weights, ksize };
}

function clip8(acc) {
  const v = acc >> PRECISION_BITS; // arithmetic shift: floor, as in C on the int32 sum
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * Pillow's `Image.resize((outW, outH), BICUBIC)` of an RGB image.
 * @param {Uint8Array} rgb HWC, 3 channels, width * height * 3 bytes
 * @returns {Uint8Array} HWC RGB, outW * outH * 3 bytes
 */
export function resizeBicubic(rgb, width, height, outW, outH) {
  if (rgb.length !== width * height * 3) throw new Error(`expected ${width}x${height}x3 bytes, got ${rgb.length}`);
  const needH = outW !== width, needV = outH !== height;
  const vert = coefficients(height, outH);
  // rows of the input the vertical pass reads: only those go through the horizontal pass
  const rowFirst = vert.first[0];
  const rowEnd = vert.first[outH - 1] + vert.count[outH - 1];
  let src = rgb, srcW = width, srcRow0 = 0;
  if (needH) {
    const hor = coefficients(width, outW);
    const rows = rowEnd - rowFirst;
    const tmp = new Uint8Array(outW * rows * 3);
    const half = 1 << (PRECISION_BITS - 1);
    for (let y = 0; y < rows; y++) {
      const inRow = (y + rowFirst) * width * 3;
      for (let x = 0; x < outW; x++) {
        const lo = hor.first[x], n = hor.count[x], k0 = x * hor.ksize;
        let r = half, g = half, b = half;
        for (let i = 0; i < n; i++) {
          const k = hor.weights[k0 + i], p = inRow + (lo + i) * 3;
          r += rgb[p] * k;
          g += rgb[p + 1] * k;
          b += rgb[p + 2] * k;
        }
        const q = (y * outW + x) * 3;
        tmp[q] = clip8(r);
        tmp[q + 1] = clip8(g);
        tmp[q + 2] = clip8(b);
      }
    }
    src = tmp;
    srcW = outW;
    srcRow0 = rowFirst; // tmp's row 0 is input row rowFirst
  }
  if (!needV) return needH ? src : rgb.slice();
  const out = new Uint8Array(outW * outH * 3);
  const half = 1 << (PRECISION_BITS - 1);
  for (let y = 0; y < outH; y++) {
    const lo = vert.first[y] - srcRow0, n = vert.count[y], k0 = y * vert.ksize;
    for (let x = 0; x < srcW; x++) {
      let r = half, g = half, b = half;
      for (let i = 0; i < n; i++) {
        const k = vert.weights[k0 + i], p = ((lo + i) * srcW + x) * 3;
        r += src[p] * k;
        g += src[p + 1] * k;
        b += src[p + 2] * k;
      }
      const q = (y * outW + x) * 3;
      out[q] = clip8(r);
      out[q + 1] = clip8(g);
      out[q + 2] = clip8(b);
    }
  }
  return out;
}

/** RGBA (canvas ImageData) → RGB, dropping alpha as Pillow's convert("RGB") does. */
export function rgbaToRgb(rgba) {
  const n = rgba.length / 4, rgb = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    rgb[3 * i] = rgba[4 * i];
    rgb[3 * i + 1] = rgba[4 * i + 1];
    rgb[3 * i + 2] = rgba[4 * i + 2];
  }
  return rgb;
}

/**
 * An RGB image → { resized (HWC uint8), pixels (Float32Array CHW) } per the manifest's `image` section.
 * Float32 arithmetic as numpy / torch do it: every operation rounded to float32 (Math.fround of a double
 * operation on float32 operands is the correctly rounded float32 result).
 */
export function preprocess(rgb, width, height, spec) {
  const { size, mean, std, rescale } = spec;
  if (spec.resize !== "bicubic") throw new Error(`manifest image.resize is ${JSON.stringify(spec.resize)}; this page implements "bicubic"`);
  const resized = width === size && height === size ? rgb : resizeBicubic(rgb, width, height, size, size);
  const f = Math.fround, scale = f(rescale);
  const pixels = new Float32Array(3 * size * size);
  for (let c = 0; c < 3; c++) {
    const m = f(mean[c]), s = f(std[c]), plane = c * size * size;
    for (let i = 0; i < size * size; i++) {
      const x = f(resized[3 * i + c] * scale);
      pixels[plane + i] = f(f(x - m) / s);
    }
  }
  return { resized, pixels };
}
