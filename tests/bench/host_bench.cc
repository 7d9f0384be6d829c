// dispatch-host benchmarks. Starts the real dispatch-host (a temp data dir,
// 127.0.0.1) and drives it with a minimal blocking WebSocket client written
// here, so the client costs little next to the server. Prints one JSON
// object per line: {"metric": NAME, "value": V, "unit": U, "note": …}.
//
//   build/tests/bench/host_bench [--quick] [--host-bin PATH] [--bytes N]
//                                [--only rss|echo|output|fanout]
//                                [--compare-bin PATH] [--echo-samples N] [--cpu]
//                                [--output-rounds N]
//
// --compare-bin: a second dispatch-host (say, the build before a change)
//   measured in the same run: its echo and output rounds alternate with the
//   first's and the bare pty's (metrics suffixed _compare), so that the
//   machine's noise hits both alike.
// --cpu: per output run, where the CPU went (host threads, client, rest)
//   and the pty side's own pace (stderr).
//
// ws_echo_latency_p50_us / _p99_us: 1,000 keystrokes into an interactive bash
//   (readline echoes each), from writing the run:input frame (built before
//   the clock starts, as the bare key is) to receiving the run:event frame
//   carrying the echo; the host sends an event only after the store has
//   committed it. baseline_bare_echo_p50_us / _p99_us: the same keystrokes on
//   a bare pty (write → read). baseline_loopback_rtt_p50_us / _p99_us: an
//   80-byte message to another process over TCP on 127.0.0.1 and back, paced
//   as the keystrokes; a /ws echo crosses loopback twice, so this plus the
//   bare echo is the floor for any WebSocket host in the same run.
// ws_output_mbps: N bytes (default 200 MB) of `head -c N /dev/zero` on a pty
//   session, attached from seq 0, from POST /api/sessions until the session's
//   closed event arrives — every byte committed to the store before it is
//   sent. baseline_bare_pty_mbps: the same program on a bare forkpty. Rounds
//   (5, or --output-rounds N) of bare then host; the ratio is the median of
//   the per-round ratios. baseline_relay_vs_bare_ratio: in each round, the
//   same output through the least a relay does (one thread reads the pty,
//   another base64-encodes and writes it to TCP on 127.0.0.1, no store, no
//   framing), against the same bare round.
// ws_fanout_100_clients_mbps: one session writing N/10 bytes with 100
//   clients attached; total payload bytes delivered to all clients / time.
// host_rss_per_idle_session_kb: growth of the host's RSS per idle shell
//   session (50 sessions, each with one attached client).
// machine_steal_cores_echo / _output: the vCPU time the hypervisor gave to
//   other guests while the echo or output rounds ran, in cores of the 2
//   (bench::StealMeter); the per-round line on stderr has it per round.
//   ws_output_vs_bare_ratio_quiet / baseline_relay_vs_bare_ratio_quiet: the
//   medians over the rounds with steal under 0.1 cores (when there are any).
//   Figures taken with steal above ~0.1 are the shared machine's, not the
//   host's: see doc/benchmarks.md.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_util.h"
#include "util/text_codec.h"

using namespace bench;
using nlohmann::json;

namespace {

const char* kKey = "bench-key-0123456789abcdef";

[[noreturn]] void Die(const std::string& why) {
  std::fprintf(stderr, "host_bench: %s\n", why.c_str());
  std::exit(1);
}

// ------------------------------------------------------------------ the host

struct Host {
  pid_t pid = -1;
  int port = 0;
  std::string dir;

  void Start(const std::string& bin) {
    char tmpl[] = "/tmp/dispatch-host-bench-XXXXXX";
    if (!mkdtemp(tmpl)) Die("mkdtemp");
    dir = tmpl;
    std::filesystem::create_directories(dir + "/root");
    int out[2];
    if (pipe(out) != 0) Die("pipe");
    pid = fork();
    if (pid == 0) {
      dup2(out[1], 1);
      close(out[0]);
      int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 2);
      std::string data = dir + "/data", root = dir + "/root";
      execl(bin.c_str(), bin.c_str(), "serve", "--listen", "127.0.0.1:0", "--data", data.c_str(),
            "--key", kKey, "--workspaces-root", root.c_str(), "--log-level", "warn",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    close(out[1]);
    std::string text;
    char buf[512];
    while (port == 0) {
      ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) Die("dispatch-host did not start (" + bin + ")");
      text.append(buf, static_cast<size_t>(n));
      size_t p = text.find("listening on http://127.0.0.1:");
      if (p != std::string::npos) {
        size_t e = text.find('\n', p);
        if (e != std::string::npos) port = std::atoi(text.c_str() + p + 30);
      }
    }
    close(out[0]);
  }

