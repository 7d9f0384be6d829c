// Small helpers of the file adapter: SHA-256 content hashes (hex) for
// file:saved events. Self-contained, so the library needs no crypto
// dependency. (Base64 for binary file content and the UTF-8 check are the
// library's, util/text_codec.h.)
//
// Thread-safety: plain functions and values.
#ifndef DISPATCH_LIB_ADAPTERS_FILE_FILE_UTIL_H_
#define DISPATCH_LIB_ADAPTERS_FILE_FILE_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dispatch::internal::file {

// Incremental SHA-256 (FIPS 180-4).
class Sha256 {
 public:
  Sha256();
  void Update(std::string_view data);
  // The digest as 64 lower-case hex characters. Call once.
  std::string HexDigest();

 private:
  void Block(const unsigned char* p);
  uint32_t h_[8];
  unsigned char buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

// SHA-256 of `data`, hex.
std::string Sha256Hex(std::string_view data);

}  // namespace dispatch::internal::file

#endif  // DISPATCH_LIB_ADAPTERS_FILE_FILE_UTIL_H_
