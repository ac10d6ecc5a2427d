// SHA-256 (FIPS 180-4), for the manifest's file hashes and the goldens' pixel hashes. Written here (public
// domain, ~80 lines) rather than pulling a crypto library into an app's native code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace evr {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::string hex();  // finishes the hash; call once

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t used_ = 0;
  uint64_t bytes_ = 0;
};

std::string sha256_hex(const void* data, size_t n);
std::string sha256_file(const std::string& path);  // throws Error naming the file when it cannot be read

}  // namespace evr