  void Stop() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      int st;
      waitpid(pid, &st, 0);
      pid = -1;
    }
    std::filesystem::remove_all(dir);
  }

  long RssKb() const {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line))
      if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
    return -1;
  }
};

int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) Die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

void WriteAll(int fd, std::string_view s) {
  while (!s.empty()) {
    ssize_t n = write(fd, s.data(), s.size());
    if (n <= 0) Die("write");
    s.remove_prefix(static_cast<size_t>(n));
  }
}

// One HTTP/1.1 request; returns the body (Connection: close).
std::string Http(int port, const std::string& method, const std::string& path,
                 const std::string& body) {
  int fd = Connect(port);
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " +
                    kKey + "\r\nContent-Type: application/json\r\nConnection: close\r\n" +
                    "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  WriteAll(fd, req);
  std::string resp;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    resp.append(buf, static_cast<size_t>(n));
    size_t h = resp.find("\r\n\r\n");
    if (h != std::string::npos) {
      size_t cl = resp.find("content-length: ");
      if (cl != std::string::npos && cl < h &&
          resp.size() >= h + 4 + std::strtoul(resp.c_str() + cl + 16, nullptr, 10))
        break;
    }
  }
  close(fd);
  size_t h = resp.find("\r\n\r\n");
  return h == std::string::npos ? std::string() : resp.substr(h + 4);
}

std::string CreateSession(int port, const json& options) {
  json body = {{"kind", "pty"}, {"options", options}};
  std::string r = Http(port, "POST", "/api/sessions", body.dump());
  json j = json::parse(r, nullptr, false);
  if (j.is_discarded() || !j.contains("runId")) Die("create session: " + r);
  return j["runId"];
}

// ------------------------------------------------------------------ a WebSocket client

// A minimal blocking WebSocket client. Received bytes are parsed where
// they were read (no copy of a whole message unless it came fragmented), and
// a read is tried before waiting in poll(2): while output streams in, the
// client costs one read per chunk, so it takes little of the two cores from
// the host it measures.
struct Ws {
  int fd = -1;
  std::vector<char> buf;        // received bytes: [head, tail) not parsed yet
  size_t head = 0, tail = 0;
  std::string frame;            // a fragmented message being assembled
  std::string whole;            // the last message, when it had to be assembled

  void Open(int port) {
    fd = Connect(port);
    WriteAll(fd, "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Authorization: Bearer " + std::string(kKey) + "\r\n\r\n");
    std::string reply;
    char b[4096];
    while (reply.find("\r\n\r\n") == std::string::npos) {
      ssize_t n = read(fd, b, sizeof b);
      if (n <= 0) Die("ws handshake");
      reply.append(b, static_cast<size_t>(n));
    }
    if (reply.rfind("HTTP/1.1 101", 0) != 0) Die("ws handshake refused: " + reply.substr(0, 40));
    std::string rest = reply.substr(reply.find("\r\n\r\n") + 4);
    Append(rest.data(), rest.size());
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  }

  // Makes room for `n` more bytes at the tail (moving the unparsed bytes to
  // the front first).
  char* Room(size_t n) {
    if (head > 0 && (head == tail || buf.size() - tail < n)) {
      std::memmove(buf.data(), buf.data() + head, tail - head);
      tail -= head;
      head = 0;
    }
    if (buf.size() - tail < n) buf.resize(tail + std::max(n, buf.size()));
    return buf.data() + tail;
  }
  void Append(const char* p, size_t n) {
    std::memcpy(Room(n), p, n);
    tail += n;
  }
  // One read(2) into the buffer: bytes read, 0 if none were ready, dies on
  // EOF or error.
  size_t ReadSome() {
    char* dst = Room(256 * 1024);
    ssize_t n = read(fd, dst, 256 * 1024);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    if (n <= 0) Die("ws read");
    tail += static_cast<size_t>(n);
    return static_cast<size_t>(n);
  }

  void Send(const json& msg) { WriteAll(fd, Frame(msg)); }

