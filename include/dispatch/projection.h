// Projections: state folded from an event stream, and the built-in ones.
//
// A projection is a fold, `state = Apply(state, event)`, over the events of
// one run (or of all runs, in position order). Its state can be saved as
// bytes (a snapshot, tagged with the projection's name and format version)
// and loaded back, so that loading the snapshot taken after event N and
// applying the events after N gives exactly the state of applying them all.
// The ReplayEngine (dispatch/replay.h) drives projections from a store.
//
// Built in:
//  - SessionStatusProjection: one run's lifecycle (system:status events),
//    exit code, size, counts.
//  - SessionListProjection: every run, each an entity (a JSON object)
//    updated by shallow merge from the stream alone.
//  - ScreenProjection: the terminal screen of a pty run (dispatch/screen.h)
//    from pty:stdout and pty:resize events.
//
// Thread-safety: a projection is not thread-safe; one thread at a time
// (LiveProjection serialises access for you).
#ifndef DISPATCH_PROJECTION_H_
#define DISPATCH_PROJECTION_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/event.h"
#include "dispatch/export.h"
#include "dispatch/screen.h"
#include "dispatch/status.h"

namespace dispatch {

class DISPATCH_EXPORT Projection {
 public:
  virtual ~Projection() = default;

  // The snapshot name ("status", "screen", …); one per kind of state:
  // 1–64 bytes of [A-Za-z0-9._:/-] (IsValidEventName), else the engine
  // refuses the projection.
  virtual std::string_view name() const = 0;
  // The version of the format Save() writes. Snapshots of another version
  // are ignored (the engine replays from the start instead).
  virtual int32_t version() const = 0;

  // Back to the state before any event.
  virtual void Reset() = 0;
  // Folds one event in. Events it does not care about are ignored; it never
  // fails (malformed payloads are skipped).
  virtual void Apply(const EventView& event) = 0;

  // The state as bytes, and back. Load replaces the state; Corruption if the
  // bytes are not a state of this version (the state is then Reset).
  virtual std::string Save() const = 0;
  virtual Status Load(std::string_view data) = 0;

 protected:
  Projection() = default;
};

// ---- one run's lifecycle ----

struct SessionState {
  // "unknown" (no status event yet), "created", "resumed", "started",
  // "closed", "orphaned" or "error": the type of the last system:status event.
  std::string status = "unknown";
  std::optional<int> exit_code;  // from closed {exitCode}
  std::optional<int> signal;     // from closed {signal}
  std::string error;             // from error/closed {message|error}
  std::string kind;              // from created {kind}
  int cols = 0, rows = 0;        // last known terminal size (0 = none)
  int64_t created_us = 0, started_us = 0, ended_us = 0;
  int64_t last_seq = 0, last_ts_us = 0;
  int64_t event_count = 0;
  int64_t output_bytes = 0;      // pty:stdout payload bytes
  int64_t input_events = 0;      // pty:stdin events (redacted included)
  bool operator==(const SessionState&) const = default;
};

class DISPATCH_EXPORT SessionStatusProjection final : public Projection {
 public:
  static constexpr int32_t kVersion = 1;
  std::string_view name() const override { return "status"; }
  int32_t version() const override { return kVersion; }
  void Reset() override { state_ = {}; }
  void Apply(const EventView& event) override;
  std::string Save() const override;
  Status Load(std::string_view data) override;

  const SessionState& state() const { return state_; }

 private:
  SessionState state_;
};

// ---- every run, as keyed entities ----

class DISPATCH_EXPORT SessionListProjection final : public Projection {
 public:
  static constexpr int32_t kVersion = 1;
  // The run id its snapshots are stored under (it spans every run). It is a
  // valid run id, so a user run may have the same name: all-runs snapshots
  // are therefore stored under the projection's name prefixed with
  // kAllRunsSnapshotPrefix (see dispatch/replay.h), which no projection name
  // may contain, and never meet that run's own snapshots.
  static constexpr std::string_view kSnapshotRunId = "dispatch:all";

  std::string_view name() const override { return "sessions"; }
  int32_t version() const override { return kVersion; }
  void Reset() override { entities_.clear(); }
  // Each event updates the entity of its run: lastSeq, eventCount, updatedAt
  // (ms); a system:status event merges its JSON object payload's keys and
  // sets "status" to its type; pty:resize merges {cols, rows}.
  void Apply(const EventView& event) override;
  std::string Save() const override;
  Status Load(std::string_view data) override;

  // Run ids, sorted.
  std::vector<std::string> run_ids() const;
  // The entity of a run as a JSON object text; nullopt if the run has none.
  std::optional<std::string> Get(std::string_view run_id) const;
  size_t size() const { return entities_.size(); }

 private:
  std::map<std::string, std::string, std::less<>> entities_;  // run id → JSON object
};

// ---- the terminal screen of a pty run ----

class DISPATCH_EXPORT ScreenProjection final : public Projection {
 public:
  // `options` gives the size used until the run says otherwise (a
  // system:status created/started/resumed payload with cols/rows, at top
  // level or under "options", or a pty:resize) and the scrollback bound.
  explicit ScreenProjection(const ScreenOptions& options = {});
  ~ScreenProjection() override;

  std::string_view name() const override { return "screen"; }
  int32_t version() const override { return TerminalScreen::kStateVersion; }
  void Reset() override;
  void Apply(const EventView& event) override;
  std::string Save() const override;
  Status Load(std::string_view data) override;

  TerminalScreen& screen() { return *screen_; }
  const TerminalScreen& screen() const { return *screen_; }
  // Hands the screen over and starts a fresh one.
  std::unique_ptr<TerminalScreen> Release();

 private:
  ScreenOptions options_;
  std::unique_ptr<TerminalScreen> screen_;
};

}  // namespace dispatch

#endif  // DISPATCH_PROJECTION_H_
