// The claude and file kinds end to end: the real RunSessionManager, a real
// SQLite store in a temp dir, the stand-in CLI (tests/fixtures/fake_claude)
// as a real child process. What is checked is what the store holds.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dispatch/event_store.h"
#include "dispatch/session_manager.h"
#include "support/session_helpers.h"
#include "support/store_helpers.h"
#include "support/temp_dir.h"

using namespace dispatch;
using dispatch::testing::EventCollector;
using dispatch::testing::TempDir;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string kFake = std::string(DISPATCH_TEST_FIXTURES) + "/fake_claude";

struct Fixture {
  TempDir tmp;
  std::string root = tmp.file("root");
  std::string home = tmp.file("claude-home");
  std::unique_ptr<EventStore> store;
  std::unique_ptr<RunSessionManager> mgr;

  Fixture() {
    fs::create_directories(root + "/project");
    fs::create_directories(home);
    store = dispatch::testing::OpenStore(tmp.file("events.db"));
    Start();
  }
  void Start() {
    ManagerOptions o;
    o.store = store.get();
    o.workspaces_root = root;
    o.close_timeout_ms = 3000;
    auto m = RunSessionManager::Create(o);
    REQUIRE_MESSAGE(m.ok(), m.status().ToString());
    mgr = std::move(*m);
  }
  json Options(json extra = json::object()) {
    json o = {{"bin", kFake},
              {"env", {{"FAKE_CLAUDE_HOME", home}, {"FAKE_CLAUDE_SLOW_MS", "20000"}}}};
    o.update(extra);
    return o;
  }
  Result<std::string> Create(const std::string& kind, json options,
                             const std::string& workspace = "project") {
    SessionConfig c;
    c.kind = kind;
    c.workspace = workspace;
    c.options_json = options.dump();
    return mgr->CreateSession(c);
  }
  std::vector<Event> Stored(const std::string& run) {
    REQUIRE(mgr->WaitIdle(run).ok());
    auto r = store->ReadEvents(run, 0);
    REQUIRE(r.ok());
    return *r;
  }
};

std::vector<Event> Of(const std::vector<Event>& evs, const std::string& channel,
                      const std::string& type = {}) {
  std::vector<Event> out;
  for (const auto& e : evs) {
    if (e.channel == channel && (type.empty() || e.type == type)) out.push_back(e);
  }
  return out;
}

bool WaitCount(EventCollector& c, const std::string& run, const std::string& channel,
               const std::string& type, size_t n, int timeout_ms = 10000) {
  return c.WaitFor(
      [&](const std::vector<Event>& evs) {
        size_t k = 0;
        for (const auto& e : evs) k += e.run_id == run && e.channel == channel && e.type == type;
        return k >= n;
      },
      timeout_ms);
}

}  // namespace

