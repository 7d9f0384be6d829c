// PtyAdapter: forkpty + a uv_poll on the master side. See pty_adapter.h.
//
// Reading: on readiness the master is drained with read(2) until EAGAIN or a
// 256 KiB buffer is full, and whatever was read becomes one pty:stdout chunk.
// The buffer is one per loop thread, shared by its sessions (reads are
// synchronous and copied out): an idle session costs no buffer memory.
// A lone keystroke echo is therefore emitted as soon as it is read, while a
// flood becomes few large events. Backpressure stops the poll (the kernel's
// pty buffer then blocks the writer).
//
// Floods: the kernel's pty passes output on in 4 KiB steps (n_tty's buffer),
// so a program flooding the terminal stalls whenever its reader is busy with
// something else — on a host, sending earlier output to its clients on the
// same loop. When one drain returns kFloodEnterBytes or more, a reader
// thread takes over: it poll(2)s and drains the master and queues the bytes
// (appending to the last queued chunk up to kReadBufferBytes), and the loop
// turns each queued chunk into a pty:stdout event, in order, from a uv_async
// callback. Only the loop thread calls the SessionContext. The thread waits
// while kFloodQueueBytes are queued, and hands reading back to the loop when
// the session is paused (the loop reads again after the resume) and after
// kFloodIdleMs without output, so a keystroke's echo is read on the loop
// again (no thread hand-off) once a flood is over. A session has at most one reader thread, the process at
// most kMaxFloodReaders.
//
// Exit: SIGCHLD (a uv_signal per session, started before fork so an early
// exit is not missed) reaps the child with waitpid on its own pid only. The
// exit is reported after the master reads EOF/EIO (all output drained) or,
// if something else keeps the terminal open, after a short grace period.
#include "adapters/pty/pty_adapter.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <fmt/format.h>
#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <system_error>
#include <thread>
#include <vector>

#include "util/thread_name.h"

extern char** environ;

