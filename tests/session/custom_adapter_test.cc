// Tests of the manager's generic adapter paths with a kind registered by the
// test (no process): commands, meta, resume, exit reporting, forced closes.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "dispatch/ext/session_adapter.h"
#include "dispatch/session_manager.h"
#include "support/session_helpers.h"
#include "support/store_helpers.h"
#include "support/temp_dir.h"

using dispatch::Encoding;
using dispatch::NewEvent;
using dispatch::SessionStatus;
using dispatch::Status;
using dispatch::StatusCode;
using dispatch::testing::EventCollector;
using json = nlohmann::json;

namespace {

// "test" kind: records input, answers commands, ends when told.
class TestAdapter final : public dispatch::SessionAdapter {
 public:
  explicit TestAdapter(json options) : options_(std::move(options)) {}

  Status Start(dispatch::SessionContext& ctx) override {
    ctx_ = &ctx;
    if (ctx.spec().resume) {
      NewEvent e;
      e.channel = "test:state";
      e.type = "resumed";
      e.encoding = Encoding::kJson;
      e.payload = ctx.spec().meta_json;
      return ctx.Emit(std::move(e));
    }
    if (options_.value("fail_start", false)) return Status::InvalidArgument("cannot start");
    if (options_.value("exit_in_start", false)) ctx.ReportExit({7, 0, {}});
    return Status::Ok();
  }
  std::string Describe() const override { return R"({"test":true})"; }
  Status Input(std::string_view data, Encoding) override {
    if (data == "exit") {
      ctx_->ReportExit({5, 0, {}});
      return Status::Ok();
    }
    if (data == "fail") {
      ctx_->ReportExit({0, 0, "boom"});
      return Status::Ok();
    }
    NewEvent e;
    e.channel = "test:input";
    e.type = "text";
    e.encoding = Encoding::kText;
    e.payload = std::string(data);
    return ctx_->Emit(std::move(e));
  }
  dispatch::Result<std::string> Command(const dispatch::SessionCommand& c) override {
    if (c.name == "meta") {
      Status st = ctx_->UpdateMeta(c.payload);
      if (!st.ok()) return st;
      return std::string(R"({"ok":true})");
    }
    if (c.name == "emit") {  // payload: {"channel","type","payload","json"}
      json j = json::parse(c.payload);
      NewEvent e;
      e.channel = j["channel"];
      e.type = j["type"];
      e.payload = j["payload"];
      e.encoding = j.value("json", false) ? Encoding::kJson : Encoding::kBytes;
      Status st = ctx_->Emit(std::move(e));
      if (!st.ok()) return st;
      return std::string("{}");
    }
    if (c.name == "burst") {  // payload: [size, ...]: output chunks, one after another
      int i = 0;
      for (const json& n : json::parse(c.payload)) {
        NewEvent e;
        e.channel = "test:out";
        e.type = "chunk";
        e.encoding = Encoding::kBytes;
        e.payload.assign(n.get<size_t>(), static_cast<char>('a' + i++ % 26));
        Status st = ctx_->EmitOutput(std::move(e));
        if (!st.ok()) return st;
      }
      return std::string("{}");
    }
    return SessionAdapter::Command(c);
  }
  void Stop(bool force) override {
    if (options_.value("stubborn", false)) return;
    ctx_->ReportExit({0, force ? 9 : 1, {}});
  }

 private:
  json options_;
  dispatch::SessionContext* ctx_ = nullptr;
};

struct Fixture {
  dispatch::testing::TempDir tmp;
  std::unique_ptr<dispatch::EventStore> store = dispatch::testing::OpenStore(tmp.file("c.db"));
  std::unique_ptr<dispatch::RunSessionManager> mgr;
  Fixture() {
    dispatch::ManagerOptions o;
    o.store = store.get();
    o.workspaces_root = tmp.path();
    o.close_timeout_ms = 100;
    mgr = std::move(*dispatch::RunSessionManager::Create(o));
    REQUIRE(mgr->RegisterAdapter("test", [](const dispatch::SessionSpec& spec)
                                             -> dispatch::Result<std::unique_ptr<dispatch::SessionAdapter>> {
                  json opts = json::parse(spec.options_json);
                  if (opts.contains("bad")) return Status::InvalidArgument("bad option");
                  return std::unique_ptr<dispatch::SessionAdapter>(new TestAdapter(opts));
                }).ok());
  }
  dispatch::Result<std::string> Create(json options, std::string run_id = {}) {
    dispatch::SessionConfig c;
    c.kind = "test";
    c.options_json = options.dump();
    c.run_id = std::move(run_id);
    return mgr->CreateSession(c);
  }
  std::vector<dispatch::Event> Events(const std::string& run) {
    auto r = store->ReadEvents(run, 0);
    REQUIRE(r.ok());
    return std::move(r).value();
  }
  std::vector<std::string> Types(const std::string& run) {
    REQUIRE(mgr->WaitIdle().ok());
    std::vector<std::string> out;
    for (auto& e : Events(run)) out.push_back(e.channel + "/" + e.type);
    return out;
  }
};

using V = std::vector<std::string>;

}  // namespace

