// Bindings of the session runtime: _dispatch._SessionManager and _Session,
// the C++ halves of dispatch.SessionManager and dispatch.Session (the
// pure-Python facade in dispatch/__init__.py adds expect, option handling
// and context managers).
//
// A session's output is tapped on the manager's EventBus: a handler that
// runs on the loop thread, touches no Python object (so it never needs the
// GIL) and appends the session's output to a buffer guarded by a mutex.
// The tap is subscribed before the session is created (with a run id
// chosen here), so no output can be missed. Python threads wait on the
// buffer with the GIL released, waking every 50 ms to let Ctrl-C through.
#include <pybind11/stl.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <optional>
#include <random>
#include <shared_mutex>
#include <string>
#include <vector>

#include "common.h"
#include "dispatch/session_manager.h"

namespace dispatch::python {

namespace {

using Clock = std::chrono::steady_clock;

// Unread output kept per session for expect(); older output is dropped
// (it stays in the store).
constexpr size_t kMaxBufferedOutput = size_t{8} << 20;

struct ManagerCore {
  std::shared_ptr<EventStore> store;
  std::shared_mutex mu;  // shared: calls into mgr; exclusive: close
  std::unique_ptr<RunSessionManager> mgr;
  std::mutex err_mu;
  std::vector<std::pair<std::string, Status>> errors;  // loop-side failures (last 100)
  int64_t error_count = 0;
};

struct Tap {
  std::mutex mu;
  std::condition_variable cv;
  bool pty = true;         // output = pty:stdout; else every non-system, non-stdin channel
  std::string out;         // output from absolute offset `base`
  int64_t base = 0;
  bool closed = false;
  std::string closed_payload;
  int64_t last_seq = 0;

  void OnEvent(const EventView& v) {
    {
      std::lock_guard<std::mutex> lock(mu);
      last_seq = v.seq;
      if (v.channel == "system:status") {
        if (v.type == "closed") {
          closed = true;
          closed_payload.assign(v.payload);
        }
      } else if (pty ? v.channel == "pty:stdout"
                     : v.channel.find("stdin") == std::string_view::npos) {
        out.append(v.payload);
        if (out.size() > kMaxBufferedOutput) {
          size_t drop = out.size() - kMaxBufferedOutput;
          out.erase(0, drop);
          base += static_cast<int64_t>(drop);
        }
      }
    }
    cv.notify_all();
  }
};

std::mutex g_managers_mu;
std::vector<std::weak_ptr<ManagerCore>> g_managers;  // for CloseAllManagers

// Waits with the GIL released until pred() (evaluated under tap.mu) holds
// or `timeout` seconds pass (None = forever). Checks for signals (Ctrl-C)
// every 50 ms. Returns pred().
template <typename Pred>
bool WaitTap(Tap& tap, std::optional<double> timeout, Pred pred) {
  auto deadline = timeout ? Clock::now() + std::chrono::microseconds(static_cast<int64_t>(
                                               std::max(0.0, *timeout) * 1e6))
                          : Clock::time_point::max();
  while (true) {
    {
      py::gil_scoped_release unlocked;
      std::unique_lock<std::mutex> lock(tap.mu);
      auto slice = std::min(deadline, Clock::now() + std::chrono::milliseconds(50));
      if (tap.cv.wait_until(lock, slice, pred)) return true;
      if (Clock::now() >= deadline) return false;
    }
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
}

std::string RandomHex(size_t n) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char kHex[] = "0123456789abcdef";
  std::string s(n, '0');
  for (auto& c : s) c = kHex[rng() % 16];
  return s;
}

class PySession;

class PySessionManager {
 public:
  PySessionManager(py::handle store_object, std::optional<std::string> workspaces_root,
                   int close_timeout_ms, size_t max_pending_bytes) {
    core_ = std::make_shared<ManagerCore>();
    core_->store = StoreOf(store_object);
    ManagerOptions o;
    o.store = core_->store.get();
    o.workspaces_root = workspaces_root ? *workspaces_root
                                        : std::filesystem::current_path().string();
    o.close_timeout_ms = close_timeout_ms;
    o.max_pending_bytes = max_pending_bytes;
    o.resume_pending_bytes = std::min(o.resume_pending_bytes, max_pending_bytes / 2);
    ManagerCore* core = core_.get();
    o.on_error = [core](std::string_view run_id, const Status& error) {
      std::lock_guard<std::mutex> lock(core->err_mu);
      ++core->error_count;
      if (core->errors.size() >= 100) core->errors.erase(core->errors.begin());
      core->errors.emplace_back(std::string(run_id), error);
    };
    Result<std::unique_ptr<RunSessionManager>> r = Status::Internal("not created");
    {
      py::gil_scoped_release unlocked;
      r = RunSessionManager::Create(o);
    }
    core_->mgr = Take(std::move(r));
    std::lock_guard<std::mutex> lock(g_managers_mu);
    std::erase_if(g_managers, [](const std::weak_ptr<ManagerCore>& w) { return w.expired(); });
    g_managers.push_back(core_);
  }

