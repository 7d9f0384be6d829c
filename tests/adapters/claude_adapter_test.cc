// ClaudeAdapter on a private loop (AdapterHarness), driving the stand-in CLI
// tests/fixtures/fake_claude as a real child process: every scenario of the
// recorded protocol, the error cases, shutdown and cleanup.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "adapter_harness.h"
#include "dispatch/adapters/claude.h"
#include "support/temp_dir.h"

using namespace dispatch;
using dispatch::testing::AdapterHarness;
using dispatch::testing::TempDir;
using nlohmann::json;

namespace {

const std::string kFake = std::string(DISPATCH_TEST_FIXTURES) + "/fake_claude";

struct Fixture {
  TempDir ws;
  TempDir home;  // the fake CLI's conversation store

  SessionSpec Spec(json options = json::object(), bool resume = false,
                   json meta = json::object()) {
    if (!options.contains("bin")) options["bin"] = kFake;
    options["env"]["FAKE_CLAUDE_HOME"] = home.path();
    if (!options["env"].contains("FAKE_CLAUDE_SLOW_MS")) {
      options["env"]["FAKE_CLAUDE_SLOW_MS"] = "20000";
    }
    SessionSpec s;
    s.run_id = "claude-test";
    s.kind = "claude";
    s.workspace = ws.path();
    s.options_json = options.dump();
    s.meta_json = meta.dump();
    s.resume = resume;
    return s;
  }
};

json Payload(const Event& e) { return json::parse(e.payload); }

int Pid(const AdapterHarness& h) {
  auto spawned = h.Find("claude:process", "spawned");
  REQUIRE(spawned.size() == 1);
  return Payload(spawned[0])["pid"].get<int>();
}

bool ProcessGone(int pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

std::string Realpath(const std::string& p) {
  char buf[PATH_MAX];
  REQUIRE(::realpath(p.c_str(), buf) != nullptr);
  return buf;
}

}  // namespace

TEST_SUITE("ClaudeAdapter") {
  TEST_CASE("A plain turn: every stdout line becomes a claude:message event, byte-exact") {
    Fixture f;
    AdapterHarness h(f.Spec({{"model", "claude-sonnet-4-5"}}));
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    std::string conv = h.meta()["conversationId"];
    CHECK(conv.size() == 36);

    json spawned = Payload(h.Find("claude:process", "spawned").at(0));
    std::vector<std::string> argv = spawned["argv"];
    CHECK(argv.at(0) == kFake);
    CHECK(argv.back() == "--session-id=" + conv);
    CHECK(std::find(argv.begin(), argv.end(), "--verbose") != argv.end());
    CHECK(json::parse(h.adapter().Describe())["pid"] == spawned["pid"]);

    REQUIRE(h.adapter().Input("ping", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "result") == 1; }));

    auto input = h.Find("claude:input", "user");
    REQUIRE(input.size() == 1);
    CHECK(input[0].payload ==
          R"({"type":"user","message":{"role":"user","content":"ping"},"parent_tool_use_id":null,"session_id":""})");
    auto init = h.Find("claude:message", "system");
    REQUIRE(init.size() == 1);
    CHECK(Payload(init[0])["subtype"] == "init");
    CHECK(Payload(init[0])["session_id"] == conv);
    CHECK(Payload(init[0])["cwd"] == Realpath(f.ws.path()));  // cwd = the workspace
    CHECK(Payload(init[0])["model"] == "claude-sonnet-4-5");
    auto assistant = h.Find("claude:message", "assistant");
    REQUIRE(assistant.size() == 1);
    CHECK(Payload(assistant[0])["message"]["content"][0]["text"] == "pong");
    // The payload is the line as printed: compact, the CLI's key order.
    CHECK(assistant[0].payload.rfind(R"({"type":"assistant","message":{"id":)", 0) == 0);
    CHECK(assistant[0].encoding == Encoding::kJson);
    json result = Payload(h.Find("claude:message", "result").at(0));
    CHECK(result["result"] == "pong");
    CHECK(result["is_error"] == false);
    CHECK(h.Count("claude:error") == 0);
    CHECK(h.meta()["conversationStarted"] == true);

