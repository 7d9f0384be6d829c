// The Claude Code session kind ("claude"): drives the `claude` CLI as a
// long-lived child process in streaming JSON mode, the way Anthropic's Agent
// SDKs do, and records every line it prints as an event.
//
// Events of a claude session (besides the manager's system:status ones):
//   claude:message/<line type>  every stdout line (system, assistant, user,
//                               result, stream_event, control_request, …),
//                               payload = the line's bytes exactly, encoding
//                               json; unknown types are recorded the same way
//   claude:input/user           a user message as written to the CLI's stdin
//   claude:input/control_request, claude:input/control_response
//                               control lines written to stdin (interrupt, …)
//   claude:process/spawned      {pid, argv, cwd, conversationId, resume}
//   claude:process/exited       {exitCode, signal, stderr, results, midTurn}
//   claude:error/<kind>         something went wrong, payload JSON with
//                               "message": spawn_failed, invalid_json (the raw
//                               line kept in "raw"), line_too_long,
//                               result_error (is_error results, also when the
//                               subtype says "success"), aborted (the process
//                               died mid-turn with no result),
//                               unknown_conversation (resume of an id the CLI
//                               does not know), stdin_write_failed
// See doc/adapters.md for the payloads and the commands (interrupt, …).
//
// Thread-safety: ClaudeOptions is a plain value; the factory is called by the
// RunSessionManager on its loop thread.
#ifndef DISPATCH_ADAPTERS_CLAUDE_H_
#define DISPATCH_ADAPTERS_CLAUDE_H_

#include <map>
#include <string>
#include <vector>

#include "dispatch/export.h"
#include "dispatch/ext/session_adapter.h"

namespace dispatch {

// Options of a claude session. On the wire (CreateSession's options JSON)
// each field is the key of the same name; unknown keys are refused.
struct ClaudeOptions {
  // The CLI program. Empty: $DISPATCH_CLAUDE_BIN if set, else `claude` on PATH.
  std::string bin;
  std::string model;                        // --model
  std::string permission_mode;              // --permission-mode (default, acceptEdits, plan…)
  std::vector<std::string> allowed_tools;   // --allowedTools (comma-joined)
  std::vector<std::string> disallowed_tools;  // --disallowedTools (comma-joined)
  std::string append_system_prompt;         // --append-system-prompt
  int max_turns = 0;                        // --max-turns; 0 = the CLI's default
  bool include_partial_messages = false;    // --include-partial-messages
  std::string mcp_config;                   // --mcp-config (a path or JSON text)
  std::string permission_prompt_tool;       // --permission-prompt-tool (e.g. "stdio")
  std::vector<std::string> extra_args;      // appended verbatim before --session-id
  std::map<std::string, std::string> env;   // merged over the host's environment
  // Shutdown, like the SDKs: close stdin, wait close_grace_ms for the turn to
  // finish and the CLI to exit, then SIGTERM, wait term_grace_ms, SIGKILL.
  int close_grace_ms = 5000;
  int term_grace_ms = 2000;
};

// The options as the JSON object CreateSession takes (default fields left out).
DISPATCH_EXPORT std::string ClaudeOptionsToJson(const ClaudeOptions& options);

// The factory to register for kind "claude". Resumable: a resumed session
// relaunches the CLI with --resume=<conversation id> from the same workspace.
DISPATCH_EXPORT AdapterFactory ClaudeAdapterFactory();

}  // namespace dispatch

#endif  // DISPATCH_ADAPTERS_CLAUDE_H_
