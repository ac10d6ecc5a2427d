// docs/bundle-spec.md section 5 from tokenizer.json alone: byte-level BPE with GPT-2 pre-tokenization and
// added tokens, for engines that do not carry the vocabulary themselves (ExecuTorch). Any other tokenizer
// model is refused rather than guessed. The GPT-2 split itself is llama.cpp's (unicode_regex_split), the
// one whose ids the GGUF backend's goldens already pin.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

namespace evr {

class BpeTokenizer {
 public:
  explicit BpeTokenizer(const std::string& tokenizer_json);  // throws Error naming the file
  std::vector<int32_t> encode(const std::string& text) const;
  std::string decode_bytes(const std::vector<int32_t>& ids) const;  // specials dropped, bytes joined

 private:
  void bpe(const std::string& word, std::vector<int32_t>& out) const;

  std::string path_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::map<std::pair<std::string, std::string>, int> ranks_;
  std::vector<std::pair<std::string, int32_t>> added_;  // content, id; longest first
  std::vector<bool> special_;
  std::unordered_map<std::string, uint8_t> unicode_to_byte_;
};

}  // namespace evr
