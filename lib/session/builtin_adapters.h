// The session kinds built into the library, registered by every manager
// unless ManagerOptions::register_builtin_adapters is false.
//
// Thread-safety: plain function; the factories it returns run on a
// manager's loop thread.
#ifndef DISPATCH_LIB_SESSION_BUILTIN_ADAPTERS_H_
#define DISPATCH_LIB_SESSION_BUILTIN_ADAPTERS_H_

#include <string>
#include <utility>
#include <vector>

#include "dispatch/ext/session_adapter.h"

namespace dispatch::internal {

// (kind, factory) for "pty" and the other built-in kinds.
std::vector<std::pair<std::string, AdapterFactory>> BuiltinAdapters();

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_SESSION_BUILTIN_ADAPTERS_H_
