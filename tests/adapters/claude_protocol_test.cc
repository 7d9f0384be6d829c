// The Claude CLI protocol pieces, checked against the recorded transcripts in
// tests/fixtures/claude-cli/.
#include <doctest/doctest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "adapters/claude/protocol.h"

using namespace dispatch;
using namespace dispatch::internal::claude;
using nlohmann::json;

namespace {

std::string Fixture(const std::string& name) {
  std::ifstream f(std::string(DISPATCH_TEST_FIXTURES) + "/claude-cli/" + name, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "missing fixture " << name);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  LineSplitter s(1 << 24);
  s.Feed(text, [&](std::string_view l, bool, size_t) { out.emplace_back(l); });
  s.Finish([&](std::string_view l, bool, size_t) { out.emplace_back(l); });
  return out;
}

}  // namespace

TEST_SUITE("ClaudeProtocol") {
  TEST_CASE("The splitter yields whole lines however the bytes are chunked") {
    std::string text = Fixture("tool_partial.out");
    std::vector<std::string> whole = Lines(text);
    REQUIRE(whole.size() > 40);
    for (size_t chunk : {1u, 7u, 4096u}) {
      std::vector<std::string> got;
      LineSplitter s(1 << 24);
      for (size_t i = 0; i < text.size(); i += chunk) {
        s.Feed(std::string_view(text).substr(i, chunk),
               [&](std::string_view l, bool t, size_t) {
                 CHECK_FALSE(t);
                 got.emplace_back(l);
               });
      }
      s.Finish([&](std::string_view l, bool, size_t) { got.emplace_back(l); });
      CHECK(got == whole);
    }
  }

  TEST_CASE("An over-long line is cut at the bound and reported with its full length") {
    LineSplitter s(10);
    std::vector<std::tuple<std::string, bool, size_t>> got;
    auto fn = [&](std::string_view l, bool t, size_t n) { got.emplace_back(std::string(l), t, n); };
    s.Feed("short\n0123456789ABCDEF", fn);
    s.Feed("GHIJ\nnext", fn);
    CHECK(s.buffered() == 4);
    s.Finish(fn);
    REQUIRE(got.size() == 3);
    CHECK(got[0] == std::make_tuple(std::string("short"), false, size_t{5}));
    CHECK(got[1] == std::make_tuple(std::string("0123456789"), true, size_t{20}));
    CHECK(got[2] == std::make_tuple(std::string("next"), false, size_t{4}));
  }

  TEST_CASE("Every recorded stdout line parses by key, whatever the key order") {
    std::map<std::string, int> types;
    for (const char* f : {"run1.out", "tool_plain.out", "tool_partial.out", "interrupt.out",
                          "controls.out", "permission.out", "maxturns.out", "fail400.out",
                          "fail401.out", "queue.out", "resume.out", "resume_bad.out",
                          "session_id.out", "eof_midturn.out", "kill.out", "unknown_type.out"}) {
      for (const auto& line : Lines(Fixture(f))) {
        ParsedLine p = ParseLine(line);
        REQUIRE_MESSAGE(p.json, f << ": " << p.error);
        CHECK(p.object);
        CHECK(IsSafeEventType(p.type));
        types[p.type]++;
      }
    }
    for (const char* t : {"system", "assistant", "user", "result", "stream_event",
                          "control_request", "control_response"}) {
      CHECK_MESSAGE(types[t] > 0, t);
    }
  }

  TEST_CASE("A result's is_error is read whatever the subtype says") {
    auto lines = Lines(Fixture("fail400.out"));
    ParsedLine r = ParseLine(lines.back());  // "type" is not the first key here
    CHECK(r.type == "result");
    CHECK(r.subtype == "success");
    CHECK(r.is_error);
    CHECK(r.error == "API Error: 400 bad request from fake");

    ParsedLine ok = ParseLine(Lines(Fixture("run1.out")).back());
    CHECK(ok.type == "result");
    CHECK_FALSE(ok.is_error);
    CHECK(ok.session_id == "981e52e2-353a-4b0c-8d51-870b9ab2a688");

    ParsedLine mt = ParseLine(Lines(Fixture("maxturns.out")).back());
    CHECK(mt.subtype == "error_max_turns");
    CHECK(mt.is_error);
    CHECK(mt.error == "Reached maximum number of turns (1)");

    // A line nested 100k deep (a broken or hostile CLI): an error, not a
    // crash of whatever would copy or dump it.
    ParsedLine deep = ParseLine("{\"type\":" + std::string(100000, '[') + std::string(100000, ']') + "}");
    CHECK_FALSE(deep.json);
    CHECK(deep.error == "nested more than 256 deep");

    ParsedLine bad = ParseLine(Lines(Fixture("resume_bad.out")).back());
    CHECK(bad.is_error);
    CHECK(IsUnknownConversationError(bad.error));
  }

  TEST_CASE("Control responses are read by their inner request id and subtype") {
    auto lines = Lines(Fixture("controls.out"));
    ParsedLine err = ParseLine(lines[1]);
    CHECK(err.type == "control_response");
    CHECK(err.request_id == "c2");
    CHECK(err.subtype == "error");
    CHECK(err.error == "Unsupported control request subtype: no_such_subtype");
    ParsedLine can = ParseLine(Lines(Fixture("permission.out"))[4]);
    CHECK(can.type == "control_request");
    CHECK(can.subtype == "can_use_tool");
    CHECK(can.request_id == "434878c3-3cb6-4123-a005-f6ca5e01a5b6");
  }

  TEST_CASE("A line that is not JSON, or has no type, is reported, not thrown") {
    ParsedLine p = ParseLine("this is not json {");
    CHECK_FALSE(p.json);
    CHECK_FALSE(p.error.empty());
    ParsedLine a = ParseLine("[1,2,3]");
    CHECK(a.json);
    CHECK_FALSE(a.object);
    CHECK(a.type.empty());
    CHECK_FALSE(ParseLine("").json);
    CHECK_FALSE(IsSafeEventType("has space"));
    CHECK_FALSE(IsSafeEventType(""));
    CHECK(IsSafeEventType("rate_limit_event"));
  }

  TEST_CASE("The user line is byte-identical to what the SDKs write") {
    std::string recorded = Fixture("example_tool_turn.stdin.ndjson");
    auto line = BuildUserLine("USE_TOOL please", Encoding::kText);
    REQUIRE(line.ok());
    CHECK(*line == recorded);
    auto same = BuildUserLine(R"("USE_TOOL please")", Encoding::kJson);
    REQUIRE(same.ok());
    CHECK(*same == recorded);
  }

  TEST_CASE("User content may be content blocks; bad content is refused") {
    auto blocks = BuildUserLine(R"([{"type":"text","text":"hi"}])", Encoding::kJson);
    REQUIRE(blocks.ok());
    json j = json::parse(*blocks);
    CHECK(j["message"]["content"][0]["text"] == "hi");
    CHECK(blocks->back() == '\n');
    CHECK(blocks->find('\n') == blocks->size() - 1);  // one line, even for "a\nb"
    auto multi = BuildUserLine("a\nb", Encoding::kText);
    REQUIRE(multi.ok());
    CHECK(multi->find('\n') == multi->size() - 1);

    CHECK(BuildUserLine("{\"a\":1}", Encoding::kJson).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(BuildUserLine("not json", Encoding::kJson).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(BuildUserLine("\xff\xfe", Encoding::kBytes).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(BuildUserLine("", Encoding::kText).status().code() == StatusCode::kInvalidArgument);
  }

  TEST_CASE("Control request lines carry the id and subtype") {
    auto line = BuildControlRequest("c5", "interrupt");
    REQUIRE(line.ok());
    CHECK(*line == "{\"type\":\"control_request\",\"request_id\":\"c5\",\"request\":"
                   "{\"subtype\":\"interrupt\"}}\n");
    auto model = BuildControlRequest("c4", "set_model", R"({"model":"claude-opus-4-1"})");
    REQUIRE(model.ok());
    json j = json::parse(*model);
    CHECK(j["request"]["subtype"] == "set_model");
    CHECK(j["request"]["model"] == "claude-opus-4-1");
    CHECK_FALSE(BuildControlRequest("x", "y", "[1]").ok());

    auto resp = BuildControlResponse("abc", R"({"behavior":"allow","updatedInput":{}})");
    REQUIRE(resp.ok());
    json r = json::parse(*resp);
    CHECK(r["type"] == "control_response");
    CHECK(r["response"]["request_id"] == "abc");
    CHECK(r["response"]["response"]["behavior"] == "allow");
  }

  TEST_CASE("Options become the CLI's argv, with the conversation pinned") {
    auto o = ParseOptions(R"({"model":"claude-sonnet-4-5","permission_mode":"acceptEdits",
        "allowed_tools":["Bash","Read"],"disallowed_tools":"WebFetch",
        "append_system_prompt":"-be brief","max_turns":3,"include_partial_messages":true})");
    REQUIRE(o.ok());
    auto args = BuildArgs(*o, "0f0e0d0c-0b0a-4908-8706-050403020100", false);
    std::vector<std::string> want = {
        "-p", "--output-format", "stream-json", "--input-format", "stream-json", "--verbose",
        "--model", "claude-sonnet-4-5", "--permission-mode", "acceptEdits",
        "--allowedTools", "Bash,Read", "--disallowedTools", "WebFetch",
        "--append-system-prompt=-be brief", "--max-turns", "3", "--include-partial-messages",
        "--session-id=0f0e0d0c-0b0a-4908-8706-050403020100"};
    CHECK(args == want);
    auto resume = BuildArgs(ClaudeOptions{}, "abc", true);
    CHECK(resume.back() == "--resume=abc");
    CHECK(resume.size() == 7);
  }

  TEST_CASE("Bad options are refused with the key named") {
    for (const char* bad : {R"({"modle":"x"})", R"({"model":5})", R"({"model":"--evil"})",
                            R"({"max_turns":-1})", R"({"allowed_tools":[1]})",
                            R"({"allowed_tools":["a,b"]})", R"({"env":{"A":1}})", "[]",
                            "not json"}) {
      auto o = ParseOptions(bad);
      CHECK_MESSAGE(o.status().code() == StatusCode::kInvalidArgument, bad);
    }
    CHECK(ParseOptions("{}").ok());
    CHECK(ParseOptions("").ok());
  }

  TEST_CASE("Options round-trip through their JSON form") {
    ClaudeOptions o;
    o.model = "m";
    o.allowed_tools = {"Bash"};
    o.max_turns = 2;
    o.env = {{"A", "b"}};
    o.close_grace_ms = 100;
    auto back = ParseOptions(ClaudeOptionsToJson(o));
    REQUIRE(back.ok());
    CHECK(back->model == "m");
    CHECK(back->allowed_tools == std::vector<std::string>{"Bash"});
    CHECK(back->max_turns == 2);
    CHECK(back->env.at("A") == "b");
    CHECK(back->close_grace_ms == 100);
    CHECK(ClaudeOptionsToJson(ClaudeOptions{}) == "{}");
  }

  TEST_CASE("New conversation ids are distinct version-4 UUIDs") {
    std::string a = NewUuid(), b = NewUuid();
    CHECK(IsUuid(a));
    CHECK(a != b);
    CHECK(a[14] == '4');
    CHECK(std::string("89ab").find(a[19]) != std::string::npos);
    CHECK_FALSE(IsUuid("not-a-uuid"));
    CHECK(IsUuid("11111111-2222-4333-8444-555555555555"));
  }
}
