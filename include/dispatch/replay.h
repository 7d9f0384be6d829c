// ReplayEngine: rebuilds projections (dispatch/projection.h) from a store,
// fast, at any point of a run's history, and keeps them live.
//
// Rebuild = the newest usable snapshot at or before the target seq, then
// the events after it. Snapshots are stored in the catalog
// (Catalog::PutSnapshot) under (run id, projection name, seq) with the
// projection's format version; one of another version, or one that fails to
// load, is skipped (the engine falls back to an older one or the start).
//
// Time travel: Rebuild(run, p, seq) gives the state after any past seq, e.g.
// ScreenAt for a scrubber. Attach: AttachScreen gives a repaint of the
// screen at seq N plus N, so a client joining a long session gets one screen
// and then the events after N — not the whole history.
//
// Thread-safety: ReplayEngine is thread-safe (it holds only the store).
// LiveProjection is thread-safe: its projection is applied on the store's
// subscription thread and read under a lock through Read().
#ifndef DISPATCH_REPLAY_H_
#define DISPATCH_REPLAY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "dispatch/event_store.h"
#include "dispatch/export.h"
#include "dispatch/projection.h"
#include "dispatch/screen.h"
#include "dispatch/status.h"

namespace dispatch {

inline constexpr int64_t kLatestSeq = INT64_MAX;

// All-runs snapshots (RebuildAll) are stored under run id
// SessionListProjection::kSnapshotRunId and name kAllRunsSnapshotPrefix +
// projection name. '*' is not allowed in projection names, so they cannot
// collide with the snapshots of a user run of that id.
inline constexpr std::string_view kAllRunsSnapshotPrefix = "*";

// When to take a snapshot while applying events: after `every_events`
// events or `every_bytes` payload bytes since the last one, whichever comes
// first (0 disables that trigger). Older snapshots beyond `keep` are removed.
// The default bounds the tail a rebuild or an attach replays to ~24 KiB of
// output (a few ms through the emulator; doc/replay.md has the figures).
struct SnapshotPolicy {
  int64_t every_events = 1000;
  int64_t every_bytes = int64_t{24} << 10;
  int keep = 0;  // 0 = keep all (time travel is fastest then)
};

struct RebuildOptions {
  // Start from the newest usable snapshot (false: replay from the start).
  bool use_snapshots = true;
  // Also save snapshots by this policy while replaying (backfill); the
  // default saves none.
  SnapshotPolicy save{0, 0, 0};
};

struct ReplayResult {
  int64_t seq = 0;             // the state is after this seq (or position)
  int64_t snapshot_seq = 0;    // the snapshot it started from; 0 = none
  int64_t events_applied = 0;  // events read and applied after it
  int64_t snapshots_saved = 0;
  int64_t snapshots_skipped = 0;  // of another version, or that failed to load
};

// A screen ready to hand to a joining client.
struct ScreenAttach {
  std::string repaint;  // escape sequence that paints the screen (with scrollback if asked)
  int64_t seq = 0;      // the screen is after this seq: send events > seq next
  int cols = 0, rows = 0;
  std::string title;
  ReplayResult replay;
};

class DISPATCH_EXPORT ReplayEngine {
 public:
  // `store` must outlive the engine.
  explicit ReplayEngine(EventStore* store);

  // Resets `projection` and rebuilds it for `run_id` up to and including
  // `up_to_seq` (kLatestSeq: everything stored now). Errors: Truncated if
  // retention removed events it needs and no snapshot covers them (detail =
  // earliest stored seq), InvalidArgument, Closed, IOError.
  Result<ReplayResult> Rebuild(std::string_view run_id, Projection& projection,
                               int64_t up_to_seq = kLatestSeq, const RebuildOptions& options = {});

  // The same over every run in position order (for SessionListProjection);
  // snapshots under SessionListProjection::kSnapshotRunId and name
  // kAllRunsSnapshotPrefix + projection name, seq = position.
  Result<ReplayResult> RebuildAll(Projection& projection, int64_t up_to_position = kLatestSeq,
                                  const RebuildOptions& options = {});

  // Stores `projection`'s state as the snapshot of `run_id` after `seq`.
  Status SaveSnapshot(std::string_view run_id, const Projection& projection, int64_t seq);

  // Time travel: the screen of a pty run after `seq` (kLatestSeq = now).
  Result<std::unique_ptr<TerminalScreen>> ScreenAt(std::string_view run_id, int64_t seq,
                                                   const ScreenOptions& options = {});

  // The screen now as a repaint plus the seq it stands for.
  Result<ScreenAttach> AttachScreen(std::string_view run_id, const ScreenOptions& options = {},
                                    const RepaintOptions& repaint = {});

 private:
  EventStore* store_;
};

struct LiveOptions {
  SnapshotPolicy snapshots;           // taken on the subscription thread
  SubscribeOptions subscribe;
  bool use_snapshots = true;          // for the initial rebuild
};

class DISPATCH_EXPORT LiveProjection {
 public:
  // Rebuilds `projection` for `run_id`, then follows the run: every new
  // event is applied as it is committed, and snapshots are taken by policy.
  // `store` must outlive the returned object.
  static Result<std::unique_ptr<LiveProjection>> Start(EventStore* store, std::string run_id,
                                                       std::unique_ptr<Projection> projection,
                                                       const LiveOptions& options = {});
  ~LiveProjection();
  LiveProjection(const LiveProjection&) = delete;
  LiveProjection& operator=(const LiveProjection&) = delete;

  // Calls `fn` with the projection and the seq it is at, under the lock
  // (events wait meanwhile: keep it short). Do not keep the reference.
  void Read(const std::function<void(const Projection&, int64_t seq)>& fn) const;
  // Waits until the projection has applied `seq` or `timeout_ms` passed.
  bool WaitFor(int64_t seq, int timeout_ms) const;

  int64_t seq() const;
  int64_t snapshots_taken() const;
  // OK while following; the error that ended the subscription otherwise.
  Status status() const;
  // Stops following (idempotent; also done by the destructor).
  void Stop();

 private:
  struct State;
  explicit LiveProjection(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

}  // namespace dispatch

#endif  // DISPATCH_REPLAY_H_
