// embed_pty: embed the session manager in a plain C++ program. Starts a
// shell on a pty, types `echo hello`, waits for the output, closes the
// session and prints its event log as the store recorded it.
//
//   embed_pty [STORE_PATH] [WORKSPACES_ROOT]
//   (defaults: ./data/embed_pty.db and the current directory)
#include <dispatch/dispatch.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <string>

namespace {

// Printable form of a payload: text as is, control bytes escaped.
std::string Printable(std::string_view bytes, size_t max = 72) {
  std::string out;
  for (unsigned char c : bytes.substr(0, max)) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (bytes.size() > max) out += "…";
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string path = argc > 1 ? argv[1] : "data/embed_pty.db";
  std::string root = argc > 2 ? argv[2] : std::filesystem::current_path().string();
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);

  dispatch::StoreOptions store_options;
  store_options.path = path;
  auto opened = dispatch::EventStore::Open(store_options);
  if (!opened.ok()) {
    std::fprintf(stderr, "cannot open %s: %s\n", path.c_str(), opened.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<dispatch::EventStore> store = std::move(opened).value();

  // The manager runs its own loop thread (pass ManagerOptions::loop to use
  // yours instead). The store must outlive it.
  dispatch::ManagerOptions options;
  options.store = store.get();
  options.workspaces_root = root;
  auto created = dispatch::RunSessionManager::Create(options);
  if (!created.ok()) {
    std::fprintf(stderr, "cannot start the manager: %s\n", created.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<dispatch::RunSessionManager> manager = std::move(created).value();

  // Follow the session's committed events on the bus (the loop thread calls
  // us; copy what we need and hand it to the main thread).
  std::mutex mu;
  std::condition_variable cv;
  std::string output;
  bool closed = false;
  manager->Subscribe("*", [&](const dispatch::EventView& e) {
    std::lock_guard<std::mutex> lock(mu);
    if (e.channel == "pty:stdout") output.append(e.payload);
    if (e.channel == "system:status" && e.type == "closed") closed = true;
    cv.notify_all();
  });

  dispatch::SessionConfig config;
  config.kind = "pty";
  config.options_json = R"({"shell": "/bin/sh", "env": {"PS1": "$ "}, "cols": 100, "rows": 30})";
  auto run = manager->CreateSession(config);
  if (!run.ok()) {
    std::fprintf(stderr, "cannot create the session: %s\n", run.status().ToString().c_str());
    return 1;
  }
  std::printf("session %s started\n", run->c_str());

  if (auto st = manager->Input(*run, "echo hello\n"); !st.ok()) {
    std::fprintf(stderr, "input failed: %s\n", st.ToString().c_str());
    return 1;
  }
  {
    // The terminal echoes the typed line ("echo hello\r\n"); the command's
    // own output is a second "hello\r\n".
    std::unique_lock<std::mutex> lock(mu);
    bool ok = cv.wait_for(lock, std::chrono::seconds(10), [&] {
      size_t first = output.find("hello\r\n");
      return first != std::string::npos && output.find("hello\r\n", first + 1) != std::string::npos;
    });
    if (!ok) {
      std::fprintf(stderr, "no output after 10 s; got: %s\n", Printable(output, 500).c_str());
      return 1;
    }
  }
  std::printf("got the output; closing\n");
  (void)manager->Close(*run);
  {
    std::unique_lock<std::mutex> lock(mu);
    if (!cv.wait_for(lock, std::chrono::seconds(10), [&] { return closed; })) {
      std::fprintf(stderr, "the session did not close\n");
      return 1;
    }
  }
  manager.reset();  // before the store it borrows

  std::printf("\nevent log of %s:\n", run->c_str());
  auto read = store->Read(*run, 0, [](const dispatch::EventView& e) {
    std::printf("  %3lld  %-14s %-10s %s\n", static_cast<long long>(e.seq),
                std::string(e.channel).c_str(), std::string(e.type).c_str(),
                Printable(e.payload).c_str());
    return true;
  });
  if (!read.ok()) {
    std::fprintf(stderr, "read failed: %s\n", read.status().ToString().c_str());
    return 1;
  }
  return 0;
}
