// The Claude Code CLI's streaming JSON protocol, as pure functions: splitting
// stdout into lines, reading a line by key, building the stdin lines (user
// message, control request), and building the argv from the adapter's
// options. No I/O here, so every piece is testable on its own; the adapter
// (claude_adapter.cc) wires it to the child process.
//
// The protocol is recorded in tests/fixtures/claude-cli/ (see its README).
//
// Thread-safety: plain functions and values; LineSplitter is not shared.
#ifndef DISPATCH_LIB_ADAPTERS_CLAUDE_PROTOCOL_H_
#define DISPATCH_LIB_ADAPTERS_CLAUDE_PROTOCOL_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/adapters/claude.h"
#include "dispatch/event.h"
#include "dispatch/status.h"

namespace dispatch::internal::claude {

// Splits a byte stream into '\n'-terminated lines (a trailing '\r' is kept:
// the CLI never writes one, and the raw line is recorded as it came). A line
// longer than `max_line_bytes` is not buffered whole: its first
// `max_line_bytes` bytes are delivered with `truncated` set and `total` its
// full length, once its end is seen; the rest is dropped.
class LineSplitter {
 public:
  // `line` is valid only during the call.
  using LineFn = std::function<void(std::string_view line, bool truncated, size_t total)>;

  explicit LineSplitter(size_t max_line_bytes) : max_(max_line_bytes) {}

  void Feed(std::string_view data, const LineFn& on_line);
  // At end of stream: delivers an unterminated last line, if any.
  void Finish(const LineFn& on_line);
  size_t buffered() const { return buf_.size(); }

 private:
  size_t max_;
  std::string buf_;
  size_t overflow_ = 0;  // bytes dropped from the current line
};

// What the adapter needs from one stdout line, read by key (key order varies
// between CLI versions and message kinds).
struct ParsedLine {
  bool json = false;       // the line is one valid JSON value
  bool object = false;     // ... and it is an object
  std::string type;        // "system", "assistant", "result", … ("" if none)
  std::string subtype;     // "init", "success", "error_max_turns", … ("" if none)
  bool is_error = false;   // result: the real error flag (subtype may say success)
  std::string session_id;  // the conversation id, when the line carries one
  std::string request_id;  // control_request / control_response id
  std::string error;       // parse error text (json == false), or the result's
                           // first "errors" entry / "result" text when is_error
};

// Parses one stdout line (without its '\n'). Never fails: a line that is not
// JSON comes back with json == false and the parser's message in `error`.
ParsedLine ParseLine(std::string_view line);

// True when `type` may be used as an event type ([A-Za-z0-9._:/-], 1–64).
bool IsSafeEventType(std::string_view type);

// The stdin line (with '\n') for a user message. `data` is the message
// content: with Encoding::kJson a JSON string (text) or array (content
// blocks); with kText or kBytes UTF-8 text. InvalidArgument for invalid JSON,
// a JSON value of another kind, or invalid UTF-8.
Result<std::string> BuildUserLine(std::string_view data, Encoding encoding);

// The stdin line (with '\n') of a control request:
// {"type":"control_request","request_id":ID,"request":{"subtype":SUBTYPE,...fields}}
// `fields_json` is a JSON object text whose keys are added to "request"
// (may be empty). InvalidArgument if it is not a JSON object.
Result<std::string> BuildControlRequest(std::string_view request_id, std::string_view subtype,
                                        std::string_view fields_json = {});

// The stdin line (with '\n') answering a control request of the CLI
// (e.g. can_use_tool): {"type":"control_response","response":{"subtype":
// "success","request_id":ID,"response":RESPONSE}}. InvalidArgument if
// `response_json` is not a JSON object.
Result<std::string> BuildControlResponse(std::string_view request_id,
                                         std::string_view response_json);

// Parses the adapter's options (a JSON object text; see ClaudeOptions for
// the keys). InvalidArgument names the offending key.
Result<ClaudeOptions> ParseOptions(std::string_view options_json);

// The CLI's argv after the program name: the fixed streaming flags, the
// options, then --session-id=<id> (new conversation) or --resume=<id>.
std::vector<std::string> BuildArgs(const ClaudeOptions& options, std::string_view conversation_id,
                                   bool resume);

// A random (version 4) UUID, lower-case, from the OS's random source.
std::string NewUuid();
// True for the 8-4-4-4-12 hex form.
bool IsUuid(std::string_view s);

// The text of the CLI's stderr line for an unknown conversation, if `text`
// contains it ("No conversation found with session ID: …").
bool IsUnknownConversationError(std::string_view text);

}  // namespace dispatch::internal::claude

#endif  // DISPATCH_LIB_ADAPTERS_CLAUDE_PROTOCOL_H_
