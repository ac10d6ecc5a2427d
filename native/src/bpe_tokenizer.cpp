// Byte-level BPE as Hugging Face tokenizers runs it for GPT-2-style tokenizer.json files: added tokens
// matched first (longest at each position), the rest split by GPT-2's regex into byte-encoded words, each
// word merged pair by pair in merge-rank order.
#include "bpe_tokenizer.hpp"

#include <algorithm>
#include <climits>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "error.hpp"

// llama.cpp's GPT-2 pre-tokenizer (src/unicode.h), exported by libllama
std::vector<std::string> unicode_regex_split(const std::string& text, const std::vector<std::string>& regex_exprs,
                                             bool byte_encode);

namespace evr {
namespace {

const char* kGpt2Split = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) s += char(cp);
  else if (cp < 0x800) s += char(0xC0 | (cp >> 6)), s += char(0x80 | (cp & 0x3F));
  else s += char(0xE0 | (cp >> 12)), s += char(0x80 | ((cp >> 6) & 0x3F)), s += char(0x80 | (cp & 0x3F));
  return s;
}

// UTF-8 characters of a byte-encoded word
std::vector<std::string> chars(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = s[i];
    size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

}  // namespace

BpeTokenizer::BpeTokenizer(const std::string& path) : path_(path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json t = nlohmann::json::parse(text.str(), nullptr, false);
  if (!in || t.is_discarded() || !t.is_object()) throw Error("not a valid tokenizer.json", path);
  const auto& model = t.value("model", nlohmann::json::object());
  const auto& pre = t.value("pre_tokenizer", nlohmann::json());
  if (model.value("type", "") != "BPE" || !pre.is_object() || pre.value("type", "") != "ByteLevel" ||
      pre.value("add_prefix_space", true) || !t.value("normalizer", nlohmann::json()).is_null())
    throw Error("the native runner reads byte-level BPE tokenizers without a normalizer only "
                "(docs/bundle-spec.md section 5)", path);
  for (auto& [token, id] : model.at("vocab").items()) {
    vocab_[token] = id.get<int32_t>();
    if (id.get<int32_t>() >= int32_t(id_to_token_.size())) id_to_token_.resize(id.get<int32_t>() + 1);
    id_to_token_[id.get<int32_t>()] = token;
  }
  int rank = 0;
  for (const auto& m : model.at("merges")) {
    std::string a, b;
    if (m.is_array()) a = m[0], b = m[1];
    else { std::string s = m; a = s.substr(0, s.find(' ')); b = s.substr(s.find(' ') + 1); }
    ranks_[{a, b}] = rank++;
  }
  special_.assign(id_to_token_.size(), false);
  for (const auto& a : t.value("added_tokens", nlohmann::json::array())) {
    int32_t id = a.at("id");
    if (id >= int32_t(id_to_token_.size())) id_to_token_.resize(id + 1), special_.resize(id + 1, false);
    id_to_token_[id] = a.at("content");
    special_[id] = a.value("special", false);
    added_.push_back({a.at("content"), id});
  }
  std::sort(added_.begin(), added_.end(), [](auto& x, auto& y) { return x.first.size() > y.first.size(); });
  // GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest for 256, 257, ...
  for (int b = 0, n = 0; b < 256; ++b) {
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    unicode_to_byte_[utf8(printable ? b : 256 + n++)] = uint8_t(b);
  }
}

void BpeTokenizer::bpe(const std::string& word, std::vector<int32_t>& out) const {
  std::vector<std::string> parts = chars(word);
  while (parts.size() > 1) {
    int best = INT_MAX;
    size_t at = 0;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      auto r = ranks_.find({parts[i], parts[i + 1]});
      if (r != ranks_.end() && r->second < best) best = r->second, at = i;
    }
    if (best == INT_MAX) break;
    parts[at] += parts[at + 1];
    parts.erase(parts.begin() + at + 1);
  }
  for (const auto& p : parts) {
    auto v = vocab_.find(p);
    if (v == vocab_.end()) throw Error("tokenizer has no token for '" + p + "' (no byte fallback)", path_);
    out.push_back(v->second);
  }
}

std::vector<int32_t> BpeTokenizer::encode(const std::string& text) const {
  std::vector<int32_t> ids;
  size_t start = 0;
  auto flush = [&](size_t end) {
    if (end > start)
      for (const auto& w : unicode_regex_split(text.substr(start, end - start), {kGpt2Split}, true)) bpe(w, ids);
  };
  for (size_t i = 0; i < text.size();) {
    auto hit = std::find_if(added_.begin(), added_.end(),
                            [&](auto& a) { return text.compare(i, a.first.size(), a.first) == 0; });
    if (hit == added_.end()) { ++i; continue; }
    flush(i);
    ids.push_back(hit->second);
    i += hit->first.size();
    start = i;
  }
  flush(text.size());
  return ids;
}

std::string BpeTokenizer::decode_bytes(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= int32_t(id_to_token_.size()))
      throw Error("id " + std::to_string(id) + " is not in the vocabulary", path_);
    if (special_[id]) continue;
    bool added = std::any_of(added_.begin(), added_.end(), [id](auto& a) { return a.second == id; });
    if (added) { out += id_to_token_[id]; continue; }
    for (const auto& c : chars(id_to_token_[id])) {
      auto b = unicode_to_byte_.find(c);
      if (b != unicode_to_byte_.end()) out += char(b->second); else out += c;
    }
  }
  return out;
}

}  // namespace evr
