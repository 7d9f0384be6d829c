// Tests of RunSessionManager with real pty sessions and a real SQLite store.
#include "dispatch/session_manager.h"

#include <doctest/doctest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <uv.h>

#include <fmt/format.h>

#include <atomic>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include "support/session_helpers.h"
#include "support/slow_store.h"
#include "support/store_helpers.h"
#include "support/temp_dir.h"

using dispatch::CloseOptions;
using dispatch::Encoding;
using dispatch::Event;
using dispatch::EventStore;
using dispatch::ManagerOptions;
using dispatch::RunSessionManager;
using dispatch::SessionConfig;
using dispatch::SessionStatus;
using dispatch::StatusCode;
using dispatch::testing::EventCollector;
using json = nlohmann::json;

namespace {

struct Fixture {
  dispatch::testing::TempDir tmp;
  std::string root = tmp.file("ws");
  std::unique_ptr<EventStore> store;
  std::unique_ptr<RunSessionManager> mgr;

  explicit Fixture(std::function<void(ManagerOptions&)> tweak = nullptr) {
    REQUIRE(::mkdir(root.c_str(), 0755) == 0);
    // Exclusive, as dispatch-host opens its store: small appends (echoes,
    // prompts, status events of known runs) go through the append journal.
    store = dispatch::testing::OpenStore(tmp.file("events.db"), dispatch::Durability::kNormal,
                                         /*exclusive=*/true);
    Start(std::move(tweak));
  }
  void Start(std::function<void(ManagerOptions&)> tweak = nullptr) {
    ManagerOptions o;
    o.store = store.get();
    o.workspaces_root = root;
    if (tweak) tweak(o);
    auto m = RunSessionManager::Create(o);
    REQUIRE_MESSAGE(m.ok(), m.status().ToString());
    mgr = std::move(*m);
  }
  std::string Pty(json options, std::string workspace = {}) {
    SessionConfig c;
    c.kind = "pty";
    c.workspace = std::move(workspace);
    c.options_json = options.dump();
    auto r = mgr->CreateSession(c);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    return *r;
  }
  std::vector<Event> Stored(const std::string& run) {
    auto r = store->ReadEvents(run, 0);
    REQUIRE(r.ok());
    return *r;
  }
  // Events of `run` after the manager is idle.
  std::vector<Event> Settled(const std::string& run) {
    REQUIRE(mgr->WaitIdle(run).ok());
    return Stored(run);
  }
};

json Sh(const std::string& script) {
  return json{{"shell", "/bin/sh"}, {"args", {"-c", script}}};
}

const Event* Find(const std::vector<Event>& evs, const std::string& channel,
                  const std::string& type) {
  for (auto& e : evs) {
    if (e.channel == channel && e.type == type) return &e;
  }
  return nullptr;
}

}  // namespace

