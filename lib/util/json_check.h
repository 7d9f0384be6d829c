// Internal: JSON validity checks shared by the store, the catalog, the
// runtime and the host.
#ifndef DISPATCH_LIB_UTIL_JSON_CHECK_H_
#define DISPATCH_LIB_UTIL_JSON_CHECK_H_

#include <nlohmann/json.hpp>
#include <string_view>

namespace dispatch::internal {

// How deep JSON the library accepts (objects and arrays inside each other).
// nlohmann::json parses deeper documents, but copying or serialising one
// recurses once per level, and ~65,000 levels overflow a thread's stack:
// a payload, a setting or a session's meta that deep would crash whatever
// later serialises it (the host, when it sends it to a client).
inline constexpr int kMaxJsonDepth = 256;

// True if no object or array in `text` is nested more than `max_depth`
// deep (brackets inside strings do not count). Does not check validity.
bool JsonDepthWithin(std::string_view text, int max_depth = kMaxJsonDepth);
// True if `text` is exactly one valid JSON value (RFC 8259) nested at most
// kMaxJsonDepth deep, without building a document.
bool IsValidJson(std::string_view text);
// True if `text` is such a value and an object.
bool IsJsonObject(std::string_view text);
// `text` parsed (nlohmann::json or ordered_json), or a discarded value if it
// is not valid JSON or is nested more than kMaxJsonDepth deep: what the
// library parses from outside goes through this, so that nothing it copies
// or dumps later recurses deeper.
template <typename Json = nlohmann::json>
Json ParseJsonWithin(std::string_view text) {
  if (!JsonDepthWithin(text)) return Json(Json::value_t::discarded);
  return Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
}
// What is wrong with `text` as a JSON value, for an error message ("is not
// valid JSON", "is nested more than 256 deep"), or nullptr if nothing.
const char* JsonProblem(std::string_view text);

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_UTIL_JSON_CHECK_H_
