// The GGUF backend: llama.cpp's llama + mtmd libraries, set up exactly as edgevlm's Python runtime
// (edgevlm/runtimes/llamacpp.py) sets them up, so that both give the same greedy ids: a context of
// max_context positions (n_batch = n_ubatch = n_ctx), KV cache F32, flash attention off; mtmd gets the
// spec-resized S x S bitmap (it only normalises), encodes it once, and mtmd_helper_decode_image_chunk feeds
// the embeddings between the text before and after the image.
#include <algorithm>
#include <cstring>
#include <mutex>

#include "backend.hpp"
#include "error.hpp"
#include "gguf.h"
#include "llama.h"
#include "mtmd-helper.h"
#include "mtmd.h"

#ifndef EVR_LLAMA_VERSION
#define EVR_LLAMA_VERSION "unknown"
#endif

namespace evr {
namespace {

// llama.cpp reports problems by returning NULL or a code and logging why; its log is kept here (never
// printed) so that an error message can carry the last error line.
struct LogCapture {
  std::mutex mu;
  std::string last_error;
  int level = 0;
};
LogCapture g_log;

void on_log(ggml_log_level level, const char* text, void*) {
  std::lock_guard<std::mutex> lock(g_log.mu);
  if (level != GGML_LOG_LEVEL_CONT) g_log.level = level;
  std::string line = text ? text : "";
  while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
  if (g_log.level == GGML_LOG_LEVEL_ERROR && !line.empty()) g_log.last_error = line;
}

std::string last_error(const char* fallback) {
  std::lock_guard<std::mutex> lock(g_log.mu);
  std::string e = g_log.last_error.empty() ? fallback : g_log.last_error;
  g_log.last_error.clear();
  return e;
}

void install_log() {
  static std::once_flag once;
  std::call_once(once, [] {
    llama_log_set(on_log, nullptr);
    mtmd_log_set(on_log, nullptr);
    mtmd_helper_log_set(on_log, nullptr);
    llama_backend_init();
  });
}

class GgufBackend : public Backend {
 public:
  GgufBackend(const Bundle& bundle, int threads) : bundle_(bundle) {
    install_log();
    load_text(bundle.file(bundle.manifest["runtime"].value("text_model", "")), threads);
    load_mmproj(bundle.file(bundle.manifest["runtime"].value("mmproj", "")), threads);
  }

  ~GgufBackend() override {
    if (chunks_) mtmd_input_chunks_free(chunks_);
    if (mtmd_) mtmd_free(mtmd_);
    if (ctx_) {
      llama_batch_free(batch_);
      llama_free(ctx_);
    }
    if (model_) llama_model_free(model_);
  }

  std::string engine() const override { return "llama.cpp"; }
  std::string version() const override { return EVR_LLAMA_VERSION; }
  int n_vocab() const override { return llama_vocab_n_tokens(vocab_); }

  std::vector<int32_t> tokenize(const std::string& text) override {
    if (text.empty()) return {};
    int n = -llama_tokenize(vocab_, text.data(), int32_t(text.size()), nullptr, 0, false, true);
    std::vector<int32_t> ids(std::max(n, 0));
    if (llama_tokenize(vocab_, text.data(), int32_t(text.size()), ids.data(), int32_t(ids.size()), false, true) < 0)
      throw Error("llama.cpp failed to tokenize the prompt", text_path_);
    return ids;
  }

  std::string detokenize(const std::vector<int32_t>& ids) override {
    std::string out;
    char buf[256];
    for (int32_t id : ids) {
      int n = llama_token_to_piece(vocab_, id, buf, sizeof(buf), 0, false);
      if (n < 0) throw Error("llama.cpp cannot detokenize id " + std::to_string(id), text_path_);
      out.append(buf, n);
    }
    return out;
  }

  void encode_image(const Rgb& image) override {
    if (chunks_) mtmd_input_chunks_free(chunks_);
    chunks_ = mtmd_input_chunks_init();
    chunk_ = nullptr;
    std::unique_ptr<mtmd_bitmap, void (*)(mtmd_bitmap*)> bitmap(
        mtmd_bitmap_init(image.width, image.height, image.data.data()), mtmd_bitmap_free);
    const char* marker = mtmd_default_marker();
    mtmd_input_text text{marker, std::strlen(marker), false, true};
    const mtmd_bitmap* bitmaps[1] = {bitmap.get()};
    if (mtmd_tokenize(mtmd_, chunks_, &text, bitmaps, 1) != 0)
      throw Error("llama.cpp failed to preprocess the image (" + last_error("no reason given") + ")", bundle_.dir);
    for (size_t i = 0; i < mtmd_input_chunks_size(chunks_) && !chunk_; ++i) {
      const mtmd_input_chunk* c = mtmd_input_chunks_get(chunks_, i);
      if (mtmd_input_chunk_get_type(c) == MTMD_INPUT_CHUNK_TYPE_IMAGE) chunk_ = c;
    }
    if (!chunk_) throw Error("llama.cpp made no image chunk from the image", bundle_.dir);
    size_t n = mtmd_input_chunk_get_n_tokens(chunk_);
    if (int(n) != bundle_.image_tokens)
      throw Error("llama.cpp makes " + std::to_string(n) + " image tokens, the manifest says " +
                  std::to_string(bundle_.image_tokens), bundle_.dir);
    if (mtmd_encode_chunk(mtmd_, chunk_) != 0)
      throw Error("llama.cpp failed to encode the image (" + last_error("no reason given") + ")", bundle_.dir);
    const float* e = mtmd_get_output_embd(mtmd_);
    embd_.assign(e, e + n * llama_model_n_embd(model_));
  }

