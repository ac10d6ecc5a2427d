// The registry of engines the native runner links: a table, not an if-chain. ExecuTorch is in builds
// configured with EVR_EXECUTORCH_DIR (the x86_64 host: the wheel's libraries). ONNX is absent on purpose:
// no C/C++ headers for ONNX Runtime are published on the registries this project builds from (see
// native/README.md); CoreML runs only through Apple's frameworks.
#include <utility>

#include "backend.hpp"
#include "error.hpp"

namespace evr {

const std::map<std::string, BackendFactory>& backends() {
  static const std::map<std::string, BackendFactory> table = {
      {"gguf", make_gguf_backend},
#ifdef EVR_WITH_EXECUTORCH
      {"executorch", make_executorch_backend},
#endif
  };
  return table;
}

std::unique_ptr<Backend> make_backend(const Bundle& bundle, int threads) {
  auto it = backends().find(bundle.format);
  if (it == backends().end()) {
    std::string known;
    for (auto& [name, f] : backends()) known += (known.empty() ? "" : ", ") + name;
    throw Error("the native runner cannot run '" + bundle.format + "' bundles (it runs: " + known + ")",
                bundle.manifest_path());
  }
  return it->second(bundle, threads);
}

}  // namespace evr
