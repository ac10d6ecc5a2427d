// docs/bundle-spec.md sections 5-6 over a Backend; the timing split follows edgevlm/runtimes/llamacpp.py's
// profile() so that native and Python numbers measure the same phases.
#include "session.hpp"

#include <algorithm>
#include <chrono>
#include <thread>

#include "error.hpp"

namespace evr {
namespace {

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

int default_threads(int threads) {
  if (threads > 0) return threads;
  unsigned n = std::thread::hardware_concurrency();
  return n ? int(n) : 1;
}

}  // namespace

Session::Session(const std::string& bundle_dir, int threads)
    : bundle_(open_bundle(bundle_dir)), threads_(default_threads(threads)) {
  backend_ = make_backend(bundle_, threads_);
}

std::vector<int32_t> Session::prompt_ids(const std::string& question) {
  const std::string prompt = bundle_.tpl.render(question), marker = "<image>";
  std::vector<int32_t> ids;
  if (bundle_.add_bos) ids.push_back(bundle_.bos_id);
  int markers = 0;
  for (size_t start = 0;;) {
    size_t at = prompt.find(marker, start);
    auto piece = backend_->tokenize(prompt.substr(start, at == std::string::npos ? std::string::npos : at - start));
    ids.insert(ids.end(), piece.begin(), piece.end());
    if (at == std::string::npos) break;
    ids.push_back(kImageMarker);
    ++markers;
    start = at + marker.size();
  }
  if (markers != 1)
    throw Error("a prompt needs exactly one image placeholder <image>, got " + std::to_string(markers));
  return ids;
}

std::string Session::text(const std::vector<int32_t>& ids) {
  std::vector<int32_t> kept;
  for (int32_t id : ids)
    if (id != bundle_.bos_id && id != bundle_.eos_id && id != bundle_.pad_id) kept.push_back(id);
  std::string s = utf8_lossy(backend_->detokenize(kept));
  const char* ws = " \t\n\r\f\v";
  size_t a = s.find_first_not_of(ws);
  return a == std::string::npos ? "" : s.substr(a, s.find_last_not_of(ws) - a + 1);
}

int Session::argmax() {
  const float* l = backend_->logits();
  int best = 0;
  for (int i = 1, n = backend_->n_vocab(); i < n; ++i)
    if (l[i] > l[best]) best = i;  // the lowest id among equal maxima
  return best;
}

Timing Session::run(const Rgb& image, const std::string& question, int new_tokens, bool stop_at_eos) {
  Timing t;
  auto t0 = std::chrono::steady_clock::now();
  backend_->encode_image(resized(image, bundle_.image.size));
  t.image_ms = ms_since(t0);

  auto t1 = std::chrono::steady_clock::now();
  std::vector<int32_t> ids = prompt_ids(question);
  auto at = std::find(ids.begin(), ids.end(), kImageMarker);
  std::vector<int32_t> before(ids.begin(), at), after(at + 1, ids.end());
  t.prefill_tokens = int(ids.size()) - 1 + bundle_.image_tokens;
  int limit = bundle_.max_context;
  if (t.prefill_tokens + (stop_at_eos ? 0 : new_tokens) >= limit)
    throw Error("prompt of " + std::to_string(t.prefill_tokens) + " positions (+ " +
                std::to_string(stop_at_eos ? 0 : new_tokens) + " new tokens) does not fit the bundle's context of " +
                std::to_string(limit), bundle_.dir);
  int pos = backend_->prefill(before, after);
  int tok = argmax();
  t.prefill_ms = ms_since(t1);

  auto t2 = std::chrono::steady_clock::now();
  while (int(t.ids.size()) < new_tokens) {
    if (stop_at_eos && (tok == bundle_.eos_id || pos >= limit)) break;
    t.ids.push_back(tok);
    if (int(t.ids.size()) == new_tokens) break;
    backend_->decode(tok, pos++);
    tok = argmax();
  }
  t.decode_ms = ms_since(t2);
  t.decode_tokens = std::max(0, int(t.ids.size()) - 1);
  return t;
}

Timing Session::generate(const Rgb& image, const std::string& question, int max_new_tokens) {
  return run(image, question, max_new_tokens, true);
}

Timing Session::profile(const Rgb& image, const std::string& question, int new_tokens) {
  return run(image, question, new_tokens, false);
}

Trace Session::trace(const Rgb& image, const std::string& question, int new_tokens) {
  Trace tr;
  backend_->encode_image(resized(image, bundle_.image.size));
  tr.image_embeds = backend_->image_embeds();
  std::vector<int32_t> ids = prompt_ids(question);
  auto at = std::find(ids.begin(), ids.end(), kImageMarker);
  tr.prompt_positions = int(ids.size()) - 1 + bundle_.image_tokens;
  if (tr.prompt_positions + new_tokens > bundle_.max_context)
    throw Error("prompt + new tokens exceed the bundle's context", bundle_.dir);
  int pos = backend_->prefill({ids.begin(), at}, {at + 1, ids.end()});
  const float* l = backend_->logits();
  std::vector<int32_t> order(backend_->n_vocab());
  for (size_t i = 0; i < order.size(); ++i) order[i] = int32_t(i);
  std::stable_sort(order.begin(), order.end(), [l](int32_t a, int32_t b) { return l[a] > l[b]; });
  for (int i = 0; i < 5 && i < int(order.size()); ++i) tr.top5.push_back({order[i], l[order[i]]});
  for (int step = 0; step < new_tokens; ++step) {
    tr.ids.push_back(argmax());
    if (step + 1 < new_tokens) backend_->decode(tr.ids.back(), pos++);
  }
  return tr;
}

std::string utf8_lossy(const std::string& s) {
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    int len = c < 0x80                 ? 1
              : (c >= 0xC2 && c <= 0xDF) ? 2
              : (c >= 0xE0 && c <= 0xEF) ? 3
              : (c >= 0xF0 && c <= 0xF4) ? 4
                                         : 0;
    if (len == 1) { out += char(c); ++i; continue; }
    size_t j = i + 1;
    if (len > 0) {
      // the second byte's range depends on the lead byte (no overlongs, no surrogates, nothing past U+10FFFF)
      unsigned char lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
      unsigned char hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
      if (j < n && p[j] >= lo && p[j] <= hi) {
        ++j;
        while (j < i + len && j < n && p[j] >= 0x80 && p[j] <= 0xBF) ++j;
      }
    }
    if (len > 0 && j == i + size_t(len)) out.append(s, i, len);
    else out += "\xEF\xBF\xBD";
    i = j;
  }
  return out;
}

}  // namespace evr
