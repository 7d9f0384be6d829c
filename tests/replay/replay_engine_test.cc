// ReplayEngine, the built-in projections and LiveProjection on a real
// SQLite store in a temp dir.
#include "dispatch/replay.h"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <random>
#include <string>
#include <vector>

#include "dispatch/event_store.h"
#include "screen_compare.h"
#include "support/store_helpers.h"
#include "support/temp_dir.h"

namespace dispatch {
namespace {

using testing::DiffScreens;
using testing::Ev;
using testing::OpenStore;
using testing::TempDir;

NewEvent Json(std::string channel, std::string type, std::string payload) {
  return Ev(std::move(payload), std::move(channel), std::move(type), Encoding::kJson);
}

void Append(EventStore& store, const std::string& run, std::vector<NewEvent> evs) {
  auto r = store.Append(run, evs);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
}

TEST_CASE("Session status follows the lifecycle of a run") {
  TempDir dir;
  auto store = OpenStore(dir.file("s.db"));
  Append(*store, "run1",
         {Json("system:status", "created", R"({"kind":"pty","options":{"cols":100,"rows":30}})"),
          Json("system:status", "started", R"({"pid":42,"cols":100,"rows":30})"),
          Ev("hello\r\n"), Ev("world"),
          Json("pty:resize", "dimensions", R"({"cols":120,"rows":40})"),
          Json("pty:stdin", "input", R"({"redacted":true,"length":8})"),
          Json("system:status", "closed", R"({"exitCode":3,"signal":null})")});
  ReplayEngine engine(store.get());
  SessionStatusProjection p;
  auto r = engine.Rebuild("run1", p);
  REQUIRE(r.ok());
  CHECK(r->seq == 7);
  const SessionState& s = p.state();
  CHECK(s.status == "closed");
  CHECK(s.kind == "pty");
  CHECK(s.exit_code == 3);
  CHECK(!s.signal.has_value());
  CHECK(s.cols == 120);
  CHECK(s.rows == 40);
  CHECK(s.output_bytes == 12);
  CHECK(s.input_events == 1);
  CHECK(s.event_count == 7);
  // Time travel: after seq 3 it was running, 100x30.
  REQUIRE(engine.Rebuild("run1", p, 3).ok());
  CHECK(p.state().status == "started");
  CHECK(p.state().cols == 100);
  // The screen starts at the size the run was created with.
  auto scr = engine.ScreenAt("run1", 4);
  REQUIRE(scr.ok());
  CHECK((*scr)->cols() == 100);
  CHECK((*scr)->rows() == 30);
  CHECK((*scr)->RowText(1) == "world");
}

TEST_CASE("A run that does not exist rebuilds as empty; bad run ids are refused") {
  TempDir dir;
  auto store = OpenStore(dir.file("s.db"));
  ReplayEngine engine(store.get());
  SessionStatusProjection p;
  auto r = engine.Rebuild("nope", p);
  REQUIRE(r.ok());
  CHECK(r->seq == 0);
  CHECK(p.state().status == "unknown");
  CHECK(engine.Rebuild("bad id!", p).status().code() == StatusCode::kInvalidArgument);
}

// Random pty-ish event streams.
std::vector<NewEvent> RandomEvents(std::mt19937& rng, int n) {
  static const char* kOut[] = {"hello ", "\x1b[31mred\x1b[0m", "\r\n", "中文", "\x1b[2J\x1b[H",
                               "\x1b[?1049h", "\x1b[?1049l", "\x1b]2;t\x07", "e\xcc\x81",
                               "\x1b[5;10H", "\x1b[", "1m", "\xe2\x94", "\x80",
                               "0123456789012345678901234567890123456789"};
  std::vector<NewEvent> evs;
  evs.push_back(Json("system:status", "created", R"({"kind":"pty","cols":40,"rows":10})"));
  evs.push_back(Json("system:status", "started", "{}"));
  for (int i = 0; i < n; ++i) {
    int k = static_cast<int>(rng() % 100);
    if (k < 85) {
      std::string b;
      int parts = 1 + static_cast<int>(rng() % 4);
      for (int j = 0; j < parts; ++j) b += kOut[rng() % 15];
      evs.push_back(Ev(b));
    } else if (k < 92) {
      evs.push_back(Json("pty:resize", "dimensions",
                         fmt::format(R"({{"cols":{},"rows":{}}})", 10 + rng() % 60, 3 + rng() % 20)));
    } else if (k < 96) {
      evs.push_back(Json("pty:stdin", "input", R"({"redacted":true,"length":3})"));
    } else {
      evs.push_back(Json("system:status", rng() % 2 ? "closed" : "resumed",
                         fmt::format(R"({{"exitCode":{},"signal":null}})", rng() % 5)));
    }
  }
  return evs;
}

TEST_CASE("Property: snapshot + tail equals full replay, for every projection") {
  TempDir dir;
  auto store = OpenStore(dir.file("s.db"));
  ReplayEngine engine(store.get());
  std::mt19937 rng(777);
  for (int trial = 0; trial < 8; ++trial) {
    std::string run = fmt::format("run-{}", trial);
    auto evs = RandomEvents(rng, 300);
    Append(*store, run, evs);
    int64_t n = static_cast<int64_t>(evs.size());
    // Snapshots at random points.
    for (int k = 0; k < 5; ++k) {
      int64_t at = 1 + static_cast<int64_t>(rng() % static_cast<unsigned>(n));
      SessionStatusProjection st;
      ScreenProjection sc;
      REQUIRE(engine.Rebuild(run, st, at, {false, {0, 0, 0}}).ok());
      REQUIRE(engine.Rebuild(run, sc, at, {false, {0, 0, 0}}).ok());
      REQUIRE(engine.SaveSnapshot(run, st, at).ok());
      REQUIRE(engine.SaveSnapshot(run, sc, at).ok());
    }
    // Full replay vs newest snapshot + tail, at random targets.
    for (int k = 0; k < 6; ++k) {
      int64_t target = k == 0 ? kLatestSeq : 1 + static_cast<int64_t>(rng() % static_cast<unsigned>(n));
      INFO("trial ", trial, " target ", target);
      SessionStatusProjection full_st, snap_st;
      ScreenProjection full_sc, snap_sc;
      REQUIRE(engine.Rebuild(run, full_st, target, {false, {0, 0, 0}}).ok());
      REQUIRE(engine.Rebuild(run, full_sc, target, {false, {0, 0, 0}}).ok());
      auto a = engine.Rebuild(run, snap_st, target);
      auto b = engine.Rebuild(run, snap_sc, target);
      REQUIRE(a.ok());
      REQUIRE(b.ok());
      CHECK(a->seq == std::min(target, n));
      CHECK(full_st.state() == snap_st.state());
      CHECK(full_st.Save() == snap_st.Save());
      std::string d = DiffScreens(full_sc.screen(), snap_sc.screen());
      CHECK_MESSAGE(d.empty(), d);
    }
  }
}

TEST_CASE("Snapshots of another version or corrupt ones are skipped") {
  TempDir dir;
  auto store = OpenStore(dir.file("s.db"));
  ReplayEngine engine(store.get());
  Append(*store, "r", {Ev("a"), Ev("b"), Ev("c"), Ev("d")});
  SessionStatusProjection p;
  REQUIRE(engine.Rebuild("r", p, 2).ok());
  REQUIRE(engine.SaveSnapshot("r", p, 2).ok());
  SnapshotRecord bad;
  bad.run_id = "r";
  bad.name = "status";
  bad.seq = 3;
  bad.version = SessionStatusProjection::kVersion;
  bad.data = "garbage";
  REQUIRE(store->catalog().PutSnapshot(bad).ok());
  bad.seq = 4;
  bad.version = 99;
  REQUIRE(store->catalog().PutSnapshot(bad).ok());
  auto r = engine.Rebuild("r", p);
  REQUIRE(r.ok());
  CHECK(r->snapshot_seq == 2);
  CHECK(r->snapshots_skipped == 2);
  CHECK(r->events_applied == 2);
  CHECK(p.state().event_count == 4);
  CHECK(p.Load("nonsense").code() == StatusCode::kCorruption);
}

TEST_CASE("Retention: a snapshot covers what was removed; without one the answer is Truncated") {
  TempDir dir;
  auto store = OpenStore(dir.file("s.db"));
  ReplayEngine engine(store.get());
  std::vector<NewEvent> evs;
  for (int i = 0; i < 50; ++i) evs.push_back(Ev(fmt::format("line {}\r\n", i)));
  Append(*store, "r", evs);
  ScreenProjection p;
  REQUIRE(engine.Rebuild("r", p, 30).ok());
  REQUIRE(engine.SaveSnapshot("r", p, 30).ok());
  REQUIRE(store->TruncateBefore("r", 31).ok());
  auto ok = engine.Rebuild("r", p);
  REQUIRE(ok.ok());
  CHECK(ok->snapshot_seq == 30);
  CHECK(p.screen().RowText(22) == "line 49");
  SessionStatusProjection st;
  auto t = engine.Rebuild("r", st);
  CHECK(t.status().code() == StatusCode::kTruncated);
  CHECK(t.status().earliest_available() == 31);
}

TEST_CASE("A one-column pty with a double-width character rebuilds without a crash") {
  // libvterm writes outside its buffers when a wide character meets a
  // one-column screen: screens are at least two columns, and a size below
  // that in the log (created or resized to 1 column) leaves the screen as it
  // was instead of reaching libvterm.
  TempDir dir;
  auto store = OpenStore(dir.file("s.db"));
  ReplayEngine engine(store.get());
  std::vector<NewEvent> evs;
  evs.push_back(Ev(R"({"cols":1,"rows":1})", "system:status", "created", Encoding::kJson));
  evs.push_back(Ev("\xe8\xa6\x80\r\n"));  // U+8980, two columns wide
  evs.push_back(Ev(R"({"cols":80,"rows":24})", "pty:resize", "dimensions", Encoding::kJson));
  evs.push_back(Ev(R"({"cols":1,"rows":1})", "pty:resize", "dimensions", Encoding::kJson));
  evs.push_back(Ev("\xf0\x9f\x98\x80x\r\n"));  // U+1F600
  Append(*store, "r", evs);
  ScreenProjection p;
  REQUIRE(engine.Rebuild("r", p).ok());
  CHECK(p.screen().cols() == 80);
  ScreenOptions one;
  one.cols = 1;
  CHECK(TerminalScreen::Create(one).status().code() == StatusCode::kInvalidArgument);
  auto two = TerminalScreen::Create(ScreenOptions{});
  REQUIRE(two.ok());
  REQUIRE((*two)->Resize(2, 1).ok());
  (*two)->Write("\xe8\xa6\x80\xf0\x9f\x98\x80");
  CHECK((*two)->Resize(1, 1).code() == StatusCode::kInvalidArgument);
  CHECK((*two)->cols() == 2);
}

TEST_CASE("Rebuild can backfill snapshots by policy, and attach costs one screen") {
  TempDir dir;
  auto store = OpenStore(dir.file("s.db"));
  ReplayEngine engine(store.get());
  std::vector<NewEvent> evs;
  for (int i = 0; i < 2500; ++i) evs.push_back(Ev(fmt::format("\x1b[3{}mline {}\x1b[0m\r\n", i % 8, i)));
  Append(*store, "r", evs);
  ScreenProjection p;
  RebuildOptions ro;
  ro.use_snapshots = false;
  ro.save = {1000, 0, 0};
  auto r = engine.Rebuild("r", p, kLatestSeq, ro);
  REQUIRE(r.ok());
  CHECK(r->snapshots_saved == 2);
  auto a = engine.AttachScreen("r");
  REQUIRE(a.ok());
  CHECK(a->seq == 2500);
  CHECK(a->replay.snapshot_seq == 2000);
  CHECK(a->replay.events_applied == 500);
  auto fresh = std::move(TerminalScreen::Create({80, 24, 0})).value();
  fresh->Write(a->repaint);
  CHECK(DiffScreens(p.screen(), *fresh, false).empty());
  CHECK(fresh->RowText(22) == "line 2499");
}

TEST_CASE("The session list spans runs, keyed by run, merged shallowly") {
  TempDir dir;
  auto store = OpenStore(dir.file("s.db"));
  ReplayEngine engine(store.get());
  Append(*store, "a", {Json("system:status", "created", R"({"kind":"pty","workspace":"/w"})")});
  Append(*store, "b", {Json("system:status", "created", R"({"kind":"claude"})")});
  Append(*store, "a", {Json("system:status", "started", R"({"pid":7})"), Ev("x")});
  SessionListProjection list;
  auto r = engine.RebuildAll(list, kLatestSeq, {true, {2, 0, 0}});
  REQUIRE(r.ok());
  CHECK(r->snapshots_saved == 2);
  REQUIRE(list.size() == 2);
  auto a = list.Get("a");
  REQUIRE(a);
  CHECK(a->find(R"("status":"started")") != std::string::npos);
  CHECK(a->find(R"("workspace":"/w")") != std::string::npos);  // kept from created
  CHECK(a->find(R"("pid":7)") != std::string::npos);
  CHECK(a->find(R"("eventCount":3)") != std::string::npos);
  Append(*store, "b", {Json("system:status", "closed", R"({"exitCode":0,"signal":null})")});
  SessionListProjection again;
  auto r2 = engine.RebuildAll(again);
  REQUIRE(r2.ok());
  CHECK(r2->snapshot_seq == 4);
  CHECK(r2->events_applied == 1);
  CHECK(again.Get("b")->find(R"("status":"closed")") != std::string::npos);
  SessionListProjection full;
  REQUIRE(engine.RebuildAll(full, kLatestSeq, {false, {0, 0, 0}}).ok());
  CHECK(full.Save() == again.Save());
}

// A projection with a chosen name, for the name checks.
class NamedProjection final : public Projection {
 public:
  explicit NamedProjection(std::string name) : name_(std::move(name)) {}
  std::string_view name() const override { return name_; }
  int32_t version() const override { return 1; }
  void Reset() override { count_ = 0; }
  void Apply(const EventView&) override { ++count_; }
  std::string Save() const override { return std::to_string(count_); }
  Status Load(std::string_view) override { return Status::Ok(); }

