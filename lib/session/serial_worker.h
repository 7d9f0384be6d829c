// SerialWorker: one background thread that runs tasks in the order posted.
//
// The manager uses it for catalog writes (session status, meta), which block
// until the store commits them and so must not run on the loop thread, yet
// must stay in the order the session's events happened.
//
// Thread-safety: thread-safe. Post from any thread; tasks run one at a time
// on the worker's thread. The destructor runs what is queued, then joins.
#ifndef DISPATCH_LIB_SESSION_SERIAL_WORKER_H_
#define DISPATCH_LIB_SESSION_SERIAL_WORKER_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "util/thread_name.h"

namespace dispatch::internal {

class SerialWorker {
 public:
  SerialWorker() : thread_([this] { Run(); }) {}
  ~SerialWorker() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  SerialWorker(const SerialWorker&) = delete;
  SerialWorker& operator=(const SerialWorker&) = delete;

  void Post(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> l(mu_);
      tasks_.push_back(std::move(task));
    }
    cv_.notify_all();
  }

  // True when nothing is queued or running.
  bool Idle() {
    std::lock_guard<std::mutex> l(mu_);
    return tasks_.empty() && !running_;
  }

  // Blocks until everything posted before this call has run.
  void Drain() {
    std::unique_lock<std::mutex> l(mu_);
    idle_cv_.wait(l, [this] { return tasks_.empty() && !running_; });
  }

 private:
  void Run() {
    SetThreadName("dispatch-work");
    std::unique_lock<std::mutex> l(mu_);
    for (;;) {
      cv_.wait(l, [this] { return stop_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stop_ and nothing left
      auto task = std::move(tasks_.front());
      tasks_.pop_front();
      running_ = true;
      l.unlock();
      task();
      l.lock();
      running_ = false;
      if (tasks_.empty()) idle_cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<std::function<void()>> tasks_;
  bool running_ = false;
  bool stop_ = false;
  std::thread thread_;  // last: starts after the members above exist
};

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_SESSION_SERIAL_WORKER_H_