TEST_SUITE("ClaudeSession") {
  TEST_CASE("A claude session is recorded in the store, line by line, in seq order") {
    Fixture f;
    EventCollector bus(*f.mgr);
    auto run = f.Create("claude", f.Options({{"model", "claude-sonnet-4-5"}}));
    REQUIRE_MESSAGE(run.ok(), run.status().ToString());
    REQUIRE(f.mgr->Input(*run, "ping", Encoding::kText).ok());
    REQUIRE(WaitCount(bus, *run, "claude:message", "result", 1));
    REQUIRE(f.mgr->Close(*run).ok());
    REQUIRE(bus.WaitForEvent(*run, "system:status", "closed"));

    auto evs = f.Stored(*run);
    for (size_t i = 0; i < evs.size(); ++i) CHECK(evs[i].seq == static_cast<int64_t>(i + 1));
    std::vector<std::string> kinds;
    for (const auto& e : evs) kinds.push_back(e.channel + "/" + e.type);
    std::vector<std::string> want = {"system:status/created",  "claude:process/spawned",
                                     "system:status/started",  "claude:input/user",
                                     "claude:message/system",  "claude:message/assistant",
                                     "claude:message/result",  "claude:process/exited",
                                     "system:status/closed"};
    CHECK(kinds == want);
    json started = json::parse(Of(evs, "system:status", "started").at(0).payload);
    CHECK(started["pid"].get<int>() > 0);
    std::string conv = started["conversationId"];
    json init = json::parse(Of(evs, "claude:message", "system").at(0).payload);
    CHECK(init["session_id"] == conv);
    CHECK(init["cwd"] == fs::canonical(f.root + "/project").string());
    auto result = Of(evs, "claude:message", "result").at(0);
    CHECK(result.encoding == Encoding::kJson);
    CHECK(json::parse(result.payload)["result"] == "pong");
    json closed = json::parse(evs.back().payload);
    CHECK(closed["exitCode"] == 0);
    auto rec = f.store->catalog().GetSession(*run);
    REQUIRE(rec.ok());
    CHECK(rec->status == SessionStatus::kStopped);
    CHECK(json::parse(rec->meta)["conversationId"] == conv);
  }

  TEST_CASE("Interrupt is a command; the turn ends with an error result and the session goes on") {
    Fixture f;
    EventCollector bus(*f.mgr);
    auto run = f.Create("claude", f.Options());
    REQUIRE(run.ok());
    REQUIRE(f.mgr->Input(*run, "SLOW count", Encoding::kText).ok());
    REQUIRE(WaitCount(bus, *run, "claude:message", "system", 2));  // init + status
    auto reply = f.mgr->Command(*run, SessionCommand{"interrupt"});
    REQUIRE_MESSAGE(reply.ok(), reply.status().ToString());
    REQUIRE(WaitCount(bus, *run, "claude:message", "result", 1, 5000));
    REQUIRE(f.mgr->Input(*run, "ping", Encoding::kText).ok());
    REQUIRE(WaitCount(bus, *run, "claude:message", "result", 2));
    auto evs = f.Stored(*run);
    auto results = Of(evs, "claude:message", "result");
    CHECK(json::parse(results[0].payload)["subtype"] == "error_during_execution");
    CHECK(json::parse(results[1].payload)["result"] == "pong");
    CHECK(Of(evs, "claude:input", "control_request").size() == 1);
    CHECK(Of(evs, "claude:error", "result_error").size() == 1);
  }

  TEST_CASE("A CLI killed mid-turn closes the session with an error and the abort recorded") {
    Fixture f;
    EventCollector bus(*f.mgr);
    auto run = f.Create("claude", f.Options());
    REQUIRE(run.ok());
    REQUIRE(f.mgr->Input(*run, "SLOW count", Encoding::kText).ok());
    REQUIRE(WaitCount(bus, *run, "claude:message", "system", 1));
    auto info = f.mgr->GetSession(*run);
    REQUIRE(info.ok());
    int pid = json::parse(info->description)["pid"];
    REQUIRE(::kill(pid, SIGTERM) == 0);
    REQUIRE(bus.WaitForEvent(*run, "system:status", "closed"));
    auto evs = f.Stored(*run);
    CHECK(Of(evs, "claude:message", "result").empty());
    CHECK(Of(evs, "claude:error", "aborted").size() == 1);
    json closed = json::parse(evs.back().payload);
    CHECK(closed["exitCode"] == 143);
    CHECK(closed.contains("error"));
    CHECK(f.store->catalog().GetSession(*run)->status == SessionStatus::kError);
  }

  TEST_CASE("A missing binary fails the create, with the error recorded") {
    Fixture f;
    auto run = f.Create("claude", f.Options({{"bin", f.tmp.file("no-such-claude")}}));
    CHECK(run.status().code() == StatusCode::kNotFound);
    auto list = f.store->catalog().ListSessions();
    REQUIRE(list.ok());
    REQUIRE(list->size() == 1);
    std::string id = (*list)[0].run_id;
    auto evs = f.Stored(id);
    CHECK(Of(evs, "claude:error", "spawn_failed").size() == 1);
    CHECK(Of(evs, "system:status", "error").size() == 1);
    CHECK(f.store->catalog().GetSession(id)->status == SessionStatus::kError);
    // Bad options never get that far.
    CHECK(f.Create("claude", f.Options({{"max_turns", "x"}})).status().code() ==
          StatusCode::kInvalidArgument);
  }

  TEST_CASE("After a host restart a claude session resumes its conversation from the same cwd") {
    Fixture f;
    std::string run, conv;
    {
      EventCollector bus(*f.mgr);
      auto r = f.Create("claude", f.Options());
      REQUIRE(r.ok());
      run = *r;
      REQUIRE(f.mgr->Input(run, "ping", Encoding::kText).ok());
      REQUIRE(WaitCount(bus, run, "claude:message", "result", 1));
      conv = json::parse(f.mgr->GetSession(run)->description)["conversationId"];
    }
    // The host goes away with the session running (a crash leaves it "running").
    f.mgr.reset();
    REQUIRE(f.store->catalog().SetSessionStatus(run, SessionStatus::kRunning).ok());
    f.Start();
    REQUIRE(f.mgr->WaitIdle().ok());
    CHECK(f.Stored(run).back().type == "orphaned");

    EventCollector bus(*f.mgr);
    int64_t before = f.Stored(run).back().seq;
    REQUIRE(f.mgr->Resume(run).ok());
    REQUIRE(f.mgr->Input(run, "ping after resume", Encoding::kText).ok());
    REQUIRE(WaitCount(bus, run, "claude:message", "result", 1));
    auto evs = f.Stored(run);
    CHECK(evs[before].seq == before + 1);  // the seq continues
    CHECK(evs[before].type == "resumed");
    json spawned = json::parse(Of(evs, "claude:process", "spawned").back().payload);
    CHECK(spawned["argv"].back() == "--resume=" + conv);
    CHECK(spawned["cwd"] == fs::canonical(f.root + "/project").string());
    json result = json::parse(Of(evs, "claude:message", "result").back().payload);
    CHECK(result["session_id"] == conv);
    CHECK(result["is_error"] == false);
  }

  TEST_CASE("Resuming a conversation the CLI lost is recorded as an error, not a crash") {
    Fixture f;
    std::string run;
    {
      EventCollector bus(*f.mgr);
      auto r = f.Create("claude", f.Options());
      REQUIRE(r.ok());
      run = *r;
      REQUIRE(f.mgr->Input(run, "ping", Encoding::kText).ok());
      REQUIRE(WaitCount(bus, run, "claude:message", "result", 1));
      REQUIRE(f.mgr->Close(run).ok());
      REQUIRE(bus.WaitForEvent(run, "system:status", "closed"));
    }
    fs::remove_all(f.home);  // the CLI's conversation store is gone
    EventCollector bus(*f.mgr);
    REQUIRE(f.mgr->Resume(run).ok());
    REQUIRE(WaitCount(bus, run, "system:status", "closed", 1));
    auto evs = f.Stored(run);
    CHECK(Of(evs, "claude:error", "unknown_conversation").size() == 1);
    json closed = json::parse(evs.back().payload);
    CHECK(closed["exitCode"] == 1);
    CHECK(closed["error"].get<std::string>().find("unknown conversation") != std::string::npos);
  }
}