  // A masked text frame carrying `msg`.
  static std::string Frame(const json& msg) {
    std::string p = msg.dump();
    std::string f;
    f += static_cast<char>(0x81);
    if (p.size() < 126) {
      f += static_cast<char>(0x80 | p.size());
    } else if (p.size() < 65536) {
      f += static_cast<char>(0x80 | 126);
      f += static_cast<char>(p.size() >> 8);
      f += static_cast<char>(p.size() & 0xff);
    } else {
      f += static_cast<char>(0x80 | 127);
      for (int i = 7; i >= 0; --i) f += static_cast<char>((p.size() >> (8 * i)) & 0xff);
    }
    const unsigned char mask[4] = {1, 2, 3, 4};
    f.append(reinterpret_cast<const char*>(mask), 4);
    for (size_t i = 0; i < p.size(); ++i) f += static_cast<char>(p[i] ^ mask[i % 4]);
    return f;
  }

  // Parses one complete message out of the buffer if there is one. The view
  // is valid until the next Parse/Recv.
  bool Parse(std::string_view* msg) {
    for (;;) {
      size_t avail = tail - head;
      if (avail < 2) return false;
      auto b = reinterpret_cast<const unsigned char*>(buf.data() + head);
      bool fin = b[0] & 0x80;
      int op = b[0] & 0x0f;
      uint64_t len = b[1] & 0x7f;
      size_t off = 2;
      if (len == 126) {
        if (avail < 4) return false;
        len = (uint64_t{b[2]} << 8) | b[3];
        off = 4;
      } else if (len == 127) {
        if (avail < 10) return false;
        len = 0;
        for (int i = 0; i < 8; ++i) len = (len << 8) | b[2 + i];
        off = 10;
      }
      if (avail < off + len) return false;
      if (op == 0x8) Die("server closed the connection");
      std::string_view payload(buf.data() + head + off, len);
      head += off + len;
      if (op != 0x1 && op != 0x0) continue;  // ping/pong
      if (fin && frame.empty()) {
        *msg = payload;
        return true;
      }
      frame.append(payload);
      if (fin) {
        whole = std::move(frame);
        frame.clear();
        *msg = whole;
        return true;
      }
    }
  }
  bool Parse(std::string* msg) {
    std::string_view v;
    if (!Parse(&v)) return false;
    msg->assign(v);
    return true;
  }

  // Next message, or false after `timeout_ms`.
  bool Recv(std::string_view* msg, int timeout_ms = 10000) {
    while (!Parse(msg)) {
      if (ReadSome() > 0) continue;
      pollfd p = {fd, POLLIN, 0};
      if (poll(&p, 1, timeout_ms) <= 0) return false;
      ReadSome();
    }
    return true;
  }
  bool Recv(std::string* msg, int timeout_ms = 10000) {
    std::string_view v;
    if (!Recv(&v, timeout_ms)) return false;
    msg->assign(v);
    return true;
  }

  void Close() {
    if (fd >= 0) close(fd);
    fd = -1;
  }
};

// Light scan of a run:event / run:event:batch frame from dispatch-host
// (keys are sorted, payloads of pty output are base64 strings): adds the
// decoded size of every string payload, notes a `closed` event.
void ScanEvents(std::string_view msg, int64_t* bytes, bool* closed) {
  size_t pos = 0;
  static constexpr std::string_view kPayload = "\"payload\":\"";
  while ((pos = msg.find(kPayload, pos)) != std::string::npos) {
    pos += kPayload.size();
    size_t end = msg.find('"', pos);
    if (end == std::string::npos) break;
    size_t n = end - pos;
    int64_t pad = (n >= 1 && msg[end - 1] == '=') + (n >= 2 && msg[end - 2] == '=');
    *bytes += static_cast<int64_t>(n / 4 * 3) - pad;
    pos = end;
  }
  if (msg.find("\"type\":\"closed\"") != std::string_view::npos) *closed = true;
}

void Hello(Ws& ws) {
  ws.Send({{"event", "client:hello"}, {"data", {{"clientId", "bench"}}}, {"id", 1}});
  std::string m;
  if (!ws.Recv(&m)) Die("hello");
}

void Attach(Ws& ws, const std::string& run, int64_t after = 0) {
  ws.Send({{"event", "run:attach"}, {"data", {{"runId", run}, {"afterSeq", after}}}, {"id", 2}});
}


// --cpu: where the CPU went during one ws_output run (diagnostic): per
// thread of the host, the benchmark client, the session's program and the
// rest of the machine (bench::CpuSnap).
bool g_cpu_report = false;

// An output round is "quiet" when the hypervisor took less than this many
// cores of the two while it ran (bench::StealMeter).
constexpr double kQuietSteal = 0.1;

