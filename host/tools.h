// Operator subcommands of dispatch-host that work on a store file:
// export, import, sessions, events.
#ifndef DISPATCH_HOST_TOOLS_H_
#define DISPATCH_HOST_TOOLS_H_

#include <string_view>

namespace dispatch::host {

// True if `name` is one of the tool subcommands.
bool IsToolCommand(std::string_view name);

// Runs tool subcommand argv[0] with its arguments. Returns the exit code.
int RunToolCommand(int argc, char** argv);

}  // namespace dispatch::host

#endif  // DISPATCH_HOST_TOOLS_H_
