// Shared declarations of the _dispatch extension module (pybind11).
//
// The extension is split by what it binds: errors.cc (Status -> Python
// exception, the one place where the mapping lives), event_type.cc (the
// Event and EventIterator types, written against the CPython API because
// iterating 100K events must cost well under a microsecond each), store.cc
// (EventStore, records, subscriptions), session.cc (SessionManager and
// the sessions it runs) and replay.cc (screens, status, recordings).
// Nothing here is public C++ API.
//
// GIL rules, everywhere in the module: every call that may block (disk,
// the store's writer, the session runtime's loop) runs with the GIL
// released; code running on a C++ thread (subscription callbacks) takes it
// before touching any Python object; a shared_ptr whose last owner might
// be dropped with the GIL held is dropped with it released (DropUnlocked),
// since destroying a store or manager joins threads that may want the GIL.
#ifndef DISPATCH_BINDINGS_PYTHON_COMMON_H_
#define DISPATCH_BINDINGS_PYTHON_COMMON_H_

#include <pybind11/pybind11.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "dispatch/event.h"
#include "dispatch/event_store.h"
#include "dispatch/status.h"

namespace dispatch::python {

namespace py = pybind11;

// ---- errors (errors.cc) ----

// Looks up the exception classes in dispatch._errors; call once at import.
void InitErrors();
// A new exception instance (not raised) for a non-OK status.
py::object StatusToException(const Status& status);
// Sets the Python error indicator from a non-OK status (for CPython-API code
// that returns NULL).
void SetStatusError(const Status& status);
// Raises the Python exception of a non-OK status. Needs the GIL.
[[noreturn]] void RaiseStatus(const Status& status);

inline void Check(const Status& status) {
  if (!status.ok()) RaiseStatus(status);
}
template <typename T>
T Take(Result<T>&& result) {
  if (!result.ok()) RaiseStatus(result.error());
  return std::move(result).value();
}

// Reports an exception raised by a user callback that has no caller to
// propagate to: logs it on the "dispatch" logger (with traceback). The
// Python error indicator must be set; it is cleared. Needs the GIL.
py::object ReportCallbackError(const char* where);

// True while the interpreter can still run Python code from a C++ thread.
bool PythonAlive();

// Drops `p`; if this is probably the last owner and the GIL is held, drops
// it with the GIL released (its destructor may join threads that need it).
template <typename T>
void DropUnlocked(std::shared_ptr<T>& p) {
  if (!p) return;
  if (p.use_count() == 1 && PythonAlive() && PyGILState_Check()) {
    py::gil_scoped_release unlocked;
    p.reset();
  } else {
    p.reset();
  }
}

// ---- events (event_type.cc) ----

// Creates the Event and EventIterator types and adds them to `m`.
void InitEventTypes(py::module_& m);
// A new dispatch.Event (new reference) or nullptr with the error set.
PyObject* MakeEvent(const EventView& view);
// A new iterator over `run_id` (seq > after) or, when all_runs, over every
// run (position > after). Fetches the first chunk at once so errors
// (Truncated, Closed) surface in the call that asked to read.
py::object MakeEventIterator(std::shared_ptr<EventStore> store, bool all_runs, std::string run_id,
                             int64_t after, int64_t limit, size_t chunk_size);

// "bytes"/"json"/"text" as interned Python strings (borrowed).
PyObject* EncodingObject(Encoding e);

// ---- bindings ----
void BindStore(py::module_& m);
void BindSession(py::module_& m);
// dispatch.screen, session_status and the recordings (replay.cc).
void BindReplay(py::module_& m);

// At interpreter exit (atexit): stop every session manager, then close
// every store still open, so no library thread calls into a finalising
// interpreter. Called with the GIL released.
void CloseAllManagers();
void CloseAllStores();

// The store behind a dispatch.EventStore object (TypeError otherwise).
std::shared_ptr<EventStore> StoreOf(py::handle store_object);

}  // namespace dispatch::python

#endif  // DISPATCH_BINDINGS_PYTHON_COMMON_H_