  ~PySessionManager() {
    if (PythonAlive() && PyGILState_Check()) {
      py::gil_scoped_release unlocked;
      Destroy();
    } else {
      Destroy();
    }
    DropUnlocked(core_);
  }

  std::shared_ptr<ManagerCore> core() { return core_; }

  // Closes every session gracefully (up to timeout) and stops the runtime.
  void Close(double timeout) {
    Status s;
    {
      py::gil_scoped_release unlocked;
      std::unique_lock<std::shared_mutex> lock(core_->mu);
      if (!core_->mgr) return;
      s = core_->mgr->Shutdown(static_cast<int>(timeout * 1000));
      core_->mgr.reset();
    }
    if (!s.ok() && s.code() != StatusCode::kClosed) RaiseStatus(s);
  }

  bool closed() {
    std::shared_lock<std::shared_mutex> lock(core_->mu);
    return core_->mgr == nullptr;
  }

  py::list Errors() {
    std::vector<std::pair<std::string, Status>> copy;
    {
      std::lock_guard<std::mutex> lock(core_->err_mu);
      copy = core_->errors;
    }
    py::list out;
    for (auto& [run, st] : copy) out.append(py::make_tuple(run, StatusToException(st)));
    return out;
  }

  py::list Sessions();
  void WaitIdle(const std::string& run_id, double timeout);

 private:
  void Destroy() {
    std::unique_lock<std::shared_mutex> lock(core_->mu);
    core_->mgr.reset();  // SIGKILLs what is still live
  }

  std::shared_ptr<ManagerCore> core_;
};

py::dict InfoDict(const SessionInfo& i) {
  py::dict d;
  d["run_id"] = i.run_id;
  d["kind"] = i.kind;
  d["status"] = std::string(SessionStatusName(i.status));
  d["workspace"] = i.workspace;
  d["description"] = py::module_::import("json").attr("loads")(i.description);
  d["last_seq"] = i.last_seq;
  d["pending_bytes"] = i.pending_bytes;
  d["paused"] = i.paused;
  d["closing"] = i.closing;
  return d;
}

// Runs f(mgr) under the core's shared lock with the GIL released; Closed if
// the manager was closed.
template <typename F>
auto WithManager(ManagerCore& core, F&& f) -> decltype(f(*core.mgr)) {
  py::gil_scoped_release unlocked;
  std::shared_lock<std::shared_mutex> lock(core.mu);
  if (!core.mgr) return Status::Closed("the session manager is closed");
  return f(*core.mgr);
}

py::list PySessionManager::Sessions() {
  std::vector<SessionInfo> list;
  {
    py::gil_scoped_release unlocked;
    std::shared_lock<std::shared_mutex> lock(core_->mu);
    if (core_->mgr) list = core_->mgr->ListSessions();
  }
  py::list out;
  for (auto& i : list) out.append(InfoDict(i));
  return out;
}

void PySessionManager::WaitIdle(const std::string& run_id, double timeout) {
  Check(WithManager(*core_, [&](RunSessionManager& m) {
    return m.WaitIdle(run_id, static_cast<int>(timeout * 1000));
  }));
}

class PySession {
 public:
  PySession(std::shared_ptr<ManagerCore> core, std::shared_ptr<Tap> tap, std::string run_id,
            std::string kind, BusSubscriptionId bus_id)
      : core_(std::move(core)), tap_(std::move(tap)), run_id_(std::move(run_id)),
        kind_(std::move(kind)), bus_id_(bus_id) {}

