// Event store benchmarks. Prints one JSON object per line:
//   {"metric": NAME, "value": V, "unit": U}
// with raw-SQLite baselines measured in the same run. Not part of ctest.
//
//   build/tests/bench/store_bench [--quick] [--dir DIR]
//
// Realistic terminal output is the recorded output of `ls -lR /usr`, cut
// into 100-byte events (as a pty delivers it, line pieces and all).
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "dispatch/event_store.h"

using namespace dispatch;
using namespace bench;

namespace {

std::vector<NewEvent> Chunks(const std::string& text, size_t count, size_t size) {
  std::vector<NewEvent> v;
  v.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    NewEvent e;
    e.channel = "pty:stdout";
    e.type = "chunk";
    e.payload = text.substr((i * size) % (text.size() - size), size);
    v.push_back(std::move(e));
  }
  return v;
}

std::unique_ptr<EventStore> Open(const std::string& path) {
  StoreOptions o;
  o.path = path;
  auto r = EventStore::Open(o);
  if (!r.ok()) {
    std::fprintf(stderr, "open %s: %s\n", path.c_str(), r.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(r).value();
}

// Fills `run` with `events`, 256 per append (how a busy pty session's
// output arrives at the store through group commit).
void Fill(EventStore& store, const std::string& run, const std::vector<NewEvent>& events) {
  constexpr size_t kBatch = 256;
  for (size_t i = 0; i < events.size(); i += kBatch) {
    size_t n = std::min(kBatch, events.size() - i);
    auto r = store.Append(run, std::span<const NewEvent>(events.data() + i, n));
    if (!r.ok()) {
      std::fprintf(stderr, "append: %s\n", r.status().ToString().c_str());
      std::exit(1);
    }
  }
}

double ReplayMs(EventStore& store, const std::string& run, size_t expect) {
  double best = 1e18;
  for (int rep = 0; rep < 5; ++rep) {
    size_t n = 0, bytes = 0;
    auto t0 = Clock::now();
    auto r = store.Read(run, 0, [&](const EventView& v) {
      ++n;
      bytes += v.payload.size();
      return true;
    });
    double ms = Ms(Clock::now() - t0);
    if (!r.ok() || n != expect || bytes == 0) {
      std::fprintf(stderr, "replay read %zu of %zu\n", n, expect);
      std::exit(1);
    }
    best = std::min(best, ms);
  }
  return best;
}

// Raw SQLite: one row per event, the layout most event stores start with.
void Baselines(const std::string& dir, const std::vector<NewEvent>& events) {
  std::string path = dir + "/baseline.db";
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", nullptr, nullptr, nullptr);
  sqlite3_exec(db,
               "CREATE TABLE events (run_id TEXT, seq INTEGER, channel TEXT, type TEXT, payload BLOB, "
               "ts INTEGER, PRIMARY KEY (run_id, seq)) WITHOUT ROWID",
               nullptr, nullptr, nullptr);
  sqlite3_stmt* ins = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO events VALUES ('run', ?, ?, ?, ?, ?)", -1, &ins, nullptr);
  auto t0 = Clock::now();
  const size_t n = events.size();
  for (size_t i = 0; i < n; ++i) {
    if (i % 1000 == 0) sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
    sqlite3_bind_int64(ins, 1, static_cast<int64_t>(i + 1));
    sqlite3_bind_text(ins, 2, events[i].channel.data(), static_cast<int>(events[i].channel.size()), SQLITE_STATIC);
    sqlite3_bind_text(ins, 3, events[i].type.data(), static_cast<int>(events[i].type.size()), SQLITE_STATIC);
    sqlite3_bind_blob(ins, 4, events[i].payload.data(), static_cast<int>(events[i].payload.size()), SQLITE_STATIC);
    sqlite3_bind_int64(ins, 5, 1700000000000000 + static_cast<int64_t>(i));
    sqlite3_step(ins);
    sqlite3_reset(ins);
    if (i % 1000 == 999 || i + 1 == n) sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  }
  double insert_s = Ms(Clock::now() - t0) / 1000;
  sqlite3_finalize(ins);
  Emit("baseline_sqlite_bulk_insert_eps", static_cast<double>(n) / insert_s, "events/s",
       "row per event, 1000 rows per transaction");
  sqlite3_stmt* scan = nullptr;
  sqlite3_prepare_v2(db, "SELECT seq, channel, type, payload, ts FROM events WHERE run_id = 'run' ORDER BY seq",
                     -1, &scan, nullptr);
  double best = 1e18;
  for (int rep = 0; rep < 5; ++rep) {
    size_t rows = 0, bytes = 0;
    auto t1 = Clock::now();
    while (sqlite3_step(scan) == SQLITE_ROW) {
      ++rows;
      bytes += static_cast<size_t>(sqlite3_column_bytes(scan, 3));
      (void)sqlite3_column_blob(scan, 3);
      (void)sqlite3_column_text(scan, 1);
      (void)sqlite3_column_text(scan, 2);
    }
    sqlite3_reset(scan);
    best = std::min(best, Ms(Clock::now() - t1));
  }
  sqlite3_finalize(scan);
  sqlite3_close(db);
  Emit(n == 100000 ? "baseline_sqlite_row_scan_100k_ms" : "baseline_sqlite_row_scan_ms", best, "ms");
}

void AppendThroughput(const std::string& dir, const std::vector<NewEvent>& pool, size_t per_stream,
                      size_t batch, const char* metric, const std::string& note) {
  auto store = Open(dir + "/append-" + std::to_string(batch) + ".db");
  constexpr int kStreams = 64;
  constexpr int kInFlight = 4;  // appends outstanding per stream (pipelined, acknowledged)
  std::atomic<size_t> acked{0};
  std::atomic<bool> failed{false};
  auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int s = 0; s < kStreams; ++s) {
    threads.emplace_back([&, s] {
      std::string run = "stream-" + std::to_string(s);
      std::mutex mu;
      std::condition_variable cv;
      int outstanding = 0;
      for (size_t i = 0; i < per_stream; i += batch) {
        std::vector<NewEvent> b(pool.begin() + static_cast<long>((i + static_cast<size_t>(s)) % (pool.size() - batch)),
                                pool.begin() + static_cast<long>((i + static_cast<size_t>(s)) % (pool.size() - batch) + batch));
        {
          std::unique_lock<std::mutex> lk(mu);
          cv.wait(lk, [&] { return outstanding < kInFlight; });
          ++outstanding;
        }
        store->AppendAsync(run, std::move(b), {}, [&](Result<AppendResult> r) {
          if (!r.ok()) failed = true;
          else acked += static_cast<size_t>(r->written);
          std::lock_guard<std::mutex> lk(mu);
          --outstanding;
          cv.notify_all();
        });
      }
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return outstanding == 0; });
    });
  }
  for (auto& t : threads) t.join();
  double s = Ms(Clock::now() - t0) / 1000;
  if (failed) {
    std::fprintf(stderr, "append failed\n");
    std::exit(1);
  }
  Emit(metric, static_cast<double>(acked.load()) / s, "events/s", note);
}

