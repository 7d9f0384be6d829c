// dispatch-host entry point: picks the subcommand (serve is the default).
#include <cstdio>
#include <cstring>
#include <string_view>

#include "serve.h"
#include "tools.h"

namespace {

void PrintUsage() {
  std::fputs(
      "usage: dispatch-host [serve] [options]      run the server (see serve --help)\n"
      "       dispatch-host export RUN_ID --format asciicast|jsonl [--data DIR] [-o FILE]\n"
      "       dispatch-host import FILE [--data DIR]\n"
      "       dispatch-host sessions [--data DIR]\n"
      "       dispatch-host events RUN_ID [--after-seq N] [--data DIR]\n",
      stdout);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2) {
    std::string_view cmd = argv[1];
    if (cmd == "help" || cmd == "-h" || cmd == "--help") {
      PrintUsage();
      return 0;
    }
    if (cmd == "serve") return dispatch::host::RunServe(argc - 1, argv + 1);
    if (dispatch::host::IsToolCommand(cmd)) return dispatch::host::RunToolCommand(argc - 1, argv + 1);
    if (cmd[0] != '-') {
      std::fprintf(stderr, "dispatch-host: unknown command '%s'\n", argv[1]);
      PrintUsage();
      return 2;
    }
  }
  // No subcommand (or only options): serve.
  static char serve_name[] = "serve";
  argv[0] = serve_name;
  return dispatch::host::RunServe(argc, argv);
}
