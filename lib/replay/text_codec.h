// Byte/text helpers shared by the replay code: UTF-8 checks and repair,
// base64.
#ifndef DISPATCH_LIB_REPLAY_TEXT_CODEC_H_
#define DISPATCH_LIB_REPLAY_TEXT_CODEC_H_

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

bool IsValidUtf8(std::string_view s);

std::string Base64Encode(std::string_view bytes);
// nullopt if `text` is not valid base64 (standard alphabet, padding optional).
std::optional<std::string> Base64Decode(std::string_view text);

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_REPLAY_TEXT_CODEC_H_
