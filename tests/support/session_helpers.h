// Helpers for session runtime tests: a bus collector that waits for events,
// a fault-injecting store that commits slowly, process/fd counters.
#ifndef DISPATCH_TESTS_SUPPORT_SESSION_HELPERS_H_
#define DISPATCH_TESTS_SUPPORT_SESSION_HELPERS_H_

#include <dirent.h>
#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dispatch/event_store.h"
#include "dispatch/session_manager.h"

namespace dispatch::testing {

// Copies every event published on a manager's bus; waits for conditions.
class EventCollector {
 public:
  explicit EventCollector(RunSessionManager& m, std::string pattern = "*", std::string run = {})
      : m_(m) {
    id_ = m.Subscribe(
        std::move(pattern),
        [this](const EventView& e) {
          std::lock_guard<std::mutex> l(mu_);
          events_.push_back(e.ToEvent());
          cv_.notify_all();
        },
        std::move(run));
  }
  ~EventCollector() { m_.bus().Unsubscribe(id_); }

  // Waits until `pred(events)` holds; false on timeout.
  bool WaitFor(const std::function<bool(const std::vector<Event>&)>& pred, int timeout_ms = 10000) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, std::chrono::milliseconds(timeout_ms), [&] { return pred(events_); });
  }
  // Waits for an event of `run` with channel/type.
  bool WaitForEvent(const std::string& run, const std::string& channel, const std::string& type,
                    int timeout_ms = 10000) {
    return WaitFor(
        [&](const std::vector<Event>& evs) {
          for (auto& e : evs) {
            if (e.run_id == run && e.channel == channel && e.type == type) return true;
          }
          return false;
        },
        timeout_ms);
  }
  // Waits until the concatenated pty output of `run` contains `text`.
  bool WaitForOutput(const std::string& run, const std::string& text, int timeout_ms = 10000) {
    return WaitFor(
        [&](const std::vector<Event>& evs) { return Output(evs, run).find(text) != std::string::npos; },
        timeout_ms);
  }
  std::vector<Event> events() {
    std::lock_guard<std::mutex> l(mu_);
    return events_;
  }
  static std::string Output(const std::vector<Event>& evs, const std::string& run) {
    std::string out;
    for (auto& e : evs) {
      if (e.run_id == run && e.channel == "pty:stdout") out += e.payload;
    }
    return out;
  }

 private:
  RunSessionManager& m_;
  BusSubscriptionId id_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Event> events_;
};

// Open file descriptors of this process.
inline int CountFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (!d) return -1;
  while (readdir(d)) ++n;
  closedir(d);
  return n - 3;  // ".", "..", and the DIR's own fd
}

// Live children (including zombies) of this process, from every thread.
inline int CountChildren() {
  int n = 0;
  DIR* d = opendir("/proc/self/task");
  if (!d) return -1;
  while (auto* ent = readdir(d)) {
    if (ent->d_name[0] == '.') continue;
    std::ifstream f(std::string("/proc/self/task/") + ent->d_name + "/children");
    std::string pid;
    while (f >> pid) ++n;
  }
  closedir(d);
  return n;
}

// Resident set size in bytes.
inline long RssBytes() {
  std::ifstream f("/proc/self/statm");
  long pages = 0, rss = 0;
  f >> pages >> rss;
  return rss * sysconf(_SC_PAGESIZE);
}

}  // namespace dispatch::testing

#endif  // DISPATCH_TESTS_SUPPORT_SESSION_HELPERS_H_
