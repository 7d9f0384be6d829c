// CapturePty: see pty_capture.h.
#include "pty_capture.h"

#include <poll.h>
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace dispatch::testing {

std::vector<std::string> CapturePty(const std::string& command, int cols, int rows) {
  std::vector<std::string> chunks;
  struct winsize ws = {};
  ws.ws_col = static_cast<unsigned short>(cols);
  ws.ws_row = static_cast<unsigned short>(rows);
  int master = -1;
  pid_t pid = forkpty(&master, nullptr, nullptr, &ws);
  if (pid < 0) return chunks;
  if (pid == 0) {
    setenv("TERM", "xterm-256color", 1);
    setenv("LC_ALL", "C.UTF-8", 1);
    setenv("COLUMNS", std::to_string(cols).c_str(), 1);
    setenv("LINES", std::to_string(rows).c_str(), 1);
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  char buf[4096];
  for (;;) {
    struct pollfd p = {master, POLLIN, 0};
    int r = poll(&p, 1, 10000);
    if (r <= 0) break;
    ssize_t n = read(master, buf, sizeof buf);
    if (n > 0) {
      chunks.emplace_back(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;  // EOF or EIO: the child side closed
  }
  close(master);
  int status = 0;
  waitpid(pid, &status, 0);
  return chunks;
}

}  // namespace dispatch::testing
