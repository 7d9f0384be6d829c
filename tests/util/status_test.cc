// Status, Result and the event helpers.
#include <doctest/doctest.h>

#include "dispatch/event.h"
#include "dispatch/status.h"

using namespace dispatch;

TEST_SUITE("Status") {
  TEST_CASE("A default status is ok and prints as ok") {
    Status s;
    CHECK(s.ok());
    CHECK(s.ToString() == "ok");
  }
  TEST_CASE("A conflict carries the actual last seq") {
    Status s = Status::Conflict("expected 3", 5);
    CHECK_FALSE(s.ok());
    CHECK(s.code() == StatusCode::kConflict);
    CHECK(s.actual_last_seq() == 5);
    CHECK(s.ToString() == "conflict: expected 3");
  }
  TEST_CASE("A result holds either a value or an error") {
    Result<int> good = 7;
    REQUIRE(good.ok());
    CHECK(*good == 7);
    Result<int> bad = Status::NotFound("nope");
    CHECK_FALSE(bad.ok());
    CHECK(bad.status().code() == StatusCode::kNotFound);
    CHECK(bad.value_or(3) == 3);
  }
}

TEST_SUITE("ValidateRunId") {
  TEST_CASE("Run ids of the allowed alphabet pass") {
    CHECK(ValidateRunId("a").ok());
    CHECK(ValidateRunId("run-1_2.3:x").ok());
    CHECK(ValidateRunId(std::string(128, 'x')).ok());
  }
  TEST_CASE("Empty, too long and foreign bytes are refused") {
    CHECK(ValidateRunId("").code() == StatusCode::kInvalidArgument);
    CHECK(ValidateRunId(std::string(129, 'x')).code() == StatusCode::kInvalidArgument);
    CHECK(ValidateRunId("a b").code() == StatusCode::kInvalidArgument);
    CHECK(ValidateRunId("a/b").code() == StatusCode::kInvalidArgument);
    CHECK(ValidateRunId(std::string("a\0b", 3)).code() == StatusCode::kInvalidArgument);
  }
  TEST_CASE("Encoding names round-trip") {
    for (Encoding e : {Encoding::kBytes, Encoding::kJson, Encoding::kText}) {
      CHECK(ParseEncoding(EncodingName(e)) == e);
    }
    CHECK_FALSE(ParseEncoding("base64").has_value());
  }
}
