// The one error type: a problem with the user's input, reported as `path: problem` on one line, as
// edgevlm's Python EdgeVLMError is, so that every client's messages read alike.
#pragma once

#include <stdexcept>
#include <string>

namespace evr {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& problem, const std::string& path = "")
      : std::runtime_error(path.empty() ? problem : path + ": " + problem) {}
};

}  // namespace evr
