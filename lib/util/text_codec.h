// Byte/text helpers shared by the library and dispatch-host: UTF-8 checks
// and repair, base64 (RFC 4648).
#ifndef DISPATCH_LIB_UTIL_TEXT_CODEC_H_
#define DISPATCH_LIB_UTIL_TEXT_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace dispatch::internal {

// Length of an unfinished (but so far valid-looking) UTF-8 character at the
// end of `s` (0 if none).
size_t IncompleteUtf8Tail(std::string_view s);

// Appends `s` to `out` with every invalid UTF-8 sequence replaced by U+FFFD
// (one per maximal invalid subpart). Returns how many input bytes were
// replaced.
size_t SanitizeUtf8(std::string_view s, std::string* out);

// True if `s` is well-formed UTF-8 (no overlongs, surrogates or code points
// above U+10FFFF), so it can travel as a JSON string unchanged.
bool IsValidUtf8(std::string_view s);

// Base64 (standard alphabet, padded). The encoder uses AVX2 where the CPU
// has it (checked once, at run time) and a table of 12-bit pairs otherwise.
// The size of the base64 of `bytes` bytes.
size_t Base64Size(size_t bytes);
// Writes the base64 of `bytes` at `out` (Base64Size(bytes.size()) chars, no
// terminator); returns the end. `out` need not be initialised.
char* EncodeBase64(std::string_view bytes, char* out);
// The same without the vector path (the reference the tests compare with).
char* EncodeBase64Scalar(std::string_view bytes, char* out);
// "avx2" or "scalar": the path EncodeBase64 takes on this CPU.
const char* Base64EncoderName();
// Appends the base64 of `bytes` to `out`.
void AppendBase64(std::string* out, std::string_view bytes);
std::string Base64Encode(std::string_view bytes);
// nullopt if `text` is not valid base64: the standard alphabet, padding
// optional; with `url_safe_too`, '-' and '_' are accepted for '+' and '/'.
std::optional<std::string> Base64Decode(std::string_view text, bool url_safe_too = false);

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_UTIL_TEXT_CODEC_H_
