// Tests of EventBus: patterns, per-session filters, failing handlers.
#include "dispatch/event_bus.h"

#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using dispatch::EventBus;
using dispatch::EventView;

namespace {

EventView Ev(std::string_view run, int64_t seq, std::string_view ch, std::string_view type) {
  EventView v;
  v.run_id = run;
  v.seq = seq;
  v.channel = ch;
  v.type = type;
  v.payload = "p";
  return v;
}

}  // namespace

TEST_SUITE("EventBus") {
  TEST_CASE("Glob patterns match channel or channel/type") {
    using dispatch::EventPatternMatches;
    using dispatch::GlobMatch;
    CHECK(GlobMatch("*", ""));
    CHECK(GlobMatch("pty:*", "pty:stdout"));
    CHECK_FALSE(GlobMatch("pty:*", "system:status"));
    CHECK(GlobMatch("a?c", "abc"));
    CHECK_FALSE(GlobMatch("a?c", "ac"));
    CHECK(GlobMatch("*a*b*", "xxaxxbxx"));
    CHECK_FALSE(GlobMatch("*a*b", "xxaxxbxxc"));
    CHECK(GlobMatch("a\\*", "a*"));
    CHECK_FALSE(GlobMatch("a\\*", "ab"));
    CHECK(EventPatternMatches("system:status", "system:status", "closed"));
    CHECK(EventPatternMatches("system:status/closed", "system:status", "closed"));
    CHECK_FALSE(EventPatternMatches("system:status/closed", "system:status", "created"));
    CHECK(EventPatternMatches("*/chunk", "pty:stdout", "chunk"));
    CHECK(EventPatternMatches("pty:*", "pty:stdout", "chunk"));
    CHECK_FALSE(EventPatternMatches("pty:stdin", "pty:stdout", "chunk"));
  }

  TEST_CASE("Handlers get matching events, per session or global") {
    EventBus bus;
    std::vector<int64_t> all, pty_a, status;
    bus.Subscribe("*", [&](const EventView& e) { all.push_back(e.seq); });
    dispatch::BusSubscribeOptions o;
    o.run_id = "a";
    bus.Subscribe("pty:*", [&](const EventView& e) { pty_a.push_back(e.seq); }, o);
    bus.Subscribe("system:status", [&](const EventView& e) { status.push_back(e.seq); });
    bus.Publish(Ev("a", 1, "system:status", "created"));
    bus.Publish(Ev("a", 2, "pty:stdout", "chunk"));
    bus.Publish(Ev("b", 1, "pty:stdout", "chunk"));
    CHECK(all == std::vector<int64_t>{1, 2, 1});
    CHECK(pty_a == std::vector<int64_t>{2});
    CHECK(status == std::vector<int64_t>{1});
    auto c = bus.counters();
    CHECK(c.published == 3);
    CHECK(c.delivered == 5);
    CHECK(c.failed == 0);
    CHECK(c.subscriptions == 3);
  }

  TEST_CASE("A throwing handler does not stop the others and is dead-lettered") {
    EventBus bus(2);
    int before = 0, after = 0;
    bus.Subscribe("*", [&](const EventView&) { ++before; });
    dispatch::BusSubscribeOptions o;
    o.name = "thrower";
    auto bad = bus.Subscribe(
        "pty:*", [](const EventView& e) {
          if (e.seq == 99) throw 42;
          throw std::runtime_error("boom " + std::to_string(e.seq));
        },
        o);
    bus.Subscribe("*", [&](const EventView&) { ++after; });
    bus.Publish(Ev("r", 1, "pty:stdout", "chunk"));
    bus.Publish(Ev("r", 2, "pty:stdout", "chunk"));
    bus.Publish(Ev("r", 99, "pty:stdout", "chunk"));
    CHECK(before == 3);
    CHECK(after == 3);
    auto c = bus.counters();
    CHECK(c.failed == 3);
    CHECK(c.dead_lettered == 3);
    CHECK(c.delivered == 6);
    auto dl = bus.DeadLetters();
    REQUIRE(dl.size() == 2);  // bounded: the oldest was evicted
    CHECK(dl[0].event.seq == 2);
    CHECK(dl[0].error == "boom 2");
    CHECK(dl[0].subscriber == "thrower");
    CHECK(dl[0].subscription == bad);
    CHECK(dl[0].event.payload == "p");
    CHECK(dl[1].error == "unknown exception");
    bus.ClearDeadLetters();
    CHECK(bus.DeadLetters().empty());
    CHECK(bus.Unsubscribe(bad));
    CHECK_FALSE(bus.Unsubscribe(bad));
    bus.Publish(Ev("r", 3, "pty:stdout", "chunk"));
    CHECK(bus.counters().failed == 3);
  }

  TEST_CASE("A handler may unsubscribe itself; bad subscriptions are refused") {
    EventBus bus;
    int calls = 0;
    dispatch::BusSubscriptionId id = 0;
    id = bus.Subscribe("*", [&](const EventView&) {
      ++calls;
      bus.Unsubscribe(id);
    });
    bus.Publish(Ev("r", 1, "x", "y"));
    bus.Publish(Ev("r", 2, "x", "y"));
    CHECK(calls == 1);
    CHECK(bus.Subscribe("", [](const EventView&) {}) == 0);
    CHECK(bus.Subscribe("*", nullptr) == 0);
  }

  TEST_CASE("Handlers run in subscription order across per-run and all-run subscriptions") {
    // The bus keeps per-run and all-run subscriptions apart (a publish looks
    // only at its run's); the order they subscribed in is still the order
    // they run in.
    EventBus bus;
    std::vector<std::string> calls;
    auto sub = [&](std::string name, std::string run) {
      dispatch::BusSubscribeOptions o;
      o.run_id = std::move(run);
      return bus.Subscribe(
          "*", [&calls, name](const EventView& e) { calls.push_back(name + "@" + std::string(e.run_id)); },
          o);
    };
    sub("all1", "");
    auto a1 = sub("a1", "a");
    sub("b1", "b");
    sub("all2", "");
    sub("a2", "a");
    bus.Publish(Ev("a", 1, "x", "y"));
    CHECK(calls == std::vector<std::string>{"all1@a", "a1@a", "all2@a", "a2@a"});
    calls.clear();
    bus.Publish(Ev("c", 1, "x", "y"));
    CHECK(calls == std::vector<std::string>{"all1@c", "all2@c"});
    calls.clear();
    sub("all3", "");
    CHECK(bus.Unsubscribe(a1));
    bus.Publish(Ev("a", 2, "x", "y"));
    CHECK(calls == std::vector<std::string>{"all1@a", "all2@a", "a2@a", "all3@a"});
    calls.clear();
    bus.Publish(Ev("b", 1, "x", "y"));
    CHECK(calls == std::vector<std::string>{"all1@b", "b1@b", "all2@b", "all3@b"});
    CHECK(bus.counters().subscriptions == 5);

    // Unsubscribed by an earlier handler of the same publish: not called.
    EventBus bus2;
    std::vector<int> order;
    dispatch::BusSubscriptionId victim = 0;
    bus2.Subscribe("*", [&](const EventView&) {
      order.push_back(1);
      bus2.Unsubscribe(victim);
    });
    dispatch::BusSubscribeOptions o;
    o.run_id = "r";
    victim = bus2.Subscribe("*", [&](const EventView&) { order.push_back(2); }, o);
    bus2.Publish(Ev("r", 1, "x", "y"));
    bus2.Publish(Ev("r", 2, "x", "y"));
    CHECK(order == std::vector<int>{1, 1});
  }

  TEST_CASE("Thousands of per-run subscriptions: each event reaches only its run's") {
    EventBus bus;
    std::vector<int> hits(2000, 0);
    std::vector<dispatch::BusSubscriptionId> ids;
    for (int i = 0; i < 2000; ++i) {
      dispatch::BusSubscribeOptions o;
      o.run_id = "run-" + std::to_string(i);
      ids.push_back(bus.Subscribe("pty:*", [&hits, i](const EventView&) { hits[i]++; }, o));
    }
    for (int i = 0; i < 2000; i += 7) {
      std::string run = "run-" + std::to_string(i);
      bus.Publish(Ev(run, 1, "pty:stdout", "chunk"));
      bus.Publish(Ev(run, 2, "system:status", "running"));  // no pattern match
    }
    for (int i = 0; i < 2000; ++i) CHECK(hits[i] == (i % 7 == 0 ? 1 : 0));
    for (int i = 0; i < 2000; i += 2) CHECK(bus.Unsubscribe(ids[i]));
    CHECK_FALSE(bus.Unsubscribe(ids[0]));
    CHECK(bus.counters().subscriptions == 1000);
    bus.Publish(Ev("run-0", 3, "pty:stdout", "chunk"));
    bus.Publish(Ev("run-1", 3, "pty:stdout", "chunk"));
    CHECK(hits[0] == 1);
    CHECK(hits[1] == 1);
    CHECK(bus.counters().delivered == 286 + 1);
  }

  TEST_CASE("Unsubscribe from another thread waits for a running handler") {
    EventBus bus;
    std::atomic<bool> in_handler{false}, release{false}, finished{false};
    auto id = bus.Subscribe("*", [&](const EventView&) {
      in_handler = true;
      while (!release) std::this_thread::yield();
      finished = true;
    });
    std::thread pub([&] { bus.Publish(Ev("r", 1, "x", "y")); });
    while (!in_handler) std::this_thread::yield();
    std::thread unsub([&] {
      CHECK(bus.Unsubscribe(id));
      CHECK(finished.load());
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    release = true;
    unsub.join();
    pub.join();
  }
}
