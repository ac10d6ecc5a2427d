// docs/bundle-spec.md sections 1-3 and 6.1-2: the bundle reader of the native runner.
#include "bundle.hpp"

#include <sys/stat.h>

#include <cctype>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "error.hpp"
#include "sha256.hpp"

namespace evr {
namespace {

const char* kPlaceholder = "<image>";

std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  size_t a = s.find_first_not_of(ws);
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(ws) - a + 1);
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = 0; (at = s.find(from, at)) != std::string::npos; at += to.size()) s.replace(at, from.size(), to);
}

std::string real(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) ? std::string(buf) : std::string();
}

json read_json_object(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) throw Error("no manifest.json: not a bundle directory", path);
  if (!S_ISREG(st.st_mode)) throw Error("not a regular file", path);
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  json j = json::parse(text.str(), nullptr, false);
  if (j.is_discarded()) throw Error("not valid JSON", path);
  if (!j.is_object()) throw Error("not a manifest: the top level is not a JSON object", path);
  return j;
}

void check_spec_version(const json& m, const std::string& where) {
  std::string version = "0";
  if (m.contains("spec_version")) {
    if (!m["spec_version"].is_string()) throw Error("spec_version is not a string", where);
    version = m["spec_version"].get<std::string>();
  }
  std::string major = version.substr(0, version.find('.'));
  if (major != "0" && major != "1")
    throw Error("spec_version '" + version + "' is not one this edgevlm reads (0, 1.x): a newer edgevlm wrote "
                "it, or it is not an edgevlm manifest", where);
}

// One field the native reader uses: present, of the right JSON type; its dotted name in the message.
const json& need(const json& m, const std::string& dotted, json::value_t type, const std::string& where) {
  const json* at = &m;
  std::string seen;
  for (size_t a = 0; a <= dotted.size();) {
    size_t b = dotted.find('.', a);
    if (b == std::string::npos) b = dotted.size();
    std::string key = dotted.substr(a, b - a);
    if (!at->is_object() || !at->contains(key))
      throw Error((seen.empty() ? "manifest" : seen) + ": '" + key + "' is a required property", where);
    at = &(*at)[key];
    seen += (seen.empty() ? "" : ".") + key;
    a = b + 1;
  }
  bool ok = at->type() == type || (type == json::value_t::number_float && at->is_number()) ||
            (type == json::value_t::number_integer && at->is_number_integer());
  if (!ok) throw Error(dotted + ": expected a " + std::string(json(type).type_name()), where);
  return *at;
}

int need_int(const json& m, const std::string& dotted, int lo, const std::string& where) {
  const json& v = need(m, dotted, json::value_t::number_integer, where);
  if (v.get<long long>() < lo || v.get<long long>() > INT_MAX)
    throw Error(dotted + ": " + v.dump() + " is out of range", where);
  return v.get<int>();
}

void read_fields(Bundle& b, const std::string& where) {
  using t = json::value_t;
  const json& m = b.manifest;
  b.format = need(m, "format", t::string, where).get<std::string>();
  if (b.format != "gguf" && b.format != "executorch" && b.format != "onnx" && b.format != "coreml")
    throw Error("format: '" + b.format + "' is not one of 'gguf', 'executorch', 'onnx', 'coreml'", where);
  need(m, "quantization.name", t::string, where);
  need(m, "runtime", t::object, where);
  b.image.size = need_int(m, "image.size", 1, where);
  if (need(m, "image.resize", t::string, where) != "bicubic") throw Error("image.resize: not 'bicubic'", where);
  b.image.rescale = need(m, "image.rescale", t::number_float, where).get<float>();
  for (const char* key : {"image.mean", "image.std"}) {
    const json& v = need(m, key, t::array, where);
    if (v.size() != 3 || !v[0].is_number() || !v[1].is_number() || !v[2].is_number())
      throw Error(std::string(key) + ": expected 3 numbers", where);
    for (int c = 0; c < 3; ++c) (key[6] == 'm' ? b.image.mean : b.image.std)[c] = v[c].get<float>();
  }
  b.tpl.system = need(m, "prompt.template.system", t::string, where).get<std::string>();
  b.tpl.user = need(m, "prompt.template.user", t::string, where).get<std::string>();
  b.tpl.assistant = need(m, "prompt.template.assistant", t::string, where).get<std::string>();
  b.tpl.image_last = need(m, "prompt.template.image_last", t::boolean, where).get<bool>();
  if (need(m, "prompt.image_placeholder", t::string, where) != kPlaceholder)
    throw Error("prompt.image_placeholder: not '<image>'", where);
  b.image_tokens = need_int(m, "prompt.image_tokens", 1, where);
  b.bos_id = need_int(m, "prompt.bos_id", 0, where);
  b.eos_id = need_int(m, "prompt.eos_id", 0, where);
  b.pad_id = need_int(m, "prompt.pad_id", 0, where);
  b.add_bos = need(m, "prompt.add_bos", t::boolean, where).get<bool>();
  b.max_context = need_int(m, "max_context", 1, where);
  for (auto& [name, entry] : m["files"].items()) {
    const std::string at = "files." + name;
    if (!entry.is_object()) throw Error(at + ": expected an object", where);
    const json& sha = need(entry, "sha256", t::string, where + " (" + at + ")");
    if (sha.get<std::string>().size() != 64 || sha.get<std::string>().find_first_not_of("0123456789abcdef") !=
        std::string::npos)
      throw Error(at + ".sha256: not 64 lower-case hex digits", where);
    need_int(entry, "bytes", 0, where + " (" + at + ")");
  }
  if (!m["files"].contains("tokenizer.json")) throw Error("files: tokenizer.json is not listed", where);
}