TEST_SUITE("RunSessionManager") {
  TEST_CASE("A pty session records created, started, output and closed in seq order") {
    Fixture f;
    EventCollector bus(*f.mgr);
    std::string run = f.Pty(Sh("echo hello; exit 3"));
    REQUIRE(bus.WaitForEvent(run, "system:status", "closed"));
    auto evs = f.Settled(run);
    REQUIRE(evs.size() >= 4);
    for (size_t i = 0; i < evs.size(); ++i) CHECK(evs[i].seq == static_cast<int64_t>(i + 1));
    CHECK(evs[0].channel == "system:status");
    CHECK(evs[0].type == "created");
    auto created = json::parse(evs[0].payload);
    CHECK(created["kind"] == "pty");
    CHECK(evs[1].type == "started");
    CHECK(json::parse(evs[1].payload)["pid"].get<int>() > 0);
    CHECK(EventCollector::Output(evs, run).find("hello") != std::string::npos);
    const Event& closed = evs.back();
    CHECK(closed.channel == "system:status");
    CHECK(closed.type == "closed");
    CHECK(closed.encoding == Encoding::kJson);
    auto p = json::parse(closed.payload);
    CHECK(p["exitCode"] == 3);
    CHECK(p["signal"] == 0);
    // The bus saw exactly the stored events, in order, after commit.
    std::vector<Event> seen;
    for (auto& e : bus.events()) {
      if (e.run_id == run) seen.push_back(e);
    }
    REQUIRE(seen.size() == evs.size());
    for (size_t i = 0; i < evs.size(); ++i) {
      CHECK(seen[i].seq == evs[i].seq);
      CHECK(seen[i].payload == evs[i].payload);
      CHECK(seen[i].ts_us == evs[i].ts_us);
    }
    auto rec = f.store->catalog().GetSession(run);
    REQUIRE(rec.ok());
    CHECK(rec->status == SessionStatus::kStopped);
    CHECK(rec->kind == "pty");
    CHECK(f.mgr->GetSession(run).status().code() == StatusCode::kNotFound);
  }

  TEST_CASE("The cwd is the workspace, env options apply, input and resize are recorded") {
    Fixture f;
    REQUIRE(::mkdir((f.root + "/proj").c_str(), 0755) == 0);
    EventCollector bus(*f.mgr);
    std::string run = f.Pty(json{{"shell", "sh"}, {"env", {{"DISPATCH_T", "xyz"}}},
                                 {"cols", 90}, {"rows", 30}},
                            "proj");
    auto info = f.mgr->GetSession(run);
    REQUIRE(info.ok());
    CHECK(info->status == SessionStatus::kRunning);
    CHECK(info->workspace.size() > 5);
    CHECK(info->workspace.substr(info->workspace.size() - 5) == "/proj");
    REQUIRE(f.mgr->Input(run, "stty size; echo \"[$DISPATCH_T]\"; pwd\n").ok());
    REQUIRE(bus.WaitForOutput(run, "30 90"));
    REQUIRE(bus.WaitForOutput(run, "[xyz]"));
    REQUIRE(bus.WaitForOutput(run, "/proj\r\n"));
    REQUIRE(f.mgr->Resize(run, 100, 40).ok());
    REQUIRE(f.mgr->Input(run, "stty size\n").ok());
    REQUIRE(bus.WaitForOutput(run, "40 100"));
    CHECK(f.mgr->Resize(run, 0, 40).code() == StatusCode::kInvalidArgument);
    REQUIRE(f.mgr->Input(run, "exit\n").ok());
    REQUIRE(bus.WaitForEvent(run, "system:status", "closed"));
    auto evs = f.Settled(run);
    const Event* in = Find(evs, "pty:stdin", "input");
    REQUIRE(in != nullptr);
    CHECK(in->payload == "stty size; echo \"[$DISPATCH_T]\"; pwd\n");
    CHECK(in->encoding == Encoding::kBytes);
    const Event* rs = Find(evs, "pty:resize", "dimensions");
    REQUIRE(rs != nullptr);
    CHECK(json::parse(rs->payload) == json{{"cols", 100}, {"rows", 40}});
    CHECK(f.mgr->Input(run, "x").code() == StatusCode::kNotFound);
    // The fixture's store is exclusive: the small appends of this session
    // went through the append journal (and every read above saw them).
    CHECK(f.store->Stats().journal_appends > 0);
  }

  TEST_CASE("Input at a read -s prompt is recorded redacted, typed commands in clear") {
    Fixture f;
    EventCollector bus(*f.mgr);
    // An interactive bash with readline: ECHO is off in raw mode while it
    // edits a line (recorded in clear), and off in canonical mode for read -s.
    std::string run = f.Pty(json{{"shell", "/bin/bash"},
                                 {"args", {"--norc", "--noprofile", "-i"}},
                                 {"env", {{"PS1", "$ "}}}});
    REQUIRE(bus.WaitForOutput(run, "$ "));
    REQUIRE(f.mgr->Input(run, "p=PW; read -s -p \"${p}PROMPT> \" pw; echo \"got:${#pw}\"\r").ok());
    REQUIRE(bus.WaitForOutput(run, "PWPROMPT> "));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    REQUIRE(f.mgr->Input(run, "hunter2\r").ok());
    REQUIRE(bus.WaitForOutput(run, "got:7"));
    REQUIRE(f.mgr->Input(run, "exit\r").ok());
    REQUIRE(bus.WaitForEvent(run, "system:status", "closed"));
    auto evs = f.Settled(run);
    std::vector<const Event*> inputs;
    for (auto& e : evs) {
      CHECK(e.payload.find("hunter2") == std::string::npos);
      if (e.channel == "pty:stdin") inputs.push_back(&e);
    }
    REQUIRE(inputs.size() == 3);
    CHECK(inputs[0]->payload.find("read -s") != std::string::npos);
    CHECK(inputs[1]->encoding == Encoding::kJson);
    CHECK(json::parse(inputs[1]->payload) == json{{"redacted", true}, {"length", 8}});
    CHECK(inputs[2]->payload == "exit\r");
  }

  TEST_CASE("The child starts with default signal dispositions and an empty mask") {
    // The host ignores SIGPIPE (and a loop thread may block signals); a
    // program in a session must not inherit either (`yes | head -1` relies
    // on SIGPIPE killing `yes`).
    struct sigaction old_pipe;
    struct sigaction ign;
    std::memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    REQUIRE(::sigaction(SIGPIPE, &ign, &old_pipe) == 0);
    sigset_t block, old_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    REQUIRE(::pthread_sigmask(SIG_BLOCK, &block, &old_mask) == 0);
    {
      Fixture f;  // its loop thread inherits the mask
      EventCollector bus(*f.mgr);
      std::string run = f.Pty(Sh("grep -E '^Sig(Ign|Blk)' /proc/self/status; "
                                 "yes | head -1 >/dev/null; echo pipe-status:$?"));
      REQUIRE(bus.WaitForEvent(run, "system:status", "closed"));
      std::string out = EventCollector::Output(f.Settled(run), run);
      CHECK(out.find("SigIgn:\t0000000000000000") != std::string::npos);
      CHECK(out.find("SigBlk:\t0000000000000000") != std::string::npos);
      CHECK(out.find("pipe-status:0") != std::string::npos);
      CHECK(out.find("Broken pipe") == std::string::npos);  // yes died of SIGPIPE, silently
    }
    ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    ::sigaction(SIGPIPE, &old_pipe, nullptr);
  }

  TEST_CASE("Close sends SIGHUP; an ignored SIGHUP is followed by SIGKILL") {
    Fixture f([](ManagerOptions& o) { o.close_timeout_ms = 300; });
    EventCollector bus(*f.mgr);
    std::string a = f.Pty(json{{"shell", "/bin/sleep"}, {"args", {"100"}}});
    std::string b = f.Pty(Sh("trap '' HUP; echo ready; while :; do sleep 1; done"));
    REQUIRE(bus.WaitForOutput(b, "ready"));
    REQUIRE(f.mgr->Close(a).ok());
    REQUIRE(f.mgr->Close(b).ok());
    REQUIRE(bus.WaitForEvent(a, "system:status", "closed"));
    REQUIRE(bus.WaitForEvent(b, "system:status", "closed"));
    auto pa = json::parse(f.Settled(a).back().payload);
    CHECK(pa["signal"] == SIGHUP);
    auto pb = json::parse(f.Settled(b).back().payload);
    CHECK(pb["signal"] == SIGKILL);
    CHECK(f.mgr->Close(a).code() == StatusCode::kNotFound);
  }

  TEST_CASE("Bad requests are refused with clear errors and record nothing") {
    Fixture f;
    SessionConfig c;
    c.kind = "nope";
    CHECK(f.mgr->CreateSession(c).status().code() == StatusCode::kInvalidArgument);
    c.kind = "pty";
    c.options_json = "[1]";
    CHECK(f.mgr->CreateSession(c).status().code() == StatusCode::kInvalidArgument);
    c.options_json = R"({"cols":"wide"})";
    CHECK(f.mgr->CreateSession(c).status().code() == StatusCode::kInvalidArgument);
    c.options_json = R"({"args":[1]})";
    CHECK(f.mgr->CreateSession(c).status().code() == StatusCode::kInvalidArgument);
    // Options nested deeper than the library serialises safely.
    c.options_json = R"({"x":)" + std::string(100000, '[') + std::string(100000, ']') + "}";
    auto deep = f.mgr->CreateSession(c);
    CHECK(deep.status().code() == StatusCode::kInvalidArgument);
    CHECK(deep.status().message().find("nested more than 256 deep") != std::string::npos);
    c.options_json = "{}";
    c.workspace = "..";
    CHECK(f.mgr->CreateSession(c).status().code() == StatusCode::kInvalidArgument);
    c.workspace = "/etc";
    CHECK(f.mgr->CreateSession(c).status().code() == StatusCode::kInvalidArgument);
    c.workspace = "missing";
    CHECK(f.mgr->CreateSession(c).status().code() == StatusCode::kNotFound);
    c.workspace = "";
    c.run_id = "bad id!";
    CHECK(f.mgr->CreateSession(c).status().code() == StatusCode::kInvalidArgument);
    auto runs = f.store->ListRuns();
    REQUIRE(runs.ok());
    CHECK(runs->empty());
    // A program that cannot run: the session exists, with status "error".
    c.run_id = "broken";
    c.options_json = R"({"shell":"/nonexistent/shell"})";
    auto r = f.mgr->CreateSession(c);
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    REQUIRE(f.mgr->WaitIdle().ok());
    auto evs = f.Stored("broken");
    REQUIRE(evs.size() == 2);
    CHECK(evs[1].type == "error");
    auto rec = f.store->catalog().GetSession("broken");
    REQUIRE(rec.ok());
    CHECK(rec->status == SessionStatus::kError);
    // Its id is taken now.
    c.options_json = "{}";
    CHECK(f.mgr->CreateSession(c).status().code() == StatusCode::kConflict);
    // A directory is not a shell, though access(X_OK) passes it.
    c.run_id = "dir-shell";
    c.options_json = R"({"shell":"/"})";
    auto dir_shell = f.mgr->CreateSession(c);
    CHECK(dir_shell.status().code() == StatusCode::kInvalidArgument);
    CHECK(dir_shell.status().message().find("is a directory") != std::string::npos);
  }

  TEST_CASE("before:create may veto; after:event sees every committed event in order") {
    Fixture f;
    std::vector<std::pair<std::string, int64_t>> seen;
    f.mgr->AddBeforeCreateHook([](const SessionConfig& c) {
      if (c.options_json.find("forbidden") != std::string::npos) {
        return dispatch::Status::InvalidArgument("policy: forbidden");
      }
      return dispatch::Status::Ok();
    });
    std::vector<int64_t> positions;
    f.mgr->AddAfterEventHook([&](const dispatch::EventView& e) {
      seen.emplace_back(std::string(e.run_id), e.seq);  // loop thread only
      positions.push_back(e.position);
    });
    SessionConfig c;
    c.options_json = Sh("echo forbidden").dump();
    auto r = f.mgr->CreateSession(c);
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK(r.status().message() == "policy: forbidden");
    EventCollector bus(*f.mgr);
    std::string run = f.Pty(Sh("echo ok"));
    REQUIRE(bus.WaitForEvent(run, "system:status", "closed"));
    auto evs = f.Settled(run);
    std::vector<std::pair<std::string, int64_t>> copy;
    std::vector<int64_t> copy_positions;
    REQUIRE(f.mgr->Post([&] {
      copy = seen;
      copy_positions = positions;
    }).ok());
    REQUIRE(f.mgr->WaitIdle().ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    REQUIRE(copy.size() == evs.size());
    for (size_t i = 0; i < copy.size(); ++i) {
      CHECK(copy[i].first == run);
      CHECK(copy[i].second == static_cast<int64_t>(i + 1));
      // Live events carry the store's position, as a read would.
      CHECK(copy_positions[i] == evs[i].position);
      CHECK(copy_positions[i] > 0);
    }
  }

  TEST_CASE("Sessions left running are marked orphaned on restart; pty cannot resume") {
    Fixture f;
    EventCollector* bus = new EventCollector(*f.mgr);
    std::string run = f.Pty(json{{"shell", "/bin/sleep"}, {"args", {"100"}}});
    REQUIRE(bus->WaitForEvent(run, "system:status", "started"));
    delete bus;
    // Simulate a crash: the record says running, the process is gone.
    f.mgr.reset();  // records closed (shutdown)
    auto evs = f.Stored(run);
    CHECK(evs.back().type == "closed");
    CHECK(f.store->catalog().GetSession(run)->status == SessionStatus::kStopped);
    REQUIRE(f.store->catalog().SetSessionStatus(run, SessionStatus::kRunning).ok());
    f.Start();
    REQUIRE(f.mgr->WaitIdle().ok());
    evs = f.Stored(run);
    CHECK(evs.back().type == "orphaned");
    CHECK(json::parse(evs.back().payload)["previousStatus"] == "running");
    CHECK(f.store->catalog().GetSession(run)->status == SessionStatus::kStopped);
    auto st = f.mgr->Resume(run);
    CHECK(st.code() == StatusCode::kInvalidArgument);
    CHECK(f.mgr->Resume("no-such-run").code() == StatusCode::kNotFound);
  }

  TEST_CASE("Destroy closes the session and removes its record, keeping its events") {
    Fixture f;
    EventCollector bus(*f.mgr);
    std::string run = f.Pty(json{{"shell", "/bin/sleep"}, {"args", {"100"}}});
    REQUIRE(f.mgr->Destroy(run).ok());
    REQUIRE(bus.WaitForEvent(run, "system:status", "closed"));
    REQUIRE(f.mgr->WaitIdle().ok());
    CHECK(f.store->catalog().GetSession(run).status().code() == StatusCode::kNotFound);
    CHECK(f.Stored(run).back().type == "closed");
  }

  TEST_CASE("Post and the wrappers are usable from many threads at once") {
    Fixture f;
    EventCollector bus(*f.mgr);
    std::string run = f.Pty(json{{"shell", "/bin/cat"}});
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 25; ++i) {
          CHECK(f.mgr->Input(run, fmt::format("t{}i{}\n", t, i)).ok());
        }
      });
    }
    for (auto& t : threads) t.join();
    REQUIRE(bus.WaitForOutput(run, "t3i24"));
    REQUIRE(f.mgr->Close(run).ok());
    REQUIRE(bus.WaitForEvent(run, "system:status", "closed"));
    int inputs = 0;
    for (auto& e : f.Settled(run)) inputs += e.channel == "pty:stdin";
    CHECK(inputs == 100);
  }

  TEST_CASE("A manager on the embedder's loop runs and closes every handle") {
    dispatch::testing::TempDir tmp;
    auto store = dispatch::testing::OpenStore(tmp.file("e.db"));
    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    ManagerOptions o;
    o.store = store.get();
    o.loop = &loop;
    o.workspaces_root = tmp.path();
    auto m = RunSessionManager::Create(o);
    REQUIRE(m.ok());
    auto mgr = std::move(*m);
    std::string run, output;
    bool closed = false;
    mgr->Subscribe("*", [&](const dispatch::EventView& e) {
      if (e.channel == "pty:stdout") output.append(e.payload);
      if (e.type == "closed") {
        closed = true;
        uv_stop(&loop);
      }
    });
    SessionConfig c;
    c.options_json = Sh("echo from-loop").dump();
    auto r = mgr->CreateSession(c);  // on the loop thread: runs inline
    REQUIRE(r.ok());
    run = *r;
    uv_timer_t guard;
    uv_timer_init(&loop, &guard);
    uv_timer_start(&guard, [](uv_timer_t* t) { uv_stop(t->loop); }, 10000, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(closed);
    CHECK(output.find("from-loop") != std::string::npos);
    uv_close(reinterpret_cast<uv_handle_t*>(&guard), nullptr);
    mgr.reset();
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
  }

  TEST_CASE("Destroying the manager kills live sessions and records their end") {
    int children = dispatch::testing::CountChildren();
    Fixture f;
    std::vector<std::string> runs;
    {
      EventCollector bus(*f.mgr);
      for (int i = 0; i < 3; ++i) {
        runs.push_back(f.Pty(json{{"shell", "/bin/sleep"}, {"args", {"100"}}}));
      }
      for (auto& r : runs) REQUIRE(bus.WaitForEvent(r, "system:status", "started"));
    }
    CHECK(dispatch::testing::CountChildren() == children + 3);
    f.mgr.reset();
    CHECK(dispatch::testing::CountChildren() == children);
    for (auto& r : runs) {
      auto evs = f.Stored(r);
      CHECK(evs.back().type == "closed");
      CHECK(json::parse(evs.back().payload)["signal"] == 9);
      CHECK(f.store->catalog().GetSession(r)->status == SessionStatus::kStopped);
    }
  }

  TEST_CASE("After a flood, the output tail and unanswered input commit with nothing further") {
    // Output is batched while a session floods (the next append waits a
    // moment to gather more), and input is held briefly for its echo. Neither
    // wait may depend on more activity: the last bytes of a flood and input
    // that gets no response must be committed with no further input/output.
    dispatch::testing::TempDir tmp;
    std::string root = tmp.file("ws");
    REQUIRE(::mkdir(root.c_str(), 0755) == 0);
    auto real = dispatch::testing::OpenStore(tmp.file("events.db"));
    dispatch::testing::SlowStore slow(*real, 5000);  // 5 ms per append: floods batch up
    ManagerOptions o;
    o.store = &slow;
    o.workspaces_root = root;
    auto m = RunSessionManager::Create(o);
    REQUIRE_MESSAGE(m.ok(), m.status().ToString());
    auto mgr = std::move(*m);
    EventCollector bus(*mgr);
    SessionConfig c;
    c.kind = "pty";
    // Echo off: the input below gets no response at all.
    c.options_json = Sh("stty -echo; head -c 2000000 /dev/zero | tr '\\0' x; printf TAIL-MARK; "
                        "exec cat >/dev/null")
                         .dump();
    auto r = mgr->CreateSession(c);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    std::string run = *r;
    REQUIRE(bus.WaitForOutput(run, "TAIL-MARK"));
    // The flood did put the session in its batching mode (a batch of 64 KiB+).
    CHECK(slow.max_batch_bytes.load() >= 64 * 1024);
    CHECK(EventCollector::Output(bus.events(), run).size() == 2000000 + 9);
    REQUIRE(mgr->WaitIdle(run, 10000).ok());
    REQUIRE(mgr->Input(run, "unanswered\n").ok());
    REQUIRE(bus.WaitForEvent(run, "pty:stdin", "input"));
    REQUIRE(mgr->WaitIdle(run, 10000).ok());
    auto evs = real->ReadEvents(run, 0);
    REQUIRE(evs.ok());
    CHECK(evs->back().channel == "pty:stdin");
    REQUIRE(mgr->Close(run).ok());
    REQUIRE(bus.WaitForEvent(run, "system:status", "closed"));
  }

  TEST_CASE("Shutdown closes everything gracefully and refuses new sessions") {
    Fixture f;
    EventCollector bus(*f.mgr);
    std::string a = f.Pty(json{{"shell", "/bin/sleep"}, {"args", {"100"}}});
    std::string b = f.Pty(json{{"shell", "/bin/cat"}});
    REQUIRE(f.mgr->Shutdown(5000).ok());
    CHECK(f.mgr->ListSessions().empty());
    CHECK(json::parse(f.Stored(a).back().payload)["signal"] == SIGHUP);
    CHECK(f.Stored(b).back().type == "closed");
    SessionConfig c;
    CHECK(f.mgr->CreateSession(c).status().code() == StatusCode::kClosed);
  }
}
