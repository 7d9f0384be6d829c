// Status -> Python exception: the one place where dispatch's error codes are
// mapped to the exception classes of dispatch._errors (Error, NotFound,
// InvalidArgument, Conflict, Truncated, Timeout, Closed, Busy, ReadOnly,
// Corruption). Codes without a class of their own (io_error, internal)
// raise dispatch.Error with `code` set.
#include <string>

#include "common.h"

namespace dispatch::python {

namespace {

// dispatch._errors.BY_CODE and dispatch._errors.Error; set at import, kept
// for the life of the process (never released: module teardown order is
// not ours to rely on).
PyObject* g_by_code = nullptr;
PyObject* g_error = nullptr;

py::handle ClassFor(StatusCode code) {
  PyObject* cls = PyDict_GetItemString(g_by_code, std::string(StatusCodeName(code)).c_str());
  return cls != nullptr ? py::handle(cls) : py::handle(g_error);
}

}  // namespace

void InitErrors() {
  py::module_ errors = py::module_::import("dispatch._errors");
  g_by_code = py::object(errors.attr("BY_CODE")).release().ptr();
  g_error = py::object(errors.attr("Error")).release().ptr();
}

py::object StatusToException(const Status& status) {
  py::handle cls = ClassFor(status.code());
  return cls(status.message(), py::arg("code") = std::string(StatusCodeName(status.code())),
             py::arg("detail") = status.detail());
}

void SetStatusError(const Status& status) {
  try {
    py::object exc = StatusToException(status);
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
  } catch (py::error_already_set& e) {
    e.restore();
  }
}

void RaiseStatus(const Status& status) {
  SetStatusError(status);
  throw py::error_already_set();
}

py::object ReportCallbackError(const char* where) {
  PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (tb != nullptr && value != nullptr) PyException_SetTraceback(value, tb);
  py::object exc = py::reinterpret_steal<py::object>(value);
  py::object exc_type = py::reinterpret_steal<py::object>(type);
  py::object exc_tb = py::reinterpret_steal<py::object>(tb);
  try {
    py::object logger = py::module_::import("logging").attr("getLogger")("dispatch");
    logger.attr("error")("%s raised %r", where, exc,
                         py::arg("exc_info") = py::make_tuple(exc_type, exc, exc_tb));
  } catch (py::error_already_set& e) {
    e.restore();
    PyErr_WriteUnraisable(nullptr);
  }
  return exc;
}

bool PythonAlive() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsInitialized() && !Py_IsFinalizing();
#else
  return Py_IsInitialized() && !_Py_IsFinalizing();
#endif
}

}  // namespace dispatch::python
