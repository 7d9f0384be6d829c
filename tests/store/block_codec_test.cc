// The block codec: what goes in comes out, and damage is caught.
#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "store/block_codec.h"

using namespace dispatch;
using namespace dispatch::internal;

TEST_SUITE("BlockCodec") {
  TEST_CASE("Encoded events decode to the same fields, byte-exact") {
    std::string body;
    int64_t prev = 1000;
    std::vector<NewEvent> in;
    std::mt19937 rng(7);
    for (int i = 0; i < 200; ++i) {
      NewEvent e;
      e.channel = "pty:stdout";
      e.type = i % 2 ? "chunk" : "input";
      e.payload.resize(static_cast<size_t>(rng() % 300));
      for (char& c : e.payload) c = static_cast<char>(rng());
      e.id = i % 3 ? "" : "id-" + std::to_string(i);
      e.encoding = Encoding::kBytes;
      e.ts_us = 1000 + static_cast<int64_t>(rng() % 100000) - 50000;  // not monotonic
      in.push_back(e);
      EncodeEvent(e, e.ts_us, &prev, &body);
    }
    std::string packed, raw;
    Codec c = CompressBody(body, &packed);
    REQUIRE(DecompressBody(c, packed, body.size(), &raw).ok());
    CHECK(raw == body);
    BlockReader r(raw, 1000);
    EventView v;
    size_t i = 0;
    for (; r.Next(&v); ++i) {
      REQUIRE(i < in.size());
      CHECK(v.payload == in[i].payload);
      CHECK(v.type == in[i].type);
      CHECK(v.id == in[i].id);
      CHECK(v.ts_us == in[i].ts_us);
    }
    CHECK(r.status().ok());
    CHECK(i == in.size());
  }

  TEST_CASE("Repetitive terminal output compresses") {
    std::string body;
    int64_t prev = 0;
    for (int i = 0; i < 1000; ++i) {
      NewEvent e;
      e.channel = "pty:stdout";
      e.type = "chunk";
      e.payload = "-rw-r--r-- 1 root root  4096 Jan  1 00:00 file" + std::to_string(i) + "\r\n";
      EncodeEvent(e, 1700000000000000 + i, &prev, &body);
    }
    std::string packed;
    CHECK(CompressBody(body, &packed) == Codec::kLz4);
    CHECK(packed.size() * 3 < body.size());
  }

  TEST_CASE("One buffer reused for bodies of every size and codec gives each its exact form") {
    // The writer keeps its compression buffer between commits: a large body
    // then a small one must not leave the first one's bytes behind.
    std::mt19937 rng(7);
    auto random_bytes = [&rng](size_t n) {
      std::string s(n, '\0');
      for (char& c : s) c = static_cast<char>(rng());
      return s;
    };
    std::vector<std::string> bodies = {std::string(300000, '\0'), random_bytes(2000),
                                       std::string(200, 'x'), random_bytes(100),
                                       std::string(5000, 'y'), random_bytes(400000),
                                       std::string(150, 'z')};
    std::string packed;
    for (const std::string& body : bodies) {
      Codec codec = CompressBody(body, &packed);
      std::string packed_fresh;
      CHECK(CompressBody(body, &packed_fresh) == codec);
      CHECK(packed == packed_fresh);
      std::string back;
      REQUIRE(DecompressBody(codec, packed, body.size(), &back).ok());
      CHECK(back == body);
    }
  }

  TEST_CASE("Truncated or garbled bodies are reported as corruption, never read past the end") {
    std::string body;
    int64_t prev = 0;
    NewEvent e;
    e.channel = "c";
    e.type = "t";
    e.payload = std::string(100, 'x');
    EncodeEvent(e, 5, &prev, &body);
    for (size_t cut = 1; cut < body.size(); ++cut) {
      BlockReader r(std::string_view(body.data(), cut), 0);
      EventView v;
      while (r.Next(&v)) {
      }
      CHECK(r.status().code() == StatusCode::kCorruption);
    }
    std::string packed, raw;
    REQUIRE(CompressBody(std::string(1000, 'a'), &packed) == Codec::kLz4);
    packed[packed.size() / 2] ^= 0x55;
    packed.resize(packed.size() - 3);
    CHECK(DecompressBody(Codec::kLz4, packed, 1000, &raw).code() == StatusCode::kCorruption);
    CHECK(DecompressBody(static_cast<Codec>(9), packed, 1000, &raw).code() == StatusCode::kCorruption);
  }
}
