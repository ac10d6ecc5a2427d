// A bundle dir opened and checked as docs/bundle-spec.md section 2 says, and the pieces a client builds
// from its manifest: image preprocessing (section 4) and the prompt template (section 6).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace evr {

using json = nlohmann::json;

struct Preprocess {
  int size = 0;
  float rescale = 0, mean[3] = {}, std[3] = {};
};

struct Template {
  std::string system, user, assistant;
  bool image_last = false;
  // the question as one user turn with exactly one `<image>`, ending where the answer starts (section 6.1-2)
  std::string render(const std::string& question) const;
};

struct Bundle {
  std::string dir;  // as given, without a trailing slash
  json manifest;
  std::string format;
  Preprocess image;
  Template tpl;
  int image_tokens = 0, bos_id = 0, eos_id = 0, pad_id = 0, max_context = 0;
  bool add_bos = true;

  // the path of a file the manifest lists; anything else is an error naming the manifest
  std::string file(const std::string& name) const;
  std::string manifest_path() const { return dir + "/manifest.json"; }
  std::string scheme() const { return manifest["quantization"].value("name", ""); }
  uint64_t bytes_on_disk() const;
};

// Read and check, in the spec's order, stopping at the first problem: the manifest (a regular JSON object),
// its spec_version, every listed path inside the bundle, the fields this reader uses (types and ranges:
// a subset of the JSON Schema, which the Python reader applies whole), then each listed file's size and
// sha256. Throws Error naming the file.
Bundle open_bundle(const std::string& dir, bool check_files = true);

// Section 2, rule 3, on one name: a relative `/` path inside `root`, symlinks followed.
void check_inside(const std::string& root, const json& name);

}  // namespace evr
