// What the bundle spec defines once for every engine (docs/bundle-spec.md sections 4-6): preprocessing, the
// prompt and its split at the image, greedy decoding with its stopping rules, answer text; and the timing
// split edgevlm bench reports (image encode, prefill, decode). A Backend runs the engine underneath.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend.hpp"
#include "bundle.hpp"
#include "image.hpp"

namespace evr {

constexpr int32_t kImageMarker = -200;  // IMAGE_TOKEN_INDEX: where the image goes, never a vocabulary id

struct Timing {
  double image_ms = 0;  // resize + vision encoder + projector (decoding the file is outside, as in Python)
  int prefill_tokens = 0;  // prompt positions, image tokens included
  double prefill_ms = 0;   // prompt ids + prefill up to the first token's logits
  int decode_tokens = 0;   // tokens generated after the first
  double decode_ms = 0;
  std::vector<int32_t> ids;  // the greedy tokens
};

struct Trace {
  int prompt_positions = 0;
  std::vector<float> image_embeds;  // (N_img * D)
  std::vector<std::pair<int32_t, float>> top5;  // after prefill
  std::vector<int32_t> ids;
};

class Session {
 public:
  Session(const std::string& bundle_dir, int threads);  // threads <= 0: every core

  const Bundle& bundle() const { return bundle_; }
  Backend& backend() { return *backend_; }
  int threads() const { return threads_; }

  // section 6.1-3: BOS, the pieces around <image> tokenized separately, kImageMarker between them
  std::vector<int32_t> prompt_ids(const std::string& question);
  // section 5 decode(): specials dropped, bytes as UTF-8 (invalid sequences → U+FFFD), whitespace stripped
  std::string text(const std::vector<int32_t>& ids);

  // greedy answer, stopping at EOS (not emitted), max_new_tokens or the context's end
  Timing generate(const Rgb& image, const std::string& question, int max_new_tokens);
  // exactly new_tokens greedy tokens (EOS does not stop them), timed per phase: what bench measures
  Timing profile(const Rgb& image, const std::string& question, int new_tokens);
  Trace trace(const Rgb& image, const std::string& question, int new_tokens);

 private:
  Timing run(const Rgb& image, const std::string& question, int new_tokens, bool stop_at_eos);
  int argmax();

  Bundle bundle_;
  int threads_;
  std::unique_ptr<Backend> backend_;
};

// Bytes → valid UTF-8, each maximal invalid subpart replaced by U+FFFD (what Python's and Rust's lossy
// decoders do), so that the JSON out is always valid.
std::string utf8_lossy(const std::string& bytes);

}  // namespace evr
