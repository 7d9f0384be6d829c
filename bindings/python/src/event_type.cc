// dispatch.Event and the iterator returned by EventStore.read/read_all,
// written against the CPython API for speed.
//
// Why not pybind11 classes: a pybind11 instance costs a holder allocation
// and an entry in pybind11's instance registry, and each __next__ goes
// through pybind11's argument dispatcher; at 100K events that alone eats
// the 30 ms budget. Here an Event is one plain allocation holding
// ready-made Python values (run id, channel and type strings are shared
// between the events of a chunk), and the iterator's tp_iternext hands out
// prefetched objects.
//
// Reading happens in chunks: the store is read with the GIL released into
// one arena (payload bytes) plus fixed-size records, then the chunk is
// turned into Event objects with the GIL held.
#include "common.h"  // first: Python.h before structmember.h

#include <structmember.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace dispatch::python {

namespace {

// ---------------------------------------------------------------- Event

struct EventObject {
  PyObject_HEAD
  PyObject* run_id;
  PyObject* channel;
  PyObject* type;
  PyObject* payload;
  PyObject* encoding;
  PyObject* id;
  long long seq;
  long long position;
  long long ts_us;
};

PyTypeObject* g_event_type = nullptr;
PyTypeObject* g_iter_type = nullptr;
PyObject* g_encodings[3] = {nullptr, nullptr, nullptr};
PyObject* g_json_loads = nullptr;

template <typename F>
void* Slot(F f) {
  return reinterpret_cast<void*>(f);
}

void EventDealloc(PyObject* self) {
  auto* e = reinterpret_cast<EventObject*>(self);
  Py_XDECREF(e->run_id);
  Py_XDECREF(e->channel);
  Py_XDECREF(e->type);
  Py_XDECREF(e->payload);
  Py_XDECREF(e->encoding);
  Py_XDECREF(e->id);
  PyTypeObject* tp = Py_TYPE(self);
  PyObject_Free(self);
  Py_DECREF(tp);
}

PyObject* EventRepr(PyObject* self) {
  auto* e = reinterpret_cast<EventObject*>(self);
  Py_ssize_t n = PyBytes_GET_SIZE(e->payload);
  PyObject* shown = n > 64 ? PyBytes_FromStringAndSize(PyBytes_AS_STRING(e->payload), 64)
                           : (Py_INCREF(e->payload), e->payload);
  if (shown == nullptr) return nullptr;
  const char* more = n > 64 ? "..." : "";
  PyObject* r =
      e->id == Py_None
          ? PyUnicode_FromFormat(
                "Event(run_id=%R, seq=%lld, position=%lld, ts_us=%lld, channel=%R, type=%R, "
                "encoding=%R, payload=%R%s)",
                e->run_id, e->seq, e->position, e->ts_us, e->channel, e->type, e->encoding,
                shown, more)
          : PyUnicode_FromFormat(
                "Event(run_id=%R, seq=%lld, position=%lld, ts_us=%lld, channel=%R, type=%R, "
                "encoding=%R, payload=%R%s, id=%R)",
                e->run_id, e->seq, e->position, e->ts_us, e->channel, e->type, e->encoding,
                shown, more, e->id);
  Py_DECREF(shown);
  return r;
}

PyObject* EventRichCompare(PyObject* a, PyObject* b, int op) {
  if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(b, g_event_type)) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  auto* x = reinterpret_cast<EventObject*>(a);
  auto* y = reinterpret_cast<EventObject*>(b);
  bool eq = x->seq == y->seq && x->position == y->position && x->ts_us == y->ts_us;
  PyObject* const xs[] = {x->run_id, x->channel, x->type, x->payload, x->encoding, x->id};
  PyObject* const ys[] = {y->run_id, y->channel, y->type, y->payload, y->encoding, y->id};
  for (size_t i = 0; eq && i < 6; ++i) {
    int r = PyObject_RichCompareBool(xs[i], ys[i], Py_EQ);
    if (r < 0) return nullptr;
    eq = r == 1;
  }
  if (op == Py_NE) eq = !eq;
  return PyBool_FromLong(eq ? 1 : 0);
}