  ~PySession() {
    if (PythonAlive() && PyGILState_Check()) {
      py::gil_scoped_release unlocked;
      Unsubscribe();
    } else {
      Unsubscribe();
    }
    DropUnlocked(core_);  // may hold the store's last reference
  }

  const std::string& run_id() const { return run_id_; }
  const std::string& kind() const { return kind_; }

  void Send(py::handle data) {
    std::string bytes;
    if (PyUnicode_Check(data.ptr())) {
      bytes = data.cast<std::string>();
    } else if (PyBytes_Check(data.ptr()) || PyByteArray_Check(data.ptr()) ||
               PyMemoryView_Check(data.ptr())) {
      bytes = static_cast<std::string>(py::bytes(py::reinterpret_borrow<py::object>(data)));
    } else {
      throw py::type_error("send() takes bytes or str");
    }
    Check(WithManager(*core_, [&](RunSessionManager& m) {
      return m.Input(run_id_, std::move(bytes), Encoding::kBytes);
    }));
  }

  void Resize(int cols, int rows) {
    Check(WithManager(*core_, [&](RunSessionManager& m) { return m.Resize(run_id_, cols, rows); }));
  }

  std::string Command(const std::string& name, const std::string& payload) {
    SessionCommand c;
    c.name = name;
    c.payload = payload;
    Result<std::string> r = WithManager(*core_, [&](RunSessionManager& m) -> Result<std::string> {
      return m.Command(run_id_, c);
    });
    return Take(std::move(r));
  }

  void Close(bool force, int timeout_ms) {
    CloseOptions o;
    o.force = force;
    o.timeout_ms = timeout_ms;
    Status s = WithManager(*core_, [&](RunSessionManager& m) { return m.Close(run_id_, o); });
    // Not live any more: it already ended (or never started) — nothing to do.
    if (!s.ok() && s.code() != StatusCode::kNotFound) RaiseStatus(s);
  }

  py::object Info() {
    Result<SessionInfo> r = WithManager(*core_, [&](RunSessionManager& m) -> Result<SessionInfo> {
      return m.GetSession(run_id_);
    });
    if (!r.ok() && r.error().code() == StatusCode::kNotFound) return py::none();
    return InfoDict(Take(std::move(r)));
  }

  // Output from absolute offset `from` (or the oldest kept, if that was
  // dropped), waiting up to `timeout` for some. Returns
  // (data, start_offset, end_offset, closed).
  py::tuple ReadOutput(int64_t from, std::optional<double> timeout) {
    Tap& t = *tap_;
    WaitTap(t, timeout, [&] {
      return t.base + static_cast<int64_t>(t.out.size()) > from || t.closed;
    });
    std::string data;
    int64_t start, end;
    bool closed;
    {
      std::lock_guard<std::mutex> lock(t.mu);
      start = std::max(from, t.base);
      end = t.base + static_cast<int64_t>(t.out.size());
      if (end > start) data = t.out.substr(static_cast<size_t>(start - t.base));
      // The reader has everything below `start`: drop it.
      size_t consumed = static_cast<size_t>(std::min(start, end) - t.base);
      t.out.erase(0, consumed);
      t.base += static_cast<int64_t>(consumed);
      closed = t.closed;
    }
    return py::make_tuple(py::bytes(data), start, end, closed);
  }

  // The closed event's payload once the session has ended (None on timeout).
  py::object WaitClosed(std::optional<double> timeout) {
    Tap& t = *tap_;
    if (!WaitTap(t, timeout, [&] { return t.closed; })) return py::none();
    std::lock_guard<std::mutex> lock(t.mu);
    return py::bytes(t.closed_payload);
  }

  bool ended() {
    std::lock_guard<std::mutex> lock(tap_->mu);
    return tap_->closed;
  }

  int64_t last_seq() {
    std::lock_guard<std::mutex> lock(tap_->mu);
    return tap_->last_seq;
  }

 private:
  void Unsubscribe() {
    if (bus_id_ == 0) return;
    std::shared_lock<std::shared_mutex> lock(core_->mu);
    if (core_->mgr) core_->mgr->bus().Unsubscribe(bus_id_);
    bus_id_ = 0;
  }

