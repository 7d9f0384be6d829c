// AdapterHarness: runs one SessionAdapter on a private libuv loop with a
// recording SessionContext, for adapter-level tests of edge cases (exact
// event order, exit info, handle cleanup) next to the tests that go through
// the real RunSessionManager and store. The loop must close cleanly
// (uv_loop_close == 0) when the harness is destroyed: a leaked handle fails
// the test.
#ifndef DISPATCH_TESTS_ADAPTERS_ADAPTER_HARNESS_H_
#define DISPATCH_TESTS_ADAPTERS_ADAPTER_HARNESS_H_

#include <doctest/doctest.h>
#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "dispatch/event.h"
#include "dispatch/ext/session_adapter.h"

namespace dispatch::testing {

class AdapterHarness final : public SessionContext {
 public:
  explicit AdapterHarness(SessionSpec spec) : spec_(std::move(spec)) {
    uv_loop_init(&loop_);
    uv_timer_init(&loop_, &tick_);
  }

  ~AdapterHarness() override {
    adapter_.reset();
    uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
    for (int i = 0; i < 1000 && uv_run(&loop_, UV_RUN_NOWAIT) != 0; ++i) {
    }
    int rc = uv_loop_close(&loop_);
    CHECK_MESSAGE(rc == 0, "uv loop still has handles: " << uv_strerror(rc));
  }

  // Makes the adapter with `factory` and starts it.
  Status Start(const AdapterFactory& factory) {
    auto a = factory(spec_);
    if (!a.ok()) return a.status();
    adapter_ = std::move(*a);
    Status s = adapter_->Start(*this);
    if (!s.ok()) {
      adapter_.reset();
    }
    return s;
  }

  SessionAdapter& adapter() { return *adapter_; }
  bool has_adapter() const { return adapter_ != nullptr; }

  // Runs the loop until `pred` holds or `timeout_ms` passes; returns pred().
  bool RunUntil(const std::function<bool()>& pred, int timeout_ms = 10000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    uv_timer_start(&tick_, [](uv_timer_t*) {}, 5, 5);
    while (!pred() && std::chrono::steady_clock::now() < deadline) {
      uv_run(&loop_, UV_RUN_ONCE);
    }
    uv_timer_stop(&tick_);
    return pred();
  }

  // Events of `channel` (and `type`, if given).
  std::vector<Event> Find(std::string_view channel, std::string_view type = {}) const {
    std::vector<Event> out;
    for (const auto& e : events_) {
      if (e.channel == channel && (type.empty() || e.type == type)) out.push_back(e);
    }
    return out;
  }
  size_t Count(std::string_view channel, std::string_view type = {}) const {
    return Find(channel, type).size();
  }
  const std::vector<Event>& events() const { return events_; }
  bool exited() const { return exit_.has_value(); }
  const ExitInfo& exit_info() const { return *exit_; }
  const nlohmann::json& meta() const { return meta_; }

  // ---- SessionContext ----
  const SessionSpec& spec() const override { return spec_; }
  uv_loop_s* loop() const override { return const_cast<uv_loop_t*>(&loop_); }
  Status Emit(NewEvent event) override {
    if (exit_) return Status::Closed("exited");
    Event e;
    e.run_id = spec_.run_id;
    e.seq = static_cast<int64_t>(events_.size()) + 1;
    e.channel = std::move(event.channel);
    e.type = std::move(event.type);
    e.payload = std::move(event.payload);
    e.encoding = event.encoding;
    if (e.encoding == Encoding::kJson) {
      CHECK_MESSAGE(nlohmann::json::accept(e.payload), "not JSON: " << e.payload);
    }
    events_.push_back(std::move(e));
    return Status::Ok();
  }
  Status EmitOutput(NewEvent event) override { return Emit(std::move(event)); }
  Status UpdateMeta(std::string_view json_object) override {
    auto j = nlohmann::json::parse(json_object, nullptr, false);
    if (!j.is_object()) return Status::InvalidArgument("meta must be an object");
    if (!meta_.is_object()) meta_ = nlohmann::json::object();
    meta_.update(j);
    return Status::Ok();
  }
  size_t pending_bytes() const override { return 0; }
  void ReportExit(const ExitInfo& info) override {
    CHECK_MESSAGE(!exit_, "ReportExit called twice");
    exit_ = info;
  }

 private:
  SessionSpec spec_;
  uv_loop_t loop_{};
  uv_timer_t tick_{};
  std::unique_ptr<SessionAdapter> adapter_;
  std::vector<Event> events_;
  std::optional<ExitInfo> exit_;
  nlohmann::json meta_ = nlohmann::json::object();
};

}  // namespace dispatch::testing

#endif  // DISPATCH_TESTS_ADAPTERS_ADAPTER_HARNESS_H_
