// The ExecuTorch backend: the bundle's model.pte through ExecuTorch's C++ Module (the wheel's libexecutorch,
// optimized and quantized kernels, XNNPACK delegate) with the three methods of the contract
// (docs/bundle-spec.md section 7): vision_encoder takes the resized image as uint8 (1, 3, S, S) and normalises
// inside; token_embedding and text_decoder(embeds, input_pos) with the KV cache in the program's buffers.
// Prompt ids come from tokenizer.json (bpe_tokenizer), as the Python runtime's come from tokenizers.
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/platform/platform.h>

#include <mutex>

// ExecuTorch's thread pool (libexecutorch_threadpool, which XNNPACK and the LLM ops run on). The wheel ships the
// library but not its header (extension/threadpool/threadpool.h), so the two calls used are declared here as
// that header declares them; Python's `_unsafe_reset_threadpool` is the same call.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

#include "backend.hpp"
#include "bpe_tokenizer.hpp"
#include "error.hpp"

#ifndef EVR_EXECUTORCH_VERSION
#define EVR_EXECUTORCH_VERSION "unknown"
#endif

namespace evr {
namespace {

std::mutex g_log_mu;
std::string g_last_error;  // ExecuTorch's last error line, for the one-line message

std::string last_error() {
  std::lock_guard<std::mutex> lock(g_log_mu);
  return g_last_error.empty() ? "no reason given" : g_last_error;
}

}  // namespace
}  // namespace evr

// ExecuTorch's log sink (a weak symbol of its platform layer): kept, never printed, as llama.cpp's log is,
// so that its CPU-probing lines stay off stderr and an error message can carry the reason.
extern "C" void et_pal_emit_log_message(et_timestamp_t, et_pal_log_level_t level, const char*, const char*, size_t,
                                        const char* message, size_t length) {
  if (level != kError && level != kFatal) return;
  std::lock_guard<std::mutex> lock(evr::g_log_mu);
  evr::g_last_error.assign(message, length);
}

namespace evr {

void register_llama_ops();  // et_llama_ops.cpp

namespace {

using executorch::aten::ScalarType;
using executorch::extension::from_blob;
using executorch::extension::Module;
using executorch::runtime::EValue;


// the requested threads (0: the pool's default, which ExecuTorch sizes from the CPU's performance cores)
void set_threads(int threads) {
  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (threads > 0 && pool != nullptr) pool->_unsafe_reset_threadpool(uint32_t(threads));
}

class EtBackend : public Backend {
 public:
  EtBackend(const Bundle& bundle, int threads)
      : bundle_(bundle), pte_(bundle.file("model.pte")), tokenizer_(bundle.file("tokenizer.json")),
        module_((register_llama_ops(), set_threads(threads), pte_), Module::LoadMode::Mmap) {
    for (const char* m : {"vision_encoder", "token_embedding", "text_decoder"})
      if (module_.load_method(m) != executorch::runtime::Error::Ok)
        throw Error(std::string("ExecuTorch cannot load the method ") + m + " (" + last_error() + ")", pte_);
    // the vocabulary before any step (the stepwise C API sizes its logits buffer by it): the decoder's
    // output, (1, V), in the program's method metadata
    auto meta = module_.method_meta("text_decoder");
    if (meta.ok() && meta->num_outputs() > 0) {
      auto out = meta->output_tensor_meta(0);
      if (out.ok() && !out->sizes().empty()) vocab_ = int(out->sizes()[out->sizes().size() - 1]);
    }
  }

  std::string engine() const override { return "executorch"; }
  std::string version() const override { return EVR_EXECUTORCH_VERSION; }
  int n_vocab() const override { return logits_.empty() ? vocab_ : int(logits_.size()); }
  std::vector<int32_t> tokenize(const std::string& text) override { return tokenizer_.encode(text); }
  std::string detokenize(const std::vector<int32_t>& ids) override { return tokenizer_.decode_bytes(ids); }
  std::vector<float> image_embeds() const override { return embd_; }
  const float* logits() override { return logits_.data(); }

  void encode_image(const Rgb& image) override {
    const int S = image.width;
    std::vector<uint8_t> chw(size_t(3) * S * S);
    for (size_t p = 0; p < size_t(S) * S; ++p)
      for (int c = 0; c < 3; ++c) chw[c * size_t(S) * S + p] = image.data[p * 3 + c];
    embd_ = run("vision_encoder", {from_blob(chw.data(), {1, 3, S, S}, ScalarType::Byte)});
  }

  int prefill(const std::vector<int32_t>& before, const std::vector<int32_t>& after) override {
    std::vector<float> embeds = embed(before);
    embeds.insert(embeds.end(), embd_.begin(), embd_.end());
    std::vector<float> tail = embed(after);
    embeds.insert(embeds.end(), tail.begin(), tail.end());
    decode_embeds(embeds, 0);
    return int(before.size() + after.size()) + bundle_.image_tokens;
  }

  void decode(int32_t token, int pos) override {
    std::vector<float> e = embed({token});
    decode_embeds(e, pos);
  }

  uint64_t decode_weight_bytes(std::string* source) override {
    // a .pte's weights are not readable per method from here: the manifest's count at the scheme's bits
    const auto& m = bundle_.manifest;
    *source = "estimate";
    return uint64_t(m["parameters"].value("decoder_per_token", 0LL) * m["quantization"].value("bits", 32.0) / 8);
  }

 private:
  std::vector<float> run(const char* method, const std::vector<EValue>& inputs) {
    auto out = module_.execute(method, inputs);
    if (!out.ok() || out->empty() || !out->at(0).isTensor())
      throw Error(std::string("ExecuTorch ") + method + " failed (" + last_error() + ")", pte_);
    const auto& t = out->at(0).toTensor();
    return std::vector<float>(t.const_data_ptr<float>(), t.const_data_ptr<float>() + t.numel());
  }

  std::vector<float> embed(const std::vector<int32_t>& ids) {
    if (ids.empty()) return {};
    std::vector<int64_t> wide(ids.begin(), ids.end());
    return run("token_embedding", {from_blob(wide.data(), {1, int(wide.size())}, ScalarType::Long)});
  }

  void decode_embeds(std::vector<float>& embeds, int pos) {
    const int D = int(embd_.size()) / bundle_.image_tokens, T = int(embeds.size()) / D;
    int64_t start = pos;
    logits_ = run("text_decoder", {from_blob(embeds.data(), {1, T, D}, ScalarType::Float),
                                   from_blob(&start, {1}, ScalarType::Long)});
  }

  const Bundle& bundle_;
  std::string pte_;
  BpeTokenizer tokenizer_;
  Module module_;
  std::vector<float> embd_, logits_;
  int vocab_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_executorch_backend(const Bundle& bundle, int threads) {
  return std::make_unique<EtBackend>(bundle, threads);
}

}  // namespace evr