    // The process stays alive across turns.
    REQUIRE(h.adapter().Input(R"([{"type":"text","text":"second"}])", Encoding::kJson).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "result") == 2; }));
    CHECK(Payload(h.Find("claude:message", "result")[1])["result"] == "You said: second");
    CHECK(h.Count("claude:process", "spawned") == 1);

    int pid = Pid(h);
    h.adapter().Stop(false);
    REQUIRE(h.RunUntil([&] { return h.exited(); }));
    CHECK(h.exit_info().exit_code == 0);
    CHECK(h.exit_info().signal == 0);
    CHECK(h.exit_info().error.empty());
    json exited = Payload(h.Find("claude:process", "exited").at(0));
    CHECK(exited["results"] == 2);
    CHECK(exited["midTurn"] == false);
    CHECK(ProcessGone(pid));
    CHECK(h.adapter().Input("late", Encoding::kText).code() == StatusCode::kClosed);
  }

  TEST_CASE("A tool turn records text, tool_use, tool_result and the final result") {
    Fixture f;
    AdapterHarness h(f.Spec());
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    REQUIRE(h.adapter().Input("USE_TOOL please", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "result") == 1; }));
    auto a = h.Find("claude:message", "assistant");
    REQUIRE(a.size() == 3);
    CHECK(Payload(a[1])["message"]["content"][0]["type"] == "tool_use");
    auto u = h.Find("claude:message", "user");
    REQUIRE(u.size() == 1);
    CHECK(Payload(u[0])["message"]["content"][0]["type"] == "tool_result");
    CHECK(Payload(h.Find("claude:message", "result")[0])["num_turns"] == 2);
    h.adapter().Stop(false);
    REQUIRE(h.RunUntil([&] { return h.exited(); }));
  }

  TEST_CASE("An API error arriving as subtype success with is_error true becomes an error event") {
    Fixture f;
    AdapterHarness h(f.Spec());
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    REQUIRE(h.adapter().Input("FAIL400", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:error", "result_error") == 1; }));
    json result = Payload(h.Find("claude:message", "result").at(0));
    CHECK(result["subtype"] == "success");
    CHECK(result["is_error"] == true);
    json err = Payload(h.Find("claude:error", "result_error")[0]);
    CHECK(err["message"] == "API Error: 400 bad request from fake");
    CHECK(err["subtype"] == "success");
    // The process is still usable.
    REQUIRE(h.adapter().Input("ping", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "result") == 2; }));
    h.adapter().Stop(false);
    REQUIRE(h.RunUntil([&] { return h.exited(); }));
    CHECK(h.exit_info().error.empty());  // we asked it to stop
  }

  TEST_CASE("Retries of a 401 are recorded as system lines before the error result") {
    Fixture f;
    AdapterHarness h(f.Spec());
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    REQUIRE(h.adapter().Input("FAIL401", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "result") == 1; }));
    int retries = 0;
    for (const auto& e : h.Find("claude:message", "system")) {
      if (Payload(e)["subtype"] == "api_retry") ++retries;
    }
    CHECK(retries == 10);
    CHECK(h.Count("claude:error", "result_error") == 1);
  }

  TEST_CASE("max_turns reaches the CLI and its error_max_turns result is an error") {
    Fixture f;
    AdapterHarness h(f.Spec({{"max_turns", 1}, {"allowed_tools", {"Bash"}}}));
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    json spawned = Payload(h.Find("claude:process", "spawned").at(0));
    std::vector<std::string> argv = spawned["argv"];
    auto it = std::find(argv.begin(), argv.end(), "--max-turns");
    REQUIRE(it != argv.end());
    CHECK(*(it + 1) == "1");
    REQUIRE(h.adapter().Input("USE_TOOL please", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:error", "result_error") == 1; }));
    json result = Payload(h.Find("claude:message", "result").at(0));
    CHECK(result["subtype"] == "error_max_turns");
    CHECK(Payload(h.Find("claude:error", "result_error")[0])["message"] ==
          "Reached maximum number of turns (1)");
  }

  TEST_CASE("Options reach the CLI: disallowed tools, permission mode, model") {
    Fixture f;
    AdapterHarness h(f.Spec({{"disallowed_tools", {"WebFetch", "Bash"}},
                             {"permission_mode", "acceptEdits"},
                             {"model", "claude-opus-4-1"},
                             {"append_system_prompt", "Be brief."}}));
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    REQUIRE(h.adapter().Input("ping", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "result") == 1; }));
    json init = Payload(h.Find("claude:message", "system").at(0));
    CHECK(init["permissionMode"] == "acceptEdits");
    CHECK(init["model"] == "claude-opus-4-1");
    std::vector<std::string> tools = init["tools"];
    CHECK(std::find(tools.begin(), tools.end(), "Bash") == tools.end());
    CHECK(std::find(tools.begin(), tools.end(), "WebFetch") == tools.end());
    CHECK(std::find(tools.begin(), tools.end(), "Read") != tools.end());
  }

  TEST_CASE("Interrupt ends a long turn with an error result and the process stays usable") {
    Fixture f;
    AdapterHarness h(f.Spec({{"include_partial_messages", true}}));
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    REQUIRE(h.adapter().Input("SLOW count", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "stream_event") >= 5; }));
    auto reply = h.adapter().Command(SessionCommand{"interrupt"});
    REQUIRE(reply.ok());
    std::string rid = json::parse(*reply)["request_id"];
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "result") == 1; }, 5000));
    auto req = h.Find("claude:input", "control_request");
    REQUIRE(req.size() == 1);
    CHECK(Payload(req[0])["request"]["subtype"] == "interrupt");
    bool acked = false;
    for (const auto& e : h.Find("claude:message", "control_response")) {
      json p = Payload(e);
      if (p["response"]["request_id"] == rid && p["response"]["subtype"] == "success") acked = true;
    }
    CHECK(acked);
    json result = Payload(h.Find("claude:message", "result")[0]);
    CHECK(result["subtype"] == "error_during_execution");
    CHECK(result["is_error"] == true);
    bool aborted_seen = false;
    for (const auto& e : h.Find("claude:message", "assistant")) {
      if (Payload(e).value("aborted", false)) aborted_seen = true;
    }
    CHECK(aborted_seen);

    REQUIRE(h.adapter().Input("ping", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "result") == 2; }));
    CHECK(Payload(h.Find("claude:message", "result")[1])["result"] == "pong");
  }

  TEST_CASE("Control requests: unknown subtype gets an error response; set_model applies") {
    Fixture f;
    AdapterHarness h(f.Spec());
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    auto bad = h.adapter().Command(SessionCommand{"control", R"({"subtype":"no_such_subtype"})"});
    REQUIRE(bad.ok());
    auto model = h.adapter().Command(
        SessionCommand{"control", R"({"subtype":"set_model","model":"claude-opus-4-1"})"});
    REQUIRE(model.ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "control_response") == 2; }));
    auto resp = h.Find("claude:message", "control_response");
    CHECK(Payload(resp[0])["response"]["subtype"] == "error");
    CHECK(Payload(resp[0])["response"]["error"] ==
          "Unsupported control request subtype: no_such_subtype");
    CHECK(Payload(resp[1])["response"]["response"]["model"] == "claude-opus-4-1");
    CHECK(h.adapter().Command(SessionCommand{"control", "[]"}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(h.adapter().Command(SessionCommand{"frobnicate"}).status().code() ==
          StatusCode::kInvalidArgument);
  }

  TEST_CASE("Permission prompts over stdio: the CLI asks, a control_response answers") {
    Fixture f;
    AdapterHarness h(f.Spec({{"permission_prompt_tool", "stdio"}}));
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    REQUIRE(h.adapter().Input("USE_TOOL please", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "control_request") == 1; }));
    json ask = Payload(h.Find("claude:message", "control_request")[0]);
    CHECK(ask["request"]["subtype"] == "can_use_tool");
    json answer = {{"request_id", ask["request_id"]},
                   {"response", {{"behavior", "deny"}, {"message", "Denied by test"}}}};
    REQUIRE(h.adapter().Command(SessionCommand{"control_response", answer.dump()}).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "result") == 1; }));
    json tool_result = Payload(h.Find("claude:message", "user").at(0));
    CHECK(tool_result["message"]["content"][0]["is_error"] == true);
    CHECK(tool_result["message"]["content"][0]["content"] == "Denied by test");
  }

  TEST_CASE("Unknown line types are recorded by type; a non-JSON line becomes an error event") {
    Fixture f;
    AdapterHarness h(f.Spec());
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    REQUIRE(h.adapter().Input("UNKNOWN_TYPES and GARBAGE", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "result") == 1; }));
    CHECK(h.Count("claude:message", "rate_limit_event") == 1);
    CHECK(h.Count("claude:message", "future_line_type") == 1);
    auto unknown = h.Find("claude:message", "unknown");
    REQUIRE(unknown.size() == 2);
    CHECK(unknown[0].payload == R"({"no_type_at_all":true})");
    CHECK(unknown[1].payload == "[1,2,3]");
    auto bad = h.Find("claude:error", "invalid_json");
    REQUIRE(bad.size() == 1);
    CHECK(bad[0].payload == "this line is not JSON {");  // the raw text, kept exact
    CHECK(bad[0].encoding == Encoding::kText);
    CHECK(Payload(h.Find("claude:message", "result")[0])["is_error"] == false);
  }

  TEST_CASE("Killed mid-turn: no result, the abort is recorded") {
    Fixture f;
    AdapterHarness h(f.Spec());
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    REQUIRE(h.adapter().Input("SLOW count", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "system") >= 1; }));
    int pid = Pid(h);
    REQUIRE(::kill(pid, SIGTERM) == 0);
    REQUIRE(h.RunUntil([&] { return h.exited(); }));
    CHECK(h.Count("claude:message", "result") == 0);
    CHECK(h.exit_info().exit_code == 143);  // as the real CLI on SIGTERM
    CHECK_FALSE(h.exit_info().error.empty());
    auto aborted = h.Find("claude:error", "aborted");
    REQUIRE(aborted.size() == 1);
    CHECK(Payload(aborted[0])["exitCode"] == 143);
    CHECK(Payload(h.Find("claude:process", "exited")[0])["midTurn"] == true);
  }

  TEST_CASE("A CLI that dies by a signal mid-turn is recorded with the signal") {
    Fixture f;
    AdapterHarness h(f.Spec());
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    REQUIRE(h.adapter().Input("CRASH", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.exited(); }));
    CHECK(h.exit_info().signal == SIGKILL);
    CHECK(h.Count("claude:error", "aborted") == 1);
    CHECK(h.exit_info().error == "the CLI ended mid-turn without a result");
  }

  TEST_CASE("A missing binary is an error event and a failed start, not a crash") {
    Fixture f;
    AdapterHarness h(f.Spec({{"bin", "/nonexistent/claude"}}));
    Status s = h.Start(ClaudeAdapterFactory());
    CHECK(s.code() == StatusCode::kNotFound);
    CHECK(s.message().find("/nonexistent/claude") != std::string::npos);
    auto err = h.Find("claude:error", "spawn_failed");
    REQUIRE(err.size() == 1);
    CHECK(Payload(err[0])["errno"] == "ENOENT");
  }

  TEST_CASE("The binary comes from DISPATCH_CLAUDE_BIN when the option is not set") {
    Fixture f;
    SessionSpec spec = f.Spec();
    json o = json::parse(spec.options_json);
    o.erase("bin");
    spec.options_json = o.dump();
    ::setenv("DISPATCH_CLAUDE_BIN", kFake.c_str(), 1);
    {
      AdapterHarness h(spec);
      REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
      CHECK(json::parse(h.adapter().Describe())["bin"] == kFake);
      h.adapter().Stop(true);
      REQUIRE(h.RunUntil([&] { return h.exited(); }));
    }
    ::setenv("DISPATCH_CLAUDE_BIN", "/nonexistent/from-env", 1);
    {
      AdapterHarness h(spec);
      CHECK(h.Start(ClaudeAdapterFactory()).code() == StatusCode::kNotFound);
    }
    ::unsetenv("DISPATCH_CLAUDE_BIN");
  }

  TEST_CASE("Bad options fail the factory with InvalidArgument") {
    Fixture f;
    AdapterHarness h(f.Spec({{"max_turns", "three"}}));
    CHECK(h.Start(ClaudeAdapterFactory()).code() == StatusCode::kInvalidArgument);
  }

  TEST_CASE("Resume relaunches with --resume from the same cwd and continues the conversation") {
    Fixture f;
    json meta;
    {
      AdapterHarness h(f.Spec());
      REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
      REQUIRE(h.adapter().Input("ping", Encoding::kText).ok());
      REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "result") == 1; }));
      h.adapter().Stop(false);
      REQUIRE(h.RunUntil([&] { return h.exited(); }));
      meta = h.meta();
    }
    AdapterHarness h(f.Spec(json::object(), /*resume=*/true, meta));
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    json spawned = Payload(h.Find("claude:process", "spawned").at(0));
    CHECK(spawned["argv"].back() == "--resume=" + meta["conversationId"].get<std::string>());
    CHECK(spawned["resume"] == true);
    REQUIRE(h.adapter().Input("ping after resume", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "result") == 1; }));
    json result = Payload(h.Find("claude:message", "result")[0]);
    CHECK(result["session_id"] == meta["conversationId"]);
    CHECK(result["total_cost_usd"].get<double>() > 0.0003);  // running total across runs
    CHECK(h.Count("claude:error") == 0);
  }

  TEST_CASE("Resuming a conversation the CLI does not know is an error event, not a crash") {
    Fixture f;
    json meta = {{"conversationId", "11111111-2222-4333-8444-555555555555"},
                 {"conversationStarted", true}};
    AdapterHarness h(f.Spec(json::object(), true, meta));
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    REQUIRE(h.RunUntil([&] { return h.exited(); }));
    CHECK(h.exit_info().exit_code == 1);
    CHECK(h.exit_info().error.find("unknown conversation") != std::string::npos);
    auto err = h.Find("claude:error", "unknown_conversation");
    REQUIRE(err.size() == 1);
    CHECK(Payload(err[0])["message"] ==
          "No conversation found with session ID: 11111111-2222-4333-8444-555555555555");
    json exited = Payload(h.Find("claude:process", "exited").at(0));
    CHECK(exited["stderr"].get<std::string>().find("No conversation found") != std::string::npos);
  }

  TEST_CASE("Resuming before any turn pins the same id again instead of --resume") {
    Fixture f;
    json meta = {{"conversationId", "0f0e0d0c-0b0a-4908-8706-050403020100"}};
    AdapterHarness h(f.Spec(json::object(), true, meta));
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    json spawned = Payload(h.Find("claude:process", "spawned").at(0));
    CHECK(spawned["argv"].back() == "--session-id=0f0e0d0c-0b0a-4908-8706-050403020100");
    REQUIRE(h.adapter().Input("ping", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "result") == 1; }));
    CHECK(Payload(h.Find("claude:message", "result")[0])["session_id"] ==
          "0f0e0d0c-0b0a-4908-8706-050403020100");
  }

  TEST_CASE("Resume without a recorded conversation id is refused") {
    Fixture f;
    AdapterHarness h(f.Spec(json::object(), true, json::object()));
    CHECK(h.Start(ClaudeAdapterFactory()).code() == StatusCode::kInvalidArgument);
  }

  TEST_CASE("Graceful stop escalates: stdin closed, then SIGTERM after the grace period") {
    Fixture f;
    AdapterHarness h(f.Spec({{"close_grace_ms", 200}, {"term_grace_ms", 2000}}));
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    REQUIRE(h.adapter().Input("SLOW count", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "system") >= 1; }));
    auto t0 = std::chrono::steady_clock::now();
    h.adapter().Stop(false);
    REQUIRE(h.RunUntil([&] { return h.exited(); }, 5000));
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - t0)
                  .count();
    CHECK(ms >= 150);
    CHECK(ms < 2000);
    CHECK(h.exit_info().exit_code == 143);
    CHECK(h.exit_info().error.empty());  // a stop we asked for is not an error
    CHECK(h.Count("claude:error", "aborted") == 1);  // but the lost turn is recorded
    CHECK(Payload(h.Find("claude:process", "exited")[0])["stopRequested"] == true);
  }

  TEST_CASE("Closing stdin mid-turn lets the turn finish") {
    Fixture f;
    AdapterHarness h(f.Spec({{"env", {{"FAKE_CLAUDE_SLOW_MS", "300"}}}}));
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    REQUIRE(h.adapter().Input("SLOW count", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "system") >= 1; }));
    h.adapter().Stop(false);
    REQUIRE(h.RunUntil([&] { return h.exited(); }));
    CHECK(h.Count("claude:message", "result") == 1);
    CHECK(h.exit_info().exit_code == 0);
    CHECK(h.Count("claude:error") == 0);
  }

  TEST_CASE("Messages sent during a turn are queued, each its own turn") {
    Fixture f;
    AdapterHarness h(f.Spec({{"env", {{"FAKE_CLAUDE_SLOW_MS", "200"}}}}));
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    REQUIRE(h.adapter().Input("SLOW count", Encoding::kText).ok());
    REQUIRE(h.adapter().Input("ping", Encoding::kText).ok());
    REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "result") == 2; }));
    int inits = 0;
    for (const auto& e : h.Find("claude:message", "system")) inits += Payload(e)["subtype"] == "init";
    CHECK(inits == 2);
    h.adapter().Stop(false);
    REQUIRE(h.RunUntil([&] { return h.exited(); }));
    CHECK(h.Count("claude:error") == 0);
  }

  TEST_CASE("Destroying the adapter with the CLI running kills and reaps it") {
    Fixture f;
    int pid = 0;
    {
      AdapterHarness h(f.Spec());
      REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
      REQUIRE(h.adapter().Input("SLOW count", Encoding::kText).ok());
      REQUIRE(h.RunUntil([&] { return h.Count("claude:message", "system") >= 1; }));
      pid = Pid(h);
    }  // the harness checks that the loop closes with no handle left
    CHECK(ProcessGone(pid));  // killed and reaped: no zombie either
  }

  TEST_CASE("Bad input is refused before anything is written") {
    Fixture f;
    AdapterHarness h(f.Spec());
    REQUIRE(h.Start(ClaudeAdapterFactory()).ok());
    CHECK(h.adapter().Input("{\"not\":\"content\"}", Encoding::kJson).code() ==
          StatusCode::kInvalidArgument);
    CHECK(h.adapter().Input("\xff", Encoding::kBytes).code() == StatusCode::kInvalidArgument);
    CHECK(h.Count("claude:input") == 0);
    h.adapter().Stop(true);
    REQUIRE(h.RunUntil([&] { return h.exited(); }));
    CHECK(h.exit_info().signal == SIGKILL);
  }
}

