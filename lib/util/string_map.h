// A hash map keyed by std::string that is also looked up by std::string_view
// (or a C string) without building a std::string for the lookup: C++20's
// heterogeneous lookup, which needs a transparent hash and equality.
#ifndef DISPATCH_LIB_UTIL_STRING_MAP_H_
#define DISPATCH_LIB_UTIL_STRING_MAP_H_

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace dispatch::internal {

struct TransparentStringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

template <typename T>
using StringMap = std::unordered_map<std::string, T, TransparentStringHash, std::equal_to<>>;

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_UTIL_STRING_MAP_H_
