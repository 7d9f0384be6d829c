// EventStore: the durable, append-only log of every session. Start here.
//
// A store holds many runs (streams). Each run is a sequence of immutable
// events numbered 1, 2, 3, … with no gaps, plus a store-wide `position` that
// grows in commit order. Writers append batches (all or nothing, optionally
// guarded by an expected last seq and deduplicated by idempotency ids);
// readers read from a cursor or subscribe (backlog, then live, with no gap and
// no duplicate at the hand-over). Appends from many threads are group-committed:
// an append returns, or calls back, only once its events are committed, and
// subscribers only ever see committed events.
//
// The default backend is SQLite in one file (EventStore::Open). The interface
// assumes nothing about SQL; other backends implement it (see ext/).
//
// Thread-safety: EventStore is thread-safe. Every method may be called from
// any thread at any time. Callbacks (append completions, subscriptions) run on
// store-owned threads and must not block for long. The one exception is an
// AppendAsync with AppendOptions::commit_inline: its callback may run on the
// calling thread, before AppendAsync returns.
#ifndef DISPATCH_EVENT_STORE_H_
#define DISPATCH_EVENT_STORE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/catalog.h"
#include "dispatch/event.h"
#include "dispatch/export.h"
#include "dispatch/status.h"

namespace dispatch {

enum class Durability : uint8_t {
  kNormal,  // survives a crash of the process (default)
  kFull,    // also survives power loss: fsync on every group commit
};

struct StoreOptions {
  // A file path, or ":memory:" for a private store that is removed when
  // closed (kept in a temp file under $TMPDIR, so that it behaves exactly
  // like a file store: readers run beside the writer).
  std::string path;
  Durability durability = Durability::kNormal;
  // Open without writing anything (tools, exports). Appends fail ReadOnly.
  bool read_only = false;
  // Create the file if it does not exist (ignored when read_only).
  bool create_if_missing = true;
  // Upper bound of events in one group commit; more wait for the next.
  size_t max_group_events = 65536;
  // How long a write waits for a database lock held by another process.
  int busy_timeout_ms = 5000;
  // This process is the file's only writer (other processes may read). A
  // writable open takes a lock file (`<path>-lock`): an exclusive open fails
  // with kBusy while any other process has the store open for writing, and a
  // writable open fails with kBusy while another process holds it
  // exclusively. In return, a small commit_inline append whose run already
  // exists is made durable by one store into the (mapped) append journal
  // (`<path>-append.log`) instead of a SQLite transaction (a few µs instead
  // of tens), and copied into SQLite by the writer thread shortly after
  // (within ~20 ms of the writer being idle, before any read of this store,
  // and at Flush and Close). Readers of this store see every acknowledged
  // event; other processes reading the file see it once copied. With
  // Durability::kFull the lock is taken but appends commit as usual (the
  // journal would need an fsync each); ignored with read_only. A writable
  // open first inserts whatever a previous exclusive writer left only in the
  // journal. doc/storage.md.
  bool exclusive = false;
};

struct AppendOptions {
  // If set, the append succeeds only if the run's last seq equals this value
  // (0 = the run must be empty). A mismatch fails with kConflict and writes
  // nothing. Ignored when every event of the batch is a duplicate by id.
  std::optional<int64_t> expected_last_seq;
  // AppendAsync only: if the writer is idle and nothing is queued, the
  // calling thread commits this append itself and `done` runs on it before
  // AppendAsync returns; otherwise it is queued as usual. For small,
  // latency-bound appends (a keystroke's echo): it saves the two thread
  // hand-offs of a queued commit, at the price of the caller doing the
  // commit's work (tens of µs; an fsync with Durability::kFull). The caller
  // must not hold a lock that `done` takes. Group commit is unaffected:
  // appends arriving meanwhile queue up and the writer takes them next.
  bool commit_inline = false;
  // If set, a successful append hands its events back in
  // AppendResult::events (moved, in input order, duplicates included), so a
  // caller that needs them after the commit (to publish them) need not keep
  // a copy of a large batch.
  bool return_events = false;
};

struct AppendResult {
  // The seq of each input event, in input order. A duplicate (same id as an
  // event already stored, or earlier in the same batch) reports the original.
  std::vector<int64_t> seqs;
  int64_t first_seq = 0;   // first newly written seq (0 if nothing was written)
  // Global position of first_seq (0 if nothing was written). The newly
  // written events are contiguous: seq first_seq + k has position
  // first_position + k.
  int64_t first_position = 0;
  int64_t last_seq = 0;    // the run's last seq after this append
  int64_t written = 0;     // events newly written
  int64_t duplicates = 0;  // events skipped as duplicates by id
  // With AppendOptions::return_events: the events appended (else empty).
  std::vector<NewEvent> events;
};

using AppendCallback = std::function<void(Result<AppendResult>)>;

struct ReadOptions {
  size_t limit = SIZE_MAX;  // at most this many events
};

struct ReadSummary {
  int64_t count = 0;     // events handed to the visitor
  int64_t last_seq = 0;  // seq (or position, for ReadAll) of the last one; else the cursor
  bool stopped = false;  // the visitor asked to stop
};

// Called once per event, in order. Return false to stop reading. The view is
// valid only during the call.
using EventVisitor = std::function<bool(const EventView&)>;

struct RunInfo {
  std::string run_id;
  int64_t first_seq = 1;  // earliest seq still stored (retention moves it up)
  int64_t last_seq = 0;   // 0 when the run has no events yet
  int64_t event_count = 0;
  int64_t payload_bytes = 0;
  int64_t created_us = 0;
  int64_t updated_us = 0;
};

// What the subscriber is told. All three run on the subscription's own
// thread, one at a time, in order.
struct SubscriptionHandlers {
  // Every event after the cursor, in order, exactly once.
  std::function<void(const EventView&)> on_event;
  // Once, when the backlog (everything committed when the subscription was
  // made) has been delivered; `seq` is the last one delivered (or the cursor).
  std::function<void(int64_t seq)> on_caught_up;
  // Once, if the subscription ends by itself: the store closed (kClosed), the
  // subscriber fell too far behind under LagPolicy::kFail (kBusy), a read
  // failed. No further callbacks follow.
  std::function<void(const Status&)> on_error;
};

enum class LagPolicy : uint8_t {
  // Drop the in-memory queue and continue from the store: slower, never lossy.
  kReadFromStore,
  // End the subscription with kBusy ("subscriber cannot keep up").
  kFail,
};

struct SubscribeOptions {
  // Live events buffered in memory for this subscriber before LagPolicy applies.
  size_t max_queued_events = 65536;
  LagPolicy lag_policy = LagPolicy::kReadFromStore;
};

// A live subscription. Destroying it (or Cancel()) stops delivery: once
// Cancel returns no callback is running or will run — except when called from
// inside one of this subscription's own callbacks, which is allowed and then
// takes effect as soon as that callback returns.
class DISPATCH_EXPORT Subscription {
 public:
  virtual ~Subscription() = default;
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  virtual void Cancel() = 0;
  // The last seq (or position) delivered so far.
  virtual int64_t cursor() const = 0;
  // How many times this subscriber fell behind and was moved to store reads.
  virtual int64_t lag_events() const = 0;

