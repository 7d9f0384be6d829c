// Text helpers: see text_codec.h.
#include "util/text_codec.h"

#include <cstring>

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
// lookups (pty output is most of what dispatch-host sends, all of it base64).
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

}  // namespace

void AppendBase64(std::string* out, std::string_view in) {
  const char* kA = kBase64Alphabet;
  size_t o = out->size();
  out->resize(o + ((in.size() + 2) / 3) * 4);
  char* d = out->data() + o;
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
