// EventBus: glob-pattern fan-out with dead letters and counters. See
// include/dispatch/event_bus.h.
#include "dispatch/event_bus.h"

#include <atomic>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

namespace dispatch {

bool GlobMatch(std::string_view p, std::string_view t) {
  // Iterative matcher with one backtrack point for the last '*'.
  size_t pi = 0, ti = 0;
  size_t star_p = std::string_view::npos, star_t = 0;
  while (ti < t.size()) {
    if (pi < p.size()) {
      char c = p[pi];
      if (c == '*') {
        star_p = ++pi;
        star_t = ti;
        continue;
      }
      if (c == '\\' && pi + 1 < p.size()) {
        if (p[pi + 1] == t[ti]) {
          pi += 2;
          ++ti;
          continue;
        }
      } else if (c == '?' || c == t[ti]) {
        ++pi;
        ++ti;
        continue;
      }
    }
    if (star_p == std::string_view::npos) return false;
    pi = star_p;
    ti = ++star_t;
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

bool EventPatternMatches(std::string_view pattern, std::string_view channel,
                         std::string_view type) {
  if (GlobMatch(pattern, channel)) return true;
  std::string full;
  full.reserve(channel.size() + 1 + type.size());
  full.append(channel).push_back('/');
  full.append(type);
  return GlobMatch(pattern, full);
}

struct EventBus::Rep {
  struct Sub {
    BusSubscriptionId id;
    std::string pattern;
    BusHandler handler;
    BusSubscribeOptions options;
    std::atomic<bool> active{true};
  };

  size_t max_dead;
  mutable std::mutex mu;                 // guards subs, dead, counters
  std::vector<std::shared_ptr<Sub>> subs;
  std::deque<DeadLetter> dead;
  BusCounters counters;
  BusSubscriptionId next_id = 1;

  std::mutex publish_mu;                 // held while handlers run
  std::atomic<std::thread::id> publisher{};
};

EventBus::EventBus(size_t max_dead_letters) : rep_(std::make_unique<Rep>()) {
  rep_->max_dead = max_dead_letters;
}

EventBus::~EventBus() = default;

BusSubscriptionId EventBus::Subscribe(std::string pattern, BusHandler handler,
                                      BusSubscribeOptions options) {
  if (pattern.empty() || !handler) return 0;
  auto sub = std::make_shared<Rep::Sub>();
  sub->pattern = std::move(pattern);
  sub->handler = std::move(handler);
  sub->options = std::move(options);
  std::lock_guard<std::mutex> l(rep_->mu);
  sub->id = rep_->next_id++;
  rep_->subs.push_back(sub);
  return sub->id;
}

bool EventBus::Unsubscribe(BusSubscriptionId id) {
  bool found = false;
  {
    std::lock_guard<std::mutex> l(rep_->mu);
    for (auto it = rep_->subs.begin(); it != rep_->subs.end(); ++it) {
      if ((*it)->id == id) {
        (*it)->active.store(false);
        rep_->subs.erase(it);
        found = true;
        break;
      }
    }
  }
  // Outside a handler, wait for a publish in progress on another thread so
  // that the handler is guaranteed not to run once we return.
  if (found && rep_->publisher.load() != std::this_thread::get_id()) {
    std::lock_guard<std::mutex> wait(rep_->publish_mu);
  }
  return found;
}

void EventBus::Publish(const EventView& event) {
  // Publishes from the handler's own thread (re-entrant publish) would
  // deadlock on publish_mu: deliver those without taking it again.
  bool nested = rep_->publisher.load() == std::this_thread::get_id();
  std::unique_lock<std::mutex> pl(rep_->publish_mu, std::defer_lock);
  if (!nested) {
    pl.lock();
    rep_->publisher.store(std::this_thread::get_id());
  }
  std::vector<std::shared_ptr<Rep::Sub>> subs;
  {
    std::lock_guard<std::mutex> l(rep_->mu);
    rep_->counters.published++;
    subs = rep_->subs;
  }
  for (const auto& s : subs) {
    if (!s->active.load()) continue;
    if (!s->options.run_id.empty() && s->options.run_id != event.run_id) continue;
    if (!EventPatternMatches(s->pattern, event.channel, event.type)) continue;
    std::string error;
    bool ok = false;
    try {
      s->handler(event);
      ok = true;
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "unknown exception";
    }
    std::lock_guard<std::mutex> l(rep_->mu);
    if (ok) {
      rep_->counters.delivered++;
      continue;
    }
    rep_->counters.failed++;
    rep_->counters.dead_lettered++;
    if (rep_->max_dead == 0) continue;
    if (rep_->dead.size() >= rep_->max_dead) rep_->dead.pop_front();
    rep_->dead.push_back(DeadLetter{event.ToEvent(), s->id, s->options.name, std::move(error),
                                    NowMicros()});
  }
  if (!nested) rep_->publisher.store(std::thread::id{});
}

BusCounters EventBus::counters() const {
  std::lock_guard<std::mutex> l(rep_->mu);
  BusCounters c = rep_->counters;
  c.subscriptions = static_cast<int64_t>(rep_->subs.size());
  return c;
}

std::vector<DeadLetter> EventBus::DeadLetters() const {
  std::lock_guard<std::mutex> l(rep_->mu);
  return {rep_->dead.begin(), rep_->dead.end()};
}

void EventBus::ClearDeadLetters() {
  std::lock_guard<std::mutex> l(rep_->mu);
  rep_->dead.clear();
}

}  // namespace dispatch
