// JSON validity checks (nlohmann::json's SAX-based accept: no document built).
#include "util/json_check.h"

#include <nlohmann/json.hpp>

namespace dispatch::internal {

static_assert(kMaxJsonDepth == 256, "JsonProblem's message says 256");

bool JsonDepthWithin(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

bool IsValidJson(std::string_view text) {
  return JsonDepthWithin(text) && nlohmann::json::accept(text);
}

const char* JsonProblem(std::string_view text) {
  if (!JsonDepthWithin(text)) return "is nested more than 256 deep";
  if (!nlohmann::json::accept(text)) return "is not valid JSON";
  return nullptr;
}

bool IsJsonObject(std::string_view text) {
  size_t i = text.find_first_not_of(" \t\r\n");
  return i != std::string_view::npos && text[i] == '{' && IsValidJson(text);
}

}  // namespace dispatch::internal
