// JSON validity checks (nlohmann::json's SAX-based accept: no document built).
#include "util/json_check.h"

#include <nlohmann/json.hpp>

namespace dispatch::internal {

bool IsValidJson(std::string_view text) { return nlohmann::json::accept(text); }

bool IsJsonObject(std::string_view text) {
  size_t i = text.find_first_not_of(" \t\r\n");
  return i != std::string_view::npos && text[i] == '{' && IsValidJson(text);
}

}  // namespace dispatch::internal
