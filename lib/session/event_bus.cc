// EventBus: glob-pattern fan-out with dead letters and counters. See
// include/dispatch/event_bus.h.
#include "dispatch/event_bus.h"

#include <atomic>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "util/string_map.h"

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
  // Subscriptions are indexed by run, so that a publish looks only at the
  // event's run and at the all-runs list. Each list is immutable once
  // published (copy on write): a publish takes two references under the
  // lock and delivers without it, with no copy of the list per event.
  using List = std::vector<std::shared_ptr<Sub>>;  // in id order

  size_t max_dead;
  mutable std::mutex mu;  // guards the lists, dead and next_id
  std::shared_ptr<const List> any_run = std::make_shared<List>();
  internal::StringMap<std::shared_ptr<const List>> by_run;
  std::unordered_map<BusSubscriptionId, std::string> run_of;  // every live subscription's run
  std::deque<DeadLetter> dead;
  BusSubscriptionId next_id = 1;
  std::atomic<int64_t> published{0}, delivered{0}, failed{0}, dead_lettered{0};

  std::mutex publish_mu;  // held while handlers run
  std::atomic<std::thread::id> publisher{};

  // The list of `run_id`'s subscriptions (all runs': empty), made if
  // missing. Caller holds mu.
  std::shared_ptr<const List>& Slot(const std::string& run_id) {
    if (run_id.empty()) return any_run;
    auto it = by_run.find(run_id);
    if (it != by_run.end()) return it->second;
    return by_run.emplace(run_id, std::make_shared<List>()).first->second;
  }
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
  const BusSubscriptionId id = rep_->next_id++;
  sub->id = id;
  rep_->run_of.emplace(id, sub->options.run_id);
  std::shared_ptr<const Rep::List>& slot = rep_->Slot(sub->options.run_id);
  auto list = std::make_shared<Rep::List>(*slot);
  list->push_back(std::move(sub));
  slot = std::move(list);
  return id;
}

bool EventBus::Unsubscribe(BusSubscriptionId id) {
  bool found = false;
  {
    std::lock_guard<std::mutex> l(rep_->mu);
    auto r = rep_->run_of.find(id);
    if (r != rep_->run_of.end()) {
      std::shared_ptr<const Rep::List>& slot = rep_->Slot(r->second);
      auto list = std::make_shared<Rep::List>();
      list->reserve(slot->size());
      for (const auto& s : *slot) {
        if (s->id == id) {
          s->active.store(false);
        } else {
          list->push_back(s);
        }
      }
      if (list->empty() && !r->second.empty()) {
        rep_->by_run.erase(r->second);
      } else {
        slot = std::move(list);
      }
      rep_->run_of.erase(r);
      found = true;
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
  rep_->published.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<const Rep::List> any, run;
  {
    std::lock_guard<std::mutex> l(rep_->mu);
    any = rep_->any_run;
    if (auto it = rep_->by_run.find(event.run_id); it != rep_->by_run.end()) run = it->second;
  }
  // The two lists merged in id order: handlers run in the order they
  // subscribed.
  size_t i = 0, j = 0;
  const size_t ni = any->size(), nj = run ? run->size() : 0;
  while (i < ni || j < nj) {
    const Rep::Sub* s = (j >= nj || (i < ni && (*any)[i]->id < (*run)[j]->id))
                            ? (*any)[i++].get()
                            : (*run)[j++].get();
    if (!s->active.load()) continue;
    if (!EventPatternMatches(s->pattern, event.channel, event.type)) continue;
    std::string error;
    try {
      s->handler(event);
      rep_->delivered.fetch_add(1, std::memory_order_relaxed);
      continue;
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "unknown exception";
    }
    rep_->failed.fetch_add(1, std::memory_order_relaxed);
    rep_->dead_lettered.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> l(rep_->mu);
    if (rep_->max_dead == 0) continue;
    if (rep_->dead.size() >= rep_->max_dead) rep_->dead.pop_front();
    rep_->dead.push_back(DeadLetter{event.ToEvent(), s->id, s->options.name, std::move(error),
                                    NowMicros()});
  }
  if (!nested) rep_->publisher.store(std::thread::id{});
}

BusCounters EventBus::counters() const {
  BusCounters c;
  c.published = rep_->published.load();
  c.delivered = rep_->delivered.load();
  c.failed = rep_->failed.load();
  c.dead_lettered = rep_->dead_lettered.load();
  std::lock_guard<std::mutex> l(rep_->mu);
  c.subscriptions = static_cast<int64_t>(rep_->run_of.size());
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
