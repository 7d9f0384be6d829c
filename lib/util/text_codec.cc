// Text helpers: see text_codec.h.
#include "util/text_codec.h"

#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace dispatch::internal {

size_t IncompleteUtf8Tail(std::string_view s) {
  size_t n = s.size();
  for (size_t back = 1; back <= 6 && back <= n; ++back) {
    auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation: keep looking
    size_t need = 0;
    if (c >= 0xC0 && c < 0xE0) need = 2;
    else if (c >= 0xE0 && c < 0xF0) need = 3;
    else if (c >= 0xF0 && c < 0xF8) need = 4;
    else if (c >= 0xF8 && c < 0xFC) need = 5;
    else if (c >= 0xFC && c < 0xFE) need = 6;
    return need > back ? back : 0;
  }
  return 0;
}

size_t SanitizeUtf8(std::string_view s, std::string* out) {
  static const char kFffd[] = "\xEF\xBF\xBD";
  size_t replaced = 0;
  size_t i = 0, n = s.size();
  while (i < n) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out->push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      need = 1;
    } else if (c == 0xE0) {
      need = 2;
      lo = 0xA0;
    } else if (c == 0xED) {
      need = 2;
      hi = 0x9F;
    } else if (c >= 0xE1 && c <= 0xEF) {
      need = 2;
    } else if (c == 0xF0) {
      need = 3;
      lo = 0x90;
    } else if (c == 0xF4) {
      need = 3;
      hi = 0x8F;
    } else if (c >= 0xF1 && c <= 0xF3) {
      need = 3;
    }
    if (need == 0) {
      out->append(kFffd, 3);
      ++replaced;
      ++i;
      continue;
    }
    size_t k = 1;
    for (; k <= need && i + k < n; ++k) {
      auto b = static_cast<unsigned char>(s[i + k]);
      if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
    }
    if (k == need + 1) {
      out->append(s.substr(i, k));
    } else {
      out->append(kFffd, 3);
      replaced += k;
    }
    i += k;
  }
  return replaced;
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (b >= 0xC2 && b <= 0xDF) {
      len = 2, cp = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3, cp = b & 0x0F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4, cp = b & 0x07;
    } else {
      return false;  // continuation byte, C0/C1 (overlong) or F5..FF
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

namespace {

constexpr char kBase64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Every 12-bit value as its two base64 characters: three input bytes are two
// lookups.
struct Base64Pairs {
  char pair[4096][2];
  constexpr Base64Pairs() : pair{} {
    for (int v = 0; v < 4096; ++v) {
      pair[v][0] = kBase64Alphabet[v >> 6];
      pair[v][1] = kBase64Alphabet[v & 63];
    }
  }
};
constexpr Base64Pairs kBase64Pairs;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DISPATCH_BASE64_AVX2 1

// AVX2: 24 input bytes become 32 characters per step (the method of Muła
// and Lemire, "Faster Base64 Encoding and Decoding Using AVX2
// Instructions", 2018). Each 128-bit lane takes 12 bytes, four groups of
// three; per 32-bit group the shuffle places bytes [b, a, c, b] so that the
// four 6-bit fields can be moved into place with two 16-bit multiplies,
// then each field is mapped to its character by adding an offset looked up
// by range (A-Z, a-z, 0-9, '+', '/'). A step reads 28 bytes (the second
// lane's 16-byte load starts 12 bytes in), so steps stop while 28 remain;
// returns the bytes consumed, a multiple of 24, for the scalar path to finish.
__attribute__((target("avx2"))) size_t EncodeBase64Avx2(const unsigned char* p, size_t n,
                                                         char* d) {
  const __m256i shuffle = _mm256_setr_epi8(1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10,  //
                                           1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10);
  const __m256i mask_hi = _mm256_set1_epi32(0x0fc0fc00);
  const __m256i mul_hi = _mm256_set1_epi32(0x04000040);
  const __m256i mask_lo = _mm256_set1_epi32(0x003f03f0);
  const __m256i mul_lo = _mm256_set1_epi32(0x01000010);
  const __m256i offsets = _mm256_setr_epi8(65, 71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4, -19,
                                           -16, 0, 0,  //
                                           65, 71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4, -19,
                                           -16, 0, 0);
  const __m256i c51 = _mm256_set1_epi8(51);
  const __m256i c25 = _mm256_set1_epi8(25);
  size_t i = 0;
  for (; i + 28 <= n; i += 24, d += 32) {
    __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i + 12));
    __m256i in = _mm256_shuffle_epi8(_mm256_set_m128i(hi, lo), shuffle);
    __m256i fields = _mm256_or_si256(_mm256_mulhi_epu16(_mm256_and_si256(in, mask_hi), mul_hi),
                                     _mm256_mullo_epi16(_mm256_and_si256(in, mask_lo), mul_lo));
    // Range index: 0 for A-Z, 1 for a-z, 2..11 for digits, 12 '+', 13 '/'.
    __m256i idx = _mm256_subs_epu8(fields, c51);
    idx = _mm256_sub_epi8(idx, _mm256_cmpgt_epi8(fields, c25));
    __m256i chars = _mm256_add_epi8(fields, _mm256_shuffle_epi8(offsets, idx));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), chars);
  }
  return i;
}

