// RunSessionManager: live sessions on one libuv loop, every event recorded.
//
// The flow of an event (doc/sessions.md, doc/threading.md):
//   adapter → SessionContext::Emit (loop thread) → the session's queue
//   → one AppendAsync per session in flight at a time (what arrives while it
//     is in flight is coalesced into the next batch) → committed either by
//     the loop itself (a small append while the store's writer is idle:
//     AppendOptions::commit_inline; the completion is queued for this loop
//     iteration's check phase) or by the store's writer thread, which
//     group-commits it (a flood; the completion, on the writer thread, posts
//     to the mailbox and uv_async wakes the loop) → after-event hooks, then
//     the bus, in seq order → pending bytes drop, a paused session resumes.
// Keeping one append in flight per session gives seq order for free and
// turns a flood into few large appends; idle sessions append at once, so a
// lone keystroke echo waits for nothing but its own commit — on the loop
// thread, with no thread hand-off.
//
// Catalog writes (status, meta) go through a SerialWorker so the loop never
// waits on disk, in the order the status events were committed.
#include "dispatch/session_manager.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <uv.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <type_traits>

#include "session/builtin_adapters.h"
#include "session/serial_worker.h"
#include "util/json_check.h"
#include "util/path_confine.h"
#include "util/thread_name.h"

namespace dispatch {
namespace internal {
namespace {

using json = nlohmann::json;

constexpr std::string_view kStatusChannel = "system:status";

// Tasks for the loop thread from any thread.
struct Mailbox {
  std::mutex mu;
  std::deque<std::function<void()>> tasks;
  uv_async_t* async = nullptr;  // null once closed: posting fails
};

// The status a system:status event leads to; nullopt for other types.
std::optional<SessionStatus> StatusAfter(const NewEvent& ev) {
  if (ev.type == "created" || ev.type == "resumed") return SessionStatus::kStarting;
  if (ev.type == "started") return SessionStatus::kRunning;
  if (ev.type == "error") return SessionStatus::kError;
  if (ev.type == "closed" || ev.type == "orphaned") {
    json p = json::parse(ev.payload, nullptr, false);
    return (p.is_object() && p.contains("error")) ? SessionStatus::kError
                                                   : SessionStatus::kStopped;
  }
  return std::nullopt;
}

std::string RandomHex(size_t n) {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> l(mu);
  std::string out;
  while (out.size() < n) out += fmt::format("{:016x}", rng());
  out.resize(n);
  return out;
}

void CloseAndDelete(uv_handle_t* h) {
  if (h == nullptr || uv_is_closing(h)) return;
  uv_close(h, [](uv_handle_t* handle) {
    switch (handle->type) {
      case UV_TIMER: delete reinterpret_cast<uv_timer_t*>(handle); break;
      case UV_ASYNC: delete reinterpret_cast<uv_async_t*>(handle); break;
      case UV_CHECK: delete reinterpret_cast<uv_check_t*>(handle); break;
      case UV_IDLE: delete reinterpret_cast<uv_idle_t*>(handle); break;
      default: break;
    }
  });
}

}  // namespace

class ManagerImpl;

// One live session: the adapter plus the manager's bookkeeping. Loop-affine.
struct Session final : public SessionContext {
  ManagerImpl* mgr = nullptr;
  SessionSpec spec_;
  std::unique_ptr<SessionAdapter> adapter;
  SessionStatus status = SessionStatus::kStarting;            // as enqueued
  SessionStatus catalog_status = SessionStatus::kStarting;    // as committed
  std::string description = "{}";
  json meta = json::object();
  int64_t created_us = 0;

  std::deque<NewEvent> queue;    // emitted, not yet handed to the store
  bool appending = false;
  size_t pending = 0;            // bytes in `queue` and in the append in flight
  bool paused = false;

  bool in_start = false;
  std::optional<ExitInfo> exit_during_start;
  bool exit_reported = false;  // no more events from the adapter
  bool closing = false;
  bool destroy_record = false;
  bool finalized = false;
  uv_timer_t* close_timer = nullptr;
  // Flood batching: after a large append, the next one waits (≤ kFloodWaitMs)
  // to gather kFloodBatchBytes, so a flood costs few commits.
  uv_timer_t* flush_timer = nullptr;
  bool flooding = false;
  bool holding = false;  // input just emitted: wait (≤ kHoldMs) for its response
  size_t queued_bytes = 0;
  int close_stage = 0;  // 1 = graceful stop sent, 2 = forced
  int close_timeout_ms = 0;
  int64_t last_seq = 0;

  const SessionSpec& spec() const override { return spec_; }
  uv_loop_s* loop() const override;
  Status Emit(NewEvent event) override { return DoEmit(std::move(event), false); }
  Status EmitOutput(NewEvent event) override { return DoEmit(std::move(event), true); }
  Status DoEmit(NewEvent event, bool coalesce);
  Status UpdateMeta(std::string_view json_object) override;
  size_t pending_bytes() const override { return pending; }
  void ReportExit(const ExitInfo& info) override;
};

class ManagerImpl final : public RunSessionManager {
 public:
  explicit ManagerImpl(const ManagerOptions& o) : opts_(o), store_(o.store) {}
  ~ManagerImpl() override;

  Status Init(std::string canonical_root);

  Status Post(std::function<void()> task) override;
  bool OnLoopThread() const override {
    return std::this_thread::get_id() == loop_thread_.load();
  }
  uv_loop_s* loop() const override { return loop_; }

