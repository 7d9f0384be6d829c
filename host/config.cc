// Flags, environment and validation of `dispatch-host serve` (see config.h).
#include "config.h"

#include <arpa/inet.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "log.h"
#include "paths.h"

extern char** environ;

namespace dispatch::host {
namespace {

const char* Getenv(char** env, const char* name) {
  if (env == nullptr) return std::getenv(name);
  size_t n = std::strlen(name);
  for (char** e = env; *e != nullptr; ++e) {
    if (std::strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
  }
  return nullptr;
}

bool ParseInt(std::string_view s, int64_t lo, int64_t hi, int64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (v < lo || v > hi) return false;
  *out = v;
  return true;
}

Status ParseListen(std::string_view s, Config& c) {
  // HOST:PORT, [v6]:PORT, or :PORT / PORT.
  std::string host;
  std::string_view port;
  if (!s.empty() && s.front() == '[') {
    size_t close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':')
      return Status::InvalidArgument("--listen: expected [IPV6]:PORT, got '" + std::string(s) + "'");
    host = std::string(s.substr(1, close - 1));
    port = s.substr(close + 2);
  } else {
    size_t colon = s.rfind(':');
    if (colon == std::string_view::npos) {
      port = s;
    } else {
      host = std::string(s.substr(0, colon));
      port = s.substr(colon + 1);
    }
  }
  int64_t p = 0;
  if (!ParseInt(port, 0, 65535, &p))
    return Status::InvalidArgument("--listen: bad port in '" + std::string(s) + "'");
  if (host.empty()) host = "127.0.0.1";
  c.listen_host = host;
  c.port = static_cast<int>(p);
  return Status::Ok();
}

}  // namespace

const char* ServeUsage() {
  return "usage: dispatch-host [serve] [options]\n"
         "\n"
         "Runs the dispatch reference server: HTTP API and WebSocket (/ws, and\n"
         "Socket.IO v4 at /socket.io/) on one port, sessions stored in SQLite.\n"
         "\n"
         "options (flags win over the environment variable in brackets):\n"
         "  --listen HOST:PORT        address to listen on [DISPATCH_LISTEN]\n"
         "                            (default 127.0.0.1:7070; port 0 = any free port)\n"
         "  --data DIR                data directory, holds DIR/dispatch.db\n"
         "                            [DISPATCH_DATA] (default ./data)\n"
         "  --key KEY                 access key for HTTP and WebSocket [DISPATCH_KEY];\n"
         "                            if unset, one is generated and printed once at\n"
         "                            start. Empty, default-looking or < 16 character\n"
         "                            keys are refused.\n"
         "  --workspaces-root DIR     sessions and workspaces must lie inside DIR\n"
         "                            [DISPATCH_WORKSPACES_ROOT] (default: current dir)\n"
         "  --allow-origin ORIGIN     a WebSocket Origin to accept besides same-origin;\n"
         "                            repeatable [DISPATCH_ALLOW_ORIGINS, comma-separated]\n"
         "  --no-auth                 no key at all; only accepted on a loopback address\n"
         "                            [DISPATCH_NO_AUTH=1]\n"
         "  --log-level LEVEL         debug, info, warn or error [DISPATCH_LOG_LEVEL]\n"
         "                            (default info)\n"
         "  --max-body BYTES          largest HTTP request body (default 1048576);\n"
         "                            larger ones get 413\n"
         "  --client-queue-bytes N    per-WebSocket-client outgoing queue bound\n"
         "                            (default 8388608)\n"
         "  --slow-client POLICY      resync (default: stop queueing, continue from the\n"
         "                            store once the client drains; lossless) or\n"
         "                            disconnect (error slow_client, then close; also\n"
         "                            while the client is still catching up)\n"
         "  --auth-fail-limit N       failed key checks per address per window before\n"
         "                            it is refused with 429 (default 10)\n"
         "  --auth-fail-window SECS   that window, also the block time (default 60)\n"
         "  --ping-interval MS        Socket.IO heartbeat interval (default 25000)\n"
         "  --drain-timeout MS        on SIGTERM/SIGINT, time allowed to flush clients\n"
         "                            (default 5000)\n"
         "  --tls-cert FILE --tls-key FILE\n"
         "                            serve HTTPS/WSS [DISPATCH_TLS_CERT, DISPATCH_TLS_KEY]\n"
         "  -h, --help                this text\n"
         "\n"
         "Open endpoints (no key): GET /health, /live, /ready. Everything else needs\n"
         "'Authorization: Bearer KEY' or '?authKey=KEY' (WebSocket: also client:hello).\n"
         "SIGTERM/SIGINT: stop accepting, tell clients, close sessions, flush, exit 0.\n";
}

Result<ParseOutcome> ParseServeArgs(int argc, char** argv, char** env) {
  ParseOutcome out;
  Config& c = out.config;
  if (env == nullptr) env = environ;

  if (const char* v = Getenv(env, "DISPATCH_LISTEN"); v && *v) {
    if (Status s = ParseListen(v, c); !s.ok())
      return Status::InvalidArgument("DISPATCH_LISTEN: " + s.message());
  }
  if (const char* v = Getenv(env, "DISPATCH_DATA"); v && *v) c.data_dir = v;
  bool key_given = false;
  if (const char* v = Getenv(env, "DISPATCH_KEY"); v != nullptr) {
    c.key = v;
    key_given = true;
  }
  if (const char* v = Getenv(env, "DISPATCH_WORKSPACES_ROOT"); v && *v) c.workspaces_root = v;
  if (const char* v = Getenv(env, "DISPATCH_ALLOW_ORIGINS"); v && *v) {
    std::string_view s = v;
    while (!s.empty()) {
      size_t comma = s.find(',');
      std::string_view item = s.substr(0, comma);
      if (!item.empty()) c.allow_origins.emplace_back(item);
      if (comma == std::string_view::npos) break;
      s.remove_prefix(comma + 1);
    }
  }
  if (const char* v = Getenv(env, "DISPATCH_NO_AUTH"); v && (std::string_view(v) == "1" ||
                                                             std::string_view(v) == "true"))
    c.no_auth = true;
  if (const char* v = Getenv(env, "DISPATCH_LOG_LEVEL"); v && *v) c.log_level = v;
  if (const char* v = Getenv(env, "DISPATCH_TLS_CERT"); v && *v) c.tls_cert = v;
  if (const char* v = Getenv(env, "DISPATCH_TLS_KEY"); v && *v) c.tls_key = v;

  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    std::string_view value;
    bool has_inline = false;
    if (a.starts_with("--")) {
      size_t eq = a.find('=');
      if (eq != std::string_view::npos) {
        value = a.substr(eq + 1);
        a = a.substr(0, eq);
        has_inline = true;
      }
    }
    auto need = [&](std::string_view* v) -> Status {
      if (has_inline) {
        *v = value;
        return Status::Ok();
      }
      if (i + 1 >= argc) return Status::InvalidArgument(std::string(a) + " needs a value");
      *v = argv[++i];
      return Status::Ok();
    };
    auto number = [&](int64_t lo, int64_t hi, int64_t* n) -> Status {
      std::string_view v;
      if (Status s = need(&v); !s.ok()) return s;
      if (!ParseInt(v, lo, hi, n))
        return Status::InvalidArgument(std::string(a) + ": expected a number in [" +
                                       std::to_string(lo) + ", " + std::to_string(hi) +
                                       "], got '" + std::string(v) + "'");
      return Status::Ok();
    };
    std::string_view v;
    int64_t n = 0;
    if (a == "-h" || a == "--help") {
      out.show_help = true;
    } else if (a == "--listen") {
      if (Status s = need(&v); !s.ok()) return s;
      if (Status s = ParseListen(v, c); !s.ok()) return s;
    } else if (a == "--data") {
      if (Status s = need(&v); !s.ok()) return s;
      if (v.empty()) return Status::InvalidArgument("--data: empty directory");
      c.data_dir = std::string(v);
    } else if (a == "--key") {
      if (Status s = need(&v); !s.ok()) return s;
      c.key = std::string(v);
      key_given = true;
    } else if (a == "--workspaces-root") {
      if (Status s = need(&v); !s.ok()) return s;
      if (v.empty()) return Status::InvalidArgument("--workspaces-root: empty directory");
      c.workspaces_root = std::string(v);
    } else if (a == "--allow-origin") {
      if (Status s = need(&v); !s.ok()) return s;
      if (v.empty()) return Status::InvalidArgument("--allow-origin: empty origin");
      c.allow_origins.emplace_back(v);
    } else if (a == "--no-auth") {
      c.no_auth = true;
    } else if (a == "--log-level") {
      if (Status s = need(&v); !s.ok()) return s;
      c.log_level = std::string(v);
    } else if (a == "--max-body") {
      if (Status s = number(1, int64_t{1} << 30, &n); !s.ok()) return s;
      c.max_body_bytes = static_cast<size_t>(n);
    } else if (a == "--client-queue-bytes") {
      if (Status s = number(4096, int64_t{1} << 32, &n); !s.ok()) return s;
      c.client_queue_bytes = static_cast<size_t>(n);
    } else if (a == "--slow-client") {
      if (Status s = need(&v); !s.ok()) return s;
      if (v == "resync") {
        c.slow_client = SlowClientPolicy::kResync;
      } else if (v == "disconnect") {
        c.slow_client = SlowClientPolicy::kDisconnect;
      } else {
        return Status::InvalidArgument("--slow-client: expected resync or disconnect");
      }
    } else if (a == "--auth-fail-limit") {
      if (Status s = number(1, 1000000, &n); !s.ok()) return s;
      c.auth_fail_limit = static_cast<int>(n);
    } else if (a == "--auth-fail-window") {
      if (Status s = number(1, 86400, &n); !s.ok()) return s;
      c.auth_fail_window_s = static_cast<int>(n);
    } else if (a == "--ping-interval") {
      if (Status s = number(100, 3600000, &n); !s.ok()) return s;
      c.ping_interval_ms = static_cast<int>(n);
    } else if (a == "--drain-timeout") {
      if (Status s = number(0, 600000, &n); !s.ok()) return s;
      c.drain_timeout_ms = static_cast<int>(n);
    } else if (a == "--tls-cert") {
      if (Status s = need(&v); !s.ok()) return s;
      c.tls_cert = std::string(v);
    } else if (a == "--tls-key") {
      if (Status s = need(&v); !s.ok()) return s;
      c.tls_key = std::string(v);
    } else {
      return Status::InvalidArgument("unknown option '" + std::string(argv[i]) +
                                     "' (see dispatch-host serve --help)");
    }
  }
  if (key_given && c.key.empty())
    return Status::InvalidArgument("the key is empty (--key / DISPATCH_KEY); refusing to start");
  return out;
}

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  struct in_addr a;
  if (inet_pton(AF_INET, host.c_str(), &a) == 1) {
    return (ntohl(a.s_addr) >> 24) == 127;
  }
  return false;
}

