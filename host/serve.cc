// `dispatch-host serve`: parses the configuration, opens the store under
// --data, runs the session manager and the server on one libuv loop, and on
// SIGTERM/SIGINT drains, closes sessions, flushes the store and exits 0.
#include "serve.h"

#include <signal.h>
#include <sys/stat.h>
#include <uv.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "config.h"
#include "dispatch/event_store.h"
#include "dispatch/session_manager.h"
#include "log.h"
#include "server.h"

namespace dispatch::host {
namespace {

// mkdir -p with 0700 for new directories.
bool MakeDirs(const std::string& dir) {
  std::string cur;
  size_t i = 0;
  while (i <= dir.size()) {
    size_t slash = dir.find('/', i);
    if (slash == std::string::npos) slash = dir.size();
    cur = dir.substr(0, slash);
    if (!cur.empty() && mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST) return false;
    i = slash + 1;
  }
  struct stat st;
  return stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

int RunServe(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  Result<ParseOutcome> parsed = ParseServeArgs(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "dispatch-host: %s\n", parsed.status().message().c_str());
    return 2;
  }
  if (parsed->show_help) {
    std::fputs(ServeUsage(), stdout);
    return 0;
  }
  Config config = parsed->config;
  if (Status s = FinalizeConfig(config); !s.ok()) {
    std::fprintf(stderr, "dispatch-host: %s\n", s.message().c_str());
    return 2;
  }
  SetLogLevel(*ParseLogLevel(config.log_level));

  if (!MakeDirs(config.data_dir)) {
    LogError("cannot create the data directory {}: {}", config.data_dir, std::strerror(errno));
    return 1;
  }
  StoreOptions so;
  so.path = config.db_path();
  // The host is its data's only writer: other processes may read the file
  // (export, history), and keystroke echoes commit to the append journal.
  so.exclusive = true;
  Result<std::unique_ptr<EventStore>> opened = EventStore::Open(so);
  if (!opened.ok()) {
    LogError("cannot open the store {}: {}", so.path, opened.status().ToString());
    return 1;
  }
  std::unique_ptr<EventStore> store = std::move(*opened);

  uv_loop_t loop;
  uv_loop_init(&loop);
  int code = 0;
  {
    ManagerOptions mo;
    mo.store = store.get();
    mo.loop = &loop;
    mo.workspaces_root = config.workspaces_root;
    mo.on_error = [](std::string_view run_id, const Status& error) {
      LogError("session {}: {}", run_id, error.ToString());
    };
    Result<std::unique_ptr<RunSessionManager>> made = RunSessionManager::Create(mo);
    if (!made.ok()) {
      LogError("cannot start the session manager: {}", made.status().ToString());
      uv_run(&loop, UV_RUN_DEFAULT);
      uv_loop_close(&loop);
      return 1;
    }
    std::unique_ptr<RunSessionManager> manager = std::move(*made);
    Server server(config, &loop, store.get(), manager.get());
    server.on_stopped = [&manager] { manager.reset(); };
    if (Status s = server.Start(); !s.ok()) {
      LogError("{}", s.ToString());
      code = 1;
      manager.reset();
      server.Finish();
    } else {
      uv_run(&loop, UV_RUN_DEFAULT);
      server.Finish();
    }
    manager.reset();
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  Status flushed = store->Flush();
  Status closed = store->Close();
  if (!flushed.ok() || !closed.ok()) {
    LogError("store flush/close failed: {} / {}", flushed.ToString(), closed.ToString());
    code = 1;
  }
  if (uv_loop_close(&loop) != 0) {
    uv_walk(
        &loop,
        [](uv_handle_t* h, void*) { LogWarn("handle still open at exit: {}", uv_handle_type_name(h->type)); },
        nullptr);
  }
  if (code == 0) LogInfo("stopped cleanly");
  return code;
}

}  // namespace dispatch::host
