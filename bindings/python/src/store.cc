// Bindings of the event store: dispatch.EventStore, NewEvent, AppendResult,
// RunInfo, SessionRecord, WorkspaceRecord and Subscription.
//
// The store is held by shared_ptr so that iterators, subscriptions and
// session managers made from it keep it alive; EventStore.close() closes it
// for everyone (later calls raise dispatch.Closed).
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common.h"
#include "dispatch/catalog.h"

namespace dispatch::python {

namespace {

py::object JsonLoads(const std::string& text) {
  return py::module_::import("json").attr("loads")(py::bytes(text));
}

std::string JsonDumps(py::handle value) {
  py::object s = py::module_::import("json").attr("dumps")(
      value, py::arg("separators") = py::make_tuple(",", ":"), py::arg("ensure_ascii") = false);
  return s.cast<std::string>();
}

// Bytes of a bytes-like object, or nullopt if it is not one.
std::optional<std::string> BytesOf(py::handle h) {
  if (PyBytes_Check(h.ptr())) {
    return std::string(PyBytes_AS_STRING(h.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(h.ptr())));
  }
  if (PyByteArray_Check(h.ptr()) || PyMemoryView_Check(h.ptr())) {
    py::bytes b(py::reinterpret_borrow<py::object>(h));
    return static_cast<std::string>(b);
  }
  return std::nullopt;
}

// str -> UTF-8 (surrogateescape, so text decoded that way round-trips).
std::string Utf8Of(py::handle h) {
  py::object b = py::reinterpret_steal<py::object>(
      PyUnicode_AsEncodedString(h.ptr(), "utf-8", "surrogateescape"));
  if (!b) throw py::error_already_set();
  return std::string(PyBytes_AS_STRING(b.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(b.ptr())));
}

Encoding ParseEncodingArg(const std::string& name) {
  auto e = ParseEncoding(name);
  if (!e) {
    RaiseStatus(Status::InvalidArgument("encoding must be 'bytes', 'json' or 'text', not '" +
                                        name + "'"));
  }
  return *e;
}

NewEvent MakeNewEvent(std::string channel, std::string type, py::handle payload,
                      std::optional<std::string> encoding, std::optional<std::string> id,
                      int64_t ts_us) {
  NewEvent e;
  e.channel = std::move(channel);
  e.type = std::move(type);
  std::optional<Encoding> enc;
  if (encoding) enc = ParseEncodingArg(*encoding);
  if (auto bytes = BytesOf(payload)) {
    e.payload = std::move(*bytes);
    e.encoding = enc.value_or(Encoding::kBytes);
  } else if (PyUnicode_Check(payload.ptr())) {
    e.payload = Utf8Of(payload);
    e.encoding = enc.value_or(Encoding::kText);
  } else {
    if (enc && *enc != Encoding::kJson) {
      RaiseStatus(Status::InvalidArgument(
          "a payload of type " + std::string(py::str(payload.get_type().attr("__name__"))) +
          " is stored as JSON; give bytes or str for encoding '" +
          std::string(EncodingName(*enc)) + "'"));
    }
    e.payload = JsonDumps(payload);
    e.encoding = Encoding::kJson;
  }
  if (id) e.id = *id;
  if (ts_us < 0) RaiseStatus(Status::InvalidArgument("ts_us must be >= 0"));
  e.ts_us = ts_us;
  return e;
}

std::vector<NewEvent> EventsArg(py::handle events) {
  std::vector<NewEvent> out;
  if (py::isinstance<NewEvent>(events)) {
    out.push_back(events.cast<const NewEvent&>());
    return out;
  }
  if (py::isinstance<py::str>(events) || py::isinstance<py::bytes>(events)) {
    throw py::type_error("events must be a NewEvent or an iterable of NewEvent");
  }
  if (PyList_Check(events.ptr()) || PyTuple_Check(events.ptr())) {
    out.reserve(static_cast<size_t>(PySequence_Fast_GET_SIZE(events.ptr())));
  }
  for (py::handle item : py::iter(events)) {
    if (!py::isinstance<NewEvent>(item)) {
      throw py::type_error("events must be NewEvent objects, got " +
                           std::string(py::str(item.get_type().attr("__name__"))));
    }
    out.push_back(item.cast<const NewEvent&>());
  }
  return out;
}

// ---------------------------------------------------------------- store

std::mutex g_stores_mu;
std::vector<std::weak_ptr<EventStore>> g_stores;  // for CloseAllStores

void TrackStore(const std::shared_ptr<EventStore>& store) {
  std::lock_guard<std::mutex> lock(g_stores_mu);
  std::erase_if(g_stores, [](const std::weak_ptr<EventStore>& w) { return w.expired(); });
  g_stores.push_back(store);
}

struct PyStore {
  std::shared_ptr<EventStore> store;
  std::string path;
  bool read_only = false;

  ~PyStore() { DropUnlocked(store); }

