// Configuration of `dispatch-host serve`: command-line flags, the
// DISPATCH_* environment variables they fall back to, validation, and the
// --help text. Flags win over the environment, the environment over defaults.
//
// Thread-safety: plain values and pure functions.
#ifndef DISPATCH_HOST_CONFIG_H_
#define DISPATCH_HOST_CONFIG_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "dispatch/status.h"

namespace dispatch::host {

// What to do with a WebSocket client whose outgoing queue is full.
enum class SlowClientPolicy {
  kResync,      // stop queueing; when it drains, continue from the store (lossless)
  kDisconnect,  // send error slow_client and close the connection
};

struct Config {
  std::string listen_host = "127.0.0.1";
  int port = 7070;
  std::string data_dir = "./data";      // holds dispatch.db
  std::string key;                      // empty until resolved
  bool key_generated = false;           // true if generated at start-up
  std::string workspaces_root;          // resolved absolute path
  std::vector<std::string> allow_origins;
  bool no_auth = false;
  std::string log_level = "info";
  size_t max_body_bytes = size_t{1} << 20;        // HTTP request bodies
  size_t max_ws_message_bytes = size_t{1} << 20;  // one incoming WebSocket message
  size_t client_queue_bytes = size_t{8} << 20;    // per WebSocket client
  SlowClientPolicy slow_client = SlowClientPolicy::kResync;
  int auth_fail_limit = 10;          // failures per address per window
  int auth_fail_window_s = 60;       // window and block time
  int ping_interval_ms = 25000;      // Engine.IO heartbeat
  int drain_timeout_ms = 5000;       // SIGTERM: max time to flush clients
  std::string tls_cert;              // PEM; TLS when both set
  std::string tls_key;

  std::string db_path() const { return data_dir + "/dispatch.db"; }
};

// The --help text.
const char* ServeUsage();

// What ParseServeArgs decided.
struct ParseOutcome {
  Config config;
  bool show_help = false;
};

// Parses argv (argv[0] is the subcommand name) and the environment `env`
// (nullptr = the process environment). Does not touch the file system.
// InvalidArgument with a message naming the bad flag or value.
Result<ParseOutcome> ParseServeArgs(int argc, char** argv, char** env = nullptr);

// Checks the combination and fills derived fields: generates a key if none
// was given (key_generated = true), refuses empty/known-default/short keys,
// refuses --no-auth off loopback, resolves and checks the workspaces root
// (default: the current directory). InvalidArgument on a bad combination.
Status FinalizeConfig(Config& config);

// True for 127.0.0.0/8, ::1 and "localhost".
bool IsLoopbackHost(const std::string& host);

// 32 random bytes from the kernel, as 43 url-safe base64 characters.
std::string GenerateKey();

// True for keys that must never be accepted (empty, well-known defaults).
bool IsWeakKey(const std::string& key);

}  // namespace dispatch::host

#endif  // DISPATCH_HOST_CONFIG_H_
