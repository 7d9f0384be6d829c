// What the benchmarks share: the JSON-lines output, timing helpers, and the
// bare-pty baselines (the same code in every benchmark that compares with
// them, so "bare" means one thing).
#ifndef DISPATCH_TESTS_BENCH_BENCH_UTIL_H_
#define DISPATCH_TESTS_BENCH_BENCH_UTIL_H_

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace bench {

using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
inline double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
inline double Micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

// CPU seconds (user + system) used by this process so far, all threads.
inline double CpuSeconds() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// The CPU time of the calling thread, in ms.
inline double ThreadCpuMs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// Nearest-rank percentile (p in [0, 1]); -1 for no samples.
inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// The machine's "cpu" line of /proc/stat, in seconds of one vCPU: user,
// nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice.
inline std::array<double, 10> MachineCpuSeconds() {
  std::array<double, 10> v{};
  std::ifstream f("/proc/stat");
  std::string cpu;
  f >> cpu;
  for (double& x : v) f >> x;
  double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  for (double& x : v) x /= tick;
  return v;
}

// The hypervisor's share of this VM's vCPUs: /proc/stat's "steal", the time
// a vCPU had work but the physical machine ran something else. These
// benchmarks run on 2-vCPU guests of a shared machine, where steal comes and
// goes by the minute and takes whole pipelines of threads with it (a
// hand-off to a thread whose vCPU is not running waits for the hypervisor),
// so every run reports it next to its figures: cores stolen, averaged over
// the wall time between Start() and Cores().
class StealMeter {
 public:
  StealMeter() { Start(); }
  void Start() {
    t0_ = Clock::now();
    s0_ = StealSeconds();
  }
  double Cores() const {
    double wall = Seconds(Clock::now() - t0_);
    return wall > 0 ? (StealSeconds() - s0_) / wall : 0;
  }
  // Steal since boot, in seconds of one vCPU (0 where the kernel does not
  // count it).
  static double StealSeconds() { return MachineCpuSeconds()[7]; }

 private:
  Clock::time_point t0_;
  double s0_ = 0;
};

// CPU use of a process, for diagnostics (--cpu): the machine's busy and
// total time (/proc/stat; busy = not idle or iowait), the process's own
// (threads that have exited included), its reaped children's, and each live
// thread's ("comm/tid"), all in seconds.
struct CpuSnap {
  double machine_busy = 0, machine_total = 0;
  double process = 0, children = 0;
  std::map<std::string, double> threads;  // "comm/tid" -> seconds
  std::map<std::string, long> wakeups;    // "comm/tid" -> voluntary context switches
};

inline CpuSnap TakeCpuSnap(pid_t pid) {
  CpuSnap c;
  double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  {
    std::array<double, 10> v = MachineCpuSeconds();
    for (double x : v) c.machine_total += x;
    c.machine_busy = c.machine_total - v[3] - v[4];
  }
  {
    // The whole process (threads that have exited included) and its
    // reaped children (the session's program).
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(f, line);
    size_t r = line.rfind(')');
    if (r != std::string::npos) {
      std::istringstream rest(line.substr(r + 2));
      std::string field;
      double v[18] = {};
      for (int i = 3; i <= 17; ++i) {
        rest >> field;
        v[i] = std::atof(field.c_str());
      }
      c.process = (v[14] + v[15]) / tick;
      c.children = (v[16] + v[17]) / tick;
    }
  }
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream f(dir + "/" + e->d_name + "/stat");
      std::string line;
      std::getline(f, line);
      size_t l = line.find('('), r = line.rfind(')');
      if (l == std::string::npos || r == std::string::npos) continue;
      std::istringstream rest(line.substr(r + 2));
      std::string field;
      double ut = 0, st = 0;
      for (int i = 3; i <= 15; ++i) {
        rest >> field;
        if (i == 14) ut = std::atof(field.c_str());
        if (i == 15) st = std::atof(field.c_str());
      }
      std::string key = line.substr(l + 1, r - l - 1) + "/" + e->d_name;
      c.threads[key] = (ut + st) / tick;
      // Voluntary switches: each is a sleep (poll, a lock, a read) and a
      // wake-up, a hand-off from another thread or a device.
      std::ifstream status(dir + "/" + e->d_name + "/status");
      std::string l2;
      while (std::getline(status, l2)) {
        if (l2.starts_with("voluntary_ctxt_switches:")) {
          c.wakeups[key] = std::atol(l2.c_str() + l2.find(':') + 1);
        }
      }
    }
    closedir(d);
  }
  return c;
}