Py_hash_t EventHash(PyObject* self) {
  auto* e = reinterpret_cast<EventObject*>(self);
  Py_hash_t h = PyObject_Hash(e->run_id);
  if (h == -1) return -1;
  h = h * 1000003 ^ static_cast<Py_hash_t>(e->seq) * 31 ^ static_cast<Py_hash_t>(e->position);
  return h == -1 ? -2 : h;
}

PyObject* EventJson(PyObject* self, PyObject* /*unused*/) {
  auto* e = reinterpret_cast<EventObject*>(self);
  return PyObject_CallOneArg(g_json_loads, e->payload);
}

PyObject* EventText(PyObject* self, PyObject* args, PyObject* kwargs) {
  static const char* kw[] = {"errors", nullptr};
  const char* errors = "strict";
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|s:text", const_cast<char**>(kw), &errors)) {
    return nullptr;
  }
  auto* e = reinterpret_cast<EventObject*>(self);
  return PyUnicode_DecodeUTF8(PyBytes_AS_STRING(e->payload), PyBytes_GET_SIZE(e->payload), errors);
}

PyObject* EventTimestamp(PyObject* self, void* /*closure*/) {
  return PyFloat_FromDouble(static_cast<double>(reinterpret_cast<EventObject*>(self)->ts_us) /
                            1e6);
}

PyMemberDef kEventMembers[] = {
    {"run_id", T_OBJECT, offsetof(EventObject, run_id), READONLY,
     "The session's stream id (str)."},
    {"seq", T_LONGLONG, offsetof(EventObject, seq), READONLY,
     "Per-run sequence number: from 1, contiguous, never reused."},
    {"position", T_LONGLONG, offsetof(EventObject, position), READONLY,
     "Store-wide order, strictly increasing in commit order."},
    {"ts_us", T_LONGLONG, offsetof(EventObject, ts_us), READONLY,
     "When the event was recorded: microseconds since the Unix epoch (int)."},
    {"channel", T_OBJECT, offsetof(EventObject, channel), READONLY,
     "Where the event belongs: 'pty:stdout', 'system:status', ..."},
    {"type", T_OBJECT, offsetof(EventObject, type), READONLY,
     "What happened within the channel: 'chunk', 'input', 'closed', ..."},
    {"payload", T_OBJECT, offsetof(EventObject, payload), READONLY,
     "The payload, byte-exact (bytes)."},
    {"encoding", T_OBJECT, offsetof(EventObject, encoding), READONLY,
     "How to read the payload: 'bytes', 'json' or 'text'."},
    {"id", T_OBJECT, offsetof(EventObject, id), READONLY,
     "The idempotency key given on append, or None."},
    {nullptr, 0, 0, 0, nullptr},
};

