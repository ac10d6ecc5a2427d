// edgevlm-run: a thin shell over the library. One JSON line on stdout per call; on failure
// {"error": "path: problem"} there, the same line on stderr, and exit status 1.
//
//   edgevlm-run REQUEST.json                         a bench request (edgevlm/bench/worker.py's keys)
//   edgevlm-run --bundle B --image I [--prompt Q] [--new-tokens N] [--runs R] [--warmup W] [--threads T] [--trace]
//   edgevlm-run generate BUNDLE IMAGE QUESTION [MAX_NEW_TOKENS]   greedy answer, stops at EOS
//   edgevlm-run check BUNDLE                         manifest, paths, sizes, sha256s
//   edgevlm-run preprocess BUNDLE IMAGE              hashes of the decoded, resized, normalised image
//   edgevlm-run prompt BUNDLE QUESTION               prompt ids (-200 where the image goes)
//   edgevlm-run tokenize BUNDLE TEXT                 ids of plain text
//   edgevlm-run bandwidth [THREADS]                  copy bandwidth, bytes/s (the roofline's denominator)
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>

#include "edgevlm_native.h"
#include "error.hpp"
#include "image.hpp"
#include "session.hpp"
#include "sha256.hpp"

using evr::json;

namespace {

using Args = std::vector<std::string>;

std::string owned(char* s, char* err) {
  if (!s) {
    std::string e = err ? err : "unknown error";
    evr_string_free(err);
    throw evr::Error(e);
  }
  std::string out = s;
  evr_string_free(s);
  return out;
}

void need(const Args& a, size_t n, const char* usage) {
  if (a.size() < n) throw evr::Error(std::string("usage: edgevlm-run ") + usage);
}

std::string bench_request(const Args& a) {
  json req = {{"prompt", "What is in the top left?"}, {"new_tokens", 32}, {"runs", 5}, {"warmup", 1},
              {"threads", 0}};
  const std::map<std::string, std::string> keys = {
      {"--bundle", "bundle"}, {"--image", "image"}, {"--prompt", "prompt"}, {"--new-tokens", "new_tokens"},
      {"--runs", "runs"}, {"--warmup", "warmup"}, {"--threads", "threads"}};
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] == "--trace") { req["trace"] = true; continue; }
    auto k = keys.find(a[i]);
    if (k == keys.end() || i + 1 >= a.size()) throw evr::Error("unknown or incomplete option '" + a[i] + "'");
    const std::string& v = a[++i];
    bool text = k->second == "bundle" || k->second == "image" || k->second == "prompt";
    req[k->second] = text ? json(v) : json(std::stoi(v));
  }
  if (!req.contains("bundle") || !req.contains("image")) throw evr::Error("--bundle and --image are required");
  return req.dump();
}

std::string run_request(const std::string& request) {
  char* err = nullptr;
  char* out = evr_bench(request.c_str(), &err);  // before `err` is read: argument order is unspecified
  return owned(out, err);
}

std::string preprocess(const Args& a) {
  need(a, 2, "preprocess BUNDLE IMAGE");
  evr::Bundle b = evr::open_bundle(a[0]);
  evr::Rgb rgb = evr::load_image(a[1]);
  evr::Rgb levels = evr::resized(rgb, b.image.size);
  std::vector<float> pixels = evr::normalize(levels, b.image);  // little-endian hosts: the bytes as written
  return json({{"width", rgb.width}, {"height", rgb.height},
               {"rgb_sha256", evr::sha256_hex(rgb.data.data(), rgb.data.size())},
               {"resized_sha256", evr::sha256_hex(levels.data.data(), levels.data.size())},
               {"pixel_values_sha256", evr::sha256_hex(pixels.data(), pixels.size() * sizeof(float))}})
      .dump();
}

const std::map<std::string, std::function<std::string(const Args&)>> kCommands = {
    {"generate", [](const Args& a) {
       need(a, 3, "generate BUNDLE IMAGE QUESTION [MAX_NEW_TOKENS]");
       char* err = nullptr;
       evr_runner* r = evr_open(a[0].c_str(), 0, &err);
       if (!r) owned(nullptr, err);  // throws the open error
       std::unique_ptr<evr_runner, void (*)(evr_runner*)> hold(r, evr_free);
       char* out = evr_generate(r, a[1].c_str(), a[2].c_str(), a.size() > 3 ? std::stoi(a[3]) : 256, &err);
       return owned(out, err);
     }},
    {"check", [](const Args& a) {
       need(a, 1, "check BUNDLE");
       evr::Bundle b = evr::open_bundle(a[0]);
       return json({{"bundle", b.dir}, {"format", b.format}, {"files", b.manifest["files"].size()}}).dump();
     }},
    {"preprocess", preprocess},
    {"bandwidth", [](const Args& a) {
       return json({{"bandwidth_bytes_s", evr_bandwidth(a.empty() ? 0 : std::stoi(a[0]))}}).dump();
     }},
    {"prompt", [](const Args& a) {
       need(a, 2, "prompt BUNDLE QUESTION");
       evr::Session s(a[0], 1);
       return json({{"ids", s.prompt_ids(a[1])}}).dump();
     }},
    {"tokenize", [](const Args& a) {
       need(a, 2, "tokenize BUNDLE TEXT");
       evr::Session s(a[0], 1);
       return json({{"ids", s.backend().tokenize(a[1])}}).dump();
     }},
};

}  // namespace

int main(int argc, char** argv) {
  Args args(argv + 1, argv + argc);
  try {
    std::string out;
    if (args.empty())
      throw evr::Error("usage: edgevlm-run REQUEST.json | --bundle B --image I ... | generate | check | "
                       "preprocess | prompt | tokenize | bandwidth (see native/README.md)");
    auto cmd = kCommands.find(args[0]);
    if (cmd != kCommands.end()) {
      out = cmd->second(Args(args.begin() + 1, args.end()));
    } else if (args[0].rfind("--", 0) == 0) {
      out = run_request(bench_request(args));
    } else {
      std::ifstream f(args[0]);
      if (!f) throw evr::Error("cannot read the request file", args[0]);
      std::stringstream text;
      text << f.rdbuf();
      out = run_request(text.str());
    }
    std::cout << out << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cout << json({{"error", e.what()}}).dump(-1, ' ', false, json::error_handler_t::replace) << std::endl;
    std::cerr << "edgevlm-run: " << e.what() << std::endl;
    return 1;
  }
}