// CPU seconds each thread alive at `b` ("comm/tid") used since `a`.
inline std::map<std::string, double> ThreadCpuDelta(const CpuSnap& a, const CpuSnap& b) {
  std::map<std::string, double> d;
  for (const auto& [k, v] : b.threads) {
    auto it = a.threads.find(k);
    d[k] = v - (it == a.threads.end() ? 0 : it->second);
  }
  return d;
}

inline std::string JsonString(std::string_view s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else {
      o += c;
    }
  }
  return o + "\"";
}

// One result: {"metric": NAME, "value": V, "unit": U[, "note": N]}.
inline void Emit(std::string_view metric, double value, std::string_view unit, std::string_view note = {}) {
  std::string line = "{\"metric\": " + JsonString(metric);
  char v[32];
  std::snprintf(v, sizeof v, "%.4g", value);
  line += ", \"value\": ";
  line += v;
  line += ", \"unit\": " + JsonString(unit);
  if (!note.empty()) line += ", \"note\": " + JsonString(note);
  std::printf("%s}\n", line.c_str());
  std::fflush(stdout);
}

// forkpty + exec (80x24); the child's pid, the master in *master.
inline pid_t Spawn(int* master, const char* prog, std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  struct winsize ws = {24, 80, 0, 0};
  pid_t pid = forkpty(master, nullptr, nullptr, &ws);
  if (pid == 0) {
    execv(prog, argv.data());
    _exit(127);
  }
  return pid;
}

// Baseline: a plain blocking reader draining a bare pty running
// `head -c bytes /dev/zero`. MB/s.
inline double BarePtyMbps(int64_t bytes) {
  int master = -1;
  auto t0 = Clock::now();
  pid_t pid = Spawn(&master, "/usr/bin/head", {"head", "-c", std::to_string(bytes), "/dev/zero"});
  std::vector<char> buf(256 * 1024);
  int64_t got = 0;
  for (;;) {
    ssize_t n = read(master, buf.data(), buf.size());
    if (n > 0) {
      got += n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;  // EIO: the child closed the terminal
  }
  double s = Seconds(Clock::now() - t0);
  close(master);
  int st;
  waitpid(pid, &st, 0);
  if (got != bytes) {
    std::fprintf(stderr, "bare pty: read %lld of %lld bytes\n", static_cast<long long>(got),
                 static_cast<long long>(bytes));
  }
  return static_cast<double>(got) / 1e6 / s;
}

// Baseline: `samples` keystrokes into an interactive bash on a bare pty
// (readline echoes each; "x" and backspace alternate), write() to read() of
// the echo, in µs.
inline std::vector<double> BareEchoUs(int samples) {
  int master = -1;
  pid_t pid = Spawn(&master, "/bin/bash", {"bash", "--norc", "--noprofile", "-i"});
  std::vector<double> out;
  char buf[4096];
  auto drain = [&](int timeout_ms) {
    pollfd p = {master, POLLIN, 0};
    while (poll(&p, 1, timeout_ms) > 0) {
      if (read(master, buf, sizeof buf) <= 0) return;
      timeout_ms = 20;
    }
  };
  drain(300);
  for (int i = 0; i < samples; ++i) {
    const char* key = (i % 2 == 0) ? "x" : "\x7f";
    auto t0 = Clock::now();
    if (write(master, key, 1) != 1) break;
    pollfd p = {master, POLLIN, 0};
    if (poll(&p, 1, 2000) <= 0) break;
    if (read(master, buf, sizeof buf) <= 0) break;
    out.push_back(Micros(Clock::now() - t0));
    drain(2);
  }
  kill(pid, SIGKILL);
  int st;
  waitpid(pid, &st, 0);
  close(master);
  return out;
}

// `want` bytes of real terminal output (`ls -lR /usr`, with colours if
// asked), repeated to length.
inline std::string RecordTerminalOutput(size_t want, bool color) {
  std::string out;
  FILE* p = popen(color ? "ls -lR --color=always /usr 2>/dev/null" : "ls -lR /usr 2>/dev/null", "r");
  if (p) {
    char buf[65536];
    size_t n;
    while (out.size() < want && (n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    pclose(p);
  }
  if (out.empty()) out = "\x1b[01;34mdir\x1b[0m -rw-r--r-- 1 root root 1234 Jan  1 00:00 fallback\r\n";
  std::string base = out;
  while (out.size() < want) out += base;
  out.resize(want);
  return out;
}

}  // namespace bench

#endif  // DISPATCH_TESTS_BENCH_BENCH_UTIL_H_
