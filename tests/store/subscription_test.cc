// Subscriptions: backlog then live, no gap and no duplicate at the
// hand-over, cancellation from inside the callback, slow subscribers.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "support/store_helpers.h"

using namespace dispatch;
using namespace dispatch::testing;
using namespace std::chrono_literals;

namespace {

// Collects what a subscription delivers and lets the test wait for it.
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Event> events;
  int64_t caught_up = -1;
  std::optional<Status> error;

  SubscriptionHandlers Handlers() {
    SubscriptionHandlers h;
    h.on_event = [this](const EventView& v) {
      std::lock_guard<std::mutex> lk(mu);
      events.push_back(v.ToEvent());
      cv.notify_all();
    };
    h.on_caught_up = [this](int64_t seq) {
      std::lock_guard<std::mutex> lk(mu);
      caught_up = seq;
      cv.notify_all();
    };
    h.on_error = [this](const Status& s) {
      std::lock_guard<std::mutex> lk(mu);
      error = s;
      cv.notify_all();
    };
    return h;
  }
  bool WaitFor(size_t n, std::chrono::milliseconds timeout = 20s) {
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, timeout, [&] { return events.size() >= n || error.has_value(); }) &&
           events.size() >= n;
  }
  bool WaitError(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, timeout, [&] { return error.has_value(); });
  }
};

}  // namespace