  Status RegisterAdapter(std::string kind, AdapterFactory factory) override {
    if (kind.empty() || !factory) return Status::InvalidArgument("adapter kind and factory needed");
    return Call([&]() -> Status {
      factories_[std::move(kind)] = std::move(factory);
      return Status::Ok();
    });
  }
  void AddBeforeCreateHook(BeforeCreateHook hook) override {
    (void)Call([&]() -> Status {
      before_create_.push_back(std::move(hook));
      return Status::Ok();
    });
  }
  void AddAfterEventHook(AfterEventHook hook) override {
    (void)Call([&]() -> Status {
      after_event_.push_back(std::move(hook));
      return Status::Ok();
    });
  }

  Result<std::string> CreateSession(const SessionConfig& config) override {
    return Call([&] { return DoCreate(config); });
  }
  Status Resume(std::string_view run_id) override {
    return Call([&] { return DoResume(std::string(run_id)); });
  }
  Status Input(std::string_view run_id, std::string data, Encoding encoding) override {
    return Call([&]() -> Status {
      auto s = Live(run_id);
      if (!s.ok()) return s.status();
      auto& sess = **s;
      if (sess.exit_reported) return Status::Closed("session is closing");
      // Hold the input's own event briefly so that the program's immediate
      // response (a keystroke's echo) commits together with it: one commit
      // for the pair instead of the echo waiting behind the input's.
      sess.holding = true;
      Status st = sess.adapter->Input(data, encoding);
      if (!st.ok() || sess.queue.empty()) {
        sess.holding = false;
        Submit(*s, false);
      }
      return st;
    });
  }
  Status Resize(std::string_view run_id, int cols, int rows) override {
    return Call([&]() -> Status {
      auto s = Live(run_id);
      if (!s.ok()) return s.status();
      if ((*s)->exit_reported) return Status::Closed("session is closing");
      return (*s)->adapter->Resize(cols, rows);
    });
  }
  Result<std::string> Command(std::string_view run_id, SessionCommand command) override {
    return Call([&]() -> Result<std::string> {
      auto s = Live(run_id);
      if (!s.ok()) return s.status();
      if ((*s)->exit_reported) return Status::Closed("session is closing");
      return (*s)->adapter->Command(command);
    });
  }
  Status Close(std::string_view run_id, const CloseOptions& options) override {
    return Call([&] { return DoClose(std::string(run_id), options); });
  }
  Status Destroy(std::string_view run_id) override {
    return Call([&] { return DoDestroy(std::string(run_id)); });
  }
  Status Shutdown(int timeout_ms) override;

  Result<SessionInfo> GetSession(std::string_view run_id) override {
    return Call([&]() -> Result<SessionInfo> {
      auto s = Live(run_id);
      if (!s.ok()) return s.status();
      return Info(**s);
    });
  }
  std::vector<SessionInfo> ListSessions() override {
    std::vector<SessionInfo> out;
    (void)Call([&]() -> Status {
      for (auto& [id, s] : sessions_) out.push_back(Info(*s));
      return Status::Ok();
    });
    return out;
  }
  Status WaitIdle(std::string_view run_id, int timeout_ms) override;
  EventBus& bus() override { return bus_; }
  ManagerStats Stats() override {
    ManagerStats out;
    (void)Call([&]() -> Status {
      out = stats_;
      out.live_sessions = static_cast<int64_t>(sessions_.size());
      out.pending_bytes = 0;
      for (auto& [id, s] : sessions_) out.pending_bytes += static_cast<int64_t>(s->pending);
      return Status::Ok();
    });
    return out;
  }

  // ---- used by Session (loop thread) ----
  void Enqueue(Session& s, NewEvent ev, bool coalesce = false);
  void OnExit(Session& s, const ExitInfo& info);
  void UpdateMetaOf(Session& s);
  const ManagerOptions& options() const { return opts_; }

 private:
  // Runs `fn` on the loop thread and returns its result (inline when already
  // there). R must be Status or Result<T>.
  template <typename F>
  auto Call(F&& fn) -> decltype(fn()) {
    using R = decltype(fn());
    if (OnLoopThread()) return fn();
    auto p = std::make_shared<std::promise<R>>();
    auto fut = p->get_future();
    Status st = Post([p, &fn] { p->set_value(fn()); });
    if (!st.ok()) return R(st);
    try {
      return fut.get();
    } catch (const std::future_error&) {
      return R(Status::Closed("the session manager shut down"));
    }
  }

  Result<std::shared_ptr<Session>> Live(std::string_view run_id) {
    auto it = sessions_.find(std::string(run_id));
    if (it == sessions_.end() || it->second->finalized) {
      return Status::NotFound(fmt::format("no live session '{}'", run_id));
    }
    return it->second;
  }
  SessionInfo Info(const Session& s) const {
    SessionInfo i;
    i.run_id = s.spec_.run_id;
    i.kind = s.spec_.kind;
    i.status = s.status;
    i.workspace = s.spec_.workspace;
    i.description = s.description;
    i.last_seq = s.last_seq;
    i.pending_bytes = s.pending;
    i.paused = s.paused;
    i.closing = s.closing || s.exit_reported;
    return i;
  }

  Result<std::string> DoCreate(const SessionConfig& config);
  Status DoResume(const std::string& run_id);
  Status StartSession(const std::shared_ptr<Session>& s, std::string first_type,
                      json first_payload);
  Status DoClose(const std::string& run_id, const CloseOptions& options);
  Status DoDestroy(const std::string& run_id);
  Status MarkOrphans();

