// The file adapter's helpers: SHA-256 against the FIPS test vectors, base64
// against RFC 4648, UTF-8 validation.
#include <doctest/doctest.h>

#include <string>

#include "adapters/file/file_util.h"

using namespace dispatch::internal::file;

TEST_SUITE("FileUtil") {
  TEST_CASE("SHA-256 matches the standard test vectors") {
    CHECK(Sha256Hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(Sha256Hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    std::string million(1000000, 'a');
    CHECK(Sha256Hex(million) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    // Incremental updates of odd sizes give the same digest.
    Sha256 h;
    for (size_t i = 0; i < million.size(); i += 997) h.Update(std::string_view(million).substr(i, 997));
    CHECK(h.HexDigest() == Sha256Hex(million));
  }

  TEST_CASE("Base64 round-trips any bytes and refuses garbage") {
    CHECK(Base64Encode("") == "");
    CHECK(Base64Encode("f") == "Zg==");
    CHECK(Base64Encode("fo") == "Zm8=");
    CHECK(Base64Encode("foo") == "Zm9v");
    CHECK(Base64Encode("foobar") == "Zm9vYmFy");
    std::string bytes;
    for (int i = 0; i < 256; ++i) bytes.push_back(static_cast<char>(i));
    CHECK(Base64Decode(Base64Encode(bytes)) == bytes);
    CHECK(Base64Decode("Zm9vYg") == std::string("foob"));
    CHECK_FALSE(Base64Decode("Zm9v!").has_value());
    CHECK_FALSE(Base64Decode("Z").has_value());
  }

  TEST_CASE("UTF-8 validation refuses overlongs, surrogates and cut sequences") {
    CHECK(IsValidUtf8("plain"));
    CHECK(IsValidUtf8("\xe2\x80\x94 \xf0\x9f\x98\x80"));
    CHECK_FALSE(IsValidUtf8("\xc0\xaf"));
    CHECK_FALSE(IsValidUtf8("\xed\xa0\x80"));
    CHECK_FALSE(IsValidUtf8("\xe2\x80"));
    CHECK_FALSE(IsValidUtf8("\xff"));
    CHECK(IsValidUtf8(std::string("a\0b", 3)));
  }
}