void AppendLatency(const std::string& dir, const std::vector<NewEvent>& pool, int count) {
  auto store = Open(dir + "/latency.db");
  std::vector<double> lat;
  lat.reserve(static_cast<size_t>(count));
  auto next = Clock::now();
  for (int i = 0; i < count; ++i) {
    next += std::chrono::microseconds(1000);  // 1,000 events/s offered
    std::this_thread::sleep_until(next);
    auto t0 = Clock::now();
    auto r = store->Append("lat", std::span<const NewEvent>(&pool[static_cast<size_t>(i) % pool.size()], 1));
    lat.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    if (!r.ok()) std::exit(1);
  }
  std::sort(lat.begin(), lat.end());
  Emit("append_p50_us", lat[lat.size() / 2], "us", "1,000 events/s offered, acknowledged");
  Emit("append_p99_us", lat[lat.size() * 99 / 100], "us", "1,000 events/s offered, acknowledged");
  StoreStats st = store->Stats();
  Emit("append_commit_avg_us", st.group_commits ? static_cast<double>(st.commit_latency_us_total) / static_cast<double>(st.group_commits) : 0,
       "us", "of the above: the writer's own time per commit (transaction, no hand-over)");
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, latency_only = false;
  std::string dir;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--latency-only") == 0) latency_only = true;
    else if (std::strcmp(argv[i], "--dir") == 0 && i + 1 < argc) dir = argv[++i];
  }
  if (dir.empty()) {
    char tmpl[] = "/tmp/dispatch-bench-XXXXXX";
    dir = mkdtemp(tmpl);
  }
  if (latency_only) {  // for profiling the append path alone
    std::vector<NewEvent> pool = Chunks(RecordTerminalOutput(100 * 1000 + 4096, false), 1000, 100);
    AppendLatency(dir, pool, quick ? 1000 : 3000);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    return 0;
  }
  const size_t big = quick ? 200000 : 1000000;
  std::string text = RecordTerminalOutput(big * 100 + 4096, false);
  std::vector<NewEvent> events = Chunks(text, big, 100);
  std::vector<NewEvent> first100k(events.begin(), events.begin() + 100000);

  Baselines(dir, first100k);

  {
    auto store = Open(dir + "/replay.db");
    Fill(*store, "r100k", first100k);
    Emit("replay_100k_ms", ReplayMs(*store, "r100k", 100000), "ms", "100K x 100 B ls -lR output, file store -> callback");
    Fill(*store, "r1m", events);
    Emit(quick ? "replay_200k_ms" : "replay_1m_ms", ReplayMs(*store, "r1m", big), "ms");
    store->Close().ok();
    size_t payload = 0;
    for (const auto& e : events) payload += e.payload.size();
    for (const auto& e : first100k) payload += e.payload.size();
    std::error_code ec;
    auto file = std::filesystem::file_size(dir + "/replay.db", ec);
    auto wal = std::filesystem::file_size(dir + "/replay.db-wal", ec);
    if (ec) wal = 0;
    Emit("bytes_per_payload_byte", static_cast<double>(file + wal) / static_cast<double>(payload), "ratio",
         "database file size / payload bytes, ls -lR /usr in 100 B events");
  }

  AppendThroughput(dir, events, quick ? 5000 : 20000, 64, "append_eps_64_streams",
                   "64 streams x 64-event appends of 100 B, 4 in flight per stream, acknowledged");
  AppendThroughput(dir, events, quick ? 1000 : 4000, 1, "append_eps_64_streams_single_event",
                   "64 streams x 1-event appends of 100 B, 4 in flight per stream, acknowledged");
  AppendLatency(dir, events, quick ? 1000 : 3000);

  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}
