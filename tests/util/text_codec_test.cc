// Text helpers shared by the library and dispatch-host (lib/util/text_codec.h):
// base64 (RFC 4648) and UTF-8 checks and repair.
#include "util/text_codec.h"

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace dispatch::internal {
namespace {

TEST_CASE("Base64 round-trips every byte value and rejects garbage") {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (size_t n = 0; n < 8; ++n) {
    std::string s = all.substr(0, n) + all;
    auto back = Base64Decode(Base64Encode(s));
    REQUIRE(back);
    CHECK(*back == s);
  }
  CHECK(Base64Encode("hi") == "aGk=");
  // RFC 4648 §10 test vectors.
  CHECK(Base64Encode("") == "");
  CHECK(Base64Encode("f") == "Zg==");
  CHECK(Base64Encode("fo") == "Zm8=");
  CHECK(Base64Encode("foo") == "Zm9v");
  CHECK(Base64Encode("foob") == "Zm9vYg==");
  CHECK(Base64Encode("fooba") == "Zm9vYmE=");
  CHECK(Base64Encode("foobar") == "Zm9vYmFy");
  CHECK(Base64Encode(std::string("\xff\xfe\xfd\x00\x01\x02", 6)) == "//79AAEC");
  CHECK(!Base64Decode("a$b="));
  CHECK(!Base64Decode("a"));
  CHECK(Base64Decode("Zm9vYg") == std::string("foob"));  // padding optional
}

TEST_CASE("Base64: the url-safe alphabet only when asked for") {
  CHECK(!Base64Decode("__79AAEC"));
  CHECK(!Base64Decode("-A=="));
  CHECK(Base64Decode("__79AAEC", true) == std::string("\xff\xfe\xfd\x00\x01\x02", 6));
  std::string out = "x";
  AppendBase64(&out, "foobar");
  CHECK(out == "xZm9vYmFy");
}

TEST_CASE("Base64: the vector encoder writes what the scalar one does, and no more") {
  // Every byte value at every position of a step, at every length around the
  // vector path's step (24 bytes) and its threshold, from unaligned starts.
  // (On a CPU without AVX2 both sides are the scalar path: say so.)
  MESSAGE("base64 encoder on this CPU: " << std::string(Base64EncoderName()));
  std::mt19937 rng(7);
  std::string src(5000, '\0');
  for (auto& c : src) c = static_cast<char>(rng());
  for (int i = 0; i < 256; ++i) src[static_cast<size_t>(i)] = static_cast<char>(i);
  std::vector<size_t> sizes;
  for (size_t n = 0; n <= 200; ++n) sizes.push_back(n);
  for (size_t n : {255, 256, 257, 1000, 4093, 4094, 4095, 4096, 4097, 4990}) sizes.push_back(n);
  for (size_t off : {0, 1, 2, 3, 5, 7}) {
    for (size_t n : sizes) {
      std::string_view in(src.data() + off, n);
      std::string want(Base64Size(n), '?');
      CHECK(EncodeBase64Scalar(in, want.data()) == want.data() + want.size());
      std::string got(Base64Size(n) + 8, '#');
      char* end = EncodeBase64(in, got.data());
      REQUIRE(end == got.data() + Base64Size(n));
      CHECK(std::string_view(got.data(), Base64Size(n)) == want);
      CHECK(got.substr(Base64Size(n)) == "########");  // nothing past the end
      CHECK(Base64Decode(want) == std::string(in));
    }
  }
  // The two one-character ranges at every position of a step: 63 is '/',
  // 62 '+' (the other ranges and their edges come from the bytes above).
  std::string ones(96, '\xff');
  CHECK(Base64Encode(ones) == std::string(128, '/'));
  std::string plus;
  for (int i = 0; i < 32; ++i) plus += "\xfb\xef\xbe";  // 111110 repeated
  CHECK(Base64Encode(plus) == std::string(128, '+'));
}

TEST_CASE("UTF-8 validation accepts well-formed text and refuses the rest") {
  CHECK(IsValidUtf8(""));
  CHECK(IsValidUtf8("plain \x1b[31mred\x1b[0m"));
  CHECK(IsValidUtf8("\xc3\xa9t\xc3\xa9 \xe2\x94\x80 \xf0\x9f\x98\x80"));  // é ─ 😀
  CHECK_FALSE(IsValidUtf8("\xc3"));              // truncated
  CHECK_FALSE(IsValidUtf8("\x80"));              // lone continuation
  CHECK_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong
  CHECK_FALSE(IsValidUtf8("\xe0\x80\xaf"));      // overlong
  CHECK_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  CHECK_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  CHECK_FALSE(IsValidUtf8("\xff"));
  CHECK_FALSE(IsValidUtf8("ok\xe2\x94x"));        // bad continuation
  CHECK_FALSE(IsValidUtf8("\xe2\x80"));             // cut at the end
  CHECK(IsValidUtf8(std::string("a\0b", 3)));      // NUL is valid UTF-8
}

TEST_CASE("UTF-8 repair replaces each invalid part and keeps the rest") {
  std::string out;
  CHECK(SanitizeUtf8("a\xc3\xa9" "b", &out) == 0);
  CHECK(out == "a\xc3\xa9" "b");
  out.clear();
  CHECK(SanitizeUtf8("a\xff" "b\xe2\x94", &out) == 3);
  CHECK(out == "a\xef\xbf\xbd" "b\xef\xbf\xbd");
  out.clear();
  CHECK(SanitizeUtf8("\xed\xa0\x80", &out) == 3);  // a surrogate: three replacements
  CHECK(out == "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
  CHECK(IncompleteUtf8Tail("ab\xe2\x94") == 2);
  CHECK(IncompleteUtf8Tail("ab\xe2\x94\x80") == 0);
  CHECK(IncompleteUtf8Tail("\xf0\x9f\x98") == 3);
  CHECK(IncompleteUtf8Tail("plain") == 0);
}

}  // namespace
}  // namespace dispatch::internal