PyGetSetDef kEventGetSet[] = {
    {"timestamp", EventTimestamp, nullptr,
     "ts_us as float seconds since the epoch (for datetime.fromtimestamp).", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyMethodDef kEventMethods[] = {
    {"json", EventJson, METH_NOARGS,
     "json() -> Any\n\nThe payload parsed as JSON (json.loads). Meant for encoding 'json'; "
     "raises json.JSONDecodeError when the payload is not JSON."},
    {"text", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(EventText)),
     METH_VARARGS | METH_KEYWORDS,
     "text(errors='strict') -> str\n\nThe payload decoded as UTF-8 (terminal output may not "
     "be valid UTF-8: pass errors='replace')."},
    {nullptr, nullptr, 0, nullptr},
};

const char kEventDoc[] =
    "A stored event (immutable). Returned by EventStore.read/read_all, Session.events and "
    "handed to subscription callbacks.\n\n"
    "Fields: run_id, seq, position, ts_us (int, µs), timestamp (float, s), channel, type, "
    "payload (bytes, byte-exact), encoding ('bytes'|'json'|'text'), id (str or None).";

PyType_Slot kEventSlots[] = {
    {Py_tp_dealloc, Slot(EventDealloc)},
    {Py_tp_repr, Slot(EventRepr)},
    {Py_tp_richcompare, Slot(EventRichCompare)},
    {Py_tp_hash, Slot(EventHash)},
    {Py_tp_members, kEventMembers},
    {Py_tp_getset, kEventGetSet},
    {Py_tp_methods, kEventMethods},
    {Py_tp_doc, const_cast<char*>(kEventDoc)},
    {0, nullptr},
};

PyType_Spec kEventSpec = {
    "dispatch.Event", sizeof(EventObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    kEventSlots};

// A fresh Event with all references stolen (every argument must be a new
// reference; on failure they are released).
PyObject* NewEventObject(PyObject* run_id, PyObject* channel, PyObject* type, PyObject* payload,
                         PyObject* encoding, PyObject* id, int64_t seq, int64_t position,
                         int64_t ts_us) {
  // Every field is set below: skip tp_alloc's zeroing (not GC-tracked, no
  // variable part).
  auto* e = reinterpret_cast<EventObject*>(PyObject_Malloc(sizeof(EventObject)));
  if (e != nullptr) PyObject_Init(reinterpret_cast<PyObject*>(e), g_event_type);
  if (e == nullptr) {
    Py_XDECREF(run_id);
    Py_XDECREF(channel);
    Py_XDECREF(type);
    Py_XDECREF(payload);
    Py_XDECREF(encoding);
    Py_XDECREF(id);
    return nullptr;
  }
  e->run_id = run_id;
  e->channel = channel;
  e->type = type;
  e->payload = payload;
  e->encoding = encoding;
  e->id = id;
  e->seq = seq;
  e->position = position;
  e->ts_us = ts_us;
  return reinterpret_cast<PyObject*>(e);
}

PyObject* Str(std::string_view s) {
  return PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape");
}

PyObject* IdObject(std::string_view id) {
  if (id.empty()) {
    Py_INCREF(Py_None);
    return Py_None;
  }
  return Str(id);
}

// ---------------------------------------------------------------- chunks

// Events read with the GIL released: fixed-size records, names interned per
// chunk, payload and id bytes in one arena.
struct Chunk {
  struct Rec {
    int64_t seq, position, ts_us;
    size_t payload_off, payload_len;
    size_t id_off;
    uint32_t id_len;
    uint32_t run, channel, type;
    Encoding encoding;
  };
  std::vector<Rec> recs;
  std::string arena;
  std::vector<std::string> names;

  void Clear() {
    recs.clear();
    arena.clear();
    names.clear();
    run_hint = channel_hint = type_hint = UINT32_MAX;
  }

  // Index of `s` in names. `hint` is where the same field of the previous
  // event was: names repeat a lot (one run id, a handful of channels and
  // types), so that is almost always a hit; otherwise a short linear search.
  uint32_t Intern(std::string_view s, uint32_t* hint) {
    if (*hint < names.size() && names[*hint] == s) return *hint;
    size_t n = names.size();
    for (size_t i = n; i > 0 && n - i < 32; --i) {
      if (names[i - 1] == s) return *hint = static_cast<uint32_t>(i - 1);
    }
    names.emplace_back(s);
    return *hint = static_cast<uint32_t>(n);
  }

  uint32_t run_hint = UINT32_MAX, channel_hint = UINT32_MAX, type_hint = UINT32_MAX;

  void Add(const EventView& v) {
    Rec r;
    r.seq = v.seq;
    r.position = v.position;
    r.ts_us = v.ts_us;
    r.payload_off = arena.size();
    r.payload_len = v.payload.size();
    arena.append(v.payload);
    r.id_off = arena.size();
    r.id_len = static_cast<uint32_t>(v.id.size());
    arena.append(v.id);
    r.run = Intern(v.run_id, &run_hint);
    r.channel = Intern(v.channel, &channel_hint);
    r.type = Intern(v.type, &type_hint);
    r.encoding = v.encoding;
    recs.push_back(r);
  }

  // Appends one new Event per record to `out`. False with the error set.
  bool Build(std::vector<PyObject*>* out) const {
    std::vector<PyObject*> strs(names.size(), nullptr);
    bool ok = true;
    for (size_t i = 0; i < names.size() && ok; ++i) {
      strs[i] = Str(names[i]);
      ok = strs[i] != nullptr;
    }
    out->reserve(out->size() + recs.size());
    for (size_t i = 0; i < recs.size() && ok; ++i) {
      const Rec& r = recs[i];
      PyObject* payload = PyBytes_FromStringAndSize(arena.data() + r.payload_off,
                                                    static_cast<Py_ssize_t>(r.payload_len));
      PyObject* id = IdObject(std::string_view(arena.data() + r.id_off, r.id_len));
      if (payload == nullptr || id == nullptr) {
        Py_XDECREF(payload);
        Py_XDECREF(id);
        ok = false;
        break;
      }
      PyObject* enc = EncodingObject(r.encoding);
      Py_INCREF(strs[r.run]);
      Py_INCREF(strs[r.channel]);
      Py_INCREF(strs[r.type]);
      Py_INCREF(enc);
      PyObject* e = NewEventObject(strs[r.run], strs[r.channel], strs[r.type], payload, enc, id,
                                   r.seq, r.position, r.ts_us);
      if (e == nullptr) {
        ok = false;
        break;
      }
      out->push_back(e);
    }
    for (PyObject* s : strs) Py_XDECREF(s);
    return ok;
  }
};

// ---------------------------------------------------------------- iterator

struct ReadState {
  std::shared_ptr<EventStore> store;
  bool all_runs = false;
  std::string run_id;
  int64_t cursor = 0;      // last seq (position) handed to the chunk
  int64_t remaining = -1;  // events still allowed by `limit`; -1 = no limit
  size_t chunk_size = 4096;
  bool exhausted = false;
  Chunk chunk;
  std::vector<PyObject*> items;  // owned, not yet handed out
  size_t next = 0;

  void ReleaseItems() {
    for (size_t i = next; i < items.size(); ++i) Py_DECREF(items[i]);
    items.clear();
    next = 0;
  }

  // Reads the next chunk. False with the Python error set on failure.
  bool Fetch() {
    ReleaseItems();
    if (exhausted) return true;
    size_t want = chunk_size;
    if (remaining >= 0) want = std::min<size_t>(want, static_cast<size_t>(remaining));
    if (want == 0) {
      exhausted = true;
      return true;
    }
    Result<ReadSummary> r = ReadSummary{};
    {
      py::gil_scoped_release unlocked;
      chunk.Clear();
      ReadOptions options;
      options.limit = want;
      auto visit = [this](const EventView& v) {
        chunk.Add(v);
        return true;
      };
      r = all_runs ? store->ReadAll(cursor, visit, options)
                   : store->Read(run_id, cursor, visit, options);
    }
    if (!r.ok()) {
      SetStatusError(r.error());
      return false;
    }
    if (!chunk.recs.empty()) {
      cursor = all_runs ? chunk.recs.back().position : chunk.recs.back().seq;
    }
    if (remaining >= 0) remaining -= static_cast<int64_t>(chunk.recs.size());
    if (chunk.recs.size() < want) exhausted = true;
    bool ok = chunk.Build(&items);
    chunk.Clear();
    return ok;
  }
};

struct IterObject {
  PyObject_HEAD
  ReadState* state;
};

void IterDealloc(PyObject* self) {
  auto* it = reinterpret_cast<IterObject*>(self);
  if (it->state != nullptr) {
    it->state->ReleaseItems();
    DropUnlocked(it->state->store);
    delete it->state;
    it->state = nullptr;
  }
  PyTypeObject* tp = Py_TYPE(self);
  tp->tp_free(self);
  Py_DECREF(tp);
}

PyObject* IterNext(PyObject* self) {
  ReadState* st = reinterpret_cast<IterObject*>(self)->state;
  if (st->next >= st->items.size()) {
    if (st->exhausted) {
      st->ReleaseItems();
      return nullptr;  // StopIteration
    }
    if (!st->Fetch()) return nullptr;
    if (st->items.empty()) return nullptr;
  }
  PyObject* e = st->items[st->next];
  st->items[st->next++] = nullptr;
  return e;
}

PyObject* IterCursor(PyObject* self, void* /*closure*/) {
  return PyLong_FromLongLong(reinterpret_cast<IterObject*>(self)->state->cursor);
}

PyGetSetDef kIterGetSet[] = {
    {"fetched_cursor", IterCursor, nullptr,
     "The seq (position for read_all) of the last event fetched from the store so far.",
     nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

const char kIterDoc[] =
    "An iterator over stored events, fetched from the store in chunks (the GIL is released "
    "while a chunk is read). Events appended while iterating are included if the iteration "
    "has not reached the end yet.";

PyType_Slot kIterSlots[] = {
    {Py_tp_dealloc, Slot(IterDealloc)},
    {Py_tp_iter, Slot(PyObject_SelfIter)},
    {Py_tp_iternext, Slot(IterNext)},
    {Py_tp_getset, kIterGetSet},
    {Py_tp_doc, const_cast<char*>(kIterDoc)},
    {0, nullptr},
};

PyType_Spec kIterSpec = {
    "dispatch.EventIterator", sizeof(IterObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    kIterSlots};

}  // namespace

PyObject* EncodingObject(Encoding e) {
  size_t i = static_cast<size_t>(e);
  return i < 3 ? g_encodings[i] : g_encodings[0];
}

void InitEventTypes(py::module_& m) {
  g_encodings[0] = PyUnicode_InternFromString("bytes");
  g_encodings[1] = PyUnicode_InternFromString("json");
  g_encodings[2] = PyUnicode_InternFromString("text");
  g_json_loads = py::object(py::module_::import("json").attr("loads")).release().ptr();
  g_event_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&kEventSpec));
  if (g_event_type == nullptr) throw py::error_already_set();
  g_iter_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&kIterSpec));
  if (g_iter_type == nullptr) throw py::error_already_set();
  m.attr("Event") = py::handle(reinterpret_cast<PyObject*>(g_event_type));
  m.attr("EventIterator") = py::handle(reinterpret_cast<PyObject*>(g_iter_type));
}

