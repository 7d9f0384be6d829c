// The file adapter's helpers: SHA-256 against the FIPS test vectors. (Its
// base64 and UTF-8 check are the library's: tests/util/text_codec_test.cc.)
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
}
