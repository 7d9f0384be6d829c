// `dispatch-host serve`: the HTTP + WebSocket server (DESIGN §5).
#ifndef DISPATCH_HOST_SERVE_H_
#define DISPATCH_HOST_SERVE_H_

namespace dispatch::host {

// Runs the server with the command line after the subcommand name
// (argv[0] is "serve"). Returns the process exit code.
int RunServe(int argc, char** argv);

}  // namespace dispatch::host

#endif  // DISPATCH_HOST_SERVE_H_
