// Key check, failure limiter and Origin check (see auth.h).
#include "auth.h"

#include <algorithm>
#include <cctype>

namespace dispatch::host {

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  // Walk the longer length so the time does not reveal a prefix match; the
  // length difference is folded into the result.
  size_t n = std::max(a.size(), b.size());
  volatile unsigned char diff = static_cast<unsigned char>(a.size() != b.size());
  for (size_t i = 0; i < n; ++i) {
    unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff = diff | static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

std::string_view BearerToken(std::string_view h) {
  while (!h.empty() && h.front() == ' ') h.remove_prefix(1);
  if (h.size() < 7) return {};
  std::string lower;
  for (size_t i = 0; i < 7; ++i) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(h[i])));
  if (lower != "bearer ") return {};
  h.remove_prefix(7);
  while (!h.empty() && h.front() == ' ') h.remove_prefix(1);
  while (!h.empty() && (h.back() == ' ' || h.back() == '\r' || h.back() == '\n')) h.remove_suffix(1);
  return h;
}

std::string PercentDecode(std::string_view s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%' && i + 2 < s.size()) {
      int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += c == '+' ? ' ' : c;
  }
  return out;
}

std::string QueryParam(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view item = query.substr(0, amp);
    size_t eq = item.find('=');
    std::string_view k = item.substr(0, eq);
    if (PercentDecode(k) == name) {
      return eq == std::string_view::npos ? std::string() : PercentDecode(item.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return {};
}

bool OriginAllowed(std::string_view origin, std::string_view host,
                   const std::vector<std::string>& allowed) {
  if (origin.empty()) return true;
  for (const std::string& a : allowed) {
    if (a == "*" || a == origin) return true;
  }
  // Same-origin: scheme://HOST[:port] where HOST[:port] equals the Host header.
  size_t sep = origin.find("://");
  if (sep == std::string_view::npos) return false;
  std::string_view scheme = origin.substr(0, sep);
  std::string_view authority = origin.substr(sep + 3);
  if (!authority.empty() && authority.back() == '/') authority.remove_suffix(1);
  if (authority.empty() || host.empty()) return false;
  if (authority == host) return true;
  // Default ports may be omitted on one side.
  auto strip = [](std::string_view hp, std::string_view def) {
    if (hp.ends_with(def)) hp.remove_suffix(def.size());
    return hp;
  };
  std::string_view def = scheme == "https" ? ":443" : ":80";
  return strip(authority, def) == strip(host, def);
}

AuthGuard::AuthGuard(std::string key, int fail_limit, int window_s)
    : key_(std::move(key)), fail_limit_(fail_limit), window_ms_(int64_t{window_s} * 1000) {}

void AuthGuard::Prune(int64_t now_ms) {
  if (now_ms - last_prune_ms_ < window_ms_) return;
  last_prune_ms_ = now_ms;
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.blocked_until_ms <= now_ms && now_ms - it->second.window_start_ms > window_ms_)
      it = entries_.erase(it);
    else
      ++it;
  }
}

bool AuthGuard::Blocked(const std::string& address, int64_t now_ms) {
  Prune(now_ms);
  auto it = entries_.find(address);
  if (it == entries_.end()) return false;
  if (it->second.blocked_until_ms > now_ms) {
    ++blocked_total_;
    return true;
  }
  return false;
}

int AuthGuard::RetryAfterSeconds(const std::string& address, int64_t now_ms) {
  auto it = entries_.find(address);
  if (it == entries_.end() || it->second.blocked_until_ms <= now_ms) return 0;
  return static_cast<int>((it->second.blocked_until_ms - now_ms + 999) / 1000);
}

bool AuthGuard::Check(const std::string& address, std::string_view candidate, int64_t now_ms) {
  if (!enabled()) return true;
  if (ConstantTimeEquals(candidate, key_)) return true;
  ++failures_total_;
  Entry& e = entries_[address];
  if (now_ms - e.window_start_ms > window_ms_) {
    e.window_start_ms = now_ms;
    e.failures = 0;
  }
  if (++e.failures >= fail_limit_) {
    e.blocked_until_ms = now_ms + window_ms_;
    e.failures = 0;
    e.window_start_ms = now_ms;
  }
  return false;
}

}  // namespace dispatch::host
