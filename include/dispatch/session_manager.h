// RunSessionManager: runs live sessions and records everything they do.
//
// The manager owns the live sessions of one process and a registry of
// adapters by kind ("pty", "claude", "file", or kinds you register; see
// dispatch/ext/session_adapter.h). Every event a session produces goes through
// it: appended to the EventStore (group-committed with other sessions'
// events), then — only once committed, in seq order — handed to the after-event
// hooks and published on the manager's EventBus.
//
// Lifecycle of a session, as events on its run (DESIGN §2):
//   system:status/created  {kind, workspace, options}   status "starting"
//   system:status/started  {…adapter's Describe()}       status "running"
//   …the adapter's events (pty:stdout/chunk, pty:stdin/input, …)
//   system:status/closed   {exitCode, signal[, error]}   status "stopped"
//                                                         (or "error")
//   system:status/error    {message}  when Start fails    status "error"
//   system:status/orphaned {previousStatus, reason} when a manager opens a
//                          store in which the session was left running
//                          (the process that ran it is gone); status
//                          "stopped". Resume() restarts kinds that can.
// The status in the store's sessions table (Catalog) follows these events.
//
// Threading: the manager is loop-affine on one libuv loop — the embedder's
// (ManagerOptions::loop) or one it runs on its own thread. Post() is the one
// thread-safe entry point; every other method is a thread-safe convenience
// that runs inline when called on the loop thread and otherwise posts to the
// loop and waits for the result. Callbacks (bus handlers, hooks, the error
// handler) run on the loop thread. (A pty session that floods output is read
// by a helper thread of its own, which only reads; its events are still
// emitted, committed and delivered from the loop, in order.) See
// doc/threading.md.
//
// Thread-safety: thread-safe through Post(); all other methods are
// convenience wrappers over it (blocking when called off the loop thread).
#ifndef DISPATCH_SESSION_MANAGER_H_
#define DISPATCH_SESSION_MANAGER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/catalog.h"
#include "dispatch/event.h"
#include "dispatch/event_bus.h"
#include "dispatch/event_store.h"
#include "dispatch/export.h"
#include "dispatch/ext/session_adapter.h"
#include "dispatch/status.h"

struct uv_loop_s;  // libuv's uv_loop_t, not included in public headers

namespace dispatch {

struct ManagerOptions {
  // Required. Borrowed: the store must outlive the manager.
  EventStore* store = nullptr;
  // The embedder's loop (borrowed; must outlive the manager), or null for a
  // loop the manager runs on its own thread. With an embedder's loop, create
  // and destroy the manager on the loop's thread, and after destroying it run
  // the loop until its handles are closed before uv_loop_close.
  uv_loop_s* loop = nullptr;
  // Required. Every session workspace must resolve (realpath, symlinks
  // included) inside this directory, compared by path component (DESIGN §6).
  std::string workspaces_root;
  // Backpressure, per session: above `max_pending_bytes` of events not yet
  // committed and delivered, the session is paused (pty reads stop); it
  // resumes below `resume_pending_bytes`.
  size_t max_pending_bytes = size_t{4} << 20;
  size_t resume_pending_bytes = size_t{1} << 20;
  // Consecutive output events are coalesced up to this size while an append
  // of the session is in flight (chunks of 64 KiB or more are not copied
  // into another event: they stay events of their own).
  size_t max_coalesce_bytes = size_t{1} << 20;
  // Close(): how long a graceful stop may take before it is forced.
  int close_timeout_ms = 3000;
  // Register the built-in kinds ("pty", and "claude"/"file" when built in).
  bool register_builtin_adapters = true;
  // Mark sessions left "starting"/"running" in the store as orphaned on start.
  bool mark_orphans = true;
  // Loop-side failures that have no caller to return to (a failed append of
  // a session's events, a failed catalog write). Runs on the loop thread.
  std::function<void(std::string_view run_id, const Status& error)> on_error;
};

// What CreateSession needs.
struct SessionConfig {
  std::string kind = "pty";
  // The workspace: a path relative to the workspaces root, or an absolute
  // path inside it; empty = the root itself. Must exist and be a directory.
  std::string workspace;
  // Adapter options, a JSON object text (pty: shell, args, env, cols, rows).
  std::string options_json = "{}";
  // The run id; empty = generated ("<kind>-<random hex>"). Must be a valid
  // run id (DESIGN §2) not used by a live session or an existing record.
  std::string run_id;
};

struct SessionInfo {
  std::string run_id;
  std::string kind;
  SessionStatus status = SessionStatus::kStarting;
  std::string workspace;        // canonical path
  std::string description = "{}";  // the adapter's Describe() (e.g. pid)
  int64_t last_seq = 0;         // last committed seq seen by the manager
  size_t pending_bytes = 0;     // emitted, not yet committed and delivered
  bool paused = false;          // backpressure is holding the session
  bool closing = false;         // Close() was called, not finished
};

struct CloseOptions {
  // Graceful stop timeout before the stop is forced; < 0 = the manager's.
  int timeout_ms = -1;
  // Skip the graceful step.
  bool force = false;
};

struct ManagerStats {
  int64_t live_sessions = 0;
  int64_t sessions_created = 0;
  int64_t events_emitted = 0;       // events adapters handed to the manager
  int64_t events_committed = 0;     // events committed and published
  int64_t bytes_committed = 0;      // payload bytes of those
  int64_t appends = 0;              // AppendAsync calls (after coalescing)
  int64_t append_errors = 0;
  int64_t pauses = 0;               // times a session was paused
  int64_t pending_bytes = 0;        // over all sessions, now
};

// before:create middleware: return a non-OK Status to veto the creation; its
// message is the reason given to the caller (and nothing is recorded).
using BeforeCreateHook = std::function<Status(const SessionConfig& config)>;
// after:event middleware: sees every committed event, in order, before the
// bus. The view is valid only during the call.
using AfterEventHook = std::function<void(const EventView& event)>;

class DISPATCH_EXPORT RunSessionManager {
 public:
  // Makes a manager (starting its own loop thread when options.loop is null)
  // and, when mark_orphans is set, marks sessions the store shows as left
  // running as orphaned. Errors: InvalidArgument (no store, bad root),
  // IOError, or the store's errors.
  static Result<std::unique_ptr<RunSessionManager>> Create(const ManagerOptions& options);

