// ClaudeAdapter: the "claude" session kind. Runs the Claude Code CLI as a
// child process (uv_spawn with three pipes) on the manager's loop, writes
// user messages and control requests to its stdin as JSON lines, and turns
// every stdout line into an event. The protocol pieces are in protocol.h.
//
// Handle lifetime: the uv handles live in an Io block owned by the loop, not
// by the adapter. The adapter closes them when the session ends or when it is
// destroyed; the block is freed by the last close callback, so the adapter
// may be destroyed at any time (the manager does so after ReportExit, or on
// shutdown) without a callback touching freed memory.
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "adapters/claude/protocol.h"
#include "dispatch/adapters/claude.h"
#include "dispatch/ext/session_adapter.h"
#include "util/json_check.h"

extern char** environ;

namespace dispatch::internal::claude {
namespace {

using nlohmann::json;

constexpr size_t kMaxLineBytes = kMaxPayloadBytes;  // one line = one event
constexpr size_t kStderrKeepBytes = 16 * 1024;      // tail of stderr kept for events
constexpr uint64_t kDrainAfterExitMs = 2000;        // grandchild holding stdout open
constexpr const char* kBinEnv = "DISPATCH_CLAUDE_BIN";

class ClaudeAdapter;

// The uv handles of one child process; freed by the last close callback.
struct Io {
  ClaudeAdapter* owner = nullptr;  // null once the adapter is gone
  uv_process_t proc{};
  uv_pipe_t in{}, out{}, err{};
  uv_timer_t timer{};
  int open = 0;  // handles initialised and not yet closed
  char buf[64 * 1024];
};

void OnHandleClosed(uv_handle_t* h) {
  Io* io = static_cast<Io*>(h->data);
  if (--io->open == 0) delete io;
}

void CloseHandle(uv_handle_t* h) {
  if (h->data != nullptr && !uv_is_closing(h)) uv_close(h, OnHandleClosed);
}

struct WriteReq {
  uv_write_t req{};
  std::string data;
  Io* io = nullptr;
};

class ClaudeAdapter final : public SessionAdapter {
 public:
  ClaudeAdapter(const SessionSpec& spec, ClaudeOptions options)
      : options_(std::move(options)), lines_(kMaxLineBytes) {
    (void)spec;
  }

  ~ClaudeAdapter() override {
    if (io_ == nullptr) return;
    if (spawned_ && !exited_) {
      // Manager shutdown with the child alive: end it now and reap it here
      // (its handle is closed below, so libuv will not).
      ::kill(-pid_, SIGKILL);
      ::kill(pid_, SIGKILL);
      int st = 0;
      while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
      }
    }
    Detach();
  }

  Status Start(SessionContext& ctx) override {
    ctx_ = &ctx;
    const SessionSpec& spec = ctx.spec();
    json meta = json::parse(spec.meta_json, nullptr, false);
    if (!meta.is_object()) meta = json::object();
    bool relaunch_with_id = false;
    if (spec.resume) {
      auto it = meta.find("conversationId");
      if (it == meta.end() || !it->is_string() || !IsUuid(it->get<std::string>())) {
        return Status::InvalidArgument("claude: this session has no conversation id to resume");
      }
      conversation_id_ = it->get<std::string>();
      // A conversation the CLI never started (no turn began) does not exist
      // on its side yet: pin the same id again instead of resuming it.
      auto started = meta.find("conversationStarted");
      relaunch_with_id = started == meta.end() || !started->is_boolean() || !started->get<bool>();
      conversation_started_ = !relaunch_with_id;
      resuming_ = !relaunch_with_id;
    } else {
      conversation_id_ = NewUuid();
      Status s = ctx.UpdateMeta(
          json{{"conversationId", conversation_id_}, {"cwd", spec.workspace}}.dump());
      if (!s.ok()) return s;
    }

    if (!options_.bin.empty()) {
      bin_ = options_.bin;
    } else if (const char* env = std::getenv(kBinEnv); env != nullptr && *env != '\0') {
      bin_ = env;
    } else {
      bin_ = "claude";
    }
    args_ = BuildArgs(options_, conversation_id_, resuming_);
    IgnoreSigpipe();
    return Spawn(spec);
  }

