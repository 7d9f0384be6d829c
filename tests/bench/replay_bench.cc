// Replay engine benchmarks. Prints one JSON object per line:
//   {"metric": NAME, "value": V, "unit": U}
// with baselines measured in the same run. Not part of ctest.
//
//   build/tests/bench/replay_bench [--quick] [--dir DIR]
//
// Runs hold realistic terminal output: `ls -lR --color=always /usr` cut into
// 100-byte pty:stdout events. Screen snapshots are taken every 1000 events
// (backfilled with ReplayEngine::Rebuild and a SnapshotPolicy), and each run
// ends 500 events after its last snapshot, so attach and rebuild always
// replay a tail.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "dispatch/event_store.h"
#include "dispatch/projection.h"
#include "dispatch/replay.h"
#include "dispatch/screen.h"

using namespace dispatch;
using Clock = std::chrono::steady_clock;

namespace {

void Emit(const std::string& metric, double value, const char* unit, const std::string& note = {}) {
  if (note.empty()) {
    std::printf("{\"metric\": \"%s\", \"value\": %.4g, \"unit\": \"%s\"}\n", metric.c_str(), value,
                unit);
  } else {
    std::printf("{\"metric\": \"%s\", \"value\": %.4g, \"unit\": \"%s\", \"note\": \"%s\"}\n",
                metric.c_str(), value, unit, note.c_str());
  }
  std::fflush(stdout);
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::string RecordTerminalOutput(size_t want) {
  std::string out;
  FILE* p = popen("ls -lR --color=always /usr 2>/dev/null", "r");
  if (p) {
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0 && out.size() < want) out.append(buf, n);
    pclose(p);
  }
  if (out.empty()) out = "\x1b[01;34mdir\x1b[0m -rw-r--r-- 1 root root 1234 Jan  1 00:00 fallback\r\n";
  std::string base = out;
  while (out.size() < want) out += base;
  out.resize(want);
  return out;
}

template <class F>
double MedianMs(int reps, F&& f) {
  std::vector<double> v;
  for (int i = 0; i < reps; ++i) {
    auto t = Clock::now();
    f();
    v.push_back(Ms(Clock::now() - t));
  }
  std::sort(v.begin(), v.end());
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
  std::string dir;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--dir") == 0 && i + 1 < argc) dir = argv[++i];
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
  std::string text = RecordTerminalOutput(8 << 20);

  const std::vector<int64_t> sizes = quick ? std::vector<int64_t>{10000, 100000}
                                           : std::vector<int64_t>{10000, 100000, 1000000};
  for (int64_t n : sizes) {
    std::string run = "bench-" + std::to_string(n);
    int64_t total = n + 500;  // last snapshot at n, then a 500-event tail
    auto t_fill = Clock::now();
    Fill(store, run, total, text);
    double fill_ms = Ms(Clock::now() - t_fill);
    // Backfill screen snapshots every 1000 events (a full replay through
    // the emulator: also the "no snapshot" baseline).
    ScreenProjection sp;
    RebuildOptions ro;
    ro.use_snapshots = false;
    ro.save = {1000, 0, 0};
    auto t0 = Clock::now();
    auto r = engine.Rebuild(run, sp, kLatestSeq, ro);
    if (!r.ok()) Die(r.status(), "backfill");
    double full_ms = Ms(Clock::now() - t0);
    std::string tag = n >= 1000000 ? "1m" : n >= 100000 ? "100k" : "10k";
    Emit("append_" + tag + "_events_ms", fill_ms, "ms", "setup: filling the run");
    Emit("screen_full_replay_" + tag + "_events_ms", full_ms, "ms",
         "baseline: every event through the emulator, saving a snapshot every 1000");
    Emit("screen_replay_throughput_" + tag, static_cast<double>(total) * 100 / 1e6 / (full_ms / 1e3),
         "MB/s");

    // Attach: newest snapshot + 500-event tail + one repaint.
    int reps = 21;
    double attach = MedianMs(reps, [&] {
      auto a = engine.AttachScreen(run);
      if (!a.ok() || a->seq != total) Die(a.status(), "attach");
    });
    Emit("attach_" + tag + "_events_ms", attach, "ms", "median of 21; snapshot + 500-event tail + repaint");

    if (n == 100000) {
      SessionStatusProjection st;
      double proj = MedianMs(7, [&] {
        auto rr = engine.Rebuild(run, st, kLatestSeq, RebuildOptions{false, {0, 0, 0}});
        if (!rr.ok() || st.state().event_count != total) Die(rr.status(), "status replay");
      });
      Emit("replay_projection_100k_ms", proj, "ms",
           "session-status projection over 100,500 events from the store, no snapshot");
      double raw = MedianMs(7, [&] {
        int64_t c = 0;
        int64_t cursor = 0;
        for (;;) {
          ReadOptions rdo;
          rdo.limit = 8192;
          auto rr = store.Read(run, cursor, [&](const EventView& e) {
            c++;
            cursor = e.seq;
            return true;
          }, rdo);
          if (!rr.ok()) Die(rr.status(), "read");
          if (rr->count < 8192) break;
        }
        if (c != total) Die(Status::Internal("count"), "read");
      });
      Emit("baseline_store_read_100k_ms", raw, "ms", "baseline: reading the same events, no projection");
    }
    if (n == sizes.back()) {
      // Time travel to random seqs: nearest snapshot + up to 999 events.
      std::vector<int64_t> targets;
      for (int i = 0; i < 21; ++i) targets.push_back(1 + (static_cast<int64_t>(i) * 7919 * 1009) % total);
      size_t k = 0;
      double rebuild = MedianMs(21, [&] {
        auto s = engine.ScreenAt(run, targets[k++ % targets.size()]);
        if (!s.ok()) Die(s.status(), "screen at");
      });
      Emit("screen_rebuild_" + tag + "_events_ms", rebuild, "ms",
           "median of 21 random seqs: nearest snapshot + tail (<= 999 events)");
      if (tag == "1m") Emit("screen_rebuild_1m_events_ms", rebuild, "ms");
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