  // Ends every live session at once (SIGKILL, no zombies), stops delivering
  // and, with its own loop, joins the loop thread. For a graceful end call
  // Shutdown() first. With an embedder's loop, destroy on the loop thread.
  virtual ~RunSessionManager() = default;
  RunSessionManager(const RunSessionManager&) = delete;
  RunSessionManager& operator=(const RunSessionManager&) = delete;

  // THE thread-safe entry point: runs `task` on the loop thread soon (never
  // inside this call). Fails Closed once the manager is shutting down.
  virtual Status Post(std::function<void()> task) = 0;
  // True on the manager's loop thread.
  virtual bool OnLoopThread() const = 0;
  // The loop the manager runs on.
  virtual uv_loop_s* loop() const = 0;

  // Adds (or replaces) the factory of a kind.
  virtual Status RegisterAdapter(std::string kind, AdapterFactory factory) = 0;

  // Middleware, run on the loop thread in the order added.
  virtual void AddBeforeCreateHook(BeforeCreateHook hook) = 0;
  virtual void AddAfterEventHook(AfterEventHook hook) = 0;

  // Creates and starts a session; returns its run id once it is started
  // (its `created` and `started` events are queued, not necessarily
  // committed). Errors: InvalidArgument (unknown kind, bad options, bad run
  // id, workspace outside the root), NotFound (workspace missing), Conflict
  // (run id taken), the hook's veto, or the adapter's Start error (the
  // session then exists with status "error").
  virtual Result<std::string> CreateSession(const SessionConfig& config) = 0;

  // Restarts a stopped/orphaned session of a kind that can resume, with the
  // same run id (its seq continues). Errors: NotFound, Conflict (still live),
  // InvalidArgument (the kind cannot resume).
  virtual Status Resume(std::string_view run_id) = 0;

  // Sends input to a live session. NotFound if it is not live.
  virtual Status Input(std::string_view run_id, std::string data,
                       Encoding encoding = Encoding::kBytes) = 0;
  // Resizes a live session's terminal.
  virtual Status Resize(std::string_view run_id, int cols, int rows) = 0;
  // A kind-specific command (interrupt, file operations); returns the reply.
  virtual Result<std::string> Command(std::string_view run_id, SessionCommand command) = 0;

  // Begins closing a live session: graceful stop, forced after the timeout.
  // Returns once the close has begun; the `closed` event marks the end.
  // NotFound if it is not live.
  virtual Status Close(std::string_view run_id, const CloseOptions& options = {}) = 0;
  // Closes (forced) if live, then removes the session's record from the
  // catalog. Its events stay in the store (retention removes them).
  virtual Status Destroy(std::string_view run_id) = 0;
  // Closes every live session gracefully and waits up to `timeout_ms` for
  // their `closed` events to be committed; afterwards new sessions are
  // refused (Closed). Must not be called on the loop thread of an embedder's
  // loop (it would wait on itself): there, use Close per session.
  virtual Status Shutdown(int timeout_ms = 5000) = 0;

  // A live session, or NotFound.
  virtual Result<SessionInfo> GetSession(std::string_view run_id) = 0;
  // The live sessions, by run id.
  virtual std::vector<SessionInfo> ListSessions() = 0;
  // Blocks until every event emitted so far by `run_id` (every session when
  // empty) is committed and delivered, or the timeout passes (Timeout). Not
  // on the loop thread.
  virtual Status WaitIdle(std::string_view run_id = {}, int timeout_ms = 10000) = 0;

  // The bus on which committed events are published (handlers run on the
  // loop thread). Valid as long as the manager.
  virtual EventBus& bus() = 0;
  // Shortcut for bus().Subscribe(pattern, handler, {run_id}).
  BusSubscriptionId Subscribe(std::string pattern, BusHandler handler, std::string run_id = {}) {
    BusSubscribeOptions o;
    o.run_id = std::move(run_id);
    return bus().Subscribe(std::move(pattern), std::move(handler), std::move(o));
  }

  virtual ManagerStats Stats() = 0;

 protected:
  RunSessionManager() = default;
};

}  // namespace dispatch

#endif  // DISPATCH_SESSION_MANAGER_H_
