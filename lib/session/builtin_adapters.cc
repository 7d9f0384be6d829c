// The registry of built-in session kinds. To add a kind, declare its factory
// in its adapter's header and list it here.
#include "session/builtin_adapters.h"

#include "adapters/pty/pty_adapter.h"

namespace dispatch::internal {

std::vector<std::pair<std::string, AdapterFactory>> BuiltinAdapters() {
  std::vector<std::pair<std::string, AdapterFactory>> out;
  out.emplace_back("pty", MakePtyAdapterFactory());
  return out;
}

}  // namespace dispatch::internal
