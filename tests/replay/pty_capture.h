// Runs a shell command under a real pty (forkpty) and records what it wrote,
// chunk by chunk as read() returned it. For tests that need real programs'
// terminal output.
#ifndef DISPATCH_TESTS_REPLAY_PTY_CAPTURE_H_
#define DISPATCH_TESTS_REPLAY_PTY_CAPTURE_H_

#include <string>
#include <vector>

namespace dispatch::testing {

// The output chunks of `/bin/sh -c command` on a cols x rows pty with
// TERM=xterm-256color. Empty on failure.
std::vector<std::string> CapturePty(const std::string& command, int cols = 80, int rows = 24);

}  // namespace dispatch::testing

#endif  // DISPATCH_TESTS_REPLAY_PTY_CAPTURE_H_