 private:
  std::string name_;
  int64_t count_ = 0;
};

TEST_CASE("A user run named like the all-runs snapshot key keeps its own snapshots") {
  TempDir dir;
  auto store = OpenStore(dir.file("s.db"));
  ReplayEngine engine(store.get());
  const std::string reserved(SessionListProjection::kSnapshotRunId);
  // The id is a valid run id: a user can make a run with it.
  Append(*store, "other", {Json("system:status", "created", R"({"kind":"claude"})"), Ev("x")});
  Append(*store, reserved,
         {Json("system:status", "created", R"({"kind":"pty","mine":1})"), Ev("a"), Ev("b")});
  Append(*store, "other", {Ev("y"), Ev("z")});
  // All-runs snapshots (one per event) and the user run's own snapshots of
  // the same projection, saved at overlapping seqs.
  SessionListProjection all;
  auto ra = engine.RebuildAll(all, kLatestSeq, {false, {1, 0, 0}});
  REQUIRE(ra.ok());
  CHECK(ra->snapshots_saved == 7);
  // The run's own rebuild does not pick up an all-runs snapshot.
  SessionListProjection before;
  auto rb = engine.Rebuild(reserved, before, 3);
  REQUIRE(rb.ok());
  CHECK(rb->snapshot_seq == 0);
  CHECK(rb->events_applied == 3);
  CHECK(before.size() == 1);
  CHECK(!before.Get("other"));
  SessionListProjection mine;
  auto rm = engine.Rebuild(reserved, mine, kLatestSeq, {false, {1, 0, 0}});
  REQUIRE(rm.ok());
  CHECK(rm->snapshots_saved == 3);
  REQUIRE(mine.size() == 1);  // only the run itself
  // Each side starts from its own snapshots and ends where a full replay does.
  SessionListProjection all2, mine2, all_full, mine_full;
  auto a2 = engine.RebuildAll(all2);
  REQUIRE(a2.ok());
  CHECK(a2->snapshot_seq == 7);
  CHECK(a2->snapshots_skipped == 0);
  REQUIRE(engine.RebuildAll(all_full, kLatestSeq, {false, {0, 0, 0}}).ok());
  CHECK(all2.Save() == all_full.Save());
  CHECK(all2.size() == 2);
  for (int64_t at = 1; at <= 3; ++at) {
    INFO("seq ", at);
    auto m2 = engine.Rebuild(reserved, mine2, at);
    REQUIRE(m2.ok());
    CHECK(m2->snapshot_seq == at);
    REQUIRE(engine.Rebuild(reserved, mine_full, at, {false, {0, 0, 0}}).ok());
    CHECK(mine2.Save() == mine_full.Save());
    CHECK(mine2.size() == 1);
    CHECK(!mine2.Get("other"));
  }
  // Both kinds sit in the catalog under the same run id, apart by name.
  auto per_run = store->catalog().GetSnapshot(reserved, "sessions");
  REQUIRE(per_run.ok());
  CHECK(per_run->seq == 3);
  auto all_runs = store->catalog().GetSnapshot(reserved, std::string(kAllRunsSnapshotPrefix) + "sessions");
  REQUIRE(all_runs.ok());
  CHECK(all_runs->seq == 7);
  // A projection cannot take a name in the all-runs space.
  NamedProjection starred("*sessions"), empty(""), fine("count");
  CHECK(engine.Rebuild(reserved, starred).status().code() == StatusCode::kInvalidArgument);
  CHECK(engine.RebuildAll(starred).status().code() == StatusCode::kInvalidArgument);
  CHECK(engine.SaveSnapshot(reserved, starred, 1).code() == StatusCode::kInvalidArgument);
  CHECK(engine.Rebuild(reserved, empty).status().code() == StatusCode::kInvalidArgument);
  CHECK(LiveProjection::Start(store.get(), reserved, std::make_unique<NamedProjection>("*x"))
            .status()
            .code() == StatusCode::kInvalidArgument);
  auto ok = engine.Rebuild(reserved, fine);
  REQUIRE(ok.ok());
  CHECK(ok->seq == 3);
}

TEST_CASE("A live projection follows appends and takes snapshots by policy") {
  TempDir dir;
  auto store = OpenStore(dir.file("s.db"));
  Append(*store, "r", {Json("system:status", "created", R"({"cols":40,"rows":5})"), Ev("start\r\n")});
  LiveOptions lo;
  lo.snapshots = {10, 0, 2};
  auto live = LiveProjection::Start(store.get(), "r", std::make_unique<ScreenProjection>(), lo);
  REQUIRE(live.ok());
  for (int i = 0; i < 35; ++i) Append(*store, "r", {Ev(fmt::format("n{}\r\n", i))});
  REQUIRE((*live)->WaitFor(37, 5000));
  (*live)->Read([](const Projection& p, int64_t seq) {
    CHECK(seq == 37);
    const auto& sp = static_cast<const ScreenProjection&>(p);
    CHECK(sp.screen().cols() == 40);
    CHECK(sp.screen().RowText(3) == "n34");
  });
  CHECK((*live)->snapshots_taken() == 3);
  // Only the newest `keep` snapshots remain.
  CHECK(!store->catalog().GetSnapshot("r", "screen", 19).ok());
  auto s = store->catalog().GetSnapshot("r", "screen");
  REQUIRE(s.ok());
  CHECK(s->seq == 32);
  CHECK((*live)->status().ok());
  (*live)->Stop();
}

}  // namespace
}  // namespace dispatch