  std::string Describe() const override {
    json d = json::object();
    d["pid"] = pid_;
    d["conversationId"] = conversation_id_;
    d["bin"] = bin_;
    d["resume"] = resuming_;
    return d.dump();
  }

  Status Input(std::string_view data, Encoding encoding) override {
    auto line = BuildUserLine(data, encoding);
    if (!line.ok()) return line.status();
    Status s = Write(*line);
    if (!s.ok()) return s;
    ++pending_turns_;
    Emit("claude:input", "user", std::string_view(*line).substr(0, line->size() - 1),
         Encoding::kJson);
    return Status::Ok();
  }

  Result<std::string> Command(const SessionCommand& command) override {
    if (command.name == "interrupt") {
      return SendControl("interrupt", {});
    }
    if (command.name == "control") {
      // {"subtype": "set_model", "model": "..."} — any control request.
      json j = ParseJsonWithin(command.payload);
      if (!j.is_object() || !j.contains("subtype") || !j["subtype"].is_string()) {
        return Status::InvalidArgument(
            "claude control: payload must be a JSON object with a string 'subtype'");
      }
      std::string subtype = j["subtype"].get<std::string>();
      j.erase("subtype");
      return SendControl(subtype, j.dump());
    }
    if (command.name == "control_response") {
      // {"request_id": "...", "response": {...}} — e.g. allow/deny can_use_tool.
      json j = ParseJsonWithin(command.payload);
      if (!j.is_object() || !j.contains("request_id") || !j["request_id"].is_string() ||
          !j.contains("response") || !j["response"].is_object()) {
        return Status::InvalidArgument(
            "claude control_response: payload must be {\"request_id\": string, \"response\": "
            "object}");
      }
      auto line = BuildControlResponse(j["request_id"].get<std::string>(), j["response"].dump());
      if (!line.ok()) return line.status();
      Status s = Write(*line);
      if (!s.ok()) return s;
      Emit("claude:input", "control_response",
           std::string_view(*line).substr(0, line->size() - 1), Encoding::kJson);
      return std::string("{}");
    }
    return Status::InvalidArgument("unknown command '" + command.name +
                                   "' for kind claude (interrupt, control, control_response)");
  }

  void Stop(bool force) override {
    if (!spawned_ || exited_) return;
    stop_requested_ = true;
    if (force) {
      Kill(SIGKILL);
      return;
    }
    if (stop_stage_ > 0) return;
    // Like the SDKs: close stdin (the CLI finishes its turn and exits), wait,
    // SIGTERM, wait, SIGKILL.
    stop_stage_ = 1;
    CloseStdin();
    uv_timer_start(&io_->timer, OnStopTimer, static_cast<uint64_t>(options_.close_grace_ms), 0);
  }

