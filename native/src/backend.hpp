// One engine behind the bundle contract (docs/bundle-spec.md section 7). The session (session.hpp) does what
// the spec defines once for every format (preprocessing, prompt, splice order, greedy loop, timing); a
// backend only runs the engine: tokenize text, encode an image, prefill around it, decode one token.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bundle.hpp"
#include "image.hpp"

namespace evr {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string engine() const = 0;   // e.g. "llama.cpp"
  virtual std::string version() const = 0;  // the engine build
  // section 5 encode(): no special tokens added around the text, special-token text matched as the token
  virtual std::vector<int32_t> tokenize(const std::string& text) = 0;
  // the raw bytes of these ids (specials give none); the session turns them into display text
  virtual std::string detokenize(const std::vector<int32_t>& ids) = 0;
  // the resized S x S image → image embeddings, kept for the next prefill
  virtual void encode_image(const Rgb& resized) = 0;
  virtual std::vector<float> image_embeds() const = 0;  // (N_img * D), for traces
  // a new prompt from position 0: `before`, the image embeddings, `after`; returns the next position
  virtual int prefill(const std::vector<int32_t>& before, const std::vector<int32_t>& after) = 0;
  virtual void decode(int32_t token, int pos) = 0;  // one token at `pos`
  virtual const float* logits() = 0;                // the last decoded position's, n_vocab() of them
  virtual int n_vocab() const = 0;
  // bytes of weights one decoded token reads, and where that number came from ("file" | "estimate")
  virtual uint64_t decode_weight_bytes(std::string* source) = 0;
};

using BackendFactory = std::function<std::unique_ptr<Backend>(const Bundle&, int threads)>;

// format name → factory; the formats this build can run (see backends.cpp)
const std::map<std::string, BackendFactory>& backends();
std::unique_ptr<Backend> make_backend(const Bundle& bundle, int threads);

std::unique_ptr<Backend> make_gguf_backend(const Bundle& bundle, int threads);
std::unique_ptr<Backend> make_executorch_backend(const Bundle& bundle, int threads);  // EVR_WITH_EXECUTORCH

}  // namespace evr
