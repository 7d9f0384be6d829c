// Session runtime benchmarks. Prints one JSON object per line:
//   {"metric": NAME, "value": V, "unit": U}
// with bare-pty baselines measured in the same run. Not part of ctest.
//
//   build/tests/bench/runtime_bench [--quick] [--dir DIR] [--bytes N] [--rounds N]
//                                   [--echo-only | --throughput-only] [--cpu]
//
// --cpu: per session round, the CPU per MB of each of this process's threads
//   (by name: dispatch-loop, dispatch-writer, ...), of the session's program,
//   and how busy the machine was (stderr).
//
// pty_throughput_mbps: N bytes (default 200 MB) of `head -c N /dev/zero` on a
//   pty session, from CreateSession until the `closed` event is committed —
//   every byte persisted in the store. baseline_bare_pty_mbps: the same
//   program on a bare forkpty, drained by a plain blocking reader.
// echo_latency_p99_us: one keystroke into an interactive bash (readline
//   echoes it) from the Input call until its echo is committed and published
//   on the bus, both on the loop thread. baseline_bare_echo_p99_us: the same
//   keystroke on a bare pty, write() to read() of the echo.
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <map>
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

#include "dispatch/event_store.h"
#include "dispatch/session_manager.h"
#include "bench_util.h"

using namespace dispatch;
using namespace bench;

namespace {

// Keystrokes are measured in rounds of this many, bare and session alternating.
constexpr int kEchoRound = 50;

struct Bench {
  std::unique_ptr<EventStore> store;
  std::unique_ptr<RunSessionManager> mgr;
  std::mutex mu;
  std::condition_variable cv;
  std::string closed_run;

  explicit Bench(const std::string& dir) {
    StoreOptions so;
    so.path = dir + "/runtime_bench.db";
    so.exclusive = std::getenv("DISPATCH_BENCH_SHARED_STORE") == nullptr;  // as dispatch-host opens it
    auto s = EventStore::Open(so);
    if (!s.ok()) {
      std::fprintf(stderr, "open store: %s\n", s.status().ToString().c_str());
      std::exit(1);
    }
    store = std::move(*s);
    ManagerOptions mo;
    mo.store = store.get();
    mo.workspaces_root = dir;
    auto m = RunSessionManager::Create(mo);
    if (!m.ok()) {
      std::fprintf(stderr, "manager: %s\n", m.status().ToString().c_str());
      std::exit(1);
    }
    mgr = std::move(*m);
    mgr->Subscribe("system:status/closed", [this](const EventView& e) {
      std::lock_guard<std::mutex> l(mu);
      closed_run = std::string(e.run_id);
      cv.notify_all();
    });
  }
  ~Bench() {
    mgr.reset();
    store.reset();
  }

  double SessionMbps(int64_t bytes) {
    SessionConfig c;
    c.options_json = "{\"shell\":\"/usr/bin/head\",\"args\":[\"-c\",\"" + std::to_string(bytes) +
                     "\",\"/dev/zero\"]}";
    auto t0 = Clock::now();
    auto run = mgr->CreateSession(c);
    if (!run.ok()) {
      std::fprintf(stderr, "create: %s\n", run.status().ToString().c_str());
      std::exit(1);
    }
    {
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [&] { return closed_run == *run; });
    }
    auto t1 = Clock::now();
    auto info = store->GetRun(*run);
    int64_t stored = info.ok() ? info->payload_bytes : 0;
    auto ms = mgr->Stats();
    std::fprintf(stderr, "# session: %lld appends, %lld pauses, %.1f s\n",
                 static_cast<long long>(ms.appends), static_cast<long long>(ms.pauses),
                 Seconds(t1 - t0));
    if (stored < bytes) {
      std::fprintf(stderr, "session: only %lld bytes stored\n", static_cast<long long>(stored));
    }
    return static_cast<double>(bytes) / 1e6 / Seconds(t1 - t0);
  }

  // Of each echo: µs from its recording (read by the adapter, ts) to delivery.
  std::vector<double> commit_us;
  std::vector<int64_t> checkpoints;  // the store's checkpoint count after each echo