TEST_SUITE("FileSession") {
  TEST_CASE("File operations through the manager are recorded; escapes are refused and recorded") {
    Fixture f;
    fs::create_directories(f.root + "/project2");
    std::ofstream(f.root + "/project2/secret.txt") << "sibling";
    auto run = f.Create("file", json::object());
    REQUIRE_MESSAGE(run.ok(), run.status().ToString());
    auto w = f.mgr->Command(*run, SessionCommand{"write",
                                                 R"({"path":"notes/a.md","content":"# hi\n","create_dirs":true})"});
    REQUIRE_MESSAGE(w.ok(), w.status().ToString());
    auto r = f.mgr->Command(*run, SessionCommand{"open", R"({"path":"notes/a.md"})"});
    REQUIRE(r.ok());
    CHECK(json::parse(*r)["content"] == "# hi\n");
    auto esc = f.mgr->Command(*run, SessionCommand{"read", R"({"path":"../project2/secret.txt"})"});
    CHECK(esc.status().code() == StatusCode::kInvalidArgument);
    REQUIRE(f.mgr->Close(*run).ok());
    auto evs = f.Stored(*run);
    CHECK(Of(evs, "file:saved", "saved").size() == 1);
    CHECK(json::parse(Of(evs, "file:saved").at(0).payload)["size"] == 5);
    CHECK(Of(evs, "file:content", "saved").at(0).payload == "# hi\n");
    CHECK(Of(evs, "file:opened", "opened").size() == 1);
    auto err = Of(evs, "file:error", "error");
    REQUIRE(err.size() == 1);
    CHECK(json::parse(err[0].payload)["path"] == "../project2/secret.txt");
    CHECK(evs.back().type == "closed");
    CHECK(f.store->catalog().GetSession(*run)->status == SessionStatus::kStopped);
    // A file session can be resumed: it keeps no state.
    REQUIRE(f.mgr->Resume(*run).ok());
    auto l = f.mgr->Command(*run, SessionCommand{"list", R"({"path":"notes"})"});
    REQUIRE(l.ok());
    CHECK(json::parse(*l)["entries"][0]["name"] == "a.md");
  }
}