bool IsWeakKey(const std::string& key) {
  if (key.empty()) return true;
  std::string lower;
  for (char ch : key) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  static const char* kKnown[] = {
      "changeme", "change-me", "change_me", "default", "secret", "password", "dispatch",
      "dispatch-key", "admin", "test", "testkey", "test-key", "key", "your-key-here",
      "your_key_here", "yourkey", "replace-me", "12345678", "123456789", "1234567890",
      "0000000000000000", "dev", "development", "letmein", "qwerty", "apikey", "api-key",
      "authkey", "dispatch-secret", "supersecret", "insecure", "none", "null", "undefined"};
  for (const char* k : kKnown)
    if (lower == k) return true;
  // One repeated character ("aaaaaaaaaaaaaaaa").
  if (std::all_of(key.begin(), key.end(), [&](char ch) { return ch == key[0]; })) return true;
  return false;
}

std::string GenerateKey() {
  unsigned char raw[32];
  size_t got = 0;
  while (got < sizeof raw) {
    ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::abort();  // no entropy source at all: never run with a guessable key
    }
    got += static_cast<size_t>(n);
  }
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char b : raw) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += kAlphabet[(acc >> bits) & 63];
    }
  }
  if (bits > 0) out += kAlphabet[(acc << (6 - bits)) & 63];
  return out;
}

