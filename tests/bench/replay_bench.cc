// Replay engine benchmarks. Prints one JSON object per line:
//   {"metric": NAME, "value": V, "unit": U}
// with baselines measured in the same run. Not part of ctest.
//
//   build/tests/bench/replay_bench [--quick] [--dir DIR]
//
// Runs hold realistic terminal output: `ls -lR --color=always /usr` cut into
// 100-byte pty:stdout events. Screen snapshots are taken by the default
// SnapshotPolicy (backfilled with ReplayEngine::Rebuild), and each run ends
// with the longest tail that policy leaves after its last snapshot.
// Latencies are medians of wall time, with the thread's CPU time next to
// them (the machine may be shared). --profile N: only N attaches to a 10K
// run, to run under perf.
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "bench_util.h"
#include "dispatch/event_store.h"
#include "dispatch/projection.h"
#include "dispatch/replay.h"
#include "dispatch/screen.h"

using namespace dispatch;
using namespace bench;

namespace {

// The median CPU time of the calling thread in the last MedianMs (the work
// itself, apart from waiting for a core on a busy machine).
double g_last_cpu_ms = 0;

// The median wall time of `reps` calls of f.
template <class F>
double MedianMs(int reps, F&& f) {
  std::vector<double> v, cpu;
  for (int i = 0; i < reps; ++i) {
    double c = ThreadCpuMs();
    auto t = Clock::now();
    f();
    v.push_back(Ms(Clock::now() - t));
    cpu.push_back(ThreadCpuMs() - c);
  }
  std::sort(v.begin(), v.end());
  std::sort(cpu.begin(), cpu.end());
  g_last_cpu_ms = cpu[cpu.size() / 2];
  return v[v.size() / 2];
}

void Die(const Status& s, const char* what) {
  std::fprintf(stderr, "replay_bench: %s: %s\n", what, s.ToString().c_str());
  std::exit(1);
}

// Appends `n` 100-byte output events (cycling through `text`) to `run`.
void Fill(EventStore& store, const std::string& run, int64_t n, const std::string& text) {
  std::vector<NewEvent> batch;
  size_t off = 0;
  NewEvent created;
  created.channel = "system:status";
  created.type = "created";
  created.encoding = Encoding::kJson;
  created.payload = R"({"kind":"pty","cols":80,"rows":24})";
  batch.push_back(created);
  for (int64_t i = 1; i < n; ++i) {
    if (off + 100 > text.size()) off = 0;
    NewEvent e;
    e.channel = "pty:stdout";
    e.type = "chunk";
    e.payload = text.substr(off, 100);
    off += 100;
    batch.push_back(std::move(e));
    if (batch.size() == 20000) {
      auto r = store.Append(run, batch);
      if (!r.ok()) Die(r.status(), "append");
      batch.clear();
    }
  }
  if (!batch.empty()) {
    auto r = store.Append(run, batch);
    if (!r.ok()) Die(r.status(), "append");
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int profile = 0;  // --profile N: only N attaches to a 10K run (for perf)
  std::string dir;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--dir") == 0 && i + 1 < argc) dir = argv[++i];
    else if (std::strcmp(argv[i], "--profile") == 0 && i + 1 < argc) profile = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--profile-projection") == 0 && i + 1 < argc) profile = -std::atoi(argv[++i]);
  }
  bool own_dir = dir.empty();
  if (own_dir) {
    char tmpl[] = "/tmp/replay_bench.XXXXXX";
    if (!mkdtemp(tmpl)) return 1;
    dir = tmpl;
  }
  StoreOptions so;
  so.path = dir + "/bench.db";
  auto opened = EventStore::Open(so);
  if (!opened.ok()) Die(opened.status(), "open");
  EventStore& store = **opened;
  ReplayEngine engine(&store);
  std::string text = RecordTerminalOutput(8 << 20, true);

  if (profile < 0) {  // --profile-projection N: N status rebuilds of a 100K run (for perf)
    Fill(store, "profile", 100000, text);
    SessionStatusProjection st;
    double ms = MedianMs(-profile, [&] {
      auto rr = engine.Rebuild("profile", st, kLatestSeq, RebuildOptions{false, {0, 0, 0}});
      if (!rr.ok()) Die(rr.status(), "status replay");
    });
    Emit("profile_projection_100k_ms", ms, "ms");
    (void)store.Close();
    if (own_dir) std::filesystem::remove_all(dir);
    return 0;
  }
  if (profile > 0) {
    Fill(store, "profile", 10500, text);
    ScreenProjection sp;
    RebuildOptions ro;
    ro.use_snapshots = false;
    ro.save = SnapshotPolicy{};
    if (auto r = engine.Rebuild("profile", sp, kLatestSeq, ro); !r.ok()) Die(r.status(), "backfill");
    double ms = MedianMs(profile, [&] {
      auto a = engine.AttachScreen("profile");
      if (!a.ok()) Die(a.status(), "attach");
    });
    Emit("profile_attach_ms", ms, "ms");
    Emit("profile_attach_cpu_ms", g_last_cpu_ms, "ms");
    (void)store.Close();
    if (own_dir) std::filesystem::remove_all(dir);
    return 0;
  }

  const std::vector<int64_t> sizes = quick ? std::vector<int64_t>{10000, 100000}
                                           : std::vector<int64_t>{10000, 100000, 1000000};
  for (int64_t n : sizes) {
    std::string run = "bench-" + std::to_string(n);
    // Snapshots by the default policy (every 24 KiB of output: every 246
    // 100-byte events); the run ends 245 events after a snapshot, the
    // longest tail the policy leaves.
    const SnapshotPolicy policy{};
    const int64_t every = std::min(policy.every_events, (policy.every_bytes + 99) / 100);
    int64_t total = (n / every) * every + every - 1;
    auto t_fill = Clock::now();
    Fill(store, run, total, text);
    double fill_ms = Ms(Clock::now() - t_fill);
    // Backfill screen snapshots by the policy (a full replay through the
    // emulator: also the "no snapshot" baseline).
    ScreenProjection sp;
    RebuildOptions ro;
    ro.use_snapshots = false;
    ro.save = policy;
    auto t0 = Clock::now();
    auto r = engine.Rebuild(run, sp, kLatestSeq, ro);
    if (!r.ok()) Die(r.status(), "backfill");
    double full_ms = Ms(Clock::now() - t0);
    std::string tag = n >= 1000000 ? "1m" : n >= 100000 ? "100k" : "10k";
    Emit("append_" + tag + "_events_ms", fill_ms, "ms", "setup: filling the run");
    Emit("screen_full_replay_" + tag + "_events_ms", full_ms, "ms",
         "baseline: every event through the emulator, saving snapshots by the default policy");
    Emit("snapshots_" + tag, static_cast<double>(r->snapshots_saved), "snapshots",
         "screen snapshots saved by the default policy (scrollback 1000 lines)");
    {
      double snap_bytes = 0;
      int64_t at = kLatestSeq;
      for (;;) {
        auto sr = store.catalog().GetSnapshot(run, "screen", at);
        if (!sr.ok()) break;
        snap_bytes += static_cast<double>(sr->data.size());
        at = sr->seq - 1;
      }
      Emit("snapshot_bytes_per_output_byte_" + tag, snap_bytes / (static_cast<double>(total) * 100),
           "ratio", "all screen snapshots of the run / its output bytes");
    }
    Emit("screen_replay_throughput_" + tag, static_cast<double>(total) * 100 / 1e6 / (full_ms / 1e3),
         "MB/s");

    // Attach: newest snapshot + tail read from the store + one repaint.
    int reps = 21;
    int64_t tail = 0;
    double attach = MedianMs(reps, [&] {
      auto a = engine.AttachScreen(run);
      if (!a.ok() || a->seq != total) Die(a.status(), "attach");
      tail = a->replay.events_applied;
    });
    Emit("attach_" + tag + "_events_ms", attach, "ms",
         "median of 21 (wall); newest snapshot + tail from the SQLite store + repaint");
    Emit("attach_" + tag + "_events_cpu_ms", g_last_cpu_ms, "ms", "the same, thread CPU time");
    Emit("attach_" + tag + "_tail_events", static_cast<double>(tail), "events");

    if (n == 100000) {
      // The projection and the two baselines are timed interleaved (one of
      // each per round, 15 rounds), so that a change of load on a shared
      // machine hits all three alike.
      SessionStatusProjection st;
      auto projection = [&] {
        auto rr = engine.Rebuild(run, st, kLatestSeq, RebuildOptions{false, {0, 0, 0}});
        if (!rr.ok() || st.state().event_count != total) Die(rr.status(), "status replay");
      };
      auto raw_read = [&](size_t page) {
        int64_t c = 0;
        int64_t cursor = 0;
        for (;;) {
          ReadOptions rdo;
          rdo.limit = page;
          auto rr = store.Read(run, cursor, [&](const EventView& e) {
            c++;
            cursor = e.seq;
            return true;
          }, rdo);
          if (!rr.ok()) Die(rr.status(), "read");
          if (rr->count < static_cast<int64_t>(page)) break;
        }
        if (c != total) Die(Status::Internal("count"), "read");
      };
      std::vector<double> vp, vr8, vr64;
      for (int round = 0; round < 15; ++round) {
        vp.push_back(MedianMs(1, projection));
        vr8.push_back(MedianMs(1, [&] { raw_read(8192); }));
        vr64.push_back(MedianMs(1, [&] { raw_read(65536); }));
      }
      auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
      };
      Emit("replay_projection_100k_ms", median(vp), "ms",
           "session-status projection over all events of the 100K run from the store, no snapshot "
           "(median of 15, interleaved with the baselines)");
      Emit("baseline_store_read_100k_ms", median(vr8), "ms",
           "baseline: reading the same events in pages of 8192, no projection");
      Emit("baseline_store_read_100k_64k_pages_ms", median(vr64), "ms",
           "baseline: the same in pages of 65536, as the engine reads when it saves no snapshots");
    }
    if (n == sizes.back()) {
      // Time travel to random seqs: nearest snapshot + the tail to it.
      std::vector<int64_t> targets;
      for (int i = 0; i < 21; ++i) targets.push_back(1 + (static_cast<int64_t>(i) * 7919 * 1009) % total);
      size_t k = 0;
      double rebuild = MedianMs(21, [&] {
        auto s = engine.ScreenAt(run, targets[k++ % targets.size()]);
        if (!s.ok()) Die(s.status(), "screen at");
      });
      Emit("screen_rebuild_" + tag + "_events_ms", rebuild, "ms",
           "median of 21 random seqs (wall): nearest snapshot + tail, with 1000 lines of scrollback");
      Emit("screen_rebuild_" + tag + "_events_cpu_ms", g_last_cpu_ms, "ms", "the same, thread CPU time");
    }
  }

  // Snapshot size of a busy 80x24 screen.
  {
    auto s = std::move(TerminalScreen::Create({80, 24, 0})).value();
    s->Write(text.substr(0, 200000));
    Emit("snapshot_bytes_80x24", static_cast<double>(s->Save().size()), "bytes",
         "ls -lR --color output; state without scrollback");
    Emit("repaint_bytes_80x24", static_cast<double>(s->Repaint().size()), "bytes");
    auto sb = std::move(TerminalScreen::Create({80, 24, 1000})).value();
    sb->Write(text.substr(0, 400000));
    Emit("snapshot_bytes_80x24_scrollback_1000", static_cast<double>(sb->Save().size()), "bytes");
    Emit("baseline_raw_cells_80x24", 80.0 * 24 * sizeof(ScreenCell), "bytes",
         "baseline: the cells as ScreenCell structs");
  }
  (void)store.Close();
  if (own_dir) std::filesystem::remove_all(dir);
  return 0;
}