void ReportCpu(const bench::CpuSnap& a, const bench::CpuSnap& b, double client_s, double wall) {
  std::string parts;
  for (const auto& [k, d] : bench::ThreadCpuDelta(a, b)) {
    if (d > 0.01) {
      auto wa = a.wakeups.find(k), wb = b.wakeups.find(k);
      long wakes = wb == b.wakeups.end() ? 0 : wb->second - (wa == a.wakeups.end() ? 0 : wa->second);
      char buf[128];
      std::snprintf(buf, sizeof buf, " %s=%.2f (%.0f wake-ups/s)", k.c_str(), d / wall,
                    static_cast<double>(wakes) / wall);
      parts += buf;
    }
  }
  double busy = b.machine_busy - a.machine_busy;
  double host = b.process - a.process;  // with threads that have exited
  double child = b.children - a.children;
  std::fprintf(stderr,
               "cpu (cores busy over %.2f s): machine %.2f of %.2f, host %.2f [%s ], program %.2f, "
               "client %.2f, rest %.2f\n",
               wall, busy / wall, (b.machine_total - a.machine_total) / wall, host / wall,
               parts.c_str(), child / wall, client_s / wall, (busy - host - child - client_s) / wall);
}

// ------------------------------------------------------------------ host benchmarks
// (The bare-pty baselines are in bench_util.h.)

// A listening TCP socket on 127.0.0.1 (a free port, written to *addr), for
// the loopback baselines.
int LoopbackListener(sockaddr_in* addr, const char* what) {
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  *addr = sockaddr_in{};
  addr->sin_family = AF_INET;
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof *addr;
  if (ls < 0 || bind(ls, reinterpret_cast<sockaddr*>(addr), sizeof *addr) != 0 ||
      listen(ls, 1) != 0 || getsockname(ls, reinterpret_cast<sockaddr*>(addr), &len) != 0) {
    Die(std::string(what) + ": socket");
  }
  return ls;
}

// A connection to `addr`, with TCP_NODELAY, as the host's sockets have.
int LoopbackConnect(const sockaddr_in& addr, const char* what) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0 || connect(s, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    Die(std::string(what) + ": connect");
  }
  int one = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return s;
}

