// store_quickstart: open a store, record a session's events, read them back
// from a cursor, and follow new ones live.
//
//   store_quickstart [PATH]     (default: ./data/dispatch.db)
#include <dispatch/dispatch.h>

#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <string>

int main(int argc, char** argv) {
  std::string path = argc > 1 ? argv[1] : "data/dispatch.db";
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);

  dispatch::StoreOptions options;
  options.path = path;
  auto opened = dispatch::EventStore::Open(options);
  if (!opened.ok()) {
    std::fprintf(stderr, "cannot open %s: %s\n", path.c_str(), opened.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<dispatch::EventStore> store = std::move(opened).value();
  std::printf("opened store %s\n", path.c_str());

  // A session record and its first events. Appending the same ids again (a
  // second run of this program) writes nothing: they are idempotent.
  const std::string run = "quickstart";
  dispatch::SessionRecord session;
  session.run_id = run;
  session.kind = "pty";
  session.status = dispatch::SessionStatus::kRunning;
  session.workspace = "/tmp";
  if (auto s = store->catalog().PutSession(session); !s.ok()) {
    std::fprintf(stderr, "put session: %s\n", s.ToString().c_str());
    return 1;
  }
  std::vector<dispatch::NewEvent> events = {
      {"system:status", "created", R"({"cols":80,"rows":24})", dispatch::Encoding::kJson, "created", 0},
      {"pty:stdin", "input", "echo hello\r", dispatch::Encoding::kBytes, "in-1", 0},
      {"pty:stdout", "chunk", std::string("echo hello\r\nhello\r\n\x1b[32m$\x1b[0m ", 26),
       dispatch::Encoding::kBytes, "out-1", 0},
  };
  auto appended = store->Append(run, events);
  if (!appended.ok()) {
    std::fprintf(stderr, "append: %s\n", appended.status().ToString().c_str());
    return 1;
  }
  std::printf("appended %lld new events (%lld already there); last seq %lld\n",
              static_cast<long long>(appended->written),
              static_cast<long long>(appended->duplicates),
              static_cast<long long>(appended->last_seq));

  // Follow the run live from seq 1: the backlog, then what we append next.
  std::mutex mu;
  std::condition_variable cv;
  int64_t seen = 0;
  dispatch::SubscriptionHandlers handlers;
  handlers.on_event = [&](const dispatch::EventView& e) {
    std::lock_guard<std::mutex> lock(mu);
    std::printf("  live  seq=%lld %.*s/%.*s %zu bytes\n", static_cast<long long>(e.seq),
                static_cast<int>(e.channel.size()), e.channel.data(),
                static_cast<int>(e.type.size()), e.type.data(), e.payload.size());
    seen = e.seq;
    cv.notify_all();
  };
  auto sub = store->Subscribe(run, 1, handlers);
  if (!sub.ok()) {
    std::fprintf(stderr, "subscribe: %s\n", sub.status().ToString().c_str());
    return 1;
  }
  std::vector<dispatch::NewEvent> more = {
      {"system:status", "closed", R"({"exitCode":0,"signal":null})", dispatch::Encoding::kJson, "", 0}};
  auto last = store->Append(run, more);
  if (!last.ok()) return 1;
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return seen >= last->last_seq; });
  }
  (*sub)->Cancel();

  // Read everything back from the start.
  std::printf("events of run %s:\n", run.c_str());
  auto read = store->Read(run, 0, [](const dispatch::EventView& e) {
    std::printf("  seq=%lld pos=%lld %.*s/%.*s (%.*s) %zu bytes\n", static_cast<long long>(e.seq),
                static_cast<long long>(e.position), static_cast<int>(e.channel.size()),
                e.channel.data(), static_cast<int>(e.type.size()), e.type.data(),
                static_cast<int>(dispatch::EncodingName(e.encoding).size()),
                dispatch::EncodingName(e.encoding).data(), e.payload.size());
    return true;
  });
  if (!read.ok()) {
    std::fprintf(stderr, "read: %s\n", read.status().ToString().c_str());
    return 1;
  }
  std::printf("read %lld events\n", static_cast<long long>(read->count));
  return store->Close().ok() ? 0 : 1;
}