  std::shared_ptr<ManagerCore> core_;
  std::shared_ptr<Tap> tap_;
  std::string run_id_;
  std::string kind_;
  BusSubscriptionId bus_id_ = 0;
};

std::unique_ptr<PySession> CreateSession(PySessionManager& self, const std::string& kind,
                                         const std::string& workspace,
                                         const std::string& options_json,
                                         std::optional<std::string> run_id) {
  auto core = self.core();
  std::string id = run_id.value_or("");
  if (id.empty()) {
    bool plain = !kind.empty() && kind.size() <= 32 &&
                 std::all_of(kind.begin(), kind.end(), [](char c) {
                   return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
                 });
    id = (plain ? kind : std::string("session")) + "-" + RandomHex(16);
  }
  auto tap = std::make_shared<Tap>();
  tap->pty = kind == "pty";
  SessionConfig cfg;
  cfg.kind = kind;
  cfg.workspace = workspace;
  cfg.options_json = options_json;
  cfg.run_id = id;
  BusSubscriptionId bus_id = 0;
  Result<std::string> r = WithManager(*core, [&](RunSessionManager& m) -> Result<std::string> {
    // Tap first, so not one byte of output is missed.
    BusSubscribeOptions bo;
    bo.run_id = id;
    bo.name = "python-session";
    bus_id = m.bus().Subscribe("*", [tap](const EventView& v) { tap->OnEvent(v); }, bo);
    Result<std::string> created = m.CreateSession(cfg);
    if (!created.ok()) {
      m.bus().Unsubscribe(bus_id);
      bus_id = 0;
    }
    return created;
  });
  std::string created_id = Take(std::move(r));
  return std::make_unique<PySession>(std::move(core), std::move(tap), created_id, kind, bus_id);
}

}  // namespace

void CloseAllManagers() {
  std::vector<std::shared_ptr<ManagerCore>> live;
  {
    std::lock_guard<std::mutex> lock(g_managers_mu);
    for (auto& w : g_managers) {
      if (auto c = w.lock()) live.push_back(std::move(c));
    }
    g_managers.clear();
  }
  for (auto& c : live) {
    std::unique_lock<std::shared_mutex> lock(c->mu);
    if (!c->mgr) continue;
    (void)c->mgr->Shutdown(2000);
    c->mgr.reset();
  }
}

void BindSession(py::module_& m) {
  py::class_<PySessionManager>(m, "_SessionManager",
                               "C++ half of dispatch.SessionManager (use that).")
      .def(py::init<py::handle, std::optional<std::string>, int, size_t>(), py::arg("store"),
           py::arg("workspaces_root") = py::none(), py::arg("close_timeout_ms") = 3000,
           py::arg("max_pending_bytes") = size_t{4} << 20)
      .def("create", &CreateSession, py::arg("kind"), py::arg("workspace"),
           py::arg("options_json"), py::arg("run_id") = py::none())
      .def("close", &PySessionManager::Close, py::arg("timeout") = 5.0)
      .def_property_readonly("closed", &PySessionManager::closed)
      .def("errors", &PySessionManager::Errors)
      .def("sessions", &PySessionManager::Sessions)
      .def("wait_idle", &PySessionManager::WaitIdle, py::arg("run_id") = "",
           py::arg("timeout") = 10.0);

  py::class_<PySession>(m, "_Session", "C++ half of dispatch.Session (use that).")
      .def_property_readonly("run_id", &PySession::run_id)
      .def_property_readonly("kind", &PySession::kind)
      .def("send", &PySession::Send, py::arg("data"))
      .def("resize", &PySession::Resize, py::arg("cols"), py::arg("rows"))
      .def("command", &PySession::Command, py::arg("name"), py::arg("payload") = "{}")
      .def("close", &PySession::Close, py::arg("force") = false, py::arg("timeout_ms") = -1)
      .def("info", &PySession::Info)
      .def("read_output", &PySession::ReadOutput, py::arg("offset"), py::arg("timeout"))
      .def("wait_closed", &PySession::WaitClosed, py::arg("timeout"))
      .def_property_readonly("ended", &PySession::ended)
      .def_property_readonly("last_seq", &PySession::last_seq);
}

}  // namespace dispatch::python