  void SetPaused(bool paused) override {
    paused_ = paused;
    if (io_ == nullptr || out_eof_ || uv_is_closing(reinterpret_cast<uv_handle_t*>(&io_->out))) {
      return;
    }
    if (paused) {
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&io_->out));
    } else {
      uv_read_start(reinterpret_cast<uv_stream_t*>(&io_->out), OnAlloc, OnStdout);
    }
  }

 private:
  // ---- spawning ----

  static void IgnoreSigpipe() {
    // Writing to a CLI that died raises SIGPIPE; it must fail with EPIPE
    // instead of killing the host. Only a default disposition is changed.
    struct sigaction old {};
    if (sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) {
      signal(SIGPIPE, SIG_IGN);
    }
  }

  Status Spawn(const SessionSpec& spec) {
    uv_loop_t* loop = ctx_->loop();
    io_ = new Io();
    io_->owner = this;
    uv_pipe_init(loop, &io_->in, 0);
    uv_pipe_init(loop, &io_->out, 0);
    uv_pipe_init(loop, &io_->err, 0);
    uv_timer_init(loop, &io_->timer);
    for (uv_handle_t* h : {reinterpret_cast<uv_handle_t*>(&io_->in),
                           reinterpret_cast<uv_handle_t*>(&io_->out),
                           reinterpret_cast<uv_handle_t*>(&io_->err),
                           reinterpret_cast<uv_handle_t*>(&io_->timer)}) {
      h->data = io_;
      ++io_->open;
    }

    std::vector<char*> argv;
    argv.push_back(bin_.data());
    for (auto& a : args_) argv.push_back(a.data());
    argv.push_back(nullptr);

    std::vector<std::string> env_strings;
    std::vector<char*> envp;
    if (!options_.env.empty()) {
      for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
        std::string_view kv(*e);
        std::string name(kv.substr(0, kv.find('=')));
        if (options_.env.count(name) == 0) env_strings.emplace_back(kv);
      }
      for (const auto& [k, v] : options_.env) env_strings.push_back(k + "=" + v);
      for (auto& s : env_strings) envp.push_back(s.data());
      envp.push_back(nullptr);
    }

    uv_stdio_container_t stdio[3];
    stdio[0].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_READABLE_PIPE);
    stdio[0].data.stream = reinterpret_cast<uv_stream_t*>(&io_->in);
    stdio[1].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
    stdio[1].data.stream = reinterpret_cast<uv_stream_t*>(&io_->out);
    stdio[2].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
    stdio[2].data.stream = reinterpret_cast<uv_stream_t*>(&io_->err);

    uv_process_options_t po{};
    po.exit_cb = OnExit;
    po.file = bin_.c_str();
    po.args = argv.data();
    po.env = envp.empty() ? nullptr : envp.data();
    po.cwd = spec.workspace.c_str();
    po.flags = UV_PROCESS_DETACHED;  // own process group: signals reach its tools too
    po.stdio_count = 3;
    po.stdio = stdio;

    io_->proc.data = io_;
    ++io_->open;
    int rc = uv_spawn(loop, &io_->proc, &po);
    if (rc != 0) {
      std::string message = "cannot start the Claude CLI '" + bin_ + "': " + uv_strerror(rc);
      if (rc == UV_ENOENT) {
        message += " (set the option 'bin' or $DISPATCH_CLAUDE_BIN, or put claude on PATH)";
      }
      json payload = {{"message", message}, {"bin", bin_}, {"errno", uv_err_name(rc)}};
      Emit("claude:error", "spawn_failed", payload.dump(), Encoding::kJson);
      Detach();
      return Status::NotFound("claude: " + message);
    }
    spawned_ = true;
    pid_ = io_->proc.pid;
    uv_read_start(reinterpret_cast<uv_stream_t*>(&io_->out), OnAlloc, OnStdout);
    uv_read_start(reinterpret_cast<uv_stream_t*>(&io_->err), OnAlloc, OnStderr);

    json spawned = {{"pid", io_->proc.pid},
                    {"argv", json::array()},
                    {"cwd", spec.workspace},
                    {"conversationId", conversation_id_},
                    {"resume", resuming_}};
    spawned["argv"].push_back(bin_);
    for (const auto& a : args_) spawned["argv"].push_back(a);
    Emit("claude:process", "spawned", spawned.dump(-1, ' ', false, json::error_handler_t::replace),
         Encoding::kJson);
    return Status::Ok();
  }

  // ---- writing ----

  Status Write(const std::string& line) {
    if (!spawned_ || exited_ || stdin_closed_ || io_ == nullptr) {
      return Status::Closed("claude: the CLI's stdin is closed");
    }
    auto* w = new WriteReq();
    w->data = line;
    w->io = io_;
    uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&io_->in), &buf, 1, OnWritten);
    if (rc != 0) {
      delete w;
      return Status::IOError(std::string("claude: writing to the CLI failed: ") + uv_strerror(rc));
    }
    return Status::Ok();
  }

  static void OnWritten(uv_write_t* req, int status) {
    std::unique_ptr<WriteReq> w(reinterpret_cast<WriteReq*>(req));
    if (status < 0 && status != UV_ECANCELED && w->io->owner != nullptr) {
      json payload = {{"message", std::string("writing to the CLI's stdin failed: ") +
                                      uv_strerror(status)},
                      {"bytes", w->data.size()}};
      w->io->owner->Emit("claude:error", "stdin_write_failed", payload.dump(), Encoding::kJson);
    }
  }

  Result<std::string> SendControl(const std::string& subtype, const std::string& fields) {
    std::string id = "dispatch-" + std::to_string(++control_seq_);
    auto line = BuildControlRequest(id, subtype, fields);
    if (!line.ok()) return line.status();
    Status s = Write(*line);
    if (!s.ok()) return s;
    Emit("claude:input", "control_request", std::string_view(*line).substr(0, line->size() - 1),
         Encoding::kJson);
    return json{{"request_id", id}}.dump();
  }

  void CloseStdin() {
    if (stdin_closed_ || io_ == nullptr) return;
    stdin_closed_ = true;
    auto* req = new uv_shutdown_t();
    req->data = io_;
    // Pending writes go out first; then the CLI reads EOF.
    if (uv_shutdown(req, reinterpret_cast<uv_stream_t*>(&io_->in), [](uv_shutdown_t* r, int) {
          CloseHandle(reinterpret_cast<uv_handle_t*>(r->handle));
          delete r;
        }) != 0) {
      delete req;
      CloseHandle(reinterpret_cast<uv_handle_t*>(&io_->in));
    }
  }

  // ---- reading ----

  static void OnAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
    Io* io = static_cast<Io*>(h->data);
    *buf = uv_buf_init(io->buf, sizeof io->buf);
  }

  static void OnStdout(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    Io* io = static_cast<Io*>(s->data);
    if (io->owner == nullptr) return;
    io->owner->HandleStdout(n, buf);
  }

  static void OnStderr(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    Io* io = static_cast<Io*>(s->data);
    if (io->owner == nullptr) return;
    io->owner->HandleStderr(n, buf);
  }

  void HandleStdout(ssize_t n, const uv_buf_t* buf) {
    if (n > 0) {
      lines_.Feed(std::string_view(buf->base, static_cast<size_t>(n)),
                  [this](std::string_view line, bool truncated, size_t total) {
                    HandleLine(line, truncated, total);
                  });
      return;
    }
    if (n == 0) return;
    // EOF or a read error: the stream is over.
    lines_.Finish([this](std::string_view line, bool truncated, size_t total) {
      HandleLine(line, truncated, total);
    });
    out_eof_ = true;
    CloseHandle(reinterpret_cast<uv_handle_t*>(&io_->out));
    MaybeFinish();
  }

  void HandleStderr(ssize_t n, const uv_buf_t* buf) {
    if (n > 0) {
      stderr_.append(buf->base, static_cast<size_t>(n));
      if (stderr_.size() > 2 * kStderrKeepBytes) {
        stderr_.erase(0, stderr_.size() - kStderrKeepBytes);
      }
      return;
    }
    if (n == 0) return;
    err_eof_ = true;
    CloseHandle(reinterpret_cast<uv_handle_t*>(&io_->err));
    MaybeFinish();
  }

  void HandleLine(std::string_view line, bool truncated, size_t total) {
    if (truncated) {
      json payload = {{"message", "a stdout line of the CLI exceeds the event size limit"},
                      {"bytes", total},
                      {"head", std::string(line.substr(0, 1024))}};
      Emit("claude:error", "line_too_long",
           payload.dump(-1, ' ', false, json::error_handler_t::replace), Encoding::kJson);
      return;
    }
    ParsedLine p = ParseLine(line);
    if (!p.json) {
      // Kept byte-exact: the raw line is the payload, as text.
      Emit("claude:error", "invalid_json", line, Encoding::kText);
      return;
    }
    std::string type = IsSafeEventType(p.type) ? p.type : std::string("unknown");
    Emit("claude:message", type, line, Encoding::kJson);

    if (type == "system" && p.subtype == "init") {
      if (!conversation_started_) {
        conversation_started_ = true;
        (void)ctx_->UpdateMeta(R"({"conversationStarted":true})");
      }
      if (!p.session_id.empty() && p.session_id != conversation_id_) {
        // The CLI chose another id (e.g. a fork): follow it for resume.
        conversation_id_ = p.session_id;
        (void)ctx_->UpdateMeta(json{{"conversationId", conversation_id_}}.dump());
      }
    } else if (type == "result") {
      ++results_;
      if (pending_turns_ > 0) --pending_turns_;
      if (p.is_error) {
        bool unknown = IsUnknownConversationError(p.error);
        json payload = {{"message", p.error.empty() ? "the turn ended with an error" : p.error},
                        {"subtype", p.subtype},
                        {"conversationId", p.session_id}};
        if (unknown) {
          unknown_conversation_reported_ = true;
          Emit("claude:error", "unknown_conversation", payload.dump(), Encoding::kJson);
        } else {
          Emit("claude:error", "result_error", payload.dump(), Encoding::kJson);
        }
      }
    }
  }

  // ---- exit ----

  static void OnExit(uv_process_t* proc, int64_t exit_status, int term_signal) {
    Io* io = static_cast<Io*>(proc->data);
    if (io->owner == nullptr) return;
    io->owner->HandleExit(exit_status, term_signal);
  }

  void HandleExit(int64_t exit_status, int term_signal) {
    exited_ = true;
    exit_status_ = static_cast<int>(exit_status);
    term_signal_ = term_signal;
    uv_timer_stop(&io_->timer);
    CloseStdin();
    CloseHandle(reinterpret_cast<uv_handle_t*>(&io_->proc));
    if (!MaybeFinish()) {
      // A grandchild may hold stdout open: stop waiting after a while.
      uv_timer_start(&io_->timer, OnDrainTimer, kDrainAfterExitMs, 0);
    }
  }

  static void OnDrainTimer(uv_timer_t* t) {
    Io* io = static_cast<Io*>(t->data);
    if (io->owner == nullptr) return;
    ClaudeAdapter* self = io->owner;
    if (self->paused_) {  // still being drained, slowly: keep waiting
      uv_timer_start(t, OnDrainTimer, kDrainAfterExitMs, 0);
      return;
    }
    if (!self->out_eof_) {
      self->lines_.Finish([self](std::string_view line, bool truncated, size_t total) {
        self->HandleLine(line, truncated, total);
      });
    }
    self->out_eof_ = self->err_eof_ = true;
    self->CloseAll();
    self->MaybeFinish();
  }

  static void OnStopTimer(uv_timer_t* t) {
    Io* io = static_cast<Io*>(t->data);
    if (io->owner == nullptr) return;
    ClaudeAdapter* self = io->owner;
    if (self->exited_) return;
    if (self->stop_stage_ == 1) {
      self->stop_stage_ = 2;
      self->Kill(SIGTERM);
      uv_timer_start(t, OnStopTimer, static_cast<uint64_t>(self->options_.term_grace_ms), 0);
    } else {
      self->stop_stage_ = 3;
      self->Kill(SIGKILL);
    }
  }

  void Kill(int sig) {
    if (!spawned_ || exited_ || io_ == nullptr) return;
    if (sig == SIGKILL) ::kill(-pid_, SIGKILL);  // its tools too
    uv_process_kill(&io_->proc, sig);
  }

  // Reports the end once the process exited and both pipes are drained.
  bool MaybeFinish() {
    if (finished_ || !exited_ || !out_eof_ || !err_eof_) return false;
    finished_ = true;
    uv_timer_stop(&io_->timer);
    std::string err_tail = stderr_.size() > kStderrKeepBytes
                               ? stderr_.substr(stderr_.size() - kStderrKeepBytes)
                               : stderr_;
    bool mid_turn = pending_turns_ > 0;
    json exited = {{"exitCode", exit_status_},
                   {"signal", term_signal_},
                   {"stderr", err_tail},
                   {"results", results_},
                   {"midTurn", mid_turn},
                   {"stopRequested", stop_requested_}};
    Emit("claude:process", "exited", exited.dump(-1, ' ', false, json::error_handler_t::replace),
         Encoding::kJson);

    ExitInfo info;
    info.exit_code = exit_status_;
    info.signal = term_signal_;
    if (!unknown_conversation_reported_ && IsUnknownConversationError(err_tail)) {
      unknown_conversation_reported_ = true;
      json payload = {{"message", "the CLI does not know conversation " + conversation_id_},
                      {"conversationId", conversation_id_},
                      {"stderr", err_tail}};
      Emit("claude:error", "unknown_conversation",
           payload.dump(-1, ' ', false, json::error_handler_t::replace), Encoding::kJson);
    }
    if (mid_turn) {
      json payload = {{"message", "the CLI ended mid-turn without a result"},
                      {"exitCode", exit_status_},
                      {"signal", term_signal_},
                      {"stopRequested", stop_requested_}};
      Emit("claude:error", "aborted", payload.dump(), Encoding::kJson);
    }
    if (unknown_conversation_reported_) {
      info.error = "unknown conversation " + conversation_id_;
    } else if (mid_turn && !stop_requested_) {
      info.error = "the CLI ended mid-turn without a result";
    } else if (!stop_requested_ && (exit_status_ != 0 || term_signal_ != 0)) {
      info.error = "the CLI exited with " +
                   (term_signal_ != 0 ? "signal " + std::to_string(term_signal_)
                                      : "status " + std::to_string(exit_status_));
      std::string first = err_tail.substr(0, err_tail.find('\n'));
      if (!first.empty()) info.error += ": " + first;
    }
    Detach();
    ctx_->ReportExit(info);
    return true;
  }

  // Closes every handle and lets go of the Io block (freed by the last close
  // callback; later callbacks see owner == nullptr).
  void Detach() {
    if (io_ == nullptr) return;
    io_->owner = nullptr;
    CloseAll();
    io_ = nullptr;
  }

  void CloseAll() {
    if (io_ == nullptr) return;
    CloseHandle(reinterpret_cast<uv_handle_t*>(&io_->in));
    CloseHandle(reinterpret_cast<uv_handle_t*>(&io_->out));
    CloseHandle(reinterpret_cast<uv_handle_t*>(&io_->err));
    CloseHandle(reinterpret_cast<uv_handle_t*>(&io_->timer));
    if (io_->proc.data != nullptr && (!spawned_ || exited_ || io_->owner == nullptr)) {
      CloseHandle(reinterpret_cast<uv_handle_t*>(&io_->proc));
    }
  }

  void Emit(std::string_view channel, std::string_view type, std::string_view payload,
            Encoding encoding) {
    if (ctx_ == nullptr) return;
    NewEvent e;
    e.channel = std::string(channel);
    e.type = std::string(type);
    e.payload = std::string(payload);
    e.encoding = encoding;
    (void)ctx_->Emit(std::move(e));
  }

  ClaudeOptions options_;
  SessionContext* ctx_ = nullptr;
  Io* io_ = nullptr;
  std::string bin_;
  std::vector<std::string> args_;
  std::string conversation_id_;
  bool resuming_ = false;
  bool conversation_started_ = false;
  LineSplitter lines_;
  std::string stderr_;
  bool spawned_ = false, exited_ = false, finished_ = false;
  bool out_eof_ = false, err_eof_ = false, stdin_closed_ = false;
  bool paused_ = false, stop_requested_ = false, unknown_conversation_reported_ = false;
  int stop_stage_ = 0;
  int pid_ = 0;
  int exit_status_ = 0, term_signal_ = 0;
  int64_t pending_turns_ = 0, results_ = 0;
  uint64_t control_seq_ = 0;
};

}  // namespace
}  // namespace dispatch::internal::claude

namespace dispatch {

AdapterFactory ClaudeAdapterFactory() {
  return [](const SessionSpec& spec) -> Result<std::unique_ptr<SessionAdapter>> {
    auto options = internal::claude::ParseOptions(spec.options_json);
    if (!options.ok()) return options.status();
    return std::unique_ptr<SessionAdapter>(
        new internal::claude::ClaudeAdapter(spec, std::move(*options)));
  };
}

}  // namespace dispatch