// Baseline: the least a relay does with a pty's output — `head -c N
// /dev/zero` on a bare forkpty, read by one thread (blocking, 256 KiB)
// that queues the chunks for a second thread, which base64-encodes each (as
// the protocol sends bytes) and writes it to a TCP socket on 127.0.0.1,
// drained by another process. No store, no framing, no event loop. MB/s of
// pty output, until the other process has every byte.
double BareRelayMbps(int64_t bytes) {
  sockaddr_in a;
  int ls = LoopbackListener(&a, "relay baseline");
  auto t0 = Clock::now();
  pid_t sink = fork();
  if (sink == 0) {  // the receiving end: reads to EOF (system calls only)
    int c = accept(ls, nullptr, nullptr);
    static char b[256 * 1024];
    while (read(c, b, sizeof b) > 0) {
    }
    _exit(0);
  }
  close(ls);
  if (sink < 0) Die("relay baseline: fork");
  int s = LoopbackConnect(a, "relay baseline");
  int master = -1;
  pid_t pid = Spawn(&master, "/usr/bin/head", {"head", "-c", std::to_string(bytes), "/dev/zero"});
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> chunks;
  bool done = false;
  std::thread sender([&] {
    std::string out;
    for (;;) {
      std::string chunk;
      {
        std::unique_lock<std::mutex> l(mu);
        cv.wait(l, [&] { return done || !chunks.empty(); });
        if (chunks.empty()) return;
        chunk = std::move(chunks.front());
        chunks.pop_front();
      }
      out.resize(dispatch::internal::Base64Size(chunk.size()));
      dispatch::internal::EncodeBase64(chunk, out.data());
      WriteAll(s, out);
    }
  });
  std::vector<char> buf(256 * 1024);
  int64_t got = 0;
  for (;;) {
    ssize_t n = read(master, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EIO: the child closed the terminal
    got += n;
    std::lock_guard<std::mutex> l(mu);
    if (!chunks.empty() && chunks.back().size() < buf.size()) {
      chunks.back().append(buf.data(), static_cast<size_t>(n));
    } else {
      chunks.emplace_back(buf.data(), static_cast<size_t>(n));
    }
    cv.notify_one();
  }
  {
    std::lock_guard<std::mutex> l(mu);
    done = true;
  }
  cv.notify_one();
  sender.join();
  close(s);
  int st;
  waitpid(sink, &st, 0);  // it has read everything
  double sec = Seconds(Clock::now() - t0);
  close(master);
  waitpid(pid, &st, 0);
  if (got != bytes) {
    std::fprintf(stderr, "relay baseline: read %lld of %lld bytes\n", static_cast<long long>(got),
                 static_cast<long long>(bytes));
  }
  return static_cast<double>(got) / 1e6 / sec;
}

// Baseline: `samples` round trips of an 80-byte message (about a
// run:input frame) over TCP on 127.0.0.1 to an echoing child process, paced
// as the keystrokes are (a 2 ms wait after each), in µs. A WebSocket echo
// crosses loopback twice (the key in, the echo out), so this plus the bare
// pty's echo is the floor for any host in the same run.
std::vector<double> LoopbackRttUs(int samples) {
  std::vector<double> out;
  sockaddr_in a;
  int ls = LoopbackListener(&a, "loopback baseline");
  int one = 1;
  pid_t pid = fork();
  if (pid == 0) {  // the echoing peer: only system calls until _exit
    int c = accept(ls, nullptr, nullptr);
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char b[512];
    ssize_t r;
    while ((r = read(c, b, sizeof b)) > 0) {
      if (write(c, b, static_cast<size_t>(r)) != r) break;
    }
    _exit(0);
  }
  close(ls);
  if (pid < 0) Die("loopback baseline: fork");
  int s = LoopbackConnect(a, "loopback baseline");
  char msg[80];
  std::memset(msg, 'x', sizeof msg);
  char b[512];
  for (int i = 0; i < samples; ++i) {
    auto t0 = Clock::now();
    WriteAll(s, std::string_view(msg, sizeof msg));
    size_t got = 0;
    while (got < sizeof msg) {
      ssize_t r = read(s, b, sizeof b);
      if (r <= 0) Die("loopback baseline: read");
      got += static_cast<size_t>(r);
    }
    out.push_back(Micros(Clock::now() - t0));
    pollfd p = {s, POLLIN, 0};
    poll(&p, 1, 2);
  }
  close(s);
  int st;
  waitpid(pid, &st, 0);
  return out;
}

std::vector<double> WsEchoUs(int port, int samples) {
  std::string run = CreateSession(
      port, {{"shell", "/bin/bash"}, {"args", {"--norc", "--noprofile", "-i"}}});
  Ws ws;
  ws.Open(port);
  Hello(ws);
  Attach(ws, run);
  std::string m;
  // Let the prompt and the backlog pass.
  auto settle = Clock::now() + std::chrono::milliseconds(250);
  while (Clock::now() < settle) ws.Recv(&m, 50);
  std::vector<double> out;
  for (int i = 0; i < samples; ++i) {
    std::string key = (i % 2 == 0) ? "x" : "\x7f";
    // The frame is built first: the clock starts when the keystroke goes
    // out (the write), as it does for the bare pty, so that the client's own
    // JSON work is not counted as the host's.
    std::string frame = Ws::Frame({{"event", "run:input"}, {"data", {{"runId", run}, {"data", key}}}});
    auto t0 = Clock::now();
    WriteAll(ws.fd, frame);
    bool got = false;
    while (!got) {
      if (!ws.Recv(&m, 2000)) Die("no echo");
      if ((m.rfind("{\"event\":\"run:event", 0) == 0) &&
          m.find("\"channel\":\"pty:stdout\"") != std::string::npos)
        got = true;
    }
    out.push_back(Micros(Clock::now() - t0));
    // Trailing output of this keystroke (if any) is drained here.
    while (ws.Recv(&m, 2)) {
    }
  }
  ws.Close();
  Http(port, "DELETE", "/api/sessions/" + run, "");
  return out;
}

double WsOutputMbps(int port, int64_t bytes, pid_t host_pid) {
  bench::CpuSnap cpu0 = bench::TakeCpuSnap(host_pid);
  double client0 = ThreadCpuMs();
  auto t0 = Clock::now();
  std::string run = CreateSession(
      port, {{"shell", "/usr/bin/head"}, {"args", {"-c", std::to_string(bytes), "/dev/zero"}}});
  Ws ws;
  ws.Open(port);
  Hello(ws);
  Attach(ws, run);
  int64_t got = 0;
  bool closed = false;
  std::string_view m;
  while (!closed) {
    if (!ws.Recv(&m, 20000)) Die("output stalled at " + std::to_string(got));
    if (m.starts_with("{\"event\":\"run:event")) ScanEvents(m, &got, &closed);
  }
  double s = Seconds(Clock::now() - t0);
  if (g_cpu_report) {
    ReportCpu(cpu0, bench::TakeCpuSnap(host_pid), (ThreadCpuMs() - client0) / 1e3, s);
    // The pty side's own pace: created -> stopped, from the session list.
    json list = json::parse(Http(port, "GET", "/api/sessions", ""), nullptr, false);
    if (!list.is_discarded()) {
      for (const json& x : list["sessions"]) {
        if (x.value("runId", "") != run) continue;
        double ms = x.value("updatedAt", 0.0) - x.value("createdAt", 0.0);
        std::fprintf(stderr, "pty side: %.0f ms (%.1f MB/s); client got everything at %.0f ms\n",
                     ms, static_cast<double>(bytes) / 1e3 / ms, s * 1e3);
      }
    }
    std::string metrics = Http(port, "GET", "/metrics", "");
    std::istringstream lines(metrics);
    std::string line, counters;
    while (std::getline(lines, line)) {
      if (line.starts_with("dispatch_session_pauses_total") ||
          line.starts_with("dispatch_ws_slow_client_total") ||
          line.starts_with("dispatch_events_appended_total") ||
          line.starts_with("dispatch_store_group_commits_total") ||
          line.starts_with("dispatch_ws_frames_sent_total")) {
        counters += " " + line;
      }
    }
    std::fprintf(stderr, "counters so far:%s\n", counters.c_str());
  }
  ws.Close();
  if (got < bytes) std::fprintf(stderr, "ws output: got %lld of %lld bytes\n",
                                static_cast<long long>(got), static_cast<long long>(bytes));
  return static_cast<double>(got) / 1e6 / s;
}

double FanoutMbps(int port, int clients, int64_t bytes) {
  std::string cmd = "sleep 1.5; head -c " + std::to_string(bytes) + " /dev/zero";
  std::string run = CreateSession(port, {{"shell", "/bin/sh"}, {"args", {"-c", cmd}}});
  std::vector<Ws> ws(static_cast<size_t>(clients));
  for (auto& w : ws) {
    w.Open(port);
    Hello(w);
    Attach(w, run);
  }
  std::vector<int64_t> got(ws.size(), 0);
  std::vector<bool> closed(ws.size(), false);
  size_t done = 0;
  bool started = false;
  Clock::time_point t0;
  std::vector<pollfd> fds(ws.size());
  while (done < ws.size()) {
    for (size_t i = 0; i < ws.size(); ++i) fds[i] = {closed[i] ? -1 : ws[i].fd, POLLIN, 0};
    if (poll(fds.data(), fds.size(), 20000) <= 0) Die("fanout stalled");
    for (size_t i = 0; i < ws.size(); ++i) {
      if (!(fds[i].revents & POLLIN)) continue;
      ws[i].ReadSome();
      std::string_view m;
      while (ws[i].Parse(&m)) {
        if (!m.starts_with("{\"event\":\"run:event")) continue;
        int64_t before = got[i];
        bool c = false;
        ScanEvents(m, &got[i], &c);
        if (!started && got[i] > before + 1000) {
          started = true;
          t0 = Clock::now();
        }
        if (c && !closed[i]) {
          closed[i] = true;
          ++done;
        }
      }
    }
  }
  double s = Seconds(Clock::now() - t0);
  int64_t total = 0;
  for (int64_t g : got) total += g;
  for (auto& w : ws) w.Close();
  return static_cast<double>(total) / 1e6 / s;
}

double RssPerIdleSessionKb(Host& host, int sessions) {
  std::vector<Ws> ws(static_cast<size_t>(sessions));
  std::vector<std::string> runs;
  // Warm up allocators with one session first.
  std::string warm = CreateSession(host.port, {{"shell", "/bin/sh"}});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  long before = host.RssKb();
  for (int i = 0; i < sessions; ++i) {
    runs.push_back(CreateSession(host.port, {{"shell", "/bin/sh"}}));
    ws[static_cast<size_t>(i)].Open(host.port);
    Hello(ws[static_cast<size_t>(i)]);
    Attach(ws[static_cast<size_t>(i)], runs.back());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  long after = host.RssKb();
  for (auto& w : ws) w.Close();
  for (auto& r : runs) Http(host.port, "DELETE", "/api/sessions/" + r, "");
  Http(host.port, "DELETE", "/api/sessions/" + warm, "");
  return static_cast<double>(after - before) / sessions;
}

}  // namespace



int main(int argc, char** argv) {
  bool quick = false;
  std::string bin;
  int64_t bytes = 200'000'000;
  std::string only;
  std::string compare_bin;
  int echo_samples = 0;
  int output_rounds = 0;
#ifdef DISPATCH_HOST_BIN_DEFAULT
  bin = DISPATCH_HOST_BIN_DEFAULT;
#endif
  if (const char* e = std::getenv("DISPATCH_HOST_BIN")) bin = e;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
      bytes = 20'000'000;
    } else if (a == "--host-bin" && i + 1 < argc) {
      bin = argv[++i];
    } else if (a == "--bytes" && i + 1 < argc) {
      bytes = std::atoll(argv[++i]);
    } else if (a == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else if (a == "--compare-bin" && i + 1 < argc) {
      compare_bin = argv[++i];
    } else if (a == "--output-rounds" && i + 1 < argc) {
      output_rounds = std::atoi(argv[++i]);
    } else if (a == "--cpu") {
      g_cpu_report = true;
    } else if (a == "--echo-samples" && i + 1 < argc) {
      echo_samples = std::atoi(argv[++i]);
    }
  }
  auto want = [&only](const char* part) { return only.empty() || only == part; };
  if (bin.empty()) Die("no dispatch-host binary (--host-bin PATH)");
  signal(SIGPIPE, SIG_IGN);
  Host host;
  host.Start(bin);

  // First, on a fresh process: later runs free memory and make RSS deltas meaningless.
  if (want("rss")) {
    Emit("host_rss_per_idle_session_kb", RssPerIdleSessionKb(host, quick ? 20 : 50), "KiB",
         "host process RSS growth per idle /bin/sh session with one attached client");
  }

  if (want("echo")) {
    int samples = echo_samples > 0 ? echo_samples : quick ? 200 : 1000;
    Host other;
    if (!compare_bin.empty()) other.Start(compare_bin);
    // Bare and /ws keystrokes alternate in rounds of 50, so that the
    // machine's noise (other processes on 2 cores) hits both alike.
    std::vector<double> bare_echo, loopback, echo, echo_other;
    StealMeter steal;
    for (int done = 0; done < samples; done += 50) {
      int n = std::min(50, samples - done);
      auto bare = BareEchoUs(n);
      bare_echo.insert(bare_echo.end(), bare.begin(), bare.end());
      auto rtt = LoopbackRttUs(n);
      loopback.insert(loopback.end(), rtt.begin(), rtt.end());
      // With a second host, which of the two goes first alternates.
      bool other_first = other.pid > 0 && (done / 50) % 2 == 1;
      if (other_first) {
        auto wo = WsEchoUs(other.port, n);
        echo_other.insert(echo_other.end(), wo.begin(), wo.end());
      }
      auto ws = WsEchoUs(host.port, n);
      echo.insert(echo.end(), ws.begin(), ws.end());
      if (other.pid > 0 && !other_first) {
        auto wo = WsEchoUs(other.port, n);
        echo_other.insert(echo_other.end(), wo.begin(), wo.end());
      }
    }
    double stolen = steal.Cores();
    if (other.pid > 0) other.Stop();
    std::string enote = std::to_string(echo.size()) + " keystrokes into bash over /ws";
    Emit("machine_steal_cores_echo", stolen, "cores",
         "vCPU time the hypervisor gave to other guests while the keystrokes ran (of 2)");
    Emit("baseline_bare_echo_p50_us", Percentile(bare_echo, 0.5), "us", "bare pty, bash readline");
    Emit("baseline_bare_echo_p99_us", Percentile(bare_echo, 0.99), "us", "bare pty, bash readline");
    Emit("baseline_loopback_rtt_p50_us", Percentile(loopback, 0.5), "us",
         "80 B over TCP on 127.0.0.1 and back, paced as the keystrokes");
    Emit("baseline_loopback_rtt_p99_us", Percentile(loopback, 0.99), "us",
         "80 B over TCP on 127.0.0.1 and back, paced as the keystrokes");
    Emit("ws_echo_latency_p50_us", Percentile(echo, 0.5), "us", enote);
    Emit("ws_echo_latency_p99_us", Percentile(echo, 0.99), "us",
         enote + ", event committed before sent");
    if (!echo_other.empty()) {
      std::string note = std::to_string(echo_other.size()) + " keystrokes, " + compare_bin;
      Emit("ws_echo_latency_p50_us_compare", Percentile(echo_other, 0.5), "us", note);
      Emit("ws_echo_latency_p99_us_compare", Percentile(echo_other, 0.99), "us", note);
    }
  }

  if (want("output")) {
    // Each round: the bare pty, then the host (and the second host, in
    // alternating order). The bare baseline moves by 2x over a day on these
    // machines, so the ratio is taken per round and the median reported.
    Host other;
    if (!compare_bin.empty()) other.Start(compare_bin);
    std::vector<double> bare, relay, wsm, ratio, wsm_other, ratio_other;
    std::vector<double> quiet_ratio, quiet_relay;  // rounds with steal under kQuietSteal
    int rounds = output_rounds > 0 ? output_rounds : quick ? 1 : 5;
    std::string per_round;
    StealMeter steal_all;
    for (int i = 0; i < rounds; ++i) {
      StealMeter steal;
      bare.push_back(BarePtyMbps(bytes));
      relay.push_back(BareRelayMbps(bytes) / bare.back());
      bool other_first = other.pid > 0 && i % 2 == 1;
      if (other_first) wsm_other.push_back(WsOutputMbps(other.port, bytes, other.pid));
      wsm.push_back(WsOutputMbps(host.port, bytes, host.pid));
      if (other.pid > 0 && !other_first) wsm_other.push_back(WsOutputMbps(other.port, bytes, other.pid));
      ratio.push_back(wsm.back() / bare.back());
      char buf[96];
      std::snprintf(buf, sizeof buf, " %.2f[relay %.2f", ratio.back(), relay.back());
      per_round += buf;
      if (other.pid > 0) {
        ratio_other.push_back(wsm_other.back() / bare.back());
        std::snprintf(buf, sizeof buf, ", compare %.2f", ratio_other.back());
        per_round += buf;
      }
      double stolen_round = steal.Cores();
      std::snprintf(buf, sizeof buf, ", steal %.2f]", stolen_round);
      per_round += buf;
      if (stolen_round < kQuietSteal) {
        quiet_ratio.push_back(ratio.back());
        quiet_relay.push_back(relay.back());
      }
    }
    double stolen = steal_all.Cores();
    if (other.pid > 0) other.Stop();
    std::string note = std::to_string(bytes / 1000000) + " MB of head -c /dev/zero, median of " +
                       std::to_string(rounds);
    Emit("baseline_bare_pty_mbps", Percentile(bare, 0.5), "MB/s", note);
    if (!relay.empty()) {
      Emit("baseline_relay_vs_bare_ratio", Percentile(relay, 0.5), "x",
           "median of per-round ratios: a two-thread relay of the same output, base64 over "
           "TCP on 127.0.0.1, no store");
    }
    Emit("ws_output_mbps", Percentile(wsm, 0.5), "MB/s",
         note + ", one /ws client, every byte committed first");
    Emit("ws_output_vs_bare_ratio", Percentile(ratio, 0.5), "x",
         "median of per-round ratios; target >= 0.85");
    Emit("machine_steal_cores_output", stolen, "cores",
         "vCPU time the hypervisor gave to other guests during the rounds (of 2)");
    if (!quiet_ratio.empty()) {
      std::string qnote = std::to_string(quiet_ratio.size()) + " of " + std::to_string(rounds) +
                          " rounds had steal under 0.1 cores; the median of their ratios";
      Emit("ws_output_vs_bare_ratio_quiet", Percentile(quiet_ratio, 0.5), "x", qnote);
      Emit("baseline_relay_vs_bare_ratio_quiet", Percentile(quiet_relay, 0.5), "x", qnote);
    }
    if (other.pid > 0) {
      Emit("ws_output_vs_bare_ratio_compare", Percentile(ratio_other, 0.5), "x", compare_bin);
    }
    std::fprintf(stderr, "# per-round ratios:%s\n", per_round.c_str());
  }

  if (want("fanout")) {
    int64_t fan_bytes = bytes / 10;
    double fan = FanoutMbps(host.port, 100, fan_bytes);
    Emit("ws_fanout_100_clients_mbps", fan, "MB/s",
         std::to_string(fan_bytes / 1000000) + " MB session output x 100 clients, total delivered");
  }

  host.Stop();
  return 0;
}
