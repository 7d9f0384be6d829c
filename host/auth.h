// Access control of dispatch-host: the key check (constant time), where a
// request's key comes from (Authorization: Bearer, ?authKey=), a per-address
// limiter of repeated failures, and the WebSocket Origin check.
//
// Thread-safety: AuthGuard is loop-affine (used on the host's loop thread
// only); the free functions are pure.
#ifndef DISPATCH_HOST_AUTH_H_
#define DISPATCH_HOST_AUTH_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace dispatch::host {

// Compares in time that depends only on the lengths, not on where the
// strings differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// "Bearer KEY" → KEY; empty if the header is not a bearer token.
std::string_view BearerToken(std::string_view authorization_header);

// The value of `name` in a query string "a=1&b=2" (percent-decoded); empty
// if absent.
std::string QueryParam(std::string_view query, std::string_view name);

// Percent-decodes (and '+' → ' '); invalid escapes are kept literally.
std::string PercentDecode(std::string_view s);

// Origin check for WebSocket upgrades: no Origin header (non-browser
// clients) is accepted; same-origin (Origin's host:port equals Host) is
// accepted; otherwise the Origin must be in `allowed` exactly (or "*").
bool OriginAllowed(std::string_view origin, std::string_view host,
                   const std::vector<std::string>& allowed);

class AuthGuard {
 public:
  // `key` empty = authentication disabled (--no-auth).
  AuthGuard(std::string key, int fail_limit, int window_s);

  bool enabled() const { return !key_.empty(); }
  // True if `address` is blocked now (too many recent failures).
  bool Blocked(const std::string& address, int64_t now_ms);
  // Checks `candidate`; records a failure for `address` when wrong.
  bool Check(const std::string& address, std::string_view candidate, int64_t now_ms);
  // Seconds until `address` may try again (for Retry-After).
  int RetryAfterSeconds(const std::string& address, int64_t now_ms);
  int64_t failures_total() const { return failures_total_; }
  int64_t blocked_total() const { return blocked_total_; }

 private:
  struct Entry {
    int64_t window_start_ms = 0;
    int failures = 0;
    int64_t blocked_until_ms = 0;
  };
  void Prune(int64_t now_ms);

  std::string key_;
  int fail_limit_;
  int64_t window_ms_;
  std::unordered_map<std::string, Entry> entries_;
  int64_t last_prune_ms_ = 0;
  int64_t failures_total_ = 0;
  int64_t blocked_total_ = 0;
};

}  // namespace dispatch::host

#endif  // DISPATCH_HOST_AUTH_H_
