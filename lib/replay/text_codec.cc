// Text helpers: see text_codec.h.
#include "replay/text_codec.h"

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
  std::string tmp;
  tmp.reserve(s.size());
  return SanitizeUtf8(s, &tmp) == 0;
}

std::string Base64Encode(std::string_view in) {
  static const char kT[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (static_cast<unsigned char>(in[i]) << 16) |
                 (static_cast<unsigned char>(in[i + 1]) << 8) | static_cast<unsigned char>(in[i + 2]);
    out.push_back(kT[v >> 18]);
    out.push_back(kT[(v >> 12) & 63]);
    out.push_back(kT[(v >> 6) & 63]);
    out.push_back(kT[v & 63]);
  }
  if (i + 1 == in.size()) {
    uint32_t v = static_cast<unsigned char>(in[i]) << 16;
    out.push_back(kT[v >> 18]);
    out.push_back(kT[(v >> 12) & 63]);
    out.append("==");
  } else if (i + 2 == in.size()) {
    uint32_t v = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8);
    out.push_back(kT[v >> 18]);
    out.push_back(kT[(v >> 12) & 63]);
    out.push_back(kT[(v >> 6) & 63]);
    out.push_back('=');
  }
  return out;
}

std::optional<std::string> Base64Decode(std::string_view in) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
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
