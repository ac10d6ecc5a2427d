// Section 4 of docs/bundle-spec.md; the resize follows Pillow's libImaging/Resample.c (precompute_coeffs,
// normalize_coeffs_8bpc, ImagingResample{Horizontal,Vertical}_8bpc) operation for operation.
#include "image.hpp"

#include <algorithm>
#include <cmath>

#include "error.hpp"

#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC  // llama.cpp's mtmd carries its own copy; keep ours private
#define STBI_NO_STDIO_WARNINGS
#include <stb_image.h>

namespace evr {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic(double x) {
  const double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Fixed-point taps of one pass from `in` to `out` samples: per output sample, (first input, count, weights).
struct Taps {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> k;  // out x ksize
};

Taps taps(int in, int out) {
  Taps t;
  double scale = double(in) / out, filterscale = std::max(scale, 1.0), support = 2.0 * filterscale;
  t.ksize = int(std::ceil(support)) * 2 + 1;
  t.first.resize(out);
  t.count.resize(out);
  t.k.assign(size_t(out) * t.ksize, 0);
  std::vector<double> w(t.ksize);
  for (int i = 0; i < out; ++i) {
    double center = (i + 0.5) * scale, total = 0.0, ss = 1.0 / filterscale;
    int xmin = std::max(0, int(center - support + 0.5));
    int n = std::min(in, int(center + support + 0.5)) - xmin;
    for (int j = 0; j < n; ++j) total += (w[j] = bicubic((j + xmin - center + 0.5) * ss));
    for (int j = 0; j < n; ++j) {
      double v = total != 0.0 ? w[j] / total : w[j];
      const double fixed = v * (1 << kPrecisionBits);
      t.k[size_t(i) * t.ksize + j] = v < 0 ? int(-0.5 + fixed) : int(0.5 + fixed);
    }
    t.first[i] = xmin;
    t.count[i] = n;
  }
  return t;
}

uint8_t clip8(int64_t acc) {
  int64_t v = acc >> kPrecisionBits;
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// One pass along x (stride 3 between samples) or y (stride width * 3), into 8 bits.
Rgb pass(const Rgb& in, int out_w, int out_h, bool horizontal) {
  Rgb o{out_w, out_h, std::vector<uint8_t>(size_t(out_w) * out_h * 3)};
  Taps t = horizontal ? taps(in.width, out_w) : taps(in.height, out_h);
  const size_t step = horizontal ? 3 : size_t(in.width) * 3;
  for (int y = 0; y < out_h; ++y) {
    for (int x = 0; x < out_w; ++x) {
      int i = horizontal ? x : y;
      const int32_t* k = &t.k[size_t(i) * t.ksize];
      const uint8_t* src = horizontal ? &in.data[(size_t(y) * in.width + t.first[i]) * 3]
                                      : &in.data[(size_t(t.first[i]) * in.width + x) * 3];
      for (int c = 0; c < 3; ++c) {
        int64_t acc = 1 << (kPrecisionBits - 1);
        for (int j = 0; j < t.count[i]; ++j) acc += int64_t(src[j * step + c]) * k[j];
        o.data[(size_t(y) * out_w + x) * 3 + c] = clip8(acc);
      }
    }
  }
  return o;
}

}  // namespace

Rgb load_image(const std::string& path) {
  int w = 0, h = 0, channels = 0;
  stbi_uc* pixels = stbi_load(path.c_str(), &w, &h, &channels, 3);
  if (!pixels) throw Error(std::string("cannot read image (") + stbi_failure_reason() + ")", path);
  Rgb out{w, h, std::vector<uint8_t>(pixels, pixels + size_t(w) * h * 3)};
  stbi_image_free(pixels);
  return out;
}

Rgb resized(const Rgb& image, int size) {
  if (image.width <= 0 || image.height <= 0 || image.data.size() != size_t(image.width) * image.height * 3)
    throw Error("image buffer is not width x height x 3 bytes");
  Rgb out = image;
  if (out.width != size) out = pass(out, size, out.height, true);
  if (out.height != size) out = pass(out, size, size, false);
  return out;
}

std::vector<float> normalize(const Rgb& levels, const Preprocess& pre) {
  const size_t plane = size_t(levels.width) * levels.height;
  std::vector<float> out(plane * 3);
  for (size_t p = 0; p < plane; ++p)
    for (int c = 0; c < 3; ++c) {
      float x = float(levels.data[p * 3 + c]) * pre.rescale;
      out[c * plane + p] = (x - pre.mean[c]) / pre.std[c];
    }
  return out;
}

}  // namespace evr