namespace dispatch::internal {
namespace {

using json = nlohmann::json;

constexpr size_t kReadBufferBytes = 256 * 1024;
constexpr size_t kMaxWriteBacklog = 1 << 20;
constexpr uint64_t kExitGraceMs = 200;
constexpr size_t kFloodEnterBytes = 32 * 1024;
// A first read shorter than this ends a drain (see DrainPty).
constexpr size_t kShortReadBytes = 512;
constexpr size_t kFloodQueueBytes = 1024 * 1024;
constexpr int kFloodIdleMs = 50;
// Reader threads in the process at once; past that a flooding session is
// read by its loop, as before (hundreds of sessions flooding at once should
// not mean hundreds of threads).
constexpr int kMaxFloodReaders = 16;
std::atomic<int> g_flood_readers{0};

// Reads `fd` (non-blocking) into `buf` until EAGAIN, EOF/EIO or `cap`
// bytes, or after a first read of fewer than kShortReadBytes. Returns the
// count; *eof is set on 0 or an error other than EAGAIN (EIO: every slave fd
// is closed).
size_t DrainPty(int fd, char* buf, size_t cap, bool* eof) {
  size_t n = 0;
  while (n < cap) {
    ssize_t r = ::read(fd, buf + n, cap - n);
    if (r > 0) {
      n += static_cast<size_t>(r);
      // A small first read (an echo, a prompt) is all there is: the read
      // that would say EAGAIN is skipped (the poll reports anything later).
      if (n < kShortReadBytes) break;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    *eof = true;
    break;
  }
  return n;
}

// What the loop and a session's flood reader thread share.
struct FloodReader {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> chunks;  // guarded by mu, as are the fields below
  size_t queued = 0;               // bytes in chunks
  bool paused = false;             // the session is paused: the thread leaves
  bool stop = false;               // the loop wants the thread gone
  bool idle = false;               // the thread left (idle, paused, or an error)
  bool eof = false;                // the thread read EOF/EIO and left
  int wake_fd = -1;                // eventfd: interrupts the thread's poll(2)
  uv_async_t* async = nullptr;     // the loop's wake-up (owned by the adapter)
  std::unique_ptr<char[]> buf;     // the thread's read buffer
  std::thread thread;
  // Holds one of the kMaxFloodReaders places until the thread has left (a
  // paused session's queue may wait for the loop much longer).
  std::atomic<bool> counted{false};

  ~FloodReader() {
    if (wake_fd >= 0) ::close(wake_fd);
    Uncount();
  }
  void Uncount() {
    if (counted.exchange(false)) g_flood_readers.fetch_sub(1);
  }

  // The thread's body: reads `fd` until idle, EOF, a pause, or told to stop.
  void Run(int fd) {
    SetThreadName("dispatch-pty");
    for (;;) {
      {
        std::unique_lock<std::mutex> l(mu);
        cv.wait(l, [this] { return stop || paused || queued < kFloodQueueBytes; });
        if (stop) break;
        if (paused) {  // the loop reads again once the session resumes
          idle = true;
          break;
        }
      }
      pollfd p[2] = {{fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
      int r = ::poll(p, 2, kFloodIdleMs);
      if (r < 0 && errno == EINTR) continue;
      if (p[1].revents & POLLIN) {
        uint64_t v;
        (void)!::read(wake_fd, &v, sizeof v);
        continue;  // stop or pause: checked above
      }
      bool eof_now = false;
      size_t n = r > 0 ? DrainPty(fd, buf.get(), kReadBufferBytes, &eof_now) : 0;
      bool leave = r <= 0 || eof_now;  // idle (or poll failed): back to the loop
      {
        std::lock_guard<std::mutex> l(mu);
        if (n > 0) {
          if (!chunks.empty() && chunks.back().size() + n <= kReadBufferBytes) {
            chunks.back().append(buf.get(), n);
          } else {
            chunks.emplace_back(buf.get(), n);
          }
          queued += n;
        }
        if (leave) {
          if (eof_now) {
            eof = true;
          } else {
            idle = true;
          }
        }
      }
      if (n > 0 || leave) uv_async_send(async);
      if (leave) break;
    }
    Uncount();
    uv_async_send(async);  // (a thread that left while paused: the loop joins it)
  }

  // Gets the thread out of poll(2) (or its wait on cv) to look at
  // stop/paused.
  void Wake() {
    cv.notify_all();
    uint64_t one = 1;
    (void)!::write(wake_fd, &one, sizeof one);
  }

  // Tells the thread to stop and waits for it (it is in poll(2), in a
  // non-blocking read or waiting on cv: each returns at once).
  void Join() {
    if (!thread.joinable()) return;
    {
      std::lock_guard<std::mutex> l(mu);
      stop = true;
    }
    Wake();
    thread.join();
  }
};

// The read buffer of the calling (loop) thread, allocated on first use and
// never zero-filled: only pages a read has touched are resident.
char* ThreadReadBuffer() {
  thread_local std::unique_ptr<char[]> buf(new char[kReadBufferBytes]);
  return buf.get();
}

struct PtyOptions {
  std::string shell;
  std::vector<std::string> args;
  std::vector<std::pair<std::string, std::optional<std::string>>> env;
  int cols = 80;
  int rows = 24;
};

Status ValidSize(int cols, int rows) {
  if (cols < 1 || cols > 10000 || rows < 1 || rows > 10000) {
    return Status::InvalidArgument(
        fmt::format("terminal size {}x{} is out of range (1..10000)", cols, rows));
  }
  return Status::Ok();
}

Result<PtyOptions> ParseOptions(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument("pty options must be a JSON object");
  }
  PtyOptions o;
  if (j.contains("shell") && !j["shell"].is_null()) {
    if (!j["shell"].is_string()) return Status::InvalidArgument("pty option 'shell' must be a string");
    o.shell = j["shell"].get<std::string>();
    if (o.shell.find('\0') != std::string::npos) {
      return Status::InvalidArgument("pty option 'shell' contains a NUL byte");
    }
  }
  if (j.contains("args") && !j["args"].is_null()) {
    if (!j["args"].is_array()) return Status::InvalidArgument("pty option 'args' must be a list");
    for (auto& a : j["args"]) {
      if (!a.is_string()) return Status::InvalidArgument("pty option 'args' must hold strings");
      std::string s = a.get<std::string>();
      if (s.find('\0') != std::string::npos) {
        return Status::InvalidArgument("pty option 'args' contains a NUL byte");
      }
      o.args.push_back(std::move(s));
    }
  }
  if (j.contains("env") && !j["env"].is_null()) {
    if (!j["env"].is_object()) return Status::InvalidArgument("pty option 'env' must be an object");
    for (auto& [k, v] : j["env"].items()) {
      if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos) {
        return Status::InvalidArgument(fmt::format("bad environment variable name '{}'", k));
      }
      if (v.is_null()) {
        o.env.emplace_back(k, std::nullopt);
      } else if (v.is_string()) {
        std::string s = v.get<std::string>();
        if (s.find('\0') != std::string::npos) {
          return Status::InvalidArgument("environment value contains a NUL byte");
        }
        o.env.emplace_back(k, std::move(s));
      } else {
        return Status::InvalidArgument(fmt::format("environment value of '{}' must be a string", k));
      }
    }
  }
  for (const char* key : {"cols", "rows"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    if (!j[key].is_number_integer()) {
      return Status::InvalidArgument(fmt::format("pty option '{}' must be an integer", key));
    }
    int64_t v = j[key].get<int64_t>();
    if (v < 1 || v > 10000) {
      return Status::InvalidArgument(fmt::format("pty option '{}' is out of range (1..10000)", key));
    }
    (std::string_view(key) == "cols" ? o.cols : o.rows) = static_cast<int>(v);
  }
  return o;
}

// True if `path` is a directory (access(X_OK) passes those: search
// permission).
bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// `name` as an executable path: as given when it contains '/', else found on
// PATH (`path_var`).
Result<std::string> FindProgram(const std::string& name, const std::string& path_var) {
  if (name.empty()) return Status::InvalidArgument("empty shell");
  if (name.find('/') != std::string::npos) {
    if (::access(name.c_str(), X_OK) != 0) {
      return Status::InvalidArgument(
          fmt::format("shell '{}' is not an executable: {}", name, std::strerror(errno)));
    }
    if (IsDirectory(name)) {
      return Status::InvalidArgument(fmt::format("shell '{}' is a directory", name));
    }
    return name;
  }
  size_t i = 0;
  while (i <= path_var.size()) {
    size_t j = path_var.find(':', i);
    if (j == std::string::npos) j = path_var.size();
    std::string dir = path_var.substr(i, j - i);
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0 && !IsDirectory(candidate)) return candidate;
    i = j + 1;
  }
  return Status::InvalidArgument(fmt::format("shell '{}' not found on PATH", name));
}

template <typename H>
void CloseHandle(H*& h) {
  if (h == nullptr) return;
  auto* handle = reinterpret_cast<uv_handle_t*>(h);
  handle->data = nullptr;
  if (!uv_is_closing(handle)) {
    uv_close(handle, [](uv_handle_t* x) { delete reinterpret_cast<H*>(x); });
  }
  h = nullptr;
}

class PtyAdapter final : public SessionAdapter {
 public:
  explicit PtyAdapter(PtyOptions o) : opts_(std::move(o)) {}
  ~PtyAdapter() override;

  Status Start(SessionContext& ctx) override;
  std::string Describe() const override;
  Status Input(std::string_view data, Encoding encoding) override;
  Status Resize(int cols, int rows) override;
  void Stop(bool force) override;
  void SetPaused(bool paused) override {
    paused_ = paused;
    if (flood_) {
      {
        std::lock_guard<std::mutex> l(flood_->mu);
        flood_->paused = paused;
      }
      if (paused) {  // out of its poll(2): it leaves, the loop reads after the resume
        flood_->Wake();
      } else {
        // What was queued when the pause came is emitted from the loop's
        // next turn (not from inside the manager's call).
        uv_async_send(flood_async_);
      }
    }
    UpdatePoll();
  }

 private:
  static void OnPoll(uv_poll_t* h, int status, int events);
  static void OnSigchld(uv_signal_t* h, int signum);
  static void OnGrace(uv_timer_t* h);
  static void OnFloodAsync(uv_async_t* h);

  void ReadAvailable();
  void StartFlood();
  void TakeFlood(bool all = false);
  void EndFlood();
  void FlushWrites();
  void UpdatePoll();
  void OnEof();
  void TryReap();
  void Finish();
  void CloseAll();

  PtyOptions opts_;
  SessionContext* ctx_ = nullptr;
  std::string program_;
  pid_t pid_ = -1;
  int master_ = -1;
  uv_poll_t* poll_ = nullptr;
  uv_signal_t* sigchld_ = nullptr;
  uv_timer_t* grace_ = nullptr;
  uv_async_t* flood_async_ = nullptr;
  std::unique_ptr<FloodReader> flood_;  // set while a reader thread reads
  int poll_events_ = 0;
  bool paused_ = false;
  bool eof_ = false;
  bool reaped_ = false;
  bool finished_ = false;
  int exit_code_ = 0;
  int signal_ = 0;
  std::string wbuf_;
};

Status PtyAdapter::Start(SessionContext& ctx) {
  ctx_ = &ctx;
  const SessionSpec& spec = ctx.spec();
  if (spec.resume) {
    return Status::InvalidArgument("pty sessions cannot resume: their process is gone");
  }

  // Environment: ours, then the options' overrides, then TERM/PWD defaults.
  std::vector<std::pair<std::string, std::string>> env;
  for (char** e = environ; e && *e; ++e) {
    std::string kv(*e);
    size_t eq = kv.find('=');
    if (eq == std::string::npos) continue;
    env.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
  }
  auto set_env = [&env](const std::string& k, const std::optional<std::string>& v) {
    for (auto it = env.begin(); it != env.end(); ++it) {
      if (it->first == k) {
        if (v) {
          it->second = *v;
        } else {
          env.erase(it);
        }
        return;
      }
    }
    if (v) env.emplace_back(k, *v);
  };
  for (auto& [k, v] : opts_.env) set_env(k, v);
  bool has_term = false;
  std::string path_var = "/usr/local/bin:/usr/bin:/bin";
  for (auto& [k, v] : env) {
    if (k == "TERM") has_term = true;
    if (k == "PATH") path_var = v;
  }
  if (!has_term) set_env("TERM", std::string("xterm-256color"));
  set_env("PWD", spec.workspace);

  std::string shell = opts_.shell;
  if (shell.empty()) {
    const char* sh = std::getenv("SHELL");
    shell = (sh && *sh) ? sh : "/bin/bash";
  }
  auto prog = FindProgram(shell, path_var);
  if (!prog.ok()) return prog.status();
  program_ = *prog;

  // Everything the child needs, prepared before fork (the child may only
  // make async-signal-safe calls: we are a multi-threaded process).
  std::vector<std::string> argv_s;
  argv_s.push_back(shell);
  for (auto& a : opts_.args) argv_s.push_back(a);
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s;
  for (auto& [k, v] : env) env_s.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string cwd = spec.workspace;
  std::string exec_err = fmt::format("dispatch: cannot run {}\r\n", program_);
  std::string cwd_err = fmt::format("dispatch: cannot enter {}\r\n", cwd);

  sigchld_ = new uv_signal_t;
  uv_signal_init(ctx.loop(), sigchld_);
  sigchld_->data = this;
  uv_signal_start(sigchld_, OnSigchld, SIGCHLD);

  struct winsize ws;
  std::memset(&ws, 0, sizeof ws);
  ws.ws_col = static_cast<unsigned short>(opts_.cols);
  ws.ws_row = static_cast<unsigned short>(opts_.rows);
  int master = -1;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, &ws);
  if (pid < 0) {
    int err = errno;
    CloseHandle(sigchld_);
    return Status::IOError(fmt::format("forkpty: {}", std::strerror(err)));
  }
  if (pid == 0) {
    // Child.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl;
    std::memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, &dfl, nullptr);
    if (::chdir(cwd.c_str()) != 0) {
      (void)!::write(2, cwd_err.data(), cwd_err.size());
      _exit(126);
    }
    ::close_range(3, ~0U, 0);
    ::execve(program_.c_str(), argv.data(), envp.data());
    (void)!::write(2, exec_err.data(), exec_err.size());
    _exit(127);
  }
  pid_ = pid;
  master_ = master;
  ::fcntl(master_, F_SETFD, FD_CLOEXEC);
  ::fcntl(master_, F_SETFL, ::fcntl(master_, F_GETFL) | O_NONBLOCK);

