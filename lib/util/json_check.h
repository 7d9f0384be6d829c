// Internal: JSON validity checks shared by the store and the catalog.
#ifndef DISPATCH_LIB_UTIL_JSON_CHECK_H_
#define DISPATCH_LIB_UTIL_JSON_CHECK_H_

#include <string_view>

namespace dispatch::internal {

// True if `text` is exactly one valid JSON value (RFC 8259), without
// building a document.
bool IsValidJson(std::string_view text);
// True if `text` is a valid JSON object.
bool IsJsonObject(std::string_view text);

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_UTIL_JSON_CHECK_H_