  void Submit(const std::shared_ptr<Session>& s, bool now = false);
  friend struct Session;
  static constexpr size_t kFloodThresholdBytes = 64 * 1024;
  static constexpr size_t kFloodBatchBytes = 512 * 1024;
  static constexpr uint64_t kFloodWaitMs = 2;
  static constexpr uint64_t kHoldMs = 2;
  static constexpr size_t kInlineCommitMaxBytes = 16 * 1024;
  static constexpr size_t kCoalesceCopyMaxBytes = 64 * 1024;
  void OnCommitted(const std::shared_ptr<Session>& s, size_t bytes,
                   Result<AppendResult> result);
  void Deliver(const EventView& v);
  void ApplyStatus(Session& s, const NewEvent& ev);
  void MaybeFinalize(const std::shared_ptr<Session>& s);
  void CheckResume(Session& s);
  void Error(std::string_view run_id, const Status& st) {
    if (opts_.on_error) {
      try {
        opts_.on_error(run_id, st);
      } catch (...) {
      }
    }
  }
  void CatalogStatus(const std::string& run_id, SessionStatus st);
  void DrainMailbox();
  // Completions of appends the loop committed inline: run in this loop
  // iteration's check phase (no eventfd round trip, no extra poll).
  void PostLocal(std::function<void()> task);
  void InitLocalHandles();
  void DrainLocal();
  // Runs posted tasks in order, each error reported; false once torn down
  // (the tasks not run are dropped).
  bool RunTasks(std::deque<std::function<void()>>& tasks);
  void TearDown();
  static void LoopThreadMain(ManagerImpl* self, std::promise<void>* ready);

  ManagerOptions opts_;
  EventStore* store_;
  std::string root_;
  uv_loop_t* loop_ = nullptr;
  std::unique_ptr<uv_loop_t> own_loop_;
  std::thread thread_;
  std::atomic<std::thread::id> loop_thread_{};
  std::shared_ptr<Mailbox> mailbox_ = std::make_shared<Mailbox>();
  std::deque<std::function<void()>> local_tasks_;  // loop thread only
  uv_check_t* local_check_ = nullptr;  // runs local_tasks_ after the poll phase
  uv_idle_t* local_idle_ = nullptr;    // keeps that poll from blocking while any wait

