// The C API (include/edgevlm_native.h) and the benchmark protocol of edgevlm's Python bench worker
// (edgevlm/bench/worker.py): warm-up runs, timed runs, medians with their spread, peak RSS, result keys.
#include <sys/resource.h>
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include "edgevlm_native.h"
#include "error.hpp"
#include "session.hpp"

struct evr_runner {
  std::unique_ptr<evr::Session> session;
};

namespace evr {
namespace {

using json = nlohmann::json;

char* dup(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (p) std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

// {"median", "min", "max", "runs"}, as edgevlm/bench/stats.py summarize()
json summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  double median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  return {{"median", median}, {"min", v.front()}, {"max", v.back()}, {"runs", n}};
}

// VmHWM of /proc/self/status: this process's own peak resident set (the worker's reason, not ru_maxrss)
uint64_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return uint64_t(ru.ru_maxrss) * 1024;
}

json device() {
  struct utsname u;
  uname(&u);
  std::string cpu = u.machine;
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("model name", 0) == 0 || line.rfind("Hardware", 0) == 0) {
      cpu = line.substr(line.find(':') + 1);
      cpu.erase(0, cpu.find_first_not_of(" \t"));
      break;
    }
  }
  return {{"cpu", cpu}, {"cores", std::thread::hardware_concurrency()}, {"arch", u.machine},
          {"system", std::string(u.sysname) + " " + u.release}};
}

json timing_json(Session& s, const Timing& t) {
  return {{"ids", t.ids}, {"text", s.text(t.ids)}, {"prompt_positions", t.prefill_tokens},
          {"image_ms", t.image_ms}, {"prefill_ms", t.prefill_ms}, {"decode_ms", t.decode_ms}};
}

json trace_json(const Trace& tr) {
  double sum = 0, abs_sum = 0;
  for (float v : tr.image_embeds) sum += v, abs_sum += std::abs(double(v));
  json top5 = json::array();
  for (auto& [id, logit] : tr.top5) top5.push_back({id, logit});
  return {{"prompt_positions", tr.prompt_positions}, {"image_embeds", {{"sum", sum}, {"abs_sum", abs_sum}}},
          {"top5", top5}, {"greedy_ids", tr.ids}};
}

template <typename T>
T get(const json& req, const char* key, T fallback) {
  return req.contains(key) && !req[key].is_null() ? req[key].get<T>() : fallback;
}

json bench(const json& req) {
  if (get<std::string>(req, "eval", "") != "")
    throw Error("the native runner does not evaluate accuracy (--eval): run it on the host");
  auto t = std::chrono::steady_clock::now();
  Session s(req.at("bundle").get<std::string>(), get<int>(req, "threads", 0));
  double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
  Rgb image = load_image(req.at("image").get<std::string>());
  std::string prompt = req.at("prompt").get<std::string>();
  int new_tokens = get<int>(req, "new_tokens", 32), runs = get<int>(req, "runs", 5);
  if (new_tokens < 1 || runs < 1) throw Error("new_tokens and runs must be at least 1");
  for (int i = 0, n = get<int>(req, "warmup", 1); i < n; ++i) s.profile(image, prompt, new_tokens);
  std::vector<Timing> r;
  for (int i = 0; i < runs; ++i) r.push_back(s.profile(image, prompt, new_tokens));
  auto each = [&](auto f) { std::vector<double> v; for (auto& x : r) v.push_back(f(x)); return summarize(v); };
  const Bundle& b = s.bundle();
  std::string source;
  uint64_t weight_bytes = s.backend().decode_weight_bytes(&source);
  json out = {
      {"bundle", b.dir}, {"format", b.format}, {"scheme", b.scheme()},
      {"projector", b.manifest.value("model", json::object()).value("projector", json())},
      {"image_tokens", b.image_tokens}, {"runtime", s.backend().engine() + " (native)"},
      {"runtime_version", s.backend().version()}, {"bytes_on_disk", b.bytes_on_disk()},
      {"decode_weight_bytes", weight_bytes}, {"decode_weight_bytes_from", source}, {"load_ms", load_ms},
      {"prefill_tokens", r[0].prefill_tokens}, {"decode_tokens", r[0].decode_tokens},
      {"image_ms", each([](const Timing& x) { return x.image_ms; })},
      {"prefill_ms", each([](const Timing& x) { return x.prefill_ms; })},
      {"ttft_ms", each([](const Timing& x) { return x.image_ms + x.prefill_ms; })},
      {"decode_ms", each([](const Timing& x) { return x.decode_ms; })},
      {"prefill_tok_s", each([](const Timing& x) { return x.prefill_tokens / x.prefill_ms * 1e3; })},
      {"decode_tok_s", each([](const Timing& x) { return x.decode_tokens / std::max(x.decode_ms, 1e-9) * 1e3; })},
      {"split", json::object()},  // the whole phase runs in the engine's C/C++: no outside share to split
      {"generated_ids", r[0].ids}, {"text", s.text(r[0].ids)}, {"threads", s.threads()}, {"device", device()},
  };
  if (get<bool>(req, "trace", false)) out["trace"] = trace_json(s.trace(image, prompt, new_tokens));
  out["peak_rss_bytes"] = peak_rss_bytes();
  return out;
}

template <typename F>
char* guarded(char** err, F f) {
  try {
    return dup(f());
  } catch (const std::exception& e) {
    if (err) *err = dup(e.what());
    return nullptr;
  }
}

}  // namespace

