// ReplayEngine and LiveProjection (dispatch/replay.h).
//
// Reads go in batches; snapshots taken by policy during a rebuild are
// written between batches (never from inside a store read callback).
#include "dispatch/replay.h"

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <utility>
#include <vector>

namespace dispatch {
namespace {

constexpr size_t kBatch = 8192;
// Without snapshots to write between batches (a read transaction of 64K
// events lasts a few ms: short enough not to hold up the checkpointer).
constexpr int64_t kPlainBatch = 65536;

struct PendingSnapshot {
  int64_t seq;
  std::string data;
};

// Counts events and bytes since the last snapshot and says when to take one.
class PolicyCounter {
 public:
  explicit PolicyCounter(const SnapshotPolicy& p) : p_(p) {}
  bool Add(size_t bytes) {
    events_++;
    bytes_ += static_cast<int64_t>(bytes);
    if ((p_.every_events > 0 && events_ >= p_.every_events) ||
        (p_.every_bytes > 0 && bytes_ >= p_.every_bytes)) {
      events_ = 0;
      bytes_ = 0;
      return true;
    }
    return false;
  }

 private:
  SnapshotPolicy p_;
  int64_t events_ = 0, bytes_ = 0;
};

// A projection's name is a snapshot name: refuse what could collide with
// the all-runs snapshot names (and nonsense).
Status CheckProjectionName(const Projection& p) {
  if (!IsValidEventName(p.name())) {
    return Status::InvalidArgument(fmt::format(
        "projection name '{}' is not 1-64 bytes of [A-Za-z0-9._:/-]", p.name()));
  }
  return Status::Ok();
}

std::string AllRunsName(const Projection& p) {
  return std::string(kAllRunsSnapshotPrefix) + std::string(p.name());
}

// Loads the newest usable snapshot (key, name) of projection `p` at or
// before `at`. Returns the seq it stands for (0 = none, projection reset).
Result<int64_t> LoadNewestSnapshot(Catalog& catalog, std::string_view key, std::string_view name,
                                   Projection& p, int64_t at, ReplayResult* r) {
  p.Reset();
  while (at >= 1) {
    auto snap = catalog.GetSnapshot(key, name, at);
    if (!snap.ok()) {
      if (snap.status().code() == StatusCode::kNotFound) return int64_t{0};
      return snap.status();
    }
    if (snap->version == p.version() && p.Load(snap->data).ok()) return snap->seq;
    r->snapshots_skipped++;
    p.Reset();
    at = snap->seq - 1;
  }
  return int64_t{0};
}

Status PutSnapshots(Catalog& catalog, std::string_view key, std::string_view name,
                    const Projection& p, std::vector<PendingSnapshot>* pending, ReplayResult* r) {
  for (auto& s : *pending) {
    SnapshotRecord rec;
    rec.run_id = std::string(key);
    rec.name = std::string(name);
    rec.seq = s.seq;
    rec.version = p.version();
    rec.data = std::move(s.data);
    Status st = catalog.PutSnapshot(rec);
    if (!st.ok()) return st;
    r->snapshots_saved++;
  }
  pending->clear();
  return Status::Ok();
}

}  // namespace

ReplayEngine::ReplayEngine(EventStore* store) : store_(store) {}

Result<ReplayResult> ReplayEngine::Rebuild(std::string_view run_id, Projection& p,
                                           int64_t up_to_seq, const RebuildOptions& options) {
  if (Status s = ValidateRunId(run_id); !s.ok()) return s;
  if (Status s = CheckProjectionName(p); !s.ok()) return s;
  if (up_to_seq < 0) return Status::InvalidArgument("seq must be >= 0");
  ReplayResult r;
  int64_t cursor = 0;
  p.Reset();
  if (options.use_snapshots && up_to_seq > 0) {
    auto got = LoadNewestSnapshot(store_->catalog(), run_id, p.name(), p, up_to_seq, &r);
    if (!got.ok()) return got.status();
    cursor = *got;
    r.snapshot_seq = cursor;
  }
  PolicyCounter policy(options.save);
  std::vector<PendingSnapshot> pending;
  // Snapshots are written between batches (never from inside a read); with
  // none to take, larger batches (fewer read transactions), and a visitor
  // that only applies.
  const bool saving = options.save.every_events > 0 || options.save.every_bytes > 0;
  const int64_t batch = saving ? static_cast<int64_t>(kBatch) : kPlainBatch;
  while (cursor < up_to_seq) {
    ReadOptions ro;
    ro.limit = static_cast<size_t>(std::min<int64_t>(batch, up_to_seq - cursor));
    int64_t last = cursor;
    Result<ReadSummary> read =
        saving ? store_->Read(
                     run_id, cursor,
                     [&](const EventView& e) {
                       p.Apply(e);
                       last = e.seq;
                       if (policy.Add(e.payload.size())) pending.push_back({e.seq, p.Save()});
                       return true;
                     },
                     ro)
               : store_->Read(
                     run_id, cursor,
                     [&](const EventView& e) {
                       p.Apply(e);
                       last = e.seq;
                       return true;
                     },
                     ro);
    if (!read.ok()) return read.status();
    r.events_applied += read->count;
    if (!pending.empty()) {
      if (Status s = PutSnapshots(store_->catalog(), run_id, p.name(), p, &pending, &r); !s.ok()) {
        return s;
      }
    }
    cursor = last;
    if (read->count < static_cast<int64_t>(ro.limit)) break;
  }
  r.seq = cursor;
  return r;
}

Result<ReplayResult> ReplayEngine::RebuildAll(Projection& p, int64_t up_to_position,
                                              const RebuildOptions& options) {
  if (up_to_position < 0) return Status::InvalidArgument("position must be >= 0");
  if (Status s = CheckProjectionName(p); !s.ok()) return s;
  const std::string_view key = SessionListProjection::kSnapshotRunId;
  const std::string name = AllRunsName(p);
  ReplayResult r;
  int64_t cursor = 0;
  p.Reset();
  if (options.use_snapshots && up_to_position > 0) {
    auto got = LoadNewestSnapshot(store_->catalog(), key, name, p, up_to_position, &r);
    if (!got.ok()) return got.status();
    cursor = *got;
    r.snapshot_seq = cursor;
  }
  PolicyCounter policy(options.save);
  std::vector<PendingSnapshot> pending;
  while (cursor < up_to_position) {
    ReadOptions ro;
    ro.limit = kBatch;
    int64_t last = cursor;
    bool past = false;
    auto read = store_->ReadAll(
        cursor,
        [&](const EventView& e) {
          if (e.position > up_to_position) {
            past = true;
            return false;
          }
          p.Apply(e);
          last = e.position;
          r.events_applied++;
          if (policy.Add(e.payload.size())) pending.push_back({e.position, p.Save()});
          return true;
        },
        ro);
    if (!read.ok()) return read.status();
    if (!pending.empty()) {
      if (Status s = PutSnapshots(store_->catalog(), key, name, p, &pending, &r); !s.ok()) return s;
    }
    cursor = last;
    if (past || read->count == 0 || read->stopped) break;
  }
  r.seq = cursor;
  return r;
}

Status ReplayEngine::SaveSnapshot(std::string_view run_id, const Projection& p, int64_t seq) {
  if (Status s = CheckProjectionName(p); !s.ok()) return s;
  SnapshotRecord rec;
  rec.run_id = std::string(run_id);
  rec.name = std::string(p.name());
  rec.seq = seq;
  rec.version = p.version();
  rec.data = p.Save();
  return store_->catalog().PutSnapshot(rec);
}

Result<std::unique_ptr<TerminalScreen>> ReplayEngine::ScreenAt(std::string_view run_id,
                                                               int64_t seq,
                                                               const ScreenOptions& options) {
  ScreenProjection p(options);
  auto r = Rebuild(run_id, p, seq);
  if (!r.ok()) return r.status();
  return p.Release();
}

Result<ScreenAttach> ReplayEngine::AttachScreen(std::string_view run_id,
                                                const ScreenOptions& options,
                                                const RepaintOptions& repaint) {
  // The scrollback is only kept if the repaint is to carry it: without it,
  // the lines that scroll off during the tail cost nothing.
  ScreenOptions o = options;
  if (!repaint.include_scrollback) o.scrollback_lines = 0;
  ScreenProjection p(o);
  auto r = Rebuild(run_id, p, kLatestSeq);
  if (!r.ok()) return r.status();
  ScreenAttach a;
  a.repaint = p.screen().Repaint(repaint);
  a.seq = r->seq;
  a.cols = p.screen().cols();
  a.rows = p.screen().rows();
  a.title = p.screen().title();
  a.replay = *r;
  return a;
}

// ---- LiveProjection ----

struct LiveProjection::State {
  EventStore* store = nullptr;
  std::string run_id;
  std::unique_ptr<Projection> projection;
  LiveOptions options;
  mutable std::mutex mu;
  mutable std::condition_variable cv;
  int64_t seq = 0;
  int64_t snapshots = 0;
  Status status;
  std::unique_ptr<PolicyCounter> policy;
  std::deque<int64_t> kept;  // seqs of snapshots taken, oldest first
  std::unique_ptr<Subscription> sub;
};

LiveProjection::LiveProjection(std::shared_ptr<State> state) : state_(std::move(state)) {}

LiveProjection::~LiveProjection() { Stop(); }

Result<std::unique_ptr<LiveProjection>> LiveProjection::Start(
    EventStore* store, std::string run_id, std::unique_ptr<Projection> projection,
    const LiveOptions& options) {
  if (!projection) return Status::InvalidArgument("no projection");
  auto st = std::make_shared<State>();
  st->store = store;
  st->run_id = std::move(run_id);
  st->projection = std::move(projection);
  st->options = options;
  st->policy = std::make_unique<PolicyCounter>(options.snapshots);
  ReplayEngine engine(store);
  RebuildOptions ro;
  ro.use_snapshots = options.use_snapshots;
  auto r = engine.Rebuild(st->run_id, *st->projection, kLatestSeq, ro);
  if (!r.ok()) return r.status();
  st->seq = r->seq;

  std::weak_ptr<State> weak = st;
  SubscriptionHandlers h;
  h.on_event = [weak](const EventView& e) {
    auto s = weak.lock();
    if (!s) return;
    std::string snap;
    int64_t snap_seq = 0;
    {
      std::lock_guard<std::mutex> l(s->mu);
      if (e.seq <= s->seq) return;  // already in the rebuilt state
      s->projection->Apply(e);
      s->seq = e.seq;
      if (s->policy->Add(e.payload.size())) {
        snap = s->projection->Save();
        snap_seq = e.seq;
      }
    }
    s->cv.notify_all();
    if (snap_seq > 0) {
      // On the subscription thread, outside the lock: appenders never wait
      // for it, readers only while the state is serialised above.
      SnapshotRecord rec;
      rec.run_id = s->run_id;
      rec.name = std::string(s->projection->name());
      rec.seq = snap_seq;
      rec.version = s->projection->version();
      rec.data = std::move(snap);
      if (s->store->catalog().PutSnapshot(rec).ok()) {
        std::lock_guard<std::mutex> l(s->mu);
        s->snapshots++;
        s->kept.push_back(snap_seq);
        int keep = s->options.snapshots.keep;
        if (keep > 0 && static_cast<int>(s->kept.size()) > keep) {
          while (static_cast<int>(s->kept.size()) > keep) s->kept.pop_front();
          (void)s->store->catalog().DeleteSnapshotsBefore(s->run_id, rec.name, s->kept.front());
        }
      }
    }
  };
  h.on_caught_up = [](int64_t) {};
  h.on_error = [weak](const Status& err) {
    auto s = weak.lock();
    if (!s) return;
    {
      std::lock_guard<std::mutex> l(s->mu);
      s->status = err;
    }
    s->cv.notify_all();
  };
  auto sub = store->Subscribe(st->run_id, st->seq, std::move(h), options.subscribe);
  if (!sub.ok()) return sub.status();
  {
    std::lock_guard<std::mutex> l(st->mu);
    st->sub = std::move(sub).value();
  }
  return std::unique_ptr<LiveProjection>(new LiveProjection(std::move(st)));
}

void LiveProjection::Read(const std::function<void(const Projection&, int64_t)>& fn) const {
  std::lock_guard<std::mutex> l(state_->mu);
  fn(*state_->projection, state_->seq);
}

bool LiveProjection::WaitFor(int64_t seq, int timeout_ms) const {
  std::unique_lock<std::mutex> l(state_->mu);
  return state_->cv.wait_for(l, std::chrono::milliseconds(timeout_ms),
                             [&] { return state_->seq >= seq || !state_->status.ok(); }) &&
         state_->seq >= seq;
}

int64_t LiveProjection::seq() const {
  std::lock_guard<std::mutex> l(state_->mu);
  return state_->seq;
}

int64_t LiveProjection::snapshots_taken() const {
  std::lock_guard<std::mutex> l(state_->mu);
  return state_->snapshots;
}

Status LiveProjection::status() const {
  std::lock_guard<std::mutex> l(state_->mu);
  return state_->status;
}

void LiveProjection::Stop() {
  std::unique_ptr<Subscription> sub;
  {
    std::lock_guard<std::mutex> l(state_->mu);
    sub = std::move(state_->sub);
  }
  if (sub) sub->Cancel();
}

}  // namespace dispatch