TEST_SUITE("SessionAdapter") {
  TEST_CASE("A registered kind gets input and commands; its exit is recorded") {
    Fixture f;
    EventCollector bus(*f.mgr);
    auto run = f.Create(json::object(), "t1");
    REQUIRE(run.ok());
    CHECK(f.mgr->GetSession("t1")->status == SessionStatus::kRunning);
    CHECK(f.mgr->GetSession("t1")->description == R"({"test":true})");
    REQUIRE(f.mgr->Input("t1", "hello").ok());
    auto reply = f.mgr->Command("t1", {"meta", R"({"conv":"abc"})", Encoding::kJson});
    REQUIRE(reply.ok());
    CHECK(*reply == R"({"ok":true})");
    CHECK(f.mgr->Command("t1", {"meta", "[1]", Encoding::kJson}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(f.mgr->Command("t1", {"nope", "{}", Encoding::kJson}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(f.mgr->Resize("t1", 80, 24).code() == StatusCode::kInvalidArgument);
    REQUIRE(f.mgr->Input("t1", "exit").ok());
    REQUIRE(bus.WaitForEvent("t1", "system:status", "closed"));
    CHECK(f.Types("t1") == V{"system:status/created", "system:status/started", "test:input/text",
                            "system:status/closed"});
    auto evs = f.Events("t1");
    CHECK(json::parse(evs.back().payload) == json{{"exitCode", 5}, {"signal", 0}});
    auto rec = f.store->catalog().GetSession("t1");
    REQUIRE(rec.ok());
    CHECK(rec->status == SessionStatus::kStopped);
    CHECK(json::parse(rec->meta)["conv"] == "abc");
    CHECK(json::parse(rec->meta)["options"] == json::object());
  }

  TEST_CASE("Adapters cannot forge status events or write bad events") {
    Fixture f;
    REQUIRE(f.Create(json::object(), "t2").ok());
    auto emit = [&](json j) {
      return f.mgr->Command("t2", {"emit", j.dump(), Encoding::kJson}).status().code();
    };
    CHECK(emit({{"channel", "system:status"}, {"type", "closed"}, {"payload", "{}"}, {"json", true}}) ==
          StatusCode::kInvalidArgument);
    CHECK(emit({{"channel", "bad channel"}, {"type", "x"}, {"payload", ""}}) ==
          StatusCode::kInvalidArgument);
    CHECK(emit({{"channel", "test:x"}, {"type", ""}, {"payload", ""}}) ==
          StatusCode::kInvalidArgument);
    CHECK(emit({{"channel", "test:x"}, {"type", "j"}, {"payload", "{not json"}, {"json", true}}) ==
          StatusCode::kInvalidArgument);
    CHECK(emit({{"channel", "test:x"}, {"type", "ok"}, {"payload", std::string("a\0b", 3)}}) ==
          StatusCode::kOk);
    CHECK(f.Types("t2") == V{"system:status/created", "system:status/started", "test:x/ok"});
  }

  TEST_CASE("An exit with an error makes the status error; a failed start records error") {
    Fixture f;
    EventCollector bus(*f.mgr);
    REQUIRE(f.Create(json::object(), "t3").ok());
    REQUIRE(f.mgr->Input("t3", "fail").ok());
    REQUIRE(bus.WaitForEvent("t3", "system:status", "closed"));
    REQUIRE(f.mgr->WaitIdle().ok());
    CHECK(f.store->catalog().GetSession("t3")->status == SessionStatus::kError);
    CHECK(json::parse(f.Events("t3").back().payload)["error"] == "boom");

    auto r = f.Create(json{{"fail_start", true}}, "t4");
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK(f.Types("t4") == V{"system:status/created", "system:status/error"});
    CHECK(f.store->catalog().GetSession("t4")->status == SessionStatus::kError);
    // A factory that refuses the options records nothing.
    CHECK(f.Create(json{{"bad", 1}}, "t5").status().code() == StatusCode::kInvalidArgument);
    CHECK(f.store->catalog().GetSession("t5").status().code() == StatusCode::kNotFound);
    CHECK(*f.store->LastSeq("t5") == 0);
  }

  TEST_CASE("An exit reported inside Start is recorded after started") {
    Fixture f;
    EventCollector bus(*f.mgr);
    REQUIRE(f.Create(json{{"exit_in_start", true}}, "t6").ok());
    REQUIRE(bus.WaitForEvent("t6", "system:status", "closed"));
    CHECK(f.Types("t6") == V{"system:status/created", "system:status/started",
                            "system:status/closed"});
  }

  TEST_CASE("An adapter that never stops is ended by the manager after the timeouts") {
    Fixture f;
    EventCollector bus(*f.mgr);
    REQUIRE(f.Create(json{{"stubborn", true}}, "t7").ok());
    REQUIRE(f.mgr->Close("t7").ok());
    REQUIRE(bus.WaitForEvent("t7", "system:status", "closed", 5000));
    REQUIRE(f.mgr->WaitIdle().ok());
    auto p = json::parse(f.Events("t7").back().payload);
    CHECK(p["signal"] == 9);
    CHECK(p.contains("error"));
    CHECK(f.mgr->ListSessions().empty());
  }

  TEST_CASE("A stopped session resumes with its meta and continues its seq") {
    Fixture f;
    EventCollector bus(*f.mgr);
    REQUIRE(f.Create(json{{"k", 1}}, "t8").ok());
    REQUIRE(f.mgr->Command("t8", {"meta", R"({"conv":"c-42"})", Encoding::kJson}).ok());
    CHECK(f.mgr->Resume("t8").code() == StatusCode::kConflict);  // still live
    REQUIRE(f.mgr->Close("t8").ok());
    REQUIRE(bus.WaitForEvent("t8", "system:status", "closed"));
    REQUIRE(f.mgr->WaitIdle().ok());
    REQUIRE(f.mgr->Resume("t8").ok());
    REQUIRE(bus.WaitForEvent("t8", "system:status", "started"));
    CHECK(f.Types("t8") == V{"system:status/created", "system:status/started",
                            "system:status/closed", "system:status/resumed", "test:state/resumed",
                            "system:status/started"});
    auto evs = f.Events("t8");
    auto meta = json::parse(evs[4].payload);
    CHECK(meta["conv"] == "c-42");
    CHECK(meta["options"] == json{{"k", 1}});
    CHECK(f.store->catalog().GetSession("t8")->status == SessionStatus::kRunning);
    CHECK(f.mgr->GetSession("t8")->status == SessionStatus::kRunning);
  }

  TEST_CASE("Output queued behind an append is coalesced, but a large chunk is never copied into another") {
    Fixture f;
    REQUIRE(f.Create(json::object(), "t9").ok());
    REQUIRE(f.mgr->WaitIdle().ok());
    // The first chunk goes to the store at once; the rest queue behind it
    // (one loop turn) and are coalesced: small ones into the last event,
    // chunks of 64 KiB or more (a flood reader's) each into their own.
    json sizes = json::array();
    std::string expected;
    auto add = [&](size_t n, int count) {
      for (int k = 0; k < count; ++k) {
        expected.append(n, static_cast<char>('a' + static_cast<int>(sizes.size()) % 26));
        sizes.push_back(n);
      }
    };
    add(1000, 10);
    add(100000, 3);
    add(1000, 10);
    REQUIRE(f.mgr->Command("t9", {"burst", sizes.dump(), Encoding::kJson}).ok());
    REQUIRE(f.mgr->WaitIdle().ok());
    std::vector<size_t> got_sizes;
    std::string got;
    for (const auto& e : f.Events("t9")) {
      if (e.channel != "test:out") continue;
      got_sizes.push_back(e.payload.size());
      got += e.payload;
    }
    CHECK(got == expected);  // every byte, in order
    CHECK(got_sizes == std::vector<size_t>{1000, 9000, 100000, 100000, 110000});
  }
}