void check_files(const Bundle& b) {
  for (auto& [name, entry] : b.manifest["files"].items()) {
    std::string path = b.dir + "/" + name;
    struct stat st;
    if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
      throw Error("file listed in manifest.json is missing", path);
    uint64_t want = entry["bytes"].get<uint64_t>();
    if (uint64_t(st.st_size) != want)
      throw Error("size " + std::to_string(st.st_size) + " differs from manifest.json (" + std::to_string(want) +
                  " bytes): truncated or replaced", path);
    if (sha256_file(path) != entry["sha256"].get<std::string>())
      throw Error("sha256 differs from manifest.json: the file was modified", path);
  }
}

}  // namespace

std::string Template::render(const std::string& question) const {
  std::string q = question;
  if (image_last) {
    replace_all(q, std::string(kPlaceholder) + "\n", "");
    replace_all(q, kPlaceholder, "");
    q = strip(q) + "\n" + kPlaceholder;
  } else if (q.find(kPlaceholder) == std::string::npos) {
    q = std::string(kPlaceholder) + "\n" + q;
  }
  return system + user + q + assistant;
}

std::string Bundle::file(const std::string& name) const {
  if (!manifest["files"].contains(name)) throw Error("manifest lists no file '" + name + "'", manifest_path());
  return dir + "/" + name;
}

uint64_t Bundle::bytes_on_disk() const {
  uint64_t n = 0;
  for (auto& [name, entry] : manifest["files"].items()) n += entry["bytes"].get<uint64_t>();
  return n;
}

void check_inside(const std::string& root, const json& name) {
  const std::string where = root + "/manifest.json";
  if (!name.is_string()) throw Error("file name " + name.dump() + " is not a relative path with / separators", where);
  std::string s = name.get<std::string>();
  std::string quoted = "'" + s + "'";
  if (s.empty() || s.find('\\') != std::string::npos || s.find('\0') != std::string::npos)
    throw Error("file name " + quoted + " is not a relative path with / separators", where);
  if (s[0] == '/' || (s.size() >= 2 && s[1] == ':' && std::isalpha(static_cast<unsigned char>(s[0]))))
    throw Error("file name " + quoted + " is an absolute path: a bundle names files inside itself", where);
  std::stringstream parts(s);
  std::string part;
  bool bad = s.back() == '/';
  while (std::getline(parts, part, '/')) bad = bad || part.empty() || part == "." || part == "..";
  if (bad) throw Error("file name " + quoted + " leaves the bundle or is not normalized ('..', '.', '//')", where);
  struct stat st;
  std::string target = root + "/" + s;
  if (lstat(target.c_str(), &st) != 0) return;  // missing: reported after the schema, as the spec orders it
  std::string resolved = real(target), inside = real(root);
  if (resolved.empty()) throw Error(quoted + " is a symlink that resolves to no file", where);
  if (resolved.compare(0, inside.size() + 1, inside + "/") != 0)
    throw Error(quoted + " is a symlink to " + resolved + ", outside the bundle", where);
}

Bundle open_bundle(const std::string& dir, bool check) {
  Bundle b;
  b.dir = dir;
  while (b.dir.size() > 1 && b.dir.back() == '/') b.dir.pop_back();
  struct stat st;
  if (stat(b.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) throw Error("bundle directory not found", b.dir);
  const std::string where = b.manifest_path();
  check_inside(b.dir, "manifest.json");
  b.manifest = read_json_object(where);
  check_spec_version(b.manifest, where);
  const json& files = need(b.manifest, "files", json::value_t::object, where);
  for (auto& [name, entry] : files.items()) check_inside(b.dir, name);
  read_fields(b, where);
  if (check) check_files(b);
  return b;
}

}  // namespace evr