PyObject* MakeEvent(const EventView& v) {
  PyObject* enc = EncodingObject(v.encoding);
  Py_INCREF(enc);
  PyObject* parts[] = {Str(v.run_id), Str(v.channel), Str(v.type),
                       PyBytes_FromStringAndSize(v.payload.data(),
                                                 static_cast<Py_ssize_t>(v.payload.size())),
                       enc, IdObject(v.id)};
  for (PyObject* p : parts) {
    if (p == nullptr) {
      for (PyObject* q : parts) Py_XDECREF(q);
      return nullptr;
    }
  }
  return NewEventObject(parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], v.seq,
                        v.position, v.ts_us);
}

py::object MakeEventIterator(std::shared_ptr<EventStore> store, bool all_runs, std::string run_id,
                             int64_t after, int64_t limit, size_t chunk_size) {
  auto* it = reinterpret_cast<IterObject*>(g_iter_type->tp_alloc(g_iter_type, 0));
  if (it == nullptr) throw py::error_already_set();
  py::object owner = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(it));
  it->state = new ReadState();
  it->state->store = std::move(store);
  it->state->all_runs = all_runs;
  it->state->run_id = std::move(run_id);
  it->state->cursor = after;
  it->state->remaining = limit;
  it->state->chunk_size = std::max<size_t>(chunk_size, 1);
  if (!it->state->Fetch()) throw py::error_already_set();
  return owner;
}

}  // namespace dispatch::python
