// The _dispatch extension module: the compiled half of the `dispatch`
// Python package (bindings/python/dispatch/ is the pure-Python facade that
// users import). See common.h for how the sources are split and the GIL
// rules they follow.
#include "common.h"
#include "dispatch/version.h"

PYBIND11_MODULE(_dispatch, m) {
  m.doc() = "Compiled core of the dispatch package; import `dispatch` instead.";
  m.attr("__version__") = DISPATCH_VERSION_STRING;
  dispatch::python::InitErrors();
  dispatch::python::InitEventTypes(m);
  dispatch::python::BindStore(m);
  dispatch::python::BindSession(m);
  dispatch::python::BindReplay(m);
  m.def(
      "_shutdown",
      [] {
        pybind11::gil_scoped_release unlocked;
        dispatch::python::CloseAllManagers();
        dispatch::python::CloseAllStores();
      },
      "Stops every session manager and closes every store (registered with atexit).");
}
