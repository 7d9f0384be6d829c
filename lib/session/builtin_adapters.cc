// The registry of built-in session kinds. To add a kind, declare its factory
// in its adapter's header and list it here.
#include "session/builtin_adapters.h"

#include "adapters/pty/pty_adapter.h"
#include "dispatch/adapters/claude.h"
#include "dispatch/adapters/file.h"

namespace dispatch::internal {

std::vector<std::pair<std::string, AdapterFactory>> BuiltinAdapters() {
  std::vector<std::pair<std::string, AdapterFactory>> out;
  out.emplace_back("pty", MakePtyAdapterFactory());
  out.emplace_back("claude", ClaudeAdapterFactory());
  out.emplace_back("file", FileAdapterFactory());
  return out;
}

}  // namespace dispatch::internal
