// Placeholder until the reference host lands (issue: reference host).
#include "serve.h"

#include <cstdio>

namespace dispatch::host {

int RunServe(int, char**) {
  std::fputs("dispatch-host: the server is not built yet\n", stderr);
  return 2;
}

}  // namespace dispatch::host