Status FinalizeConfig(Config& c) {
  if (!ParseLogLevel(c.log_level))
    return Status::InvalidArgument("--log-level: expected debug, info, warn or error, got '" +
                                   c.log_level + "'");
  if (c.no_auth) {
    if (!IsLoopbackHost(c.listen_host))
      return Status::InvalidArgument("--no-auth is only accepted when listening on loopback (" +
                                     c.listen_host + " is not)");
    c.key.clear();
  } else if (c.key.empty()) {
    c.key = GenerateKey();
    c.key_generated = true;
  } else {
    if (IsWeakKey(c.key))
      return Status::InvalidArgument("the key is empty or a well-known default; refusing to start");
    if (c.key.size() < 16)
      return Status::InvalidArgument("the key is shorter than 16 characters; refusing to start");
  }
  if (c.tls_cert.empty() != c.tls_key.empty())
    return Status::InvalidArgument("--tls-cert and --tls-key go together");
  if (c.workspaces_root.empty()) {
    char buf[PATH_MAX];
    if (getcwd(buf, sizeof buf) == nullptr)
      return Status::InvalidArgument("cannot read the current directory for --workspaces-root");
    c.workspaces_root = buf;
  }
  Result<std::string> root = ResolveExistingDir(c.workspaces_root);
  if (!root.ok())
    return Status::InvalidArgument("--workspaces-root: " + root.status().message());
  c.workspaces_root = *root;
  return Status::Ok();
}

}  // namespace dispatch::host