std::string bench_json(const std::string& request) {
  json req = json::parse(request, nullptr, false);
  if (req.is_discarded() || !req.is_object()) throw Error("the request is not a JSON object");
  return bench(req).dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string generate_json(evr_runner* r, const Rgb& image, const char* question, int max_new_tokens) {
  Timing t = r->session->generate(image, question ? question : "", max_new_tokens);
  return timing_json(*r->session, t).dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace evr

extern "C" {

evr_runner* evr_open(const char* bundle_dir, int threads, char** err) {
  try {
    auto r = std::make_unique<evr_runner>();
    r->session = std::make_unique<evr::Session>(bundle_dir ? bundle_dir : "", threads);
    return r.release();
  } catch (const std::exception& e) {
    if (err) *err = evr::dup(e.what());
    return nullptr;
  }
}

char* evr_generate_rgb(evr_runner* r, const uint8_t* rgb, int width, int height, const char* question,
                       int max_new_tokens, char** err) {
  return evr::guarded(err, [&] {
    if (!r || !rgb || width <= 0 || height <= 0) throw evr::Error("no runner or no image");
    evr::Rgb image{width, height, std::vector<uint8_t>(rgb, rgb + size_t(width) * height * 3)};
    return evr::generate_json(r, image, question, max_new_tokens);
  });
}

char* evr_generate(evr_runner* r, const char* image_path, const char* question, int max_new_tokens, char** err) {
  return evr::guarded(err, [&] {
    if (!r) throw evr::Error("no runner");
    return evr::generate_json(r, evr::load_image(image_path ? image_path : ""), question, max_new_tokens);
  });
}

char* evr_bench(const char* request_json, char** err) {
  return evr::guarded(err, [&] { return evr::bench_json(request_json ? request_json : ""); });
}

double evr_bandwidth(int threads) {
  const size_t bytes = size_t(256) << 20;
  int n = threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency());
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  auto copy_all = [&] {
    std::vector<std::thread> pool;
    for (int i = 0; i < n; ++i)
      pool.emplace_back([&, i] {
        size_t a = bytes * i / n, b = bytes * (i + 1) / n;
        std::memcpy(dst.data() + a, src.data() + a, b - a);
      });
    for (auto& t : pool) t.join();
  };
  copy_all();  // touch the pages first
  double best = 1e30;
  for (int r = 0; r < 7; ++r) {
    auto t = std::chrono::steady_clock::now();
    copy_all();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
  }
  return 2.0 * double(bytes) / best;
}

int evr_prefill(evr_runner* r, const int32_t* before, int n_before, const uint8_t* resized_rgb, int size,
                const int32_t* after, int n_after, float* logits_out, char** err) {
  try {
    if (!r || !resized_rgb || !logits_out || n_before < 0 || n_after < 0 || (n_before && !before) ||
        (n_after && !after))
      throw evr::Error("evr_prefill: no runner, image, logits buffer or ids");
    evr::Session& s = *r->session;
    const evr::Bundle& b = s.bundle();
    if (size != b.image.size)
      throw evr::Error("evr_prefill: the image is " + std::to_string(size) + " x " + std::to_string(size) +
                       ", the bundle's image size is " + std::to_string(b.image.size), b.dir);
    int positions = n_before + b.image_tokens + n_after;
    if (positions >= b.max_context)
      throw evr::Error("prompt of " + std::to_string(positions) + " positions does not fit the bundle's context of " +
                       std::to_string(b.max_context), b.dir);
    const int n_vocab = s.backend().n_vocab();  // what the caller sized logits_out by
    evr::Rgb image{size, size, std::vector<uint8_t>(resized_rgb, resized_rgb + size_t(size) * size * 3)};
    s.backend().encode_image(image);
    int pos = s.backend().prefill(std::vector<int32_t>(before, before + n_before),
                                  std::vector<int32_t>(after, after + n_after));
    if (n_vocab <= 0 || s.backend().n_vocab() != n_vocab)
      throw evr::Error("evr_prefill: the engine gave " + std::to_string(s.backend().n_vocab()) +
                       " logits, evr_n_vocab said " + std::to_string(n_vocab), b.dir);
    std::memcpy(logits_out, s.backend().logits(), sizeof(float) * size_t(s.backend().n_vocab()));
    return pos;
  } catch (const std::exception& e) {
    if (err) *err = evr::dup(e.what());
    return -1;
  }
}

int evr_decode(evr_runner* r, int32_t token, int position, float* logits_out, char** err) {
  try {
    if (!r || !logits_out) throw evr::Error("evr_decode: no runner or logits buffer");
    evr::Session& s = *r->session;
    if (token < 0 || token >= s.backend().n_vocab() || position < 0 || position >= s.bundle().max_context)
      throw evr::Error("evr_decode: token " + std::to_string(token) + " at position " + std::to_string(position) +
                       " is outside the vocabulary or the context", s.bundle().dir);
    s.backend().decode(token, position);
    std::memcpy(logits_out, s.backend().logits(), sizeof(float) * size_t(s.backend().n_vocab()));
    return 0;
  } catch (const std::exception& e) {
    if (err) *err = evr::dup(e.what());
    return -1;
  }
}

int evr_n_vocab(evr_runner* r) { return r ? r->session->backend().n_vocab() : 0; }

void evr_string_free(char* s) { std::free(s); }
void evr_free(evr_runner* r) { delete r; }

}  // extern "C"