  std::map<std::string, AdapterFactory> factories_;
  std::vector<BeforeCreateHook> before_create_;
  std::vector<AfterEventHook> after_event_;
  std::map<std::string, std::shared_ptr<Session>> sessions_;
  EventBus bus_;
  ManagerStats stats_;
  bool shutting_down_ = false;
  bool torn_down_ = false;
  // Declared last: destroyed (drained and joined) first.
  std::unique_ptr<SerialWorker> catalog_worker_ = std::make_unique<SerialWorker>();
};

// ---- Session ----

uv_loop_s* Session::loop() const { return mgr->loop(); }

Status Session::DoEmit(NewEvent ev, bool coalesce) {
  if (exit_reported) return Status::Closed("the session has reported its exit");
  if (!IsValidEventName(ev.channel) || !IsValidEventName(ev.type)) {
    return Status::InvalidArgument(fmt::format(
        "bad event channel/type '{}'/'{}': 1-64 bytes of [A-Za-z0-9._:/-]", ev.channel, ev.type));
  }
  if (ev.channel == kStatusChannel) {
    return Status::InvalidArgument("system:status events are the manager's; use ReportExit");
  }
  if (ev.payload.size() > kMaxPayloadBytes) {
    return Status::InvalidArgument(fmt::format("payload of {} bytes is over the {} byte limit",
                                               ev.payload.size(), kMaxPayloadBytes));
  }
  if (ev.id.size() > kMaxEventIdBytes) return Status::InvalidArgument("event id too long");
  if (ev.encoding == Encoding::kJson) {
    if (const char* problem = JsonProblem(ev.payload)) {
      return Status::InvalidArgument(fmt::format("payload of a json event {}", problem));
    }
  }
  mgr->Enqueue(*this, std::move(ev), coalesce);
  return Status::Ok();
}

Status Session::UpdateMeta(std::string_view json_object) {
  if (!JsonDepthWithin(json_object)) {
    return Status::InvalidArgument(
        fmt::format("UpdateMeta: the object is nested more than {} deep", kMaxJsonDepth));
  }
  json j = json::parse(json_object, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument("UpdateMeta needs a JSON object");
  }
  for (auto& [k, v] : j.items()) meta[k] = v;
  spec_.meta_json = meta.dump();
  mgr->UpdateMetaOf(*this);
  return Status::Ok();
}

void Session::ReportExit(const ExitInfo& info) {
  if (exit_reported || exit_during_start) return;
  if (in_start) {
    exit_during_start = info;  // recorded after `started`
    return;
  }
  mgr->OnExit(*this, info);
}

// ---- ManagerImpl ----

Status ManagerImpl::Init(std::string canonical_root) {
  root_ = std::move(canonical_root);
  if (opts_.register_builtin_adapters) {
    for (auto& [kind, factory] : BuiltinAdapters()) factories_[kind] = factory;
  }
  if (opts_.mark_orphans) {
    Status st = MarkOrphans();
    if (!st.ok()) return st;
  }
  auto* async = new uv_async_t;
  if (opts_.loop != nullptr) {
    loop_ = opts_.loop;
    loop_thread_ = std::this_thread::get_id();
    int rc = uv_async_init(loop_, async, [](uv_async_t* a) {
      static_cast<ManagerImpl*>(a->data)->DrainMailbox();
    });
    if (rc != 0) {
      delete async;
      return Status::IOError(fmt::format("uv_async_init: {}", uv_strerror(rc)));
    }
    async->data = this;
    mailbox_->async = async;
    InitLocalHandles();
    return Status::Ok();
  }
  own_loop_ = std::make_unique<uv_loop_t>();
  int rc = uv_loop_init(own_loop_.get());
  if (rc != 0) {
    delete async;
    own_loop_.reset();
    return Status::IOError(fmt::format("uv_loop_init: {}", uv_strerror(rc)));
  }
  loop_ = own_loop_.get();
  rc = uv_async_init(loop_, async, [](uv_async_t* a) {
    static_cast<ManagerImpl*>(a->data)->DrainMailbox();
  });
  if (rc != 0) {
    delete async;
    (void)uv_loop_close(loop_);
    own_loop_.reset();
    return Status::IOError(fmt::format("uv_async_init: {}", uv_strerror(rc)));
  }
  async->data = this;
  mailbox_->async = async;
  InitLocalHandles();
  std::promise<void> ready;
  auto fut = ready.get_future();
  thread_ = std::thread(LoopThreadMain, this, &ready);
  fut.wait();
  return Status::Ok();
}

void ManagerImpl::LoopThreadMain(ManagerImpl* self, std::promise<void>* ready) {
  SetThreadName("dispatch-loop");
  self->loop_thread_ = std::this_thread::get_id();
  ready->set_value();
  uv_run(self->loop_, UV_RUN_DEFAULT);
  // TearDown closed our handles; adapters closed theirs. Anything left is a
  // leak of some adapter: close it so the loop can be closed.
  if (uv_loop_close(self->loop_) == UV_EBUSY) {
    uv_walk(
        self->loop_, [](uv_handle_t* h, void*) {
          if (!uv_is_closing(h)) uv_close(h, nullptr);
        },
        nullptr);
    uv_run(self->loop_, UV_RUN_DEFAULT);
    (void)uv_loop_close(self->loop_);
  }
}

Status ManagerImpl::Post(std::function<void()> task) {
  if (!task) return Status::InvalidArgument("empty task");
  std::lock_guard<std::mutex> l(mailbox_->mu);
  if (mailbox_->async == nullptr) return Status::Closed("the session manager is shut down");
  mailbox_->tasks.push_back(std::move(task));
  uv_async_send(mailbox_->async);
  return Status::Ok();
}

void ManagerImpl::InitLocalHandles() {
  // uv_check_init / uv_idle_init cannot fail.
  local_check_ = new uv_check_t;
  uv_check_init(loop_, local_check_);
  local_check_->data = this;
  local_idle_ = new uv_idle_t;
  uv_idle_init(loop_, local_idle_);
  local_idle_->data = this;
}

void ManagerImpl::PostLocal(std::function<void()> task) {
  if (torn_down_ || local_check_ == nullptr) return;
  local_tasks_.push_back(std::move(task));
  uv_check_start(local_check_, [](uv_check_t* c) { static_cast<ManagerImpl*>(c->data)->DrainLocal(); });
  uv_idle_start(local_idle_, [](uv_idle_t*) {});
}

bool ManagerImpl::RunTasks(std::deque<std::function<void()>>& tasks) {
  for (auto& t : tasks) {
    if (torn_down_) return false;  // the rest is dropped with `tasks`
    try {
      t();
    } catch (const std::exception& e) {
      Error("", Status::Internal(fmt::format("posted task threw: {}", e.what())));
    } catch (...) {
      Error("", Status::Internal("posted task threw"));
    }
  }
  return !torn_down_;
}

void ManagerImpl::DrainLocal() {
  // What is posted while these run (the next inline commit) waits for the
  // next iteration, after the loop has polled again.
  std::deque<std::function<void()>> tasks;
  tasks.swap(local_tasks_);
  if (!RunTasks(tasks)) return;
  if (local_tasks_.empty()) {
    uv_check_stop(local_check_);
    uv_idle_stop(local_idle_);
  }
}

void ManagerImpl::DrainMailbox() {
  for (;;) {
    std::deque<std::function<void()>> tasks;
    {
      std::lock_guard<std::mutex> l(mailbox_->mu);
      tasks.swap(mailbox_->tasks);
    }
    if (tasks.empty()) return;
    if (!RunTasks(tasks)) return;
  }
}

Status ManagerImpl::MarkOrphans() {
  auto list = store_->catalog().ListSessions();
  if (!list.ok()) return list.status();
  for (const auto& rec : *list) {
    if (rec.status != SessionStatus::kRunning && rec.status != SessionStatus::kStarting) continue;
    NewEvent ev;
    ev.channel = std::string(kStatusChannel);
    ev.type = "orphaned";
    ev.encoding = Encoding::kJson;
    ev.payload = json{{"previousStatus", std::string(SessionStatusName(rec.status))},
                      {"reason", "the process that ran the session ended without closing it"}}
                     .dump();
    auto r = store_->Append(rec.run_id, std::span<const NewEvent>(&ev, 1));
    if (!r.ok()) return r.status();
    Status st = store_->catalog().SetSessionStatus(rec.run_id, SessionStatus::kStopped);
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

Result<std::string> ManagerImpl::DoCreate(const SessionConfig& config) {
  if (shutting_down_) return Status::Closed("the session manager is shutting down");
  auto f = factories_.find(config.kind);
  if (f == factories_.end()) {
    return Status::InvalidArgument(fmt::format("unknown session kind '{}'", config.kind));
  }
  if (!JsonDepthWithin(config.options_json)) {
    return Status::InvalidArgument(
        fmt::format("session options are nested more than {} deep", kMaxJsonDepth));
  }
  json options = json::parse(config.options_json.empty() ? "{}" : config.options_json, nullptr,
                             false);
  if (options.is_discarded() || !options.is_object()) {
    return Status::InvalidArgument("session options must be a JSON object");
  }
  for (auto& hook : before_create_) {
    Status st;
    try {
      st = hook(config);
    } catch (const std::exception& e) {
      st = Status::InvalidArgument(fmt::format("before:create hook threw: {}", e.what()));
    } catch (...) {
      st = Status::InvalidArgument("before:create hook threw");
    }
    if (!st.ok()) return st;
  }

  std::string run_id = config.run_id;
  if (run_id.empty()) {
    std::string prefix = ValidateRunId(config.kind).ok() && config.kind.size() < 64
                             ? config.kind
                             : std::string("session");
    run_id = prefix + "-" + RandomHex(16);
  } else {
    Status st = ValidateRunId(run_id);
    if (!st.ok()) return st;
    if (sessions_.count(run_id)) {
      return Status(StatusCode::kConflict, fmt::format("session '{}' is live", run_id));
    }
    auto rec = store_->catalog().GetSession(run_id);
    if (rec.ok()) {
      return Status(StatusCode::kConflict, fmt::format("session '{}' exists", run_id));
    }
    if (rec.status().code() != StatusCode::kNotFound) return rec.status();
    auto last = store_->LastSeq(run_id);
    if (!last.ok()) return last.status();
    if (*last > 0) {
      return Status(StatusCode::kConflict,
                    fmt::format("run '{}' already has events; pick another id", run_id));
    }
  }

  auto ws = ConfineExisting(root_, config.workspace);
  if (!ws.ok()) return ws.status();
  struct stat st_buf;
  if (::stat(ws->c_str(), &st_buf) != 0 || !S_ISDIR(st_buf.st_mode)) {
    return Status::InvalidArgument(fmt::format("workspace '{}' is not a directory",
                                               config.workspace));
  }

  auto s = std::make_shared<Session>();
  s->mgr = this;
  s->spec_.run_id = run_id;
  s->spec_.kind = config.kind;
  s->spec_.workspace = *ws;
  s->spec_.options_json = options.dump();
  s->meta = json{{"options", options}};
  s->spec_.meta_json = s->meta.dump();
  s->created_us = NowMicros();

  auto adapter = f->second(s->spec_);
  if (!adapter.ok()) return adapter.status();
  if (!*adapter) return Status::Internal("adapter factory returned null");
  s->adapter = std::move(*adapter);

  SessionRecord rec;
  rec.run_id = run_id;
  rec.kind = config.kind;
  rec.status = SessionStatus::kStarting;
  rec.workspace = *ws;
  rec.meta = s->spec_.meta_json;
  rec.created_us = s->created_us;
  Status put = store_->catalog().PutSession(rec);
  if (!put.ok()) return put;

  stats_.sessions_created++;
  Status started = StartSession(
      s, "created",
      json{{"kind", config.kind}, {"workspace", *ws}, {"options", options}});
  if (!started.ok()) return started;
  return run_id;
}

Status ManagerImpl::DoResume(const std::string& run_id) {
  if (shutting_down_) return Status::Closed("the session manager is shutting down");
  if (sessions_.count(run_id)) {
    return Status(StatusCode::kConflict, fmt::format("session '{}' is live", run_id));
  }
  auto rec = store_->catalog().GetSession(run_id);
  if (!rec.ok()) return rec.status();
  auto f = factories_.find(rec->kind);
  if (f == factories_.end()) {
    return Status::InvalidArgument(fmt::format("unknown session kind '{}'", rec->kind));
  }
  auto ws = ConfineExisting(root_, rec->workspace);
  if (!ws.ok()) return ws.status();
  json meta = json::parse(rec->meta, nullptr, false);
  if (meta.is_discarded() || !meta.is_object()) meta = json::object();
  json options = meta.contains("options") && meta["options"].is_object() ? meta["options"]
                                                                          : json::object();
  auto last = store_->LastSeq(run_id);
  if (!last.ok()) return last.status();

  auto s = std::make_shared<Session>();
  s->mgr = this;
  s->spec_.run_id = run_id;
  s->spec_.kind = rec->kind;
  s->spec_.workspace = *ws;
  s->spec_.options_json = options.dump();
  s->meta = meta;
  s->spec_.meta_json = meta.dump();
  s->spec_.resume = true;
  s->created_us = rec->created_us;
  s->last_seq = *last;
  auto adapter = f->second(s->spec_);
  if (!adapter.ok()) return adapter.status();
  if (!*adapter) return Status::Internal("adapter factory returned null");
  s->adapter = std::move(*adapter);
  return StartSession(s, "resumed",
                      json{{"previousStatus", std::string(SessionStatusName(rec->status))}});
}

Status ManagerImpl::StartSession(const std::shared_ptr<Session>& s, std::string first_type,
                                 json first_payload) {
  sessions_[s->spec_.run_id] = s;
  NewEvent first;
  first.channel = std::string(kStatusChannel);
  first.type = std::move(first_type);
  first.encoding = Encoding::kJson;
  first.payload = first_payload.dump();
  Enqueue(*s, std::move(first));

  s->in_start = true;
  Status st;
  try {
    st = s->adapter->Start(*s);
  } catch (const std::exception& e) {
    st = Status::Internal(fmt::format("adapter Start threw: {}", e.what()));
  } catch (...) {
    st = Status::Internal("adapter Start threw");
  }
  s->in_start = false;
  if (!st.ok()) {
    NewEvent err;
    err.channel = std::string(kStatusChannel);
    err.type = "error";
    err.encoding = Encoding::kJson;
    err.payload = json{{"message", st.ToString()}}.dump();
    Enqueue(*s, std::move(err));
    s->exit_reported = true;
    return st;
  }
  s->description = s->adapter->Describe();
  json desc = json::parse(s->description, nullptr, false);
  if (desc.is_discarded() || !desc.is_object()) desc = json::object();
  NewEvent started;
  started.channel = std::string(kStatusChannel);
  started.type = "started";
  started.encoding = Encoding::kJson;
  started.payload = desc.dump();
  Enqueue(*s, std::move(started));
  if (s->exit_during_start) {
    ExitInfo info = *s->exit_during_start;
    OnExit(*s, info);
  }
  return Status::Ok();
}

void ManagerImpl::Enqueue(Session& s, NewEvent ev, bool coalesce) {
  if (ev.ts_us == 0) ev.ts_us = NowMicros();
  if (ev.channel == kStatusChannel) {
    if (auto after = StatusAfter(ev)) s.status = *after;
  }
  size_t n = ev.payload.size();
  stats_.events_emitted++;
  s.pending += n;
  // Coalesce into the last queued event of the same kind (raw output). A
  // chunk of kCoalesceCopyMaxBytes or more is an event of its own: merging
  // would copy it (a flood's reader thread already hands over chunks of up
  // to 256 KiB, and copying them cost the loop thread a seventh of its time).
  bool merged = false;
  if (coalesce && !s.queue.empty() && ev.id.empty() && ev.encoding != Encoding::kJson &&
      n < kCoalesceCopyMaxBytes) {
    NewEvent& last = s.queue.back();
    if (last.id.empty() && last.encoding == ev.encoding && last.channel == ev.channel &&
        last.type == ev.type && last.payload.size() + n <= opts_.max_coalesce_bytes) {
      last.payload += ev.payload;
      merged = true;
    }
  }
  if (!merged) s.queue.push_back(std::move(ev));
  s.queued_bytes += n;
  if (!s.paused && s.pending > opts_.max_pending_bytes && s.adapter) {
    s.paused = true;
    stats_.pauses++;
    s.adapter->SetPaused(true);
  }
  bool release = false;
  if (coalesce && s.holding) {  // the response to held input: send both now
    s.holding = false;
    release = true;
  }
  if (!s.appending) {
    auto it = sessions_.find(s.spec_.run_id);
    if (it != sessions_.end() && it->second.get() == &s) Submit(it->second, release);
  }
}

void ManagerImpl::Submit(const std::shared_ptr<Session>& s, bool now) {
  if (s->appending || s->queue.empty()) return;
  bool flood_wait = s->flooding &&
                    s->queued_bytes < std::min(kFloodBatchBytes, opts_.max_pending_bytes / 2);
  if (!now && (s->holding || flood_wait) && !s->exit_reported && !torn_down_) {
    if (s->flush_timer == nullptr) {
      s->flush_timer = new uv_timer_t;
      uv_timer_init(loop_, s->flush_timer);
    }
    if (!uv_is_active(reinterpret_cast<uv_handle_t*>(s->flush_timer))) {
      s->flush_timer->data = s.get();
      uv_timer_start(
          s->flush_timer,
          [](uv_timer_t* t) {
            auto* sess = static_cast<Session*>(t->data);
            sess->holding = false;
            auto it = sess->mgr->sessions_.find(sess->spec_.run_id);
            if (it != sess->mgr->sessions_.end()) sess->mgr->Submit(it->second, true);
          },
          s->holding ? kHoldMs : kFloodWaitMs, 0);
    }
    return;
  }
  s->holding = false;
  if (s->flush_timer) uv_timer_stop(s->flush_timer);
  std::vector<NewEvent> batch;
  size_t bytes = 0;
  while (!s->queue.empty() && batch.size() < kMaxBatchEvents) {
    size_t n = s->queue.front().payload.size();
    if (!batch.empty() && bytes + n > kMaxBatchBytes / 2) break;
    bytes += n;
    s->queued_bytes -= n;
    batch.push_back(std::move(s->queue.front()));
    s->queue.pop_front();
  }
  s->appending = true;
  stats_.appends++;
  // A small append (a keystroke's echo, a prompt) is committed by the loop
  // itself when the store's writer is idle: no thread hand-off on the way
  // to disk, and the completion reaches the loop through the mailbox (still
  // in order, never re-entering the caller). Floods go to the writer thread,
  // which compresses and writes while the loop reads on.
  AppendOptions append_opts;
  append_opts.commit_inline = !s->flooding && bytes <= kInlineCommitMaxBytes;
  // The events come back with the result, to publish (no copy of the batch).
  append_opts.return_events = true;
  std::weak_ptr<Mailbox> weak_box = mailbox_;
  const std::thread::id loop_tid = loop_thread_.load();
  store_->AppendAsync(
      s->spec_.run_id, std::move(batch), append_opts,
      [weak_box, s, loop_tid, bytes](Result<AppendResult> r) {
        // Runs on the loop thread, where the manager is alive.
        std::function<void()> task = [s, bytes, r = std::move(r)]() mutable {
          s->mgr->OnCommitted(s, bytes, std::move(r));
        };
        if (std::this_thread::get_id() == loop_tid) {  // committed inline, inside Submit
          s->mgr->PostLocal(std::move(task));
          return;
        }
        auto box = weak_box.lock();
        if (!box) return;
        std::lock_guard<std::mutex> l(box->mu);
        if (box->async == nullptr) return;
        box->tasks.push_back(std::move(task));
        uv_async_send(box->async);
      });
}

void ManagerImpl::OnCommitted(const std::shared_ptr<Session>& s, size_t bytes,
                              Result<AppendResult> r) {
  s->appending = false;
  s->flooding = bytes >= kFloodThresholdBytes;
  // Keep the store busy while this batch is delivered.
  if (!torn_down_) Submit(s);
  if (!r.ok()) {
    stats_.append_errors++;
    Error(s->spec_.run_id, r.status());
  } else {
    const std::vector<NewEvent>& batch = r->events;  // handed back by the store
    for (size_t i = 0; i < batch.size(); ++i) {
      const NewEvent& e = batch[i];
      EventView v;
      v.run_id = s->spec_.run_id;
      v.seq = i < r->seqs.size() ? r->seqs[i] : 0;
      // The batch's new events are contiguous in seq and position.
      v.position = (r->first_position > 0 && v.seq >= r->first_seq)
                       ? r->first_position + (v.seq - r->first_seq)
                       : 0;
      v.ts_us = e.ts_us;
      v.channel = e.channel;
      v.type = e.type;
      v.payload = e.payload;
      v.encoding = e.encoding;
      v.id = e.id;
      s->last_seq = std::max(s->last_seq, v.seq);
      stats_.events_committed++;
      stats_.bytes_committed += static_cast<int64_t>(e.payload.size());
      if (e.channel == kStatusChannel) ApplyStatus(*s, e);
      Deliver(v);
    }
  }
  s->pending -= std::min(s->pending, bytes);
  CheckResume(*s);
  MaybeFinalize(s);
}

void ManagerImpl::Deliver(const EventView& v) {
  for (auto& hook : after_event_) {
    try {
      hook(v);
    } catch (const std::exception& e) {
      Error(v.run_id, Status::Internal(fmt::format("after:event hook threw: {}", e.what())));
    } catch (...) {
      Error(v.run_id, Status::Internal("after:event hook threw"));
    }
  }
  bus_.Publish(v);
}

void ManagerImpl::ApplyStatus(Session& s, const NewEvent& ev) {
  auto after = StatusAfter(ev);
  if (!after) return;
  bool changed = *after != s.catalog_status;
  s.catalog_status = *after;
  // The record was written as "starting" at create; a resume must say so too.
  if (changed || ev.type == "resumed") CatalogStatus(s.spec_.run_id, *after);
}

void ManagerImpl::CatalogStatus(const std::string& run_id, SessionStatus st) {
  std::weak_ptr<Mailbox> weak_box = mailbox_;
  EventStore* store = store_;
  auto on_error = opts_.on_error;
  catalog_worker_->Post([store, run_id, st, on_error] {
    Status r = store->catalog().SetSessionStatus(run_id, st);
    if (!r.ok() && on_error) {
      try {
        on_error(run_id, r);
      } catch (...) {
      }
    }
  });
}

void ManagerImpl::UpdateMetaOf(Session& s) {
  SessionRecord rec;
  rec.run_id = s.spec_.run_id;
  rec.kind = s.spec_.kind;
  rec.status = s.status;
  rec.workspace = s.spec_.workspace;
  rec.meta = s.spec_.meta_json;
  rec.created_us = s.created_us;
  EventStore* store = store_;
  catalog_worker_->Post([store, rec] {
    // Keep the latest status: it may have moved on since this was posted.
    SessionRecord r = rec;
    auto cur = store->catalog().GetSession(rec.run_id);
    if (cur.ok()) r.status = cur->status;
    (void)store->catalog().PutSession(r);
  });
}

void ManagerImpl::CheckResume(Session& s) {
  if (s.paused && s.pending <= opts_.resume_pending_bytes) {
    s.paused = false;
    if (s.adapter && !s.finalized) s.adapter->SetPaused(false);
  }
}

void ManagerImpl::OnExit(Session& s, const ExitInfo& info) {
  if (s.exit_reported) return;
  json p{{"exitCode", info.exit_code}, {"signal", info.signal}};
  if (!info.error.empty()) p["error"] = info.error;
  NewEvent ev;
  ev.channel = std::string(kStatusChannel);
  ev.type = "closed";
  ev.encoding = Encoding::kJson;
  ev.payload = p.dump();
  Enqueue(s, std::move(ev));
  s.exit_reported = true;
}

void ManagerImpl::MaybeFinalize(const std::shared_ptr<Session>& s) {
  if (s->finalized || !s->exit_reported || s->appending || !s->queue.empty()) return;
  s->finalized = true;
  CloseAndDelete(reinterpret_cast<uv_handle_t*>(s->close_timer));
  s->close_timer = nullptr;
  CloseAndDelete(reinterpret_cast<uv_handle_t*>(s->flush_timer));
  s->flush_timer = nullptr;
  auto it = sessions_.find(s->spec_.run_id);
  if (it != sessions_.end() && it->second == s) sessions_.erase(it);
  s->adapter.reset();
  if (s->destroy_record) {
    EventStore* store = store_;
    std::string run_id = s->spec_.run_id;
    catalog_worker_->Post([store, run_id] { (void)store->catalog().DeleteSession(run_id); });
  }
}

void OnCloseTimer(uv_timer_t* t) {
  auto* sess = static_cast<Session*>(t->data);
  if (sess->exit_reported || sess->finalized) return;
  if (sess->close_stage == 1) {
    sess->close_stage = 2;
    uv_timer_start(t, OnCloseTimer, static_cast<uint64_t>(sess->close_timeout_ms), 0);
    sess->adapter->Stop(true);
    return;
  }
  ExitInfo info;
  info.signal = 9;
  info.error = "the adapter did not end the session after a forced close";
  sess->mgr->OnExit(*sess, info);
}

Status ManagerImpl::DoClose(const std::string& run_id, const CloseOptions& options) {
  auto r = Live(run_id);
  if (!r.ok()) return r.status();
  auto s = *r;
  if (s->exit_reported) return Status::Ok();  // already ending
  bool force = options.force || s->close_stage >= 1;
  s->closing = true;
  s->close_stage = force ? 2 : 1;
  int timeout = options.timeout_ms >= 0 ? options.timeout_ms : opts_.close_timeout_ms;
  if (s->close_timer == nullptr) {
    s->close_timer = new uv_timer_t;
    uv_timer_init(loop_, s->close_timer);
  }
  // One timer: graceful → forced after `timeout`; forced → the manager
  // records the exit itself if the adapter never does.
  s->close_timer->data = s.get();
  s->close_timeout_ms = std::max(timeout, 0);
  uv_timer_start(s->close_timer, OnCloseTimer, static_cast<uint64_t>(s->close_timeout_ms), 0);
  s->adapter->Stop(force);
  return Status::Ok();
}

Status ManagerImpl::DoDestroy(const std::string& run_id) {
  auto r = Live(run_id);
  if (r.ok()) {
    (*r)->destroy_record = true;
    return DoClose(run_id, CloseOptions{0, true});
  }
  auto rec = store_->catalog().GetSession(run_id);
  if (!rec.ok()) return rec.status();
  EventStore* store = store_;
  std::string id = run_id;
  catalog_worker_->Post([store, id] { (void)store->catalog().DeleteSession(id); });
  return Status::Ok();
}

Status ManagerImpl::Shutdown(int timeout_ms) {
  if (OnLoopThread()) {
    return Status::InvalidArgument("Shutdown would wait on its own loop thread");
  }
  Status st = Call([&]() -> Status {
    shutting_down_ = true;
    std::vector<std::string> ids;
    for (auto& [id, s] : sessions_) ids.push_back(id);
    for (auto& id : ids) (void)DoClose(id, CloseOptions{});
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return WaitIdle({}, timeout_ms);
}

Status ManagerImpl::WaitIdle(std::string_view run_id, int timeout_ms) {
  if (OnLoopThread()) return Status::InvalidArgument("WaitIdle would wait on its own loop thread");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::string id(run_id);
  for (;;) {
    bool idle = false;
    Status st = Call([&]() -> Status {
      idle = true;
      for (auto& [sid, s] : sessions_) {
        if (!id.empty() && sid != id) continue;
        if (s->appending || !s->queue.empty()) idle = false;
        // A session that is ending is idle only once it is gone.
        if (shutting_down_ && !s->finalized) idle = false;
      }
      return Status::Ok();
    });
    if (!st.ok()) return st;
    if (idle && catalog_worker_->Idle()) return Status::Ok();
    if (std::chrono::steady_clock::now() > deadline) {
      return Status::Timeout("sessions still have events in flight");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void ManagerImpl::TearDown() {
  if (torn_down_) return;
  shutting_down_ = true;
  torn_down_ = true;
  auto sessions = std::move(sessions_);
  sessions_.clear();
  for (auto& [id, s] : sessions) {
    CloseAndDelete(reinterpret_cast<uv_handle_t*>(s->close_timer));
    s->close_timer = nullptr;
    CloseAndDelete(reinterpret_cast<uv_handle_t*>(s->flush_timer));
    s->flush_timer = nullptr;
    bool had_exit = s->exit_reported;
    s->finalized = true;
    s->adapter.reset();  // ends the process at once
    if (!had_exit) {
      NewEvent ev;
      ev.channel = std::string(kStatusChannel);
      ev.type = "closed";
      ev.encoding = Encoding::kJson;
      ev.ts_us = NowMicros();
      ev.payload = json{{"exitCode", 0}, {"signal", 9}, {"reason", "manager shut down"}}.dump();
      s->queue.push_back(std::move(ev));
    }
    // Record what is left, after what is already at the store.
    std::vector<NewEvent> rest(std::make_move_iterator(s->queue.begin()),
                               std::make_move_iterator(s->queue.end()));
    s->queue.clear();
    SessionStatus final_status = s->catalog_status;
    for (auto& e : rest) {
      if (e.channel != kStatusChannel) continue;
      if (auto after = StatusAfter(e)) final_status = *after;
    }
    if (!rest.empty()) {
      auto r = store_->Append(id, rest);
      if (!r.ok()) Error(id, r.status());
    }
    CatalogStatus(id, final_status);
    if (s->destroy_record) {
      EventStore* store = store_;
      std::string rid = id;
      catalog_worker_->Post([store, rid] { (void)store->catalog().DeleteSession(rid); });
    }
  }
  local_tasks_.clear();
  CloseAndDelete(reinterpret_cast<uv_handle_t*>(local_check_));
  CloseAndDelete(reinterpret_cast<uv_handle_t*>(local_idle_));
  local_check_ = nullptr;
  local_idle_ = nullptr;
  std::deque<std::function<void()>> dropped;
  {
    std::lock_guard<std::mutex> l(mailbox_->mu);
    dropped.swap(mailbox_->tasks);
    CloseAndDelete(reinterpret_cast<uv_handle_t*>(mailbox_->async));
    mailbox_->async = nullptr;
  }
  dropped.clear();  // breaks the promises of waiting callers: they get Closed
}

ManagerImpl::~ManagerImpl() {
  if (own_loop_) {
    if (thread_.joinable()) {
      {
        std::lock_guard<std::mutex> l(mailbox_->mu);
        if (mailbox_->async != nullptr) {
          mailbox_->tasks.push_back([this] { TearDown(); });
          uv_async_send(mailbox_->async);
        }
      }
      thread_.join();
    }
  } else if (loop_ != nullptr) {
    TearDown();
  }
  catalog_worker_.reset();  // runs the queued catalog writes
}

}  // namespace internal

Result<std::unique_ptr<RunSessionManager>> RunSessionManager::Create(
    const ManagerOptions& options) {
  if (options.store == nullptr) return Status::InvalidArgument("ManagerOptions::store is required");
  if (options.workspaces_root.empty()) {
    return Status::InvalidArgument("ManagerOptions::workspaces_root is required");
  }
  if (options.resume_pending_bytes > options.max_pending_bytes) {
    return Status::InvalidArgument("resume_pending_bytes must not exceed max_pending_bytes");
  }
  auto root = internal::CanonicalRoot(options.workspaces_root);
  if (!root.ok()) return root.status();
  auto m = std::make_unique<internal::ManagerImpl>(options);
  Status st = m->Init(*root);
  if (!st.ok()) return st;
  return std::unique_ptr<RunSessionManager>(std::move(m));
}

}  // namespace dispatch
