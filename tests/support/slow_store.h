// SlowStore: a fault injector that wraps a real EventStore and delays every
// append completion, so tests can make "the store lags" happen on purpose.
#ifndef DISPATCH_TESTS_SUPPORT_SLOW_STORE_H_
#define DISPATCH_TESTS_SUPPORT_SLOW_STORE_H_

#include <atomic>
#include <chrono>
#include <thread>

#include "dispatch/event_store.h"

namespace dispatch::testing {

class SlowStore final : public EventStore {
 public:
  SlowStore(EventStore& inner, int delay_us) : in_(inner), delay_us_(delay_us) {}

  std::atomic<int64_t> async_appends{0};
  std::atomic<int64_t> max_batch_bytes{0};

  Result<AppendResult> Append(std::string_view run_id, std::span<const NewEvent> events,
                              const AppendOptions& options) override {
    return in_.Append(run_id, events, options);
  }
  void AppendAsync(std::string run_id, std::vector<NewEvent> events, const AppendOptions& options,
                   AppendCallback done) override {
    int64_t bytes = 0;
    for (auto& e : events) bytes += static_cast<int64_t>(e.payload.size());
    int64_t prev = max_batch_bytes.load();
    while (bytes > prev && !max_batch_bytes.compare_exchange_weak(prev, bytes)) {
    }
    async_appends++;
    int d = delay_us_;
    in_.AppendAsync(std::move(run_id), std::move(events), options,
                    [d, done = std::move(done)](Result<AppendResult> r) {
                      std::this_thread::sleep_for(std::chrono::microseconds(d));
                      done(std::move(r));
                    });
  }
  Status Flush() override { return in_.Flush(); }
  Result<ReadSummary> Read(std::string_view run_id, int64_t after_seq, const EventVisitor& visit,
                           const ReadOptions& options) override {
    return in_.Read(run_id, after_seq, visit, options);
  }
  Result<ReadSummary> ReadAll(int64_t after_position, const EventVisitor& visit,
                              const ReadOptions& options) override {
    return in_.ReadAll(after_position, visit, options);
  }
  Result<int64_t> LastSeq(std::string_view run_id) override { return in_.LastSeq(run_id); }
  Result<int64_t> LastPosition() override { return in_.LastPosition(); }
  Result<RunInfo> GetRun(std::string_view run_id) override { return in_.GetRun(run_id); }
  Result<std::vector<RunInfo>> ListRuns() override { return in_.ListRuns(); }
  Result<std::unique_ptr<Subscription>> Subscribe(std::string_view run_id, int64_t after_seq,
                                                  SubscriptionHandlers handlers,
                                                  const SubscribeOptions& options) override {
    return in_.Subscribe(run_id, after_seq, std::move(handlers), options);
  }
  Result<std::unique_ptr<Subscription>> SubscribeAll(int64_t after_position,
                                                     SubscriptionHandlers handlers,
                                                     const SubscribeOptions& options) override {
    return in_.SubscribeAll(after_position, std::move(handlers), options);
  }
  Result<int64_t> TruncateBefore(std::string_view run_id, int64_t before_seq) override {
    return in_.TruncateBefore(run_id, before_seq);
  }
  Result<int64_t> DeleteOlderThan(int64_t ts_us) override { return in_.DeleteOlderThan(ts_us); }
  Catalog& catalog() override { return in_.catalog(); }
  StoreStats Stats() const override { return in_.Stats(); }
  Status Close() override { return in_.Close(); }

 private:
  EventStore& in_;
  int delay_us_;
};

}  // namespace dispatch::testing

#endif  // DISPATCH_TESTS_SUPPORT_SLOW_STORE_H_
