// Image preprocessing, bit-exact (docs/bundle-spec.md section 4): decode to 8-bit RGB, Pillow's 8-bit
// bicubic resize written out as its integer arithmetic, then float32 normalisation. No platform scaler
// gives these bytes, so every client carries this code; the goldens pin its output.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bundle.hpp"

namespace evr {

struct Rgb {
  int width = 0, height = 0;
  std::vector<uint8_t> data;  // height x width x 3, row-major
};

// A PNG / JPEG / BMP / ... file as 8-bit RGB (grey replicated, alpha dropped: Pillow's convert("RGB")).
Rgb load_image(const std::string& path);

// To size x size with Pillow's Image.resize(BICUBIC) on 8 bits: horizontal pass first, into 8 bits, then
// vertical; a pass whose size does not change is skipped (it would be the identity).
Rgb resized(const Rgb& image, int size);

// (S, S, 3) levels → pixel_values (3, S, S) float32: (float(level) * rescale - mean[c]) / std[c] in float32.
std::vector<float> normalize(const Rgb& levels, const Preprocess& pre);

}  // namespace evr