 protected:
  Subscription() = default;
};

struct StoreStats {
  int64_t appends = 0;           // append requests committed
  int64_t events_appended = 0;   // events newly written
  int64_t bytes_appended = 0;    // payload bytes newly written
  int64_t group_commits = 0;     // durable commits: transactions and journal writes
  int64_t commit_latency_us_total = 0;
  int64_t checkpoints = 0;       // WAL checkpoints run (off the writer thread)
  int64_t subscribers = 0;       // live subscriptions now
  int64_t subscriber_lags = 0;   // times a subscriber fell behind
  int64_t journal_appends = 0;   // of the appends: made durable in the append journal
  int64_t journal_drains = 0;    // transactions that copied journaled blocks into SQLite
  // Commit latency histogram, bucket upper bounds in µs (last = +inf).
  std::vector<int64_t> commit_latency_bounds_us;
  std::vector<int64_t> commit_latency_counts;
};

class DISPATCH_EXPORT EventStore {
 public:
  // Opens (creating if needed) a SQLite-backed store and migrates its schema
  // to the current version. Errors: InvalidArgument (empty path), IOError
  // (cannot open/create), Corruption (not a dispatch/SQLite database, or a
  // newer schema than this build knows), ReadOnly (file not writable and
  // read_only not set).
  static Result<std::unique_ptr<EventStore>> Open(const StoreOptions& options);

