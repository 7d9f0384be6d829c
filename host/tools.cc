// Placeholder until the replay engine lands its tools (issue: replay engine).
#include "tools.h"

#include <cstdio>

namespace dispatch::host {

bool IsToolCommand(std::string_view) { return false; }

int RunToolCommand(int, char**) {
  std::fputs("dispatch-host: tools are not built yet\n", stderr);
  return 2;
}

}  // namespace dispatch::host
