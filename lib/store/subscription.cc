// Subscription delivery (see subscription.h for the hand-over argument).
#include "store/subscription.h"

#include <fmt/format.h>

#include <exception>

#include "store/block_codec.h"
#include "util/thread_name.h"

namespace dispatch::internal {
namespace {
constexpr size_t kCatchUpChunk = 4096;
}  // namespace

void SubState::Push(const std::shared_ptr<const CommittedBlock>& block) {
  std::lock_guard<std::mutex> lk(mu);
  if (closed) return;
  if (queued_events + static_cast<size_t>(block->count) > options.max_queued_events) {
    // Too far behind: drop the queue; the thread re-reads from the store.
    queue.clear();
    queued_events = 0;
    overflow = true;
    cv.notify_all();
    return;
  }
  queue.push_back(block);
  queued_events += static_cast<size_t>(block->count);
  cv.notify_all();
}

bool SubState::Deliver(const EventView& v) {
  if (cancelled.load(std::memory_order_relaxed)) return false;
  int64_t key = all ? v.position : v.seq;
  if (key <= cursor.load(std::memory_order_relaxed)) return true;  // already delivered
  try {
    if (handlers.on_event) handlers.on_event(v);
  } catch (const std::exception& e) {
    Fail(Status::Internal(fmt::format("subscriber callback threw: {}", e.what())));
    cancelled = true;
    return false;
  } catch (...) {
    Fail(Status::Internal("subscriber callback threw"));
    cancelled = true;
    return false;
  }
  cursor.store(key, std::memory_order_relaxed);
  return !cancelled.load(std::memory_order_relaxed);
}

bool SubState::CatchUp(int64_t until) {
  EventVisitor visit = [this](const EventView& v) { return Deliver(v); };
  while (cursor.load() < until && !cancelled.load()) {
    Result<ReadSummary> r = read(cursor.load(), visit, kCatchUpChunk);
    if (!r.ok()) {
      Fail(r.status());
      return false;
    }
    if (cancelled.load()) return false;
    if (r->count == 0) break;  // nothing more stored (positions may have holes)
  }
  return !cancelled.load();
}

void SubState::Fail(const Status& s) {
  if (cancelled.load()) return;
  if (handlers.on_error) {
    try {
      handlers.on_error(s);
    } catch (...) {
      // Nothing more to tell: the subscription is ending anyway.
    }
  }
}

void SubState::Run(int64_t backlog_target) {
  SetThreadName("dispatch-sub");
  {
    std::lock_guard<std::mutex> lk(mu);
    thread_id = std::this_thread::get_id();
  }
  auto finish = [this] {
    std::lock_guard<std::mutex> lk(mu);
    exited = true;
    cv.notify_all();
  };
  if (!CatchUp(backlog_target)) return finish();
  if (handlers.on_caught_up && !cancelled.load()) {
    try {
      handlers.on_caught_up(cursor.load());
    } catch (...) {
      Fail(Status::Internal("on_caught_up threw"));
      return finish();
    }
  }
  std::string scratch;
  while (!cancelled.load()) {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [this] { return cancelled.load() || closed || overflow || !queue.empty(); });
    if (cancelled.load()) break;
    if (overflow) {
      overflow = false;
      lk.unlock();
      lags.fetch_add(1);
      if (options.lag_policy == LagPolicy::kFail) {
        Fail(Status::Busy("subscriber cannot keep up: its queue exceeded max_queued_events"));
        break;
      }
      Result<int64_t> hw = high_water();
      if (!hw.ok()) {
        Fail(hw.status());
        break;
      }
      if (!CatchUp(*hw)) break;
      continue;
    }
    if (queue.empty()) {  // closed, and everything queued was delivered
      lk.unlock();
      Fail(Status::Closed("the store was closed"));
      break;
    }
    std::shared_ptr<const CommittedBlock> block = std::move(queue.front());
    queue.pop_front();
    queued_events -= static_cast<size_t>(block->count);
    lk.unlock();

    int64_t first_key = all ? block->first_pos : block->first_seq;
    if (first_key > cursor.load() + 1 && !CatchUp(first_key - 1)) break;
    BlockReader reader(*block->body, block->base_ts);
    EventView v;
    v.run_id = block->run_id;
    bool stopped = false;
    for (int64_t i = 0; reader.Next(&v); ++i) {
      v.seq = block->first_seq + i;
      v.position = block->first_pos + i;
      if (!Deliver(v)) {
        stopped = true;
        break;
      }
    }
    if (stopped) break;
    if (!reader.status().ok()) {
      Fail(reader.status());
      break;
    }
  }
  finish();
}

void SubscriptionHub::Add(const std::shared_ptr<SubState>& s) {
  std::lock_guard<std::mutex> lk(mu_);
  subs_.push_back(s);
}

void SubscriptionHub::Remove(const std::shared_ptr<SubState>& s) {
  {
    std::lock_guard<std::mutex> slk(s->mu);
    s->cancelled = true;
    s->exited = true;
  }
  std::lock_guard<std::mutex> lk(mu_);
  std::erase(subs_, s);
}

void SubscriptionHub::Publish(const BlockList& blocks) {
  std::lock_guard<std::mutex> lk(mu_);
  for (size_t i = 0; i < subs_.size();) {
    SubState& s = *subs_[i];
    bool gone;
    {
      std::lock_guard<std::mutex> slk(s.mu);
      gone = s.cancelled.load() || s.exited;
    }
    if (gone) {
      lags_retired_ += s.lags.load();
      subs_[i] = std::move(subs_.back());
      subs_.pop_back();
      continue;
    }
    for (const auto& b : blocks) {
      if (s.all || b->run_id == s.run_id) s.Push(b);
    }
    ++i;
  }
}

void SubscriptionHub::CloseAll() {
  std::vector<std::shared_ptr<SubState>> subs;
  {
    std::lock_guard<std::mutex> lk(mu_);
    subs.swap(subs_);
  }
  for (auto& s : subs) {
    std::lock_guard<std::mutex> lk(s->mu);
    s->closed = true;
    s->cv.notify_all();
  }
  for (auto& s : subs) {
    std::unique_lock<std::mutex> lk(s->mu);
    if (s->thread_id == std::this_thread::get_id()) continue;
    // A thread that has not started yet has no id; it will see `closed`.
    s->cv.wait(lk, [&] { return s->exited; });
    lags_retired_ += s->lags.load();
  }
}

bool SubscriptionHub::empty() const {
  std::lock_guard<std::mutex> lk(mu_);
  return subs_.empty();
}

int64_t SubscriptionHub::size() const {
  std::lock_guard<std::mutex> lk(mu_);
  return static_cast<int64_t>(subs_.size());
}

int64_t SubscriptionHub::total_lags() const {
  std::lock_guard<std::mutex> lk(mu_);
  int64_t n = lags_retired_.load();
  for (const auto& s : subs_) n += s->lags.load();
  return n;
}

void SubscriptionImpl::Cancel() {
  std::call_once(cancel_once_, [this] {
    state_->cancelled = true;
    {
      std::lock_guard<std::mutex> lk(state_->mu);
      state_->cv.notify_all();
    }
    if (thread_.joinable()) {
      if (thread_.get_id() == std::this_thread::get_id()) {
        thread_.detach();  // called from our own callback: the thread ends by itself
      } else {
        thread_.join();
      }
    }
  });
}

}  // namespace dispatch::internal
