// Subscriptions: backlog from the store, then live blocks pushed by the
// writer after each commit, with no gap and no duplicate at the hand-over.
//
// How the hand-over works: a subscription registers with the hub *before* it
// reads its backlog. Every commit after registration is pushed to its queue;
// every commit before it is visible to the backlog read. The delivery thread
// keeps a cursor and drops anything at or below it, and whenever the next
// queued block does not start right after the cursor (the queue overflowed,
// or the backlog read ended early) it reads the missing range from the store.
// The store is the buffer: a slow subscriber costs disk reads, not memory.
//
// Thread-safety: the hub is thread-safe; each SubState is shared between the
// writer (Publish), its delivery thread and its handle, guarded by `mu`.
#ifndef DISPATCH_LIB_STORE_SUBSCRIPTION_H_
#define DISPATCH_LIB_STORE_SUBSCRIPTION_H_

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dispatch/event_store.h"

namespace dispatch::internal {

// One committed block as published to subscribers (uncompressed body).
struct CommittedBlock {
  std::string run_id;
  int64_t first_seq = 0;
  int64_t first_pos = 0;
  int64_t count = 0;
  int64_t base_ts = 0;
  std::shared_ptr<const std::string> body;
};
using BlockList = std::vector<std::shared_ptr<const CommittedBlock>>;

struct SubState {
  // What to follow: one run (by seq) or everything (by position).
  bool all = false;
  std::string run_id;
  SubscriptionHandlers handlers;
  SubscribeOptions options;
  // Reads from the store after a cursor (seq or position).
  std::function<Result<ReadSummary>(int64_t after, const EventVisitor&, size_t limit)> read;
  // The store's current high-water mark (last seq of the run, or position).
  std::function<Result<int64_t>()> high_water;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<const CommittedBlock>> queue;  // guarded by mu
  size_t queued_events = 0;                                 // guarded by mu
  bool overflow = false;                                    // guarded by mu
  bool closed = false;                                      // guarded by mu
  bool exited = false;                                      // guarded by mu
  std::atomic<bool> cancelled{false};
  std::atomic<int64_t> cursor{0};
  std::atomic<int64_t> lags{0};
  std::thread::id thread_id;

  // Queues `block` (called by the hub with no lock held on this state).
  void Push(const std::shared_ptr<const CommittedBlock>& block);
  // The delivery thread's body.
  void Run(int64_t backlog_target);

 private:
  bool Deliver(const EventView& v);
  bool CatchUp(int64_t until);
  void Fail(const Status& s);
};

class SubscriptionHub {
 public:
  void Add(const std::shared_ptr<SubState>& s);
  // Drops a subscription whose delivery thread never started (its start
  // failed after Add), so CloseAll does not wait for it.
  void Remove(const std::shared_ptr<SubState>& s);
  // Pushes committed blocks to every matching subscriber, in order.
  void Publish(const BlockList& blocks);
  // Ends every subscription with kClosed and waits for their threads to
  // leave (except the calling thread's own, if it is one of them).
  void CloseAll();
  bool empty() const;
  int64_t size() const;
  int64_t total_lags() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<SubState>> subs_;  // guarded by mu_
  std::atomic<int64_t> lags_retired_{0};
};

class SubscriptionImpl final : public Subscription {
 public:
  SubscriptionImpl(std::shared_ptr<SubState> state, std::thread thread)
      : state_(std::move(state)), thread_(std::move(thread)) {}
  ~SubscriptionImpl() override { Cancel(); }
  void Cancel() override;
  int64_t cursor() const override { return state_->cursor.load(); }
  int64_t lag_events() const override { return state_->lags.load(); }

 private:
  // The handle never touches the hub or the store (either may be gone):
  // a cancelled state is dropped by the hub on its next publish.
  std::shared_ptr<SubState> state_;
  std::thread thread_;
  std::once_flag cancel_once_;
};

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_STORE_SUBSCRIPTION_H_