  EventStore& s() { return *store; }
};

// ---------------------------------------------------------------- subscription

struct SubState;
// The subscription whose callback this thread is running, if any.
thread_local const SubState* t_in_callback = nullptr;

struct CallbackScope {
  explicit CallbackScope(const SubState* s) : prev(t_in_callback) { t_in_callback = s; }
  ~CallbackScope() { t_in_callback = prev; }
  const SubState* prev;
};

// State shared between the Python Subscription object and the callbacks
// the store runs on its thread.
struct SubState {
  py::object callback;
  py::object on_caught_up;
  py::object on_error;
  py::list errors;        // exceptions raised by the callbacks (last 100)
  int64_t error_count = 0;
  py::object end_error;   // the exception that ended the subscription, or None
  std::mutex mu;
  std::condition_variable cv;
  bool caught_up = false;
  int64_t caught_up_seq = 0;
  bool ended = false;
  std::atomic<bool> cancelled{false};

  ~SubState() {
    if (!PythonAlive()) {  // leak rather than touch a dead interpreter
      callback.release();
      on_caught_up.release();
      on_error.release();
      errors.release();
      end_error.release();
      return;
    }
    // Drop every reference with the GIL held (the members' own destructors
    // run after this body, possibly without it).
    py::gil_scoped_acquire gil;
    callback.release().dec_ref();
    on_caught_up.release().dec_ref();
    on_error.release().dec_ref();
    errors.release().dec_ref();
    end_error.release().dec_ref();
  }

  void RecordCallbackError(const char* where) {
    py::object exc = ReportCallbackError(where);
    ++error_count;
    if (PyList_GET_SIZE(errors.ptr()) >= 100) PyList_SetSlice(errors.ptr(), 0, 1, nullptr);
    errors.append(exc);
  }
};

class PySubscription {
 public:
  PySubscription(std::shared_ptr<EventStore> store, std::shared_ptr<SubState> state)
      : store_(std::move(store)), state_(std::move(state)) {}
  ~PySubscription() {
    Close();
    if (retired_) {
      if (t_in_callback == state_.get()) {
        // Destroyed from inside its own callback: the store's subscription
        // cannot be destroyed on its own thread; do it on another one.
        std::thread([s = std::move(retired_)]() mutable { s.reset(); }).detach();
      } else if (PythonAlive() && PyGILState_Check()) {
        py::gil_scoped_release unlocked;
        retired_.reset();
      } else {
        retired_.reset();
      }
    }
    DropUnlocked(store_);
  }

  void Attach(std::unique_ptr<Subscription> sub) { sub_ = std::move(sub); }

  void Close() {
    state_->cancelled = true;
    std::unique_ptr<Subscription> sub;
    {
      std::lock_guard<std::mutex> lock(close_mu_);
      sub = std::move(sub_);
    }
    if (!sub) return;
    // Called from inside one of our callbacks: Cancel is allowed there, but
    // the subscription is destroyed later, not on its own thread.
    bool inside = t_in_callback == state_.get();
    if (PythonAlive() && PyGILState_Check()) {
      py::gil_scoped_release unlocked;  // a callback may be waiting for the GIL
      sub->Cancel();
      if (!inside) sub.reset();
    } else {
      sub->Cancel();
      if (!inside) sub.reset();
    }
    if (sub) retired_ = std::move(sub);
  }

  bool closed() {
    std::lock_guard<std::mutex> lock(close_mu_);
    return sub_ == nullptr;
  }

  int64_t cursor() {
    std::lock_guard<std::mutex> lock(close_mu_);
    if (sub_) last_cursor_ = sub_->cursor();
    return last_cursor_;
  }