  std::vector<double> SessionEchoUs(int samples) {
    SessionConfig c;
    c.options_json = R"({"shell":"/bin/bash","args":["--norc","--noprofile","-i"]})";
    auto run = mgr->CreateSession(c);
    if (!run.ok()) std::exit(1);
    std::atomic<int64_t> t_in{0}, t_out{0};
    std::atomic<bool> waiting{false};
    std::mutex echo_mu;
    std::condition_variable echo_cv;
    auto id = mgr->Subscribe(
        "pty:stdout",
        [&](const EventView& e) {
          if (waiting.exchange(false)) {
            int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                              Clock::now().time_since_epoch())
                              .count();
            commit_us.push_back(static_cast<double>(NowMicros() - e.ts_us));
            std::lock_guard<std::mutex> l(echo_mu);
            t_out = now;
            echo_cv.notify_one();
          }
        },
        *run);
    std::this_thread::sleep_for(std::chrono::milliseconds(150));  // the prompt
    std::vector<double> out;
    for (int i = 0; i < samples; ++i) {
      std::string key = (i % 2 == 0) ? "x" : "\x7f";
      t_out = 0;
      (void)mgr->Post([&, key] {
        waiting = true;
        t_in = std::chrono::duration_cast<std::chrono::nanoseconds>(
                   Clock::now().time_since_epoch())
                   .count();
        (void)mgr->Input(*run, key);  // loop thread: inline
      });
      // Sleep until the subscriber has the echo (it takes the time first):
      // polling here would wake this thread every few µs and take a CPU
      // from bash and the loop, which the bare baseline does not.
      {
        std::unique_lock<std::mutex> l(echo_mu);
        echo_cv.wait_for(l, std::chrono::seconds(2), [&] { return t_out.load() != 0; });
      }
      if (t_out.load() == 0) break;
      out.push_back(static_cast<double>(t_out.load() - t_in.load()) / 1000.0);
      checkpoints.push_back(store->Stats().checkpoints);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));  // let trailing output pass
      (void)mgr->WaitIdle(*run);
    }
    mgr->bus().Unsubscribe(id);
    (void)mgr->Close(*run, CloseOptions{0, true});
    return out;
  }
};

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, echo_only = false, throughput_only = false, cpu_report = false;
  int rounds_arg = 0;
  int64_t bytes = 200'000'000;
  std::string dir;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
      bytes = 50'000'000;
    } else if (a == "--cpu") {
      cpu_report = true;
    } else if (a == "--echo-only") {
      echo_only = true;
    } else if (a == "--throughput-only") {
      throughput_only = true;
    } else if (a == "--rounds" && i + 1 < argc) {
      rounds_arg = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else if (a == "--bytes" && i + 1 < argc) {
      bytes = std::atoll(argv[++i]);
    }
  }
  bool tmp = dir.empty();
  if (tmp) {
    char tmpl[] = "/tmp/dispatch-runtime-bench-XXXXXX";
    if (!mkdtemp(tmpl)) return 1;
    dir = tmpl;
  }
  {
    Bench b(dir);
    // Alternate the two so that machine noise hits both alike; report medians
    // (and the median of the per-round ratios).
    std::vector<double> bares, sessions, ratios;
    double bare_cpu = 1e9, session_cpu = 1e9;
    int rounds = echo_only ? 0 : rounds_arg > 0 ? rounds_arg : quick ? 1 : 3;
    StealMeter steal_throughput;
    for (int r = 0; r < rounds; ++r) {
      double c0 = CpuSeconds();
      bares.push_back(BarePtyMbps(bytes));
      double c1 = CpuSeconds();
      CpuSnap snap0 = TakeCpuSnap(getpid());
      auto w0 = Clock::now();
      sessions.push_back(b.SessionMbps(bytes));
      double c2 = CpuSeconds();
      if (cpu_report) {
        // Per thread of this process (by name), during the session round.
        CpuSnap snap1 = TakeCpuSnap(getpid());
        double wall = Seconds(Clock::now() - w0);
        std::map<std::string, double> by_name;
        double listed = 0;
        for (const auto& [k, d] : ThreadCpuDelta(snap0, snap1)) {
          by_name[k.substr(0, k.find('/'))] += d;
          listed += d;
        }
        std::string parts;
        for (auto& [name, sec] : by_name) {
          if (sec >= 0.005) parts += " " + name + "=" + std::to_string(sec * 1000 / (bytes / 1e6)).substr(0, 4);
        }
        double gone = (snap1.process - snap0.process) - listed;  // threads that have exited
        std::fprintf(stderr,
                     "# session cpu, ms/MB: all %.2f [%s, exited threads (pty reader)=%.2f ], "
                     "program %.2f; machine %.2f of %.2f cores busy\n",
                     (snap1.process - snap0.process) * 1000 / (bytes / 1e6), parts.c_str(),
                     gone * 1000 / (bytes / 1e6), (snap1.children - snap0.children) * 1000 / (bytes / 1e6),
                     (snap1.machine_busy - snap0.machine_busy) / wall,
                     (snap1.machine_total - snap0.machine_total) / wall);
      }
      ratios.push_back(sessions.back() / bares.back());
      bare_cpu = std::min(bare_cpu, c1 - c0);
      session_cpu = std::min(session_cpu, c2 - c1);
    }
    double stolen_throughput = steal_throughput.Cores();
    if (!echo_only) {
      double bare = Percentile(bares, 0.5), session = Percentile(sessions, 0.5);
      std::string note = std::to_string(bytes / 1000000) + " MB of head -c /dev/zero, median of " +
                         std::to_string(rounds);
      Emit("baseline_bare_pty_mbps", bare, "MB/s", note);
      Emit("pty_throughput_mbps", session, "MB/s", note + ", every byte committed");
      Emit("pty_throughput_ratio", Percentile(ratios, 0.5), "x", "median of per-round ratios");
      Emit("machine_steal_cores_throughput", stolen_throughput, "cores",
           "vCPU time the hypervisor gave to other guests during the rounds (of 2)");
      // Load-independent view: CPU of this process (reader; + loop, writer and
      // compression for the session) per MB, excluding the child's.
      double mb = static_cast<double>(bytes) / 1e6;
      Emit("baseline_bare_pty_cpu_ms_per_mb", bare_cpu * 1000 / mb, "ms/MB");
      Emit("pty_session_cpu_ms_per_mb", session_cpu * 1000 / mb, "ms/MB");
      if (rounds > 1) {
        std::string all;
        for (double x : ratios) all += (all.empty() ? "" : " ") + std::to_string(x).substr(0, 4);
        std::fprintf(stderr, "# per-round ratios: %s\n", all.c_str());
      }
    }

    int samples = throughput_only ? 0 : quick ? 200 : 1000;
    // Bare and session keystrokes alternate in rounds of 50, so that the
    // machine's noise (other processes on 2 cores) hits both alike.
    std::vector<double> bare_echo, echo;
    int64_t commit_count = 0, commit_us_total = 0;
    StealMeter steal_echo;
    for (int done = 0; done < samples; done += kEchoRound) {
      int n = std::min(kEchoRound, samples - done);
      auto bare = BareEchoUs(n);
      bare_echo.insert(bare_echo.end(), bare.begin(), bare.end());
      StoreStats s0 = b.store->Stats();
      auto sess = b.SessionEchoUs(n);
      StoreStats s1 = b.store->Stats();
      echo.insert(echo.end(), sess.begin(), sess.end());
      commit_count += s1.group_commits - s0.group_commits;
      commit_us_total += s1.commit_latency_us_total - s0.commit_latency_us_total;
    }
    double commits = static_cast<double>(commit_count);
    double stolen_echo = steal_echo.Cores();
    if (samples > 0) {
      Emit("machine_steal_cores_echo", stolen_echo, "cores",
           "vCPU time the hypervisor gave to other guests while the keystrokes ran (of 2)");
      Emit("baseline_bare_echo_p50_us", Percentile(bare_echo, 0.50), "us");
      Emit("baseline_bare_echo_p99_us", Percentile(bare_echo, 0.99), "us",
           std::to_string(bare_echo.size()) + " keystrokes, bash readline");
      Emit("echo_latency_p50_us", Percentile(echo, 0.50), "us");
      if (commits > 0) {
        Emit("echo_store_commit_avg_us",
             static_cast<double>(commit_us_total) / commits,
             "us", "the store's own commit latency (StoreStats) during the echo test");
    }
    Emit("echo_commit_part_p50_us", Percentile(b.commit_us, 0.50), "us",
         "of the echo latency: from the adapter reading the echo to its delivery after commit");
    Emit("echo_latency_p99_us", Percentile(echo, 0.99), "us",
         std::to_string(echo.size()) + " keystrokes, input to committed echo");
    Emit("echo_commit_part_p99_us", Percentile(b.commit_us, 0.99), "us");
    }
    if (std::getenv("DISPATCH_BENCH_VERBOSE")) {
      for (size_t i = 0; i < echo.size(); ++i) {
        if (echo[i] > 500) {
          std::fprintf(stderr, "# slow echo %zu: %.0f us (commit part %.0f), checkpoints %lld\n", i, echo[i],
                       i < b.commit_us.size() ? b.commit_us[i] : -1.0,
                       static_cast<long long>(i < b.checkpoints.size() ? b.checkpoints[i] : -1));
        }
      }
    }
  }
  if (tmp) std::filesystem::remove_all(dir);
  return 0;
}