  poll_ = new uv_poll_t;
  int rc = uv_poll_init(ctx.loop(), poll_, master_);
  if (rc != 0) {
    delete poll_;
    poll_ = nullptr;
    return Status::IOError(fmt::format("uv_poll_init: {}", uv_strerror(rc)));
  }
  poll_->data = this;
  UpdatePoll();
  // No reap (or read) here even if the child is already gone: its output
  // must come after `started`, which the manager records once Start
  // returns. The SIGCHLD watcher was started before fork, so the exit is
  // seen on the loop's next turn.
  return Status::Ok();
}

std::string PtyAdapter::Describe() const {
  return json{{"pid", pid_}, {"shell", program_}, {"args", opts_.args},
              {"cols", opts_.cols},  {"rows", opts_.rows}}
      .dump();
}

Status PtyAdapter::Input(std::string_view data, Encoding encoding) {
  if (finished_ || eof_ || master_ < 0) return Status::Closed("the terminal is closed");
  if (data.empty()) return Status::Ok();
  if (wbuf_.size() + data.size() > kMaxWriteBacklog) {
    return Status::Busy("the terminal is not reading its input");
  }
  // Echo off in canonical mode is a password prompt (getpass, sudo, ssh,
  // read -s). Line editors (readline, vim) also turn ECHO off, but in raw
  // mode, and echo themselves: that input is shown anyway.
  struct termios t;
  bool redact = ::tcgetattr(master_, &t) == 0 && !(t.c_lflag & ECHO) && (t.c_lflag & ICANON);
  NewEvent ev;
  ev.channel = "pty:stdin";
  ev.type = "input";
  if (redact) {
    ev.encoding = Encoding::kJson;
    ev.payload = json{{"redacted", true}, {"length", data.size()}}.dump();
  } else {
    ev.encoding = encoding == Encoding::kText ? Encoding::kText : Encoding::kBytes;
    ev.payload = std::string(data);
  }
  // Write first: the program should not wait for our bookkeeping. Its
  // response cannot be read before the event below is queued (same thread).
  wbuf_.append(data);
  FlushWrites();
  (void)ctx_->Emit(std::move(ev));
  return Status::Ok();
}

Status PtyAdapter::Resize(int cols, int rows) {
  if (finished_ || master_ < 0) return Status::Closed("the terminal is closed");
  Status st = ValidSize(cols, rows);
  if (!st.ok()) return st;
  struct winsize ws;
  std::memset(&ws, 0, sizeof ws);
  ws.ws_col = static_cast<unsigned short>(cols);
  ws.ws_row = static_cast<unsigned short>(rows);
  if (::ioctl(master_, TIOCSWINSZ, &ws) != 0) {
    return Status::IOError(fmt::format("TIOCSWINSZ: {}", std::strerror(errno)));
  }
  opts_.cols = cols;
  opts_.rows = rows;
  NewEvent ev;
  ev.channel = "pty:resize";
  ev.type = "dimensions";
  ev.encoding = Encoding::kJson;
  ev.payload = json{{"cols", cols}, {"rows", rows}}.dump();
  (void)ctx_->Emit(std::move(ev));
  return Status::Ok();
}

void PtyAdapter::Stop(bool force) {
  if (reaped_ || pid_ <= 0) return;
  int sig = force ? SIGKILL : SIGHUP;
  ::kill(-pid_, sig);  // the process group (forkpty made it a session leader)
  ::kill(pid_, sig);   // and the child itself, should it have left the group
}

void PtyAdapter::OnPoll(uv_poll_t* h, int status, int events) {
  auto* self = static_cast<PtyAdapter*>(h->data);
  if (self == nullptr) return;
  if (status < 0) {
    self->OnEof();
    return;
  }
  if (events & UV_WRITABLE) self->FlushWrites();
  if (events & (UV_READABLE | UV_DISCONNECT)) self->ReadAvailable();
}

void EmitChunk(SessionContext* ctx, std::string bytes) {
  NewEvent ev;
  ev.channel = "pty:stdout";
  ev.type = "chunk";
  ev.encoding = Encoding::kBytes;
  ev.payload = std::move(bytes);
  (void)ctx->EmitOutput(std::move(ev));
}

void PtyAdapter::ReadAvailable() {
  if (master_ < 0 || eof_ || flood_) return;  // (a flood reader thread reads)
  char* buf = ThreadReadBuffer();
  bool eof = false;
  size_t n = DrainPty(master_, buf, kReadBufferBytes, &eof);
  if (n > 0) EmitChunk(ctx_, std::string(buf, n));
  if (eof) {
    OnEof();
  } else if (n >= kFloodEnterBytes && !finished_ && !paused_ && !reaped_) {
    StartFlood();
  }
}

void PtyAdapter::StartFlood() {
  if (g_flood_readers.fetch_add(1) >= kMaxFloodReaders) {
    g_flood_readers.fetch_sub(1);
    return;  // enough threads: the loop keeps reading
  }
  auto f = std::make_unique<FloodReader>();
  f->counted = true;  // (released by its destructor if no thread starts)
  if (flood_async_ == nullptr) {
    auto* a = new uv_async_t;
    if (uv_async_init(ctx_->loop(), a, OnFloodAsync) != 0) {
      delete a;
      return;  // the loop keeps reading
    }
    a->data = this;
    flood_async_ = a;
  }
  f->wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (f->wake_fd < 0) return;
  f->async = flood_async_;
  f->buf.reset(new char[kReadBufferBytes]);
  FloodReader* raw = f.get();
  int fd = master_;
  try {
    f->thread = std::thread([raw, fd] { raw->Run(fd); });
  } catch (const std::system_error&) {
    return;  // no thread: the loop keeps reading
  }
  flood_ = std::move(f);
  UpdatePoll();  // the loop stops reading
}

void PtyAdapter::OnFloodAsync(uv_async_t* h) {
  auto* self = static_cast<PtyAdapter*>(h->data);
  if (self != nullptr) self->TakeFlood();
}

// On the loop: queued chunks become events, one at a time while the session
// is not paused (unless `all`: the flood is ending). Once the thread has left
// (idle or EOF) and its queue is empty, it is joined and reading returns to
// the loop.
void PtyAdapter::TakeFlood(bool all) {
  while (flood_ && (all || !paused_)) {
    std::string chunk;
    {
      std::lock_guard<std::mutex> l(flood_->mu);
      if (flood_->chunks.empty()) break;
      chunk = std::move(flood_->chunks.front());
      flood_->chunks.pop_front();
      flood_->queued -= chunk.size();
    }
    flood_->cv.notify_all();  // room in the queue again
    EmitChunk(ctx_, std::move(chunk));  // may pause the session
  }
  if (!flood_) return;
  bool eof = false;
  {
    std::lock_guard<std::mutex> l(flood_->mu);
    if (!flood_->chunks.empty() || !(flood_->idle || flood_->eof || flood_->stop)) return;
    eof = flood_->eof;
  }
  if (flood_->thread.joinable()) flood_->thread.join();  // it has left Run (or is leaving)
  flood_.reset();
  if (eof) {
    OnEof();
  } else {
    UpdatePoll();  // the loop reads again
  }
}

// On the loop: stops a reader thread now and emits what it had queued.
void PtyAdapter::EndFlood() {
  if (!flood_) return;
  flood_->Join();
  TakeFlood(true);
}

void PtyAdapter::FlushWrites() {
  while (!wbuf_.empty() && master_ >= 0) {
    ssize_t w = ::write(master_, wbuf_.data(), wbuf_.size());
    if (w > 0) {
      wbuf_.erase(0, static_cast<size_t>(w));
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    wbuf_.clear();  // EIO: nobody will read it
    break;
  }
  UpdatePoll();
}

void PtyAdapter::UpdatePoll() {
  if (poll_ == nullptr) return;
  int events = 0;
  if (!eof_) {
    if (!paused_ && !flood_) events |= UV_READABLE;
    if (!wbuf_.empty()) events |= UV_WRITABLE;
  }
  if (events == poll_events_) return;
  poll_events_ = events;
  if (events == 0) {
    uv_poll_stop(poll_);
  } else {
    uv_poll_start(poll_, events, OnPoll);
  }
}

void PtyAdapter::OnEof() {
  if (eof_) return;
  EndFlood();  // what a reader thread queued comes first
  if (eof_) return;
  eof_ = true;
  wbuf_.clear();
  UpdatePoll();
  if (reaped_) Finish();
}

void PtyAdapter::OnSigchld(uv_signal_t* h, int) {
  auto* self = static_cast<PtyAdapter*>(h->data);
  if (self != nullptr) self->TryReap();
}

void PtyAdapter::TryReap() {
  if (reaped_ || pid_ <= 0) return;
  int st = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &st, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return;  // still running
  reaped_ = true;
  if (r == pid_) {
    if (WIFEXITED(st)) exit_code_ = WEXITSTATUS(st);
    if (WIFSIGNALED(st)) signal_ = WTERMSIG(st);
  }
  CloseHandle(sigchld_);
  if (!paused_) ReadAvailable();
  if (eof_) {
    Finish();
    return;
  }
  // Something else holds the terminal open (a background job), or we are
  // paused: give the output a moment to drain, then finish.
  grace_ = new uv_timer_t;
  uv_timer_init(ctx_->loop(), grace_);
  grace_->data = this;
  uv_timer_start(grace_, OnGrace, kExitGraceMs, 0);
}

void PtyAdapter::OnGrace(uv_timer_t* h) {
  auto* self = static_cast<PtyAdapter*>(h->data);
  if (self == nullptr || self->finished_) return;
  if (self->paused_) {  // backpressure: wait until the output can flow
    uv_timer_start(h, OnGrace, kExitGraceMs, 0);
    return;
  }
  self->EndFlood();  // its queued output first, then what is left to read
  self->ReadAvailable();
  if (!self->finished_) self->Finish();
}

void PtyAdapter::Finish() {
  if (finished_) return;
  finished_ = true;
  CloseAll();
  ExitInfo info;
  info.exit_code = exit_code_;
  info.signal = signal_;
  ctx_->ReportExit(info);
}

void PtyAdapter::CloseAll() {
  if (flood_) {
    flood_->Join();  // before the fd it reads is closed; its queue is dropped
    flood_.reset();
  }
  CloseHandle(flood_async_);
  CloseHandle(poll_);  // stops polling before the fd is closed
  CloseHandle(sigchld_);
  CloseHandle(grace_);
  if (master_ >= 0) {
    ::close(master_);
    master_ = -1;
  }
}

PtyAdapter::~PtyAdapter() {
  if (!reaped_ && pid_ > 0) {
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    int st;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
  }
  CloseAll();
}

}  // namespace

int PtyFloodReaders() { return g_flood_readers.load(); }

AdapterFactory MakePtyAdapterFactory() {
  return [](const SessionSpec& spec) -> Result<std::unique_ptr<SessionAdapter>> {
    auto o = ParseOptions(spec.options_json);
    if (!o.ok()) return o.status();
    return std::unique_ptr<SessionAdapter>(new PtyAdapter(std::move(*o)));
  };
}

}  // namespace dispatch::internal