// The stand-in itself must refuse what the real CLI refuses.
TEST_SUITE("FakeClaude") {
  std::string Run(const std::string& args, const std::string& stdin_text, int* rc) {
    TempDir d;
    std::string in = d.file("in"), err = d.file("err"), out = d.file("out");
    std::ofstream(in) << stdin_text;
    std::string cmd = "cd " + d.path() + " && FAKE_CLAUDE_HOME=" + d.path() + " " + kFake + " " +
                      args + " <" + in + " >" + out + " 2>" + err;
    int status = std::system(cmd.c_str());
    *rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::ifstream e(err);
    return std::string((std::istreambuf_iterator<char>(e)), std::istreambuf_iterator<char>());
  }

  TEST_CASE("It refuses stream-json without --verbose, as the real CLI does") {
    int rc = 0;
    std::string err = Run("-p --output-format stream-json --input-format stream-json", "", &rc);
    CHECK(rc == 1);
    CHECK(err.find("requires --verbose") != std::string::npos);
  }

  TEST_CASE("A non-JSON stdin line is fatal with the recorded message") {
    int rc = 0;
    std::string err = Run("-p --output-format stream-json --input-format stream-json --verbose",
                          "this is not json\n", &rc);
    CHECK(rc == 1);
    std::ifstream f(std::string(DISPATCH_TEST_FIXTURES) + "/claude-cli/badjson.err");
    std::string want((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    CHECK(err == want);
  }

  TEST_CASE("An unknown stdin type is ignored and the turn after it runs") {
    int rc = 0;
    std::string err = Run("-p --output-format stream-json --input-format stream-json --verbose",
                          "{\"type\":\"bogus\"}\n"
                          "{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":\"ping\"},"
                          "\"parent_tool_use_id\":null,\"session_id\":\"\"}\n",
                          &rc);
    CHECK(rc == 0);
    CHECK(err.empty());
  }
}