TEST_SUITE("Subscription") {
  TEST_CASE("A subscriber gets the backlog, a caught-up mark, then live events") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev("1"), Ev("2"), Ev("3")}).ok());
    Collector c;
    auto sub = store->Subscribe("r", 1, c.Handlers());
    REQUIRE(sub.ok());
    REQUIRE(c.WaitFor(2));
    {
      std::unique_lock<std::mutex> lk(c.mu);
      c.cv.wait_for(lk, 5s, [&] { return c.caught_up >= 0; });
      CHECK(c.caught_up == 3);
    }
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev("4")}).ok());
    REQUIRE(store->Append("other", std::vector<NewEvent>{Ev("not for us")}).ok());
    REQUIRE(c.WaitFor(3));
    std::this_thread::sleep_for(50ms);
    std::lock_guard<std::mutex> lk(c.mu);
    REQUIRE(c.events.size() == 3);
    CHECK(c.events[0].seq == 2);
    CHECK(c.events[2].seq == 4);
    CHECK(c.events[2].payload == "4");
    CHECK((*sub)->cursor() == 4);
  }

  TEST_CASE("Subscribing while 4 threads append 100K events: no gap, no duplicate") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    constexpr int kThreads = 4, kPerThread = 25000, kBatch = 50;
    std::atomic<bool> go{false};
    std::vector<std::thread> writers;
    for (int t = 0; t < kThreads; ++t) {
      writers.emplace_back([&, t] {
        while (!go) std::this_thread::yield();
        for (int i = 0; i < kPerThread; i += kBatch) {
          std::vector<NewEvent> b;
          for (int j = 0; j < kBatch; ++j) b.push_back(Ev(std::to_string(t) + ":" + std::to_string(i + j)));
          REQUIRE(store->Append("hot", b).ok());
        }
      });
    }
    go = true;
    std::this_thread::sleep_for(20ms);  // subscribe mid-stream
    Collector c, all;
    auto sub = store->Subscribe("hot", 0, c.Handlers());
    REQUIRE(sub.ok());
    auto sub_all = store->SubscribeAll(0, all.Handlers());
    REQUIRE(sub_all.ok());
    for (auto& w : writers) w.join();
    constexpr size_t kTotal = kThreads * kPerThread;
    REQUIRE(c.WaitFor(kTotal, 60s));
    REQUIRE(all.WaitFor(kTotal, 60s));
    std::this_thread::sleep_for(50ms);
    std::lock_guard<std::mutex> lk(c.mu);
    REQUIRE(c.events.size() == kTotal);
    for (size_t i = 0; i < kTotal; ++i) {
      if (c.events[i].seq != static_cast<int64_t>(i + 1)) {
        FAIL("gap or duplicate at index " << i << ": seq " << c.events[i].seq);
      }
    }
    std::lock_guard<std::mutex> lk2(all.mu);
    REQUIRE(all.events.size() == kTotal);
    for (size_t i = 0; i < kTotal; ++i) {
      if (all.events[i].position != static_cast<int64_t>(i + 1)) {
        FAIL("position gap or duplicate at index " << i);
      }
    }
  }

  TEST_CASE("Cancelling from inside the callback stops delivery at once") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    std::vector<NewEvent> batch;
    for (int i = 0; i < 100; ++i) batch.push_back(Ev(std::to_string(i)));
    REQUIRE(store->Append("r", batch).ok());
    std::unique_ptr<Subscription> sub;
    // The callback waits until `sub` is set (no lock held across Subscribe,
    // which ThreadSanitizer would report as an order against the store's).
    std::promise<void> assigned;
    std::shared_future<void> is_assigned = assigned.get_future().share();
    std::atomic<int> seen{0};
    std::promise<void> done;
    SubscriptionHandlers h;
    h.on_event = [&](const EventView& v) {
      ++seen;
      if (v.seq == 10) {
        is_assigned.wait();
        sub->Cancel();
        done.set_value();
      }
    };
    auto r = store->Subscribe("r", 0, h);
    REQUIRE(r.ok());
    sub = std::move(r).value();
    assigned.set_value();
    done.get_future().wait();
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev("more")}).ok());
    std::this_thread::sleep_for(100ms);
    CHECK(seen.load() == 10);
    sub.reset();
  }

  TEST_CASE("Destroying the handle inside its own callback is safe") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev("1"), Ev("2")}).ok());
    auto holder = std::make_shared<std::unique_ptr<Subscription>>();
    std::promise<void> done;
    std::promise<void> assigned;  // as above: no lock held across Subscribe
    std::shared_future<void> is_assigned = assigned.get_future().share();
    SubscriptionHandlers h;
    h.on_event = [&, holder](const EventView&) {
      is_assigned.wait();
      if (*holder) {
        holder->reset();
        done.set_value();
      }
    };
    auto r = store->Subscribe("r", 0, h);
    REQUIRE(r.ok());
    *holder = std::move(r).value();
    assigned.set_value();
    CHECK(done.get_future().wait_for(10s) == std::future_status::ready);
  }

  TEST_CASE("A slow subscriber under kFail is told it cannot keep up") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    Collector c;
    std::atomic<bool> release{false};
    SubscriptionHandlers h = c.Handlers();
    auto inner = h.on_event;
    h.on_event = [&](const EventView& v) {
      while (!release) std::this_thread::sleep_for(1ms);
      inner(v);
    };
    SubscribeOptions opts;
    opts.max_queued_events = 10;
    opts.lag_policy = LagPolicy::kFail;
    auto sub = store->Subscribe("r", 0, h, opts);
    REQUIRE(sub.ok());
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev("first")}).ok());
    std::this_thread::sleep_for(50ms);  // the subscriber is now stuck in its callback
    for (int i = 0; i < 30; ++i) REQUIRE(store->Append("r", std::vector<NewEvent>{Ev("x")}).ok());
    release = true;
    REQUIRE(c.WaitError());
    CHECK(c.error->code() == StatusCode::kBusy);
    CHECK((*sub)->lag_events() == 1);
    CHECK(store->Stats().subscriber_lags >= 1);
  }

  TEST_CASE("A slow subscriber under kReadFromStore loses nothing") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    Collector c;
    std::atomic<bool> release{false};
    SubscriptionHandlers h = c.Handlers();
    auto inner = h.on_event;
    h.on_event = [&](const EventView& v) {
      while (!release) std::this_thread::sleep_for(1ms);
      inner(v);
    };
    SubscribeOptions opts;
    opts.max_queued_events = 10;
    auto sub = store->Subscribe("r", 0, h, opts);
    REQUIRE(sub.ok());
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev("first")}).ok());
    std::this_thread::sleep_for(50ms);
    for (int i = 0; i < 200; ++i) REQUIRE(store->Append("r", std::vector<NewEvent>{Ev(std::to_string(i))}).ok());
    release = true;
    REQUIRE(c.WaitFor(201));
    std::this_thread::sleep_for(30ms);
    std::lock_guard<std::mutex> lk(c.mu);
    REQUIRE(c.events.size() == 201);
    for (size_t i = 0; i < c.events.size(); ++i) CHECK(c.events[i].seq == static_cast<int64_t>(i + 1));
    CHECK((*sub)->lag_events() >= 1);
    CHECK_FALSE(c.error.has_value());
  }

  TEST_CASE("Closing the store ends subscriptions with kClosed after the queued events") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    Collector c;
    auto sub = store->Subscribe("r", 0, c.Handlers());
    REQUIRE(sub.ok());
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev("1")}).ok());
    REQUIRE(c.WaitFor(1));
    REQUIRE(store->Close().ok());
    REQUIRE(c.WaitError());
    CHECK(c.error->code() == StatusCode::kClosed);
    CHECK(store->Subscribe("r", 0, {}).status().code() == StatusCode::kClosed);
    sub->reset();
  }

  TEST_CASE("A callback that throws ends that subscription with an error, not the process") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    Collector c;
    SubscriptionHandlers h = c.Handlers();
    h.on_event = [](const EventView&) { throw std::runtime_error("boom"); };
    auto sub = store->Subscribe("r", 0, h);
    REQUIRE(sub.ok());
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev("1")}).ok());
    REQUIRE(c.WaitError());
    CHECK(c.error->code() == StatusCode::kInternal);
    CHECK(c.error->message().find("boom") != std::string::npos);
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev("2")}).ok());  // the store goes on
  }
}
