// Tests of the JSON checks shared by the store, the catalog, the runtime and
// the host: validity, and the depth limit that keeps deep documents (whose
// copies and dumps recurse once per level) out.
#include "util/json_check.h"

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>

using dispatch::internal::IsJsonObject;
using dispatch::internal::IsValidJson;
using dispatch::internal::JsonDepthWithin;
using dispatch::internal::JsonProblem;
using dispatch::internal::kMaxJsonDepth;

namespace {
std::string Nested(int depth, char open = '[', char close = ']') {
  return std::string(static_cast<size_t>(depth), open) + std::string(static_cast<size_t>(depth), close);
}
}  // namespace

TEST_CASE("JsonDepthWithin counts objects and arrays, not brackets in strings") {
  CHECK(JsonDepthWithin("1", 0));
  CHECK(JsonDepthWithin("[]", 1));
  CHECK_FALSE(JsonDepthWithin("[]", 0));
  CHECK(JsonDepthWithin(R"({"a":[{"b":[]}]})", 4));
  CHECK_FALSE(JsonDepthWithin(R"({"a":[{"b":[]}]})", 3));
  // Siblings do not add up.
  CHECK(JsonDepthWithin("[[],[],[[]]]", 3));
  // Brackets inside strings, with escaped quotes and backslashes around them.
  CHECK(JsonDepthWithin(R"(["[[[[", "\"[[[[", "\\", "{{{{"])", 1));
  CHECK_FALSE(JsonDepthWithin(R"(["\\", [[]]])", 2));
  CHECK(JsonDepthWithin(Nested(kMaxJsonDepth)));
  CHECK_FALSE(JsonDepthWithin(Nested(kMaxJsonDepth + 1)));
  CHECK_FALSE(JsonDepthWithin(Nested(100000, '{', '}')));
}

TEST_CASE("IsValidJson refuses what is invalid or too deep, and says which") {
  CHECK(IsValidJson(R"({"a":[1,2,{"b":null}]})"));
  CHECK(IsValidJson(Nested(kMaxJsonDepth)));
  CHECK_FALSE(IsValidJson("{\"a\":"));
  CHECK_FALSE(IsValidJson(Nested(kMaxJsonDepth + 1)));
  CHECK(JsonProblem("[1]") == nullptr);
  CHECK(std::string(JsonProblem("[1")) == "is not valid JSON");
  CHECK(std::string(JsonProblem(Nested(100000))) == "is nested more than 256 deep");
  CHECK(IsJsonObject(R"( {"a":1})"));
  CHECK_FALSE(IsJsonObject("[1]"));
  CHECK_FALSE(IsJsonObject("{\"a\":" + Nested(kMaxJsonDepth) + "}"));
  // What passes can be parsed, copied and dumped (the limit's reason).
  nlohmann::json j = nlohmann::json::parse(Nested(kMaxJsonDepth));
  nlohmann::json copy = j;
  CHECK(copy.dump() == Nested(kMaxJsonDepth));
}