  virtual ~EventStore() = default;
  EventStore(const EventStore&) = delete;
  EventStore& operator=(const EventStore&) = delete;

  // ---- writing ----

  // Appends `events` to `run_id` and blocks until they are committed. All or
  // nothing. Errors: InvalidArgument (bad run id, empty batch, limits, bad
  // names, malformed JSON), Conflict (expected seq mismatch; detail() = actual),
  // ReadOnly, Closed, IOError.
  virtual Result<AppendResult> Append(std::string_view run_id, std::span<const NewEvent> events,
                                      const AppendOptions& options = {}) = 0;

  // Same, without blocking: `done` runs on the store's writer thread once the
  // batch is committed (or failed). Validation errors call `done` before this
  // returns, on the calling thread.
  virtual void AppendAsync(std::string run_id, std::vector<NewEvent> events,
                           const AppendOptions& options, AppendCallback done) = 0;

  // Blocks until every append queued before this call is committed.
  virtual Status Flush() = 0;

  // ---- reading ----

  // Visits events of `run_id` with seq > after_seq, in seq order. A run that
  // does not exist reads as empty. Errors: Truncated (after_seq + 1 is below
  // the earliest stored seq; detail() = earliest), InvalidArgument, Closed.
  virtual Result<ReadSummary> Read(std::string_view run_id, int64_t after_seq,
                                   const EventVisitor& visit,
                                   const ReadOptions& options = {}) = 0;

  // Visits events of all runs with position > after_position, in position
  // (commit) order. Removed ranges are skipped silently here: positions are
  // a store-wide order, not a per-run contract.
  virtual Result<ReadSummary> ReadAll(int64_t after_position, const EventVisitor& visit,
                                      const ReadOptions& options = {}) = 0;

  // Convenience: Read into a vector of owned events.
  Result<std::vector<Event>> ReadEvents(std::string_view run_id, int64_t after_seq,
                                        size_t limit = SIZE_MAX);

  // The run's last seq; 0 for a run with no events (or none at all).
  virtual Result<int64_t> LastSeq(std::string_view run_id) = 0;
  // The store's last committed position; 0 when empty.
  virtual Result<int64_t> LastPosition() = 0;

  // Metadata of one run; NotFound if it has never had an event.
  virtual Result<RunInfo> GetRun(std::string_view run_id) = 0;
  // All runs, ordered by run id.
  virtual Result<std::vector<RunInfo>> ListRuns() = 0;

  // ---- following ----

  // Backlog after `after_seq`, then live events, on a store-owned thread.
  // Fails Truncated at once if the cursor is below what retention kept.
  virtual Result<std::unique_ptr<Subscription>> Subscribe(std::string_view run_id,
                                                          int64_t after_seq,
                                                          SubscriptionHandlers handlers,
                                                          const SubscribeOptions& options = {}) = 0;
  // The same over every run, by position.
  virtual Result<std::unique_ptr<Subscription>> SubscribeAll(int64_t after_position,
                                                             SubscriptionHandlers handlers,
                                                             const SubscribeOptions& options = {}) = 0;

  // ---- retention ----

  // Removes the run's events with seq < before_seq. Later reads below it
  // fail Truncated. Seq numbering continues where it was. Returns the number
  // of events removed.
  virtual Result<int64_t> TruncateBefore(std::string_view run_id, int64_t before_seq) = 0;
  // Removes events recorded before `ts_us` in every run whose session is not
  // `running` (runs without a session record count as not running).
  virtual Result<int64_t> DeleteOlderThan(int64_t ts_us) = 0;

  // ---- the rest ----

  // Sessions, workspaces, settings, layouts and projection snapshots.
  virtual Catalog& catalog() = 0;

  virtual StoreStats Stats() const = 0;

  // Commits what is queued, ends subscriptions (on_error kClosed) and closes
  // the database. Later calls fail Closed. Idempotent; also run by the
  // destructor.
  virtual Status Close() = 0;

 protected:
  EventStore() = default;
};

}  // namespace dispatch

#endif  // DISPATCH_EVENT_STORE_H_