  bool WaitCaughtUp(std::optional<double> timeout) {
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::microseconds(static_cast<int64_t>(timeout.value_or(1e9) * 1e6));
    while (true) {
      {
        py::gil_scoped_release unlocked;
        std::unique_lock<std::mutex> lock(state_->mu);
        auto slice = std::min(deadline, std::chrono::steady_clock::now() +
                                            std::chrono::milliseconds(50));
        if (state_->cv.wait_until(lock, slice, [&] { return state_->caught_up || state_->ended; })) {
          return state_->caught_up;
        }
        if (std::chrono::steady_clock::now() >= deadline) return false;
      }
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
  }

  SubState& state() { return *state_; }

 private:
  std::shared_ptr<EventStore> store_;
  std::shared_ptr<SubState> state_;
  std::mutex close_mu_;
  std::unique_ptr<Subscription> sub_;
  std::unique_ptr<Subscription> retired_;  // cancelled from inside a callback
  int64_t last_cursor_ = 0;
};

SubscriptionHandlers MakeHandlers(const std::shared_ptr<SubState>& st) {
  SubscriptionHandlers h;
  h.on_event = [st](const EventView& v) {
    if (st->cancelled || !PythonAlive()) return;
    CallbackScope scope(st.get());
    py::gil_scoped_acquire gil;
    PyObject* ev = MakeEvent(v);
    PyObject* r = ev != nullptr ? PyObject_CallOneArg(st->callback.ptr(), ev) : nullptr;
    Py_XDECREF(ev);
    if (r == nullptr) {
      st->RecordCallbackError("subscription callback");
    } else {
      Py_DECREF(r);
    }
  };
  h.on_caught_up = [st](int64_t seq) {
    if (!st->cancelled && PythonAlive()) {
      CallbackScope scope(st.get());
      py::gil_scoped_acquire gil;
      if (st->on_caught_up && !st->on_caught_up.is_none()) {
        PyObject* r = PyObject_CallOneArg(st->on_caught_up.ptr(), py::int_(seq).ptr());
        if (r == nullptr) {
          st->RecordCallbackError("subscription on_caught_up");
        } else {
          Py_DECREF(r);
        }
      }
    }
    // After the callback, so wait_caught_up() returns once it has run.
    {
      std::lock_guard<std::mutex> lock(st->mu);
      st->caught_up = true;
      st->caught_up_seq = seq;
    }
    st->cv.notify_all();
  };
  h.on_error = [st](const Status& status) {
    {
      std::lock_guard<std::mutex> lock(st->mu);
      st->ended = true;
    }
    st->cv.notify_all();
    if (!PythonAlive()) return;
    CallbackScope scope(st.get());
    py::gil_scoped_acquire gil;
    try {
      st->end_error = StatusToException(status);
    } catch (py::error_already_set& e) {
      e.restore();
      st->RecordCallbackError("subscription end");
      return;
    }
    if (st->cancelled) return;
    if (st->on_error && !st->on_error.is_none()) {
      PyObject* r = PyObject_CallOneArg(st->on_error.ptr(), st->end_error.ptr());
      if (r == nullptr) {
        st->RecordCallbackError("subscription on_error");
      } else {
        Py_DECREF(r);
      }
    } else if (status.code() != StatusCode::kClosed) {
      py::module_::import("logging").attr("getLogger")("dispatch").attr("warning")(
          "subscription ended: %s", status.ToString());
    }
  };
  return h;
}

std::unique_ptr<PySubscription> Subscribe(PyStore& self, std::optional<std::string> run_id,
                                          int64_t after, py::object callback,
                                          py::object on_caught_up, py::object on_error,
                                          size_t max_queued_events) {
  if (!PyCallable_Check(callback.ptr())) throw py::type_error("callback must be callable");
  auto st = std::make_shared<SubState>();
  st->callback = std::move(callback);
  st->on_caught_up = std::move(on_caught_up);
  st->on_error = std::move(on_error);
  st->end_error = py::none();
  auto sub = std::make_unique<PySubscription>(self.store, st);
  SubscriptionHandlers handlers = MakeHandlers(st);
  SubscribeOptions options;
  options.max_queued_events = max_queued_events;
  Result<std::unique_ptr<Subscription>> r = Status::Internal("not subscribed");
  {
    py::gil_scoped_release unlocked;  // the first callbacks may run at once
    r = run_id ? self.s().Subscribe(*run_id, after, std::move(handlers), options)
               : self.s().SubscribeAll(after, std::move(handlers), options);
  }
  sub->Attach(Take(std::move(r)));
  return sub;
}

template <typename F>
auto Unlocked(F&& f) {
  py::gil_scoped_release unlocked;
  return f();
}

std::string ToStr(SessionStatus s) { return std::string(SessionStatusName(s)); }
std::string ToStr(WorkspaceStatus s) { return std::string(WorkspaceStatusName(s)); }

}  // namespace

void CloseAllStores() {
  std::vector<std::shared_ptr<EventStore>> open;
  {
    std::lock_guard<std::mutex> lock(g_stores_mu);
    for (auto& w : g_stores) {
      if (auto s = w.lock()) open.push_back(std::move(s));
    }
    g_stores.clear();
  }
  for (auto& s : open) (void)s->Close();
}

std::shared_ptr<EventStore> StoreOf(py::handle store_object) {
  if (!py::isinstance<PyStore>(store_object)) {
    throw py::type_error("expected a dispatch.EventStore");
  }
  return store_object.cast<PyStore&>().store;
}

void BindStore(py::module_& m) {
  // ---- NewEvent
  py::class_<NewEvent>(m, "NewEvent",
                       "An event to append. The store assigns seq, position and (unless ts_us "
                       "is given) the timestamp.")
      .def(py::init(&MakeNewEvent), py::arg("channel"), py::arg("type"), py::arg("payload") = py::bytes(),
           py::arg("encoding") = py::none(), py::arg("id") = py::none(), py::arg("ts_us") = 0,
           "NewEvent(channel, type, payload=b'', encoding=None, id=None, ts_us=0)\n\n"
           "payload: bytes (encoding 'bytes'), str (stored as UTF-8, encoding 'text') or any "
           "JSON-serialisable value (encoding 'json'). With encoding='json', a str or bytes "
           "payload is taken as JSON text (checked on append). id: optional idempotency key; "
           "appending the same id to the run again does not duplicate. ts_us: recording time "
           "in µs since the epoch, 0 = now.")
      .def_property_readonly(
          "channel", [](const NewEvent& e) { return e.channel; },
          "Where the event belongs, e.g. 'pty:stdout' ('<namespace>:<name>').")
      .def_property_readonly(
          "type", [](const NewEvent& e) { return e.type; }, "What happened, e.g. 'chunk'.")
      .def_property_readonly("payload", [](const NewEvent& e) { return py::bytes(e.payload); },
                             "The payload as it will be stored (bytes).")
      .def_property_readonly(
          "encoding", [](const NewEvent& e) { return std::string(EncodingName(e.encoding)); },
          "'bytes', 'json' or 'text'.")
      .def_property_readonly("id",
                             [](const NewEvent& e) -> py::object {
                               if (e.id.empty()) return py::none();
                               return py::str(e.id);
                             },
                             "The idempotency key, or None.")
      .def_property_readonly(
          "ts_us", [](const NewEvent& e) { return e.ts_us; },
          "Recording time in µs since the epoch; 0 = the store stamps it.")
      .def("__repr__", [](const NewEvent& e) {
        return "NewEvent(channel=" + std::string(py::repr(py::str(e.channel))) +
               ", type=" + std::string(py::repr(py::str(e.type))) +
               ", encoding='" + std::string(EncodingName(e.encoding)) + "', payload=" +
               std::string(py::repr(py::bytes(e.payload.substr(0, 64)))) +
               (e.payload.size() > 64 ? "..." : "") + ")";
      });

  // ---- AppendResult
  py::class_<AppendResult>(m, "AppendResult", "What an append did.")
      .def_readonly("seqs", &AppendResult::seqs,
                    "The seq of each input event, in input order (a duplicate by id reports "
                    "the original's seq).")
      .def_readonly("first_seq", &AppendResult::first_seq,
                    "First newly written seq (0 if nothing was written).")
      .def_readonly("first_position", &AppendResult::first_position,
                    "Store-wide position of first_seq (0 if nothing was written); the written "
                    "events are contiguous: seq first_seq + k has position first_position + k.")
      .def_readonly("last_seq", &AppendResult::last_seq, "The run's last seq after the append.")
      .def_readonly("written", &AppendResult::written, "Events newly written.")
      .def_readonly("duplicates", &AppendResult::duplicates, "Events skipped as duplicates by id.")
      .def("__repr__", [](const AppendResult& r) {
        return "AppendResult(first_seq=" + std::to_string(r.first_seq) +
               ", last_seq=" + std::to_string(r.last_seq) + ", written=" +
               std::to_string(r.written) + ", duplicates=" + std::to_string(r.duplicates) + ")";
      });

  // ---- RunInfo
  py::class_<RunInfo>(m, "RunInfo", "Metadata of one run (stream).")
      .def_readonly("run_id", &RunInfo::run_id, "The run's id.")
      .def_readonly("first_seq", &RunInfo::first_seq,
                    "Earliest seq still stored (retention moves it up).")
      .def_readonly("last_seq", &RunInfo::last_seq, "The seq of its newest event.")
      .def_readonly("event_count", &RunInfo::event_count, "Events stored (after retention).")
      .def_readonly("payload_bytes", &RunInfo::payload_bytes, "Payload bytes stored.")
      .def_readonly("created_us", &RunInfo::created_us, "First append, µs since the epoch.")
      .def_readonly("updated_us", &RunInfo::updated_us, "Last append, µs since the epoch.")
      .def("__repr__", [](const RunInfo& r) {
        return "RunInfo(run_id='" + r.run_id + "', first_seq=" + std::to_string(r.first_seq) +
               ", last_seq=" + std::to_string(r.last_seq) +
               ", event_count=" + std::to_string(r.event_count) + ")";
      });

  // ---- SessionRecord
  py::class_<SessionRecord>(m, "SessionRecord", "A session as recorded in the store's catalog.")
      .def_readonly("run_id", &SessionRecord::run_id, "The session's run (its event stream).")
      .def_readonly("kind", &SessionRecord::kind, "'pty', 'claude', 'file', ...")
      .def_property_readonly("status", [](const SessionRecord& s) { return ToStr(s.status); },
                             "'starting', 'running', 'stopped' or 'error'.")
      .def_readonly("workspace", &SessionRecord::workspace, "The workspace it ran in.")
      .def_property_readonly("meta", [](const SessionRecord& s) { return JsonLoads(s.meta); },
                             "The session's meta JSON object, parsed (dict).")
      .def_readonly("created_us", &SessionRecord::created_us, "µs since the epoch.")
      .def_readonly("updated_us", &SessionRecord::updated_us, "µs since the epoch.")
      .def("__repr__", [](const SessionRecord& s) {
        return "SessionRecord(run_id='" + s.run_id + "', kind='" + s.kind + "', status='" +
               ToStr(s.status) + "', workspace='" + s.workspace + "')";
      });

  // ---- WorkspaceRecord
  py::class_<WorkspaceRecord>(m, "WorkspaceRecord", "A workspace as recorded in the catalog.")
      .def_readonly("id", &WorkspaceRecord::id, "The workspace id.")
      .def_readonly("name", &WorkspaceRecord::name, "Display name.")
      .def_readonly("path", &WorkspaceRecord::path, "Its directory.")
      .def_property_readonly("status", [](const WorkspaceRecord& w) { return ToStr(w.status); },
                             "'active', 'archived' or 'error'.")
      .def_property_readonly("metadata",
                             [](const WorkspaceRecord& w) { return JsonLoads(w.metadata); },
                             "The metadata JSON object, parsed (dict).")
      .def_readonly("created_us", &WorkspaceRecord::created_us, "µs since the epoch.")
      .def_readonly("last_accessed_us", &WorkspaceRecord::last_accessed_us, "µs since the epoch.")
      .def("__repr__", [](const WorkspaceRecord& w) {
        return "WorkspaceRecord(id='" + w.id + "', name='" + w.name + "', path='" + w.path +
               "', status='" + ToStr(w.status) + "')";
      });

  // ---- LayoutRecord
  py::class_<LayoutRecord>(m, "LayoutRecord",
                           "A client's saved layout of one workspace (panes, tabs...), as JSON.")
      .def_readonly("client_id", &LayoutRecord::client_id, "The client that saved it.")
      .def_readonly("workspace_id", &LayoutRecord::workspace_id, "The workspace it lays out.")
      .def_property_readonly("layout", [](const LayoutRecord& l) { return JsonLoads(l.layout); },
                             "The layout JSON value, parsed.")
      .def_readonly("updated_us", &LayoutRecord::updated_us, "Last saved, µs since the epoch.")
      .def("__repr__", [](const LayoutRecord& l) {
        return "LayoutRecord(client_id='" + l.client_id + "', workspace_id='" + l.workspace_id +
               "')";
      });

  // ---- Subscription
  py::class_<PySubscription>(m, "Subscription",
                             "A live subscription (EventStore.subscribe). Callbacks run on a "
                             "store thread holding the GIL, one at a time, in order. close() "
                             "stops delivery: once it returns (outside a callback) no callback "
                             "runs. An exception raised by a callback is logged on the "
                             "'dispatch' logger and kept in `errors`; delivery goes on.")
      .def("close", &PySubscription::Close,
           "Stops delivery. Idempotent; may be called from inside a callback.")
      .def_property_readonly("closed", &PySubscription::closed, "True once close() was called.")
      .def_property_readonly("cursor", &PySubscription::cursor,
                             "The last seq (position for subscribe_all) delivered so far.")
      .def_property_readonly(
          "caught_up",
          [](PySubscription& s) {
            std::lock_guard<std::mutex> lock(s.state().mu);
            return s.state().caught_up;
          },
          "True once the backlog (everything committed at subscribe time) was delivered.")
      .def("wait_caught_up", &PySubscription::WaitCaughtUp, py::arg("timeout") = py::none(),
           "Blocks (GIL released) until the backlog was delivered; False on timeout or if "
           "the subscription ended first.")
      .def_property_readonly(
          "errors", [](PySubscription& s) { return py::list(s.state().errors); },
          "Exceptions raised by this subscription's callbacks (the last 100).")
      .def_property_readonly(
          "error_count", [](PySubscription& s) { return s.state().error_count; },
          "How many times a callback raised (all of them, not only the last 100).")
      .def_property_readonly(
          "error", [](PySubscription& s) { return s.state().end_error; },
          "The dispatch.Error that ended the subscription by itself (store closed: "
          "dispatch.Closed; fell behind: dispatch.Busy), or None.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PySubscription& s, py::args) { s.Close(); });

  // ---- EventStore
  py::class_<PyStore>(m, "EventStore",
                      "A durable, append-only event log (SQLite in one file). Thread-safe: "
                      "use it from any number of Python threads; blocking calls release the "
                      "GIL. A context manager: leaving the block closes it.")
      .def(py::init([](const std::string& path, bool read_only, const std::string& durability,
                       bool create_if_missing, int busy_timeout_ms, bool exclusive) {
             StoreOptions o;
             o.path = path;
             o.read_only = read_only;
             o.exclusive = exclusive;
             o.create_if_missing = create_if_missing;
             o.busy_timeout_ms = busy_timeout_ms;
             if (durability == "normal") {
               o.durability = Durability::kNormal;
             } else if (durability == "full") {
               o.durability = Durability::kFull;
             } else {
               RaiseStatus(Status::InvalidArgument("durability must be 'normal' or 'full'"));
             }
             auto r = Unlocked([&] { return EventStore::Open(o); });
             auto store = std::make_unique<PyStore>();
             store->store = std::shared_ptr<EventStore>(Take(std::move(r)).release());
             TrackStore(store->store);
             store->path = path;
             store->read_only = read_only;
             return store;
           }),
           py::arg("path"), py::arg("read_only") = false, py::arg("durability") = "normal",
           py::arg("create_if_missing") = true, py::arg("busy_timeout_ms") = 5000,
           py::kw_only(), py::arg("exclusive") = false,
           "EventStore(path, read_only=False, durability='normal', create_if_missing=True, "
           "busy_timeout_ms=5000, *, exclusive=False)\n\nOpens (creating if needed) the store at "
           "`path` (':memory:' for a private in-memory store). durability='full' also survives "
           "power loss (fsync per group commit). exclusive=True: this process is the file's "
           "only writer (others may read); small appends then commit to an append journal "
           "(doc/storage.md). Raises InvalidArgument, Corruption, ReadOnly, Busy (another "
           "process holds the store exclusively, or writes to it when exclusive=True) or "
           "Error(code='io_error').")
      .def_readonly("path", &PyStore::path, "The path the store was opened with.")
      .def_readonly("read_only", &PyStore::read_only, "True if opened read_only.")
      .def(
          "append",
          [](PyStore& self, const std::string& run_id, py::handle events,
             std::optional<int64_t> expected_seq) {
            std::vector<NewEvent> batch = EventsArg(events);
            AppendOptions o;
            o.expected_last_seq = expected_seq;
            auto r = Unlocked([&] { return self.s().Append(run_id, batch, o); });
            return Take(std::move(r));
          },
          py::arg("run_id"), py::arg("events"), py::arg("expected_seq") = py::none(),
          "append(run_id, events, expected_seq=None) -> AppendResult\n\n"
          "Appends a NewEvent or an iterable of them to the run, all or nothing, and returns "
          "once committed. With expected_seq the append succeeds only if the run's last seq "
          "equals it (0 = the run must be empty), else raises Conflict (actual_last_seq). "
          "Raises InvalidArgument (bad run id, names, limits, malformed JSON), ReadOnly, "
          "Closed.")
      .def(
          "read",
          [](PyStore& self, const std::string& run_id, int64_t after_seq,
             std::optional<int64_t> limit, size_t chunk_size) {
            if (limit && *limit < 0) RaiseStatus(Status::InvalidArgument("limit must be >= 0"));
            return MakeEventIterator(self.store, false, run_id, after_seq, limit.value_or(-1),
                                     chunk_size);
          },
          py::arg("run_id"), py::arg("after_seq") = 0, py::arg("limit") = py::none(),
          py::arg("chunk_size") = 4096,
          "read(run_id, after_seq=0, limit=None) -> Iterator[Event]\n\n"
          "Events of the run with seq > after_seq, in seq order, fetched in chunks. A run "
          "that does not exist reads as empty. Raises Truncated (earliest_seq) if retention "
          "removed part of the range, InvalidArgument for a bad run id, Closed.")
      .def(
          "read_all",
          [](PyStore& self, int64_t after_position, std::optional<int64_t> limit,
             size_t chunk_size) {
            if (limit && *limit < 0) RaiseStatus(Status::InvalidArgument("limit must be >= 0"));
            return MakeEventIterator(self.store, true, std::string(), after_position,
                                     limit.value_or(-1), chunk_size);
          },
          py::arg("after_position") = 0, py::arg("limit") = py::none(),
          py::arg("chunk_size") = 4096,
          "read_all(after_position=0, limit=None) -> Iterator[Event]\n\n"
          "Events of every run with position > after_position, in commit order.")
      .def(
          "last_seq",
          [](PyStore& self, const std::string& run_id) {
            return Take(Unlocked([&] { return self.s().LastSeq(run_id); }));
          },
          py::arg("run_id"), "The run's last seq; 0 for a run without events.")
      .def(
          "last_position",
          [](PyStore& self) { return Take(Unlocked([&] { return self.s().LastPosition(); })); },
          "The store's last committed position; 0 when empty.")
      .def(
          "run",
          [](PyStore& self, const std::string& run_id) {
            return Take(Unlocked([&] { return self.s().GetRun(run_id); }));
          },
          py::arg("run_id"), "RunInfo of one run; raises NotFound if it never had an event.")
      .def(
          "runs", [](PyStore& self) { return Take(Unlocked([&] { return self.s().ListRuns(); })); },
          "Every run (list of RunInfo), ordered by run id.")
      .def(
          "subscribe",
          [](PyStore& self, const std::string& run_id, int64_t after_seq, py::object callback,
             py::object on_caught_up, py::object on_error, size_t max_queued_events) {
            return Subscribe(self, run_id, after_seq, std::move(callback),
                             std::move(on_caught_up), std::move(on_error), max_queued_events);
          },
          py::arg("run_id"), py::arg("after_seq"), py::arg("callback"),
          py::arg("on_caught_up") = py::none(), py::arg("on_error") = py::none(),
          py::arg("max_queued_events") = 65536,
          "subscribe(run_id, after_seq, callback, on_caught_up=None, on_error=None) -> "
          "Subscription\n\n"
          "Calls callback(event) for every event with seq > after_seq: the backlog, then live "
          "events as they are committed, exactly once each, in order, on a store thread. "
          "on_caught_up(seq) runs once the backlog is delivered; on_error(exc) if the "
          "subscription ends by itself (store closed). Raises Truncated at once if the cursor "
          "is below what retention kept.")
      .def(
          "subscribe_all",
          [](PyStore& self, int64_t after_position, py::object callback, py::object on_caught_up,
             py::object on_error, size_t max_queued_events) {
            return Subscribe(self, std::nullopt, after_position, std::move(callback),
                             std::move(on_caught_up), std::move(on_error), max_queued_events);
          },
          py::arg("after_position"), py::arg("callback"), py::arg("on_caught_up") = py::none(),
          py::arg("on_error") = py::none(), py::arg("max_queued_events") = 65536,
          "Like subscribe, over every run, by position.")
      .def(
          "truncate_before",
          [](PyStore& self, const std::string& run_id, int64_t before_seq) {
            return Take(Unlocked([&] { return self.s().TruncateBefore(run_id, before_seq); }));
          },
          py::arg("run_id"), py::arg("before_seq"),
          "Retention: removes the run's events with seq < before_seq; returns how many. Later "
          "reads below it raise Truncated.")
      .def(
          "flush", [](PyStore& self) { Check(Unlocked([&] { return self.s().Flush(); })); },
          "Blocks until every append queued before the call is committed.")
      .def(
          "stats",
          [](PyStore& self) {
            StoreStats s = self.s().Stats();
            py::dict d;
            d["appends"] = s.appends;
            d["events_appended"] = s.events_appended;
            d["bytes_appended"] = s.bytes_appended;
            d["group_commits"] = s.group_commits;
            d["commit_latency_us_total"] = s.commit_latency_us_total;
            d["checkpoints"] = s.checkpoints;
            d["subscribers"] = s.subscribers;
            d["subscriber_lags"] = s.subscriber_lags;
            d["journal_appends"] = s.journal_appends;
            d["journal_drains"] = s.journal_drains;
            return d;
          },
          "Counters of this store object (dict).")
      // ---- catalog
      .def(
          "sessions",
          [](PyStore& self) {
            return Take(Unlocked([&] { return self.s().catalog().ListSessions(); }));
          },
          "Every session record (list of SessionRecord).")
      .def(
          "session",
          [](PyStore& self, const std::string& run_id) {
            return Take(Unlocked([&] { return self.s().catalog().GetSession(run_id); }));
          },
          py::arg("run_id"), "One session record; raises NotFound.")
      .def(
          "put_session",
          [](PyStore& self, const std::string& run_id, const std::string& kind,
             const std::string& workspace, const std::string& status, py::object meta) {
            SessionRecord r;
            r.run_id = run_id;
            r.kind = kind;
            r.workspace = workspace;
            auto st = ParseSessionStatus(status);
            if (!st) RaiseStatus(Status::InvalidArgument("unknown session status '" + status + "'"));
            r.status = *st;
            r.meta = meta.is_none() ? "{}" : JsonDumps(meta);
            Check(Unlocked([&] { return self.s().catalog().PutSession(r); }));
          },
          py::arg("run_id"), py::arg("kind"), py::arg("workspace") = "",
          py::arg("status") = "stopped", py::arg("meta") = py::none(),
          "Inserts or replaces a session record (normally the SessionManager does this).")
      .def(
          "delete_session",
          [](PyStore& self, const std::string& run_id) {
            Check(Unlocked([&] { return self.s().catalog().DeleteSession(run_id); }));
          },
          py::arg("run_id"), "Removes a session record (its events stay).")
      .def(
          "workspaces",
          [](PyStore& self) {
            return Take(Unlocked([&] { return self.s().catalog().ListWorkspaces(); }));
          },
          "Every workspace record (list of WorkspaceRecord).")
      .def(
          "workspace",
          [](PyStore& self, const std::string& id) {
            return Take(Unlocked([&] { return self.s().catalog().GetWorkspace(id); }));
          },
          py::arg("id"), "One workspace record; raises NotFound.")
      .def(
          "create_workspace",
          [](PyStore& self, const std::string& id, const std::string& name,
             const std::string& path, py::object metadata) {
            WorkspaceRecord w;
            w.id = id;
            w.name = name;
            w.path = path;
            w.metadata = metadata.is_none() ? "{}" : JsonDumps(metadata);
            Check(Unlocked([&] { return self.s().catalog().CreateWorkspace(w); }));
            return Take(Unlocked([&] { return self.s().catalog().GetWorkspace(id); }));
          },
          py::arg("id"), py::arg("name"), py::arg("path"), py::arg("metadata") = py::none(),
          "Creates a workspace record; raises Conflict if the id exists.")
      .def(
          "update_workspace",
          [](PyStore& self, const std::string& id, std::optional<std::string> name,
             std::optional<std::string> path, std::optional<std::string> status,
             py::object metadata) {
            WorkspaceRecord w = Take(Unlocked([&] { return self.s().catalog().GetWorkspace(id); }));
            if (name) w.name = *name;
            if (path) w.path = *path;
            if (status) {
              auto st = ParseWorkspaceStatus(*status);
              if (!st) {
                RaiseStatus(Status::InvalidArgument("unknown workspace status '" + *status + "'"));
              }
              w.status = *st;
            }
            if (!metadata.is_none()) w.metadata = JsonDumps(metadata);
            Check(Unlocked([&] { return self.s().catalog().UpdateWorkspace(w); }));
            return Take(Unlocked([&] { return self.s().catalog().GetWorkspace(id); }));
          },
          py::arg("id"), py::kw_only(), py::arg("name") = py::none(), py::arg("path") = py::none(),
          py::arg("status") = py::none(), py::arg("metadata") = py::none(),
          "Changes the given fields of a workspace; raises NotFound.")
      .def(
          "delete_workspace",
          [](PyStore& self, const std::string& id) {
            Check(Unlocked([&] { return self.s().catalog().DeleteWorkspace(id); }));
          },
          py::arg("id"), "Removes a workspace record (sessions and events stay).")
      .def(
          "settings",
          [](PyStore& self) {
            auto all = Take(Unlocked([&] { return self.s().catalog().ListSettings(); }));
            py::dict d;
            for (auto& [k, v] : all) d[py::str(k)] = JsonLoads(v);
            return d;
          },
          "Every settings category and its JSON value, parsed (dict).")
      .def(
          "get_settings",
          [](PyStore& self, const std::string& category) {
            return JsonLoads(
                Take(Unlocked([&] { return self.s().catalog().GetSettings(category); })));
          },
          py::arg("category"), "The category's settings, parsed; raises NotFound if unset.")
      .def(
          "put_settings",
          [](PyStore& self, const std::string& category, py::object value) {
            std::string json = JsonDumps(value);
            Check(Unlocked([&] { return self.s().catalog().PutSettings(category, json); }));
          },
          py::arg("category"), py::arg("value"),
          "Stores `value` (any JSON-serialisable object) as the category's settings.")
      .def(
          "layouts",
          [](PyStore& self, const std::string& client_id) {
            return Take(Unlocked([&] { return self.s().catalog().ListLayouts(client_id); }));
          },
          py::arg("client_id"), "The layouts a client saved (list of LayoutRecord).")
      .def(
          "layout",
          [](PyStore& self, const std::string& client_id, const std::string& workspace_id) {
            return Take(
                Unlocked([&] { return self.s().catalog().GetLayout(client_id, workspace_id); }));
          },
          py::arg("client_id"), py::arg("workspace_id"),
          "One layout record; raises NotFound.")
      .def(
          "put_layout",
          [](PyStore& self, const std::string& client_id, const std::string& workspace_id,
             py::object layout) {
            LayoutRecord l;
            l.client_id = client_id;
            l.workspace_id = workspace_id;
            l.layout = JsonDumps(layout);
            Check(Unlocked([&] { return self.s().catalog().PutLayout(l); }));
          },
          py::arg("client_id"), py::arg("workspace_id"), py::arg("layout"),
          "Stores `layout` (any JSON-serialisable value) as the client's layout of the "
          "workspace, replacing the previous one.")
      .def(
          "delete_layout",
          [](PyStore& self, const std::string& client_id, const std::string& workspace_id) {
            Check(Unlocked(
                [&] { return self.s().catalog().DeleteLayout(client_id, workspace_id); }));
          },
          py::arg("client_id"), py::arg("workspace_id"), "Removes one layout record.")
      // ---- lifecycle
      .def(
          "close", [](PyStore& self) { Check(Unlocked([&] { return self.s().Close(); })); },
          "Commits what is queued, ends subscriptions (their on_error gets Closed) and closes "
          "the database. Idempotent. Later calls raise Closed.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__",
           [](PyStore& self, py::args) { Check(Unlocked([&] { return self.s().Close(); })); })
      .def("__repr__", [](PyStore& self) { return "EventStore('" + self.path + "')"; });
}

}  // namespace dispatch::python
