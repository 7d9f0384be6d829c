// SessionAdapter: what a session kind implements (pty, claude, file, yours).
//
// EXTENSION INTERFACE — less stable than the headers in include/dispatch/:
// it may change between minor versions while the runtime settles.
//
// An adapter drives one session: a child process, a remote agent, or no
// process at all (a file editor). The RunSessionManager creates it with a
// factory registered for its kind, hands it a SessionContext, and from then
// on calls it only on the manager's loop thread. The adapter reports what
// happens as events through the context; the manager appends them to the
// store (group-committed) and fans them out only once they are committed.
//
// Lifecycle, as the manager drives it:
//   1. factory(spec)            → the adapter (or an error: the session fails)
//   2. Start(ctx)               → spawn / open; an error fails the session
//                                 (system:status/error, status "error")
//   3. Input / Resize / Command → any number of times, while running
//   4. Stop(false)              → end gracefully (e.g. SIGHUP the process
//                                 group); Stop(true) after the manager's close
//                                 timeout → end now (SIGKILL)
//   5. ctx.ReportExit(info)     → the adapter says it is over (at any time,
//                                 also unasked, when the process exits).
//                                 The manager records system:status/closed and
//                                 destroys the adapter later, never inside an
//                                 adapter call.
// The destructor may also run without steps 4–5 (manager shutdown): it must
// then end any process at once (SIGKILL + reap, no zombie) and uv_close every
// handle it opened, freeing handle memory in the close callbacks rather than
// with the adapter object.
//
// Thread-safety: loop-affine. The manager calls every method on its loop
// thread; the adapter calls SessionContext only from that thread.
#ifndef DISPATCH_EXT_SESSION_ADAPTER_H_
#define DISPATCH_EXT_SESSION_ADAPTER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "dispatch/event.h"
#include "dispatch/export.h"
#include "dispatch/status.h"

struct uv_loop_s;  // libuv's uv_loop_t, not included in public headers

namespace dispatch {

// What the factory and Start receive about the session.
struct SessionSpec {
  std::string run_id;
  std::string kind;
  // The workspace directory: canonical (realpath) and confined under the
  // manager's workspaces root. The cwd of any process the adapter starts.
  std::string workspace;
  // The adapter's options as given to CreateSession: a JSON object text.
  std::string options_json = "{}";
  // The session record's meta (a JSON object text) as last stored. On resume
  // it holds what the adapter saved with SessionContext::UpdateMeta (e.g. a
  // Claude conversation id).
  std::string meta_json = "{}";
  // True when the manager resumes an existing (stopped or orphaned) session
  // rather than creating a new one. Kinds that cannot resume fail Start with
  // InvalidArgument.
  bool resume = false;
};

// A generic command to an adapter: the "control" path (Claude interrupt,
// file operations, anything kind-specific). `name` is the command
// ("interrupt", "write", "read", …); `payload` its argument, usually JSON.
struct SessionCommand {
  std::string name;
  std::string payload = "{}";
  Encoding encoding = Encoding::kJson;
};

// How a session ended, for system:status/closed {exitCode, signal}.
struct ExitInfo {
  int exit_code = 0;   // the process's exit status (0 when killed by a signal)
  int signal = 0;      // the signal that killed it, 0 if none
  // Non-empty when the session ended by a failure of its own (spawn failed,
  // protocol error…): recorded as "error" in the payload and the session's
  // status becomes "error" instead of "stopped".
  std::string error;
};

// The manager's side, as an adapter sees it. Valid from Start until the
// adapter is destroyed. Every method must be called on the loop thread.
class DISPATCH_EXPORT SessionContext {
 public:
  virtual ~SessionContext() = default;

  virtual const SessionSpec& spec() const = 0;
  // The manager's loop: open uv handles (timers, polls, processes) on it.
  virtual uv_loop_s* loop() const = 0;

  // Records an event of this session. The manager sets ts (when 0), appends
  // it in order with the session's other events and publishes it once it is
  // committed. Fails Closed after ReportExit; InvalidArgument for a bad
  // channel/type, a payload over kMaxPayloadBytes, invalid JSON under
  // Encoding::kJson, or the channel "system:status" (the manager's own).
  virtual Status Emit(NewEvent event) = 0;

  // The same for bulk output (terminal bytes): while an earlier append of the
  // session is in flight, consecutive output events with the same channel,
  // type and encoding (not kJson) and no id are coalesced into one (payloads
  // concatenated, the first one's ts kept), so a flood becomes few large
  // events while a lone event is appended at once.
  virtual Status EmitOutput(NewEvent event) = 0;

  // Merges the top-level keys of `json_object` into the session record's
  // meta (and SessionSpec::meta_json of a later resume). Written by a
  // background writer, in order; InvalidArgument if not a JSON object.
  virtual Status UpdateMeta(std::string_view json_object) = 0;

  // Bytes of this session's events emitted but not yet committed and
  // delivered. Above the manager's bound it calls SetPaused(true) on the
  // adapter; below the resume mark SetPaused(false). Adapters that produce
  // output without a process to pause may poll this.
  virtual size_t pending_bytes() const = 0;

  // The session is over (the process exited and its output was drained, or
  // the adapter gave up). Call once; later Emit calls fail Closed. The
  // manager appends system:status/closed after everything emitted before.
  virtual void ReportExit(const ExitInfo& info) = 0;

 protected:
  SessionContext() = default;
};

class DISPATCH_EXPORT SessionAdapter {
 public:
  virtual ~SessionAdapter() = default;
  SessionAdapter(const SessionAdapter&) = delete;
  SessionAdapter& operator=(const SessionAdapter&) = delete;

  // Starts the session. `ctx` outlives the adapter's use of it (until the
  // adapter is destroyed). Return an error to fail the session; the adapter
  // is then destroyed without Stop.
  virtual Status Start(SessionContext& ctx) = 0;

  // A JSON object describing the running session for the `started` event and
  // SessionInfo (e.g. {"pid":1234}). Called after a successful Start.
  virtual std::string Describe() const { return "{}"; }

  // Input from a user: keystrokes for a pty, a user message for Claude.
  // The adapter records it (e.g. pty:stdin/input) as it sees fit.
  virtual Status Input(std::string_view data, Encoding encoding) = 0;

  // Terminal size. Kinds without one return InvalidArgument.
  virtual Status Resize(int cols, int rows) {
    (void)cols;
    (void)rows;
    return Status::InvalidArgument("this session kind has no terminal size");
  }

  // A kind-specific command (interrupt, file operations…). Returns a reply
  // (JSON text, "{}" when there is nothing to say) or an error; unknown
  // commands fail InvalidArgument.
  virtual Result<std::string> Command(const SessionCommand& command) {
    return Status::InvalidArgument("unknown command '" + command.name + "' for this session kind");
  }

  // Ends the session: gracefully, or at once when `force`. Must lead to
  // ctx.ReportExit (possibly later, from a callback). May be called again
  // with force = true after a timeout.
  virtual void Stop(bool force) = 0;

  // Backpressure: stop producing output (e.g. uv_read_stop) while paused.
  virtual void SetPaused(bool paused) { (void)paused; }

 protected:
  SessionAdapter() = default;
};

// Makes an adapter for one session. Runs on the loop thread. May return an
// error (InvalidArgument for bad options) that fails CreateSession.
using AdapterFactory =
    std::function<Result<std::unique_ptr<SessionAdapter>>(const SessionSpec& spec)>;

}  // namespace dispatch

#endif  // DISPATCH_EXT_SESSION_ADAPTER_H_