  std::vector<float> image_embeds() const override { return embd_; }

  int prefill(const std::vector<int32_t>& before, const std::vector<int32_t>& after) override {
    if (!chunk_) throw Error("prefill before an image was encoded", bundle_.dir);
    // metadata only: emptied cells are masked out and overwritten (zeroing them is a memset of the cache)
    llama_memory_clear(llama_get_memory(ctx_), false);
    int pos = run(before, 0);
    llama_pos next = 0;
    if (mtmd_helper_decode_image_chunk(mtmd_, ctx_, chunk_, embd_.data(), pos, 0, bundle_.max_context, &next,
                                       nullptr, nullptr) != 0)
      throw Error("llama.cpp failed to decode the image (" + last_error("no reason given") + ")", bundle_.dir);
    return run(after, next);
  }

  void decode(int32_t token, int pos) override { run({token}, pos); }

  const float* logits() override { return llama_get_logits_ith(ctx_, -1); }

  uint64_t decode_weight_bytes(std::string* source) override {
    // every LLM tensor once; the embedding table only when it is also the output head (tied)
    gguf_init_params params{true, nullptr};
    gguf_context* g = gguf_init_from_file(text_path_.c_str(), params);
    if (!g) throw Error("not a GGUF file", text_path_);
    uint64_t total = 0, table = 0;
    bool has_output = false;
    for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
      std::string name = gguf_get_tensor_name(g, i);
      uint64_t n = gguf_get_tensor_size(g, i);
      if (name == "token_embd.weight") table = n; else total += n;
      has_output = has_output || name == "output.weight";
    }
    gguf_free(g);
    *source = "file";
    return total + (has_output ? 0 : table);
  }

 private:
  void load_text(const std::string& path, int threads) {
    text_path_ = path;
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    model_ = llama_model_load_from_file(path.c_str(), mp);
    if (!model_) throw Error("llama.cpp cannot load this text model (" + last_error("no reason given") + ")", path);
    vocab_ = llama_model_get_vocab(model_);
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = cp.n_batch = cp.n_ubatch = bundle_.max_context;
    cp.n_threads = cp.n_threads_batch = threads;
    cp.type_k = cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    ctx_ = llama_init_from_model(model_, cp);
    if (!ctx_) throw Error("llama.cpp cannot create a context (" + last_error("no reason given") + ")", path);
    batch_ = llama_batch_init(bundle_.max_context, 0, 1);
  }

  void load_mmproj(const std::string& path, int threads) {
    mtmd_context_params p = mtmd_context_params_default();
    p.use_gpu = false;
    p.print_timings = false;
    p.warmup = false;
    p.n_threads = threads;
    mtmd_ = mtmd_init_from_file(path.c_str(), model_, p);
    if (!mtmd_) throw Error("llama.cpp cannot load this mmproj (" + last_error("no reason given") + ")", path);
  }

  // `ids` at positions pos.., logits for the last one; returns the next position
  int run(const std::vector<int32_t>& ids, int pos) {
    if (ids.empty()) return pos;
    batch_.n_tokens = int32_t(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      batch_.token[i] = ids[i];
      batch_.pos[i] = pos + int(i);
      batch_.n_seq_id[i] = 1;
      batch_.seq_id[i][0] = 0;
      batch_.logits[i] = i + 1 == ids.size();
    }
    if (llama_decode(ctx_, batch_) != 0) throw Error("llama.cpp failed to decode the prompt", bundle_.dir);
    return pos + int(ids.size());
  }

  const Bundle& bundle_;
  std::string text_path_;
  llama_model* model_ = nullptr;
  const llama_vocab* vocab_ = nullptr;
  llama_context* ctx_ = nullptr;
  llama_batch batch_{};
  mtmd_context* mtmd_ = nullptr;
  mtmd_input_chunks* chunks_ = nullptr;
  const mtmd_input_chunk* chunk_ = nullptr;
  std::vector<float> embd_;
};

}  // namespace

std::unique_ptr<Backend> make_gguf_backend(const Bundle& bundle, int threads) {
  return std::make_unique<GgufBackend>(bundle, threads);
}

}  // namespace evr