bool HaveAvx2() {
  static const bool have = __builtin_cpu_supports("avx2");
  return have;
}
#endif

}  // namespace

size_t Base64Size(size_t bytes) { return (bytes + 2) / 3 * 4; }

char* EncodeBase64Scalar(std::string_view in, char* d) {
  const char* kA = kBase64Alphabet;
  const auto* p = reinterpret_cast<const unsigned char*>(in.data());
  size_t n = in.size(), i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8) | p[i + 2];
    std::memcpy(d, kBase64Pairs.pair[v >> 12], 2);
    std::memcpy(d + 2, kBase64Pairs.pair[v & 4095], 2);
    d += 4;
  }
  if (n - i == 1) {
    uint32_t v = uint32_t{p[i]} << 16;
    *d++ = kA[v >> 18];
    *d++ = kA[(v >> 12) & 63];
    *d++ = '=';
    *d++ = '=';
  } else if (n - i == 2) {
    uint32_t v = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8);
    *d++ = kA[v >> 18];
    *d++ = kA[(v >> 12) & 63];
    *d++ = kA[(v >> 6) & 63];
    *d++ = '=';
  }
  return d;
}

char* EncodeBase64(std::string_view in, char* d) {
#ifdef DISPATCH_BASE64_AVX2
  // Short inputs (an echo, a prompt) are not worth the vector setup.
  if (in.size() >= 64 && HaveAvx2()) {
    size_t done = EncodeBase64Avx2(reinterpret_cast<const unsigned char*>(in.data()), in.size(), d);
    return EncodeBase64Scalar(in.substr(done), d + done / 3 * 4);
  }
#endif
  return EncodeBase64Scalar(in, d);
}

const char* Base64EncoderName() {
#ifdef DISPATCH_BASE64_AVX2
  if (HaveAvx2()) return "avx2";
#endif
  return "scalar";
}

void AppendBase64(std::string* out, std::string_view in) {
  size_t o = out->size();
  out->resize(o + Base64Size(in.size()));
  EncodeBase64(in, out->data() + o);
}

std::string Base64Encode(std::string_view in) {
  std::string out;
  AppendBase64(&out, in);
  return out;
}

std::optional<std::string> Base64Decode(std::string_view in, bool url_safe_too) {
  auto val = [url_safe_too](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || (url_safe_too && c == '-')) return 62;
    if (c == '/' || (url_safe_too && c == '_')) return 63;
    return -1;
  };
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  if (in.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v = val(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return out;
}

}  // namespace dispatch::internal
