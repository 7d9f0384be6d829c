// Unit tests of dispatch-host's parts that need no server: the wire format
// (native and Socket.IO), base64 from clients, configuration parsing and validation, the
// key check, the failure limiter and the Origin check.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "auth.h"
#include "config.h"
#include "wire.h"

using namespace dispatch;
using namespace dispatch::host;

namespace {

Result<ParseOutcome> Parse(std::vector<std::string> args, std::vector<std::string> env = {}) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  return ParseServeArgs(static_cast<int>(argv.size()), argv.data(), envp.data());
}

}  // namespace

TEST_CASE("Clients may send base64 in either alphabet") {
  // (The codec itself is tested in tests/util/text_codec_test.cc.)
  CHECK(Base64Decode("//79AAEC") == std::string("\xff\xfe\xfd\x00\x01\x02", 6));
  CHECK(Base64Decode("__79AAEC") == std::string("\xff\xfe\xfd\x00\x01\x02", 6));
  CHECK(Base64Decode("-A==") == std::string("\xf8", 1));
  CHECK(!Base64Decode("a$b="));
}

TEST_CASE("Native frames parse into event, data and id") {
  auto m = ParseNativeFrame(R"({"event":"run:attach","data":{"runId":"r1","afterSeq":3},"id":9})");
  REQUIRE(m.ok());
  CHECK(m->event == "run:attach");
  CHECK(m->data["afterSeq"] == 3);
  CHECK(m->id == 9);
  CHECK(!ParseNativeFrame("not json").ok());
  CHECK(!ParseNativeFrame("[1,2]").ok());
  CHECK(!ParseNativeFrame(R"({"data":{}})").ok());
  CHECK(!ParseNativeFrame(R"({"event":"x","data":[1]})").ok());
  CHECK(!ParseNativeFrame(R"({"event":"x","id":"7"})").ok());
  // An id is echoed in its reply, so it must fit an int64 exactly: from 2^63
  // up nlohmann parses it unsigned, and it would come back wrapped.
  auto top = ParseNativeFrame(R"({"event":"x","id":9223372036854775807})");
  REQUIRE(top.ok());
  CHECK(*top->id == INT64_MAX);
  auto bottom = ParseNativeFrame(R"({"event":"x","id":-9223372036854775808})");
  REQUIRE(bottom.ok());
  CHECK(*bottom->id == INT64_MIN);
  CHECK(!ParseNativeFrame(R"({"event":"x","id":9223372036854775808})").ok());
  CHECK(!ParseNativeFrame(R"({"event":"x","id":18446744073709551615})").ok());
  // Deep nesting is refused before the recursive parser sees it.
  std::string deep = R"({"event":"x","data":{"a":)" + std::string(100000, '[') + "}}";
  CHECK(!ParseNativeFrame(deep).ok());
}

TEST_CASE("Socket.IO frames: ping, connect with auth, events with ack ids") {
  auto p = ParseSioFrame("2");
  REQUIRE(p.ok());
  CHECK(p->kind == SioFrame::kPing);
  auto c = ParseSioFrame(R"(40{"key":"k"})");
  REQUIRE(c.ok());
  CHECK(c->kind == SioFrame::kConnect);
  CHECK(c->connect_auth["key"] == "k");
  auto e = ParseSioFrame(R"(4212["run:input",{"runId":"r","data":"ls\r"}])");
  REQUIRE(e.ok());
  CHECK(e->kind == SioFrame::kEvent);
  CHECK(e->message.event == "run:input");
  CHECK(e->message.id == 12);
  CHECK(e->message.data["data"] == "ls\r");
  auto n = ParseSioFrame(R"(42["client:hello"])");
  REQUIRE(n.ok());
  CHECK(!n->message.id);
  CHECK(n->message.data.is_object());
  CHECK(!ParseSioFrame(R"(42/admin,["x",{}])").ok());
  CHECK(!ParseSioFrame("42{}").ok());
  CHECK(!ParseSioFrame("451-[\"x\",{\"_placeholder\":true,\"num\":0}]").ok());
}

TEST_CASE("Outgoing frames have the documented shapes") {
  CHECK(EncodeAck(Transport::kSocketIo, 5, {{"ok", true}}) == R"(435[{"ok":true}])");
  CHECK(EncodeEvent(Transport::kSocketIo, "session:closed", {{"runId", "r"}}) ==
        R"(42["session:closed",{"runId":"r"}])");
  auto native = nlohmann::json::parse(EncodeErrorReply(Transport::kNative, 3, "not_found", "no"));
  CHECK(native["event"] == "error");
  CHECK(native["id"] == 3);
  CHECK(native["data"]["code"] == "not_found");
  auto sio = EncodeErrorReply(Transport::kSocketIo, 4, "forbidden", "viewer");
  CHECK(sio == R"(434[{"error":{"code":"forbidden","message":"viewer"}}])");
}

TEST_CASE("Events keep bytes exact: base64 for bytes, JSON values for json") {
  std::string payload("a\0b\xff\xfe", 5);
  EventView v{"run-1", 4, 10, 1'700'000'000'123'456, "pty:stdout", "chunk", payload,
              Encoding::kBytes, ""};
  auto j = EventToJson(v);
  CHECK(j["seq"] == 4);
  CHECK(j["timestamp"] == 1'700'000'000'123);
  CHECK(j["encoding"] == "bytes");
  CHECK(*Base64Decode(j["payload"].get<std::string>()) == payload);
  EventView jv{"run-1", 5, 11, 0, "system:status", "closed", R"({"exitCode":0})", Encoding::kJson, "x"};
  auto jj = EventToJson(jv);
  CHECK(jj["payload"]["exitCode"] == 0);
  CHECK(jj["id"] == "x");
  CHECK(MakeWireEvent(jv)->closes);
  // Invalid UTF-8 in a text payload never throws.
  EventView tv{"run-1", 6, 12, 0, "x", "y", "\xff", Encoding::kText, ""};
  CHECK_NOTHROW(MakeWireEvent(tv));
  std::vector<std::shared_ptr<const WireEvent>> batch = {MakeWireEvent(v), MakeWireEvent(jv)};
  auto frame = nlohmann::json::parse(EncodeEvents(Transport::kNative, "run-1", batch));
  CHECK(frame["event"] == "run:event:batch");
  CHECK(frame["data"]["events"].size() == 2);
  CHECK(frame["data"]["runId"] == "run-1");
}

TEST_CASE("The direct serialisation of byte events equals the JSON tree form") {
  std::string payload;
  for (int i = 0; i < 1000; ++i) payload += static_cast<char>(i * 7);
  for (size_t n : {size_t{0}, size_t{1}, size_t{2}, size_t{3}, size_t{1000}}) {
    EventView v{"run-x", 42, 7, 1'700'000'000'999'000, "pty:stdout", "chunk",
                std::string_view(payload).substr(0, n), Encoding::kBytes, n == 2 ? "id-2" : ""};
    auto fast = nlohmann::json::parse(MakeWireEvent(v)->json());
    CHECK(fast == EventToJson(v));
  }
  std::vector<std::shared_ptr<const WireEvent>> one = {MakeWireEvent(
      EventView{"r", 1, 1, 0, "pty:stdout", "chunk", "x", Encoding::kBytes, ""})};
  std::string framed = EncodeEvents(Transport::kSocketIo, "r", one, 16);
  CHECK(framed.substr(0, 16) == std::string(16, '\0'));
  auto arr = nlohmann::json::parse(framed.substr(16).substr(2));
  CHECK(arr[0] == "run:event");
  CHECK(arr[1]["payload"] == "eA==");
}

TEST_CASE("The direct serialisation of text events is byte for byte the tree's dump") {
  // Every byte value below 0x80 (control bytes, quote, backslash, DEL),
  // multi-byte UTF-8, and invalid UTF-8 (nlohmann's replacement rules).
  std::string ascii;
  for (int c = 0; c < 0x80; ++c) ascii += static_cast<char>(c);
  const std::vector<std::string> payloads = {"",       "x",        "\x7f",  ascii,
                                             "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
                                             "a\xff b", "\xc3",   "\xed\xa0\x80"};
  for (const std::string& p : payloads) {
    for (const char* id : {"", "id \"1\"\n"}) {
      EventView v{"run-t", 3, 9, 1'700'000'000'555'000, "pty:stdin", "input", p,
                  Encoding::kText, id};
      CHECK(MakeWireEvent(v)->json() ==
            EventToJson(v).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    }
  }
  std::vector<std::shared_ptr<const WireEvent>> one = {MakeWireEvent(
      EventView{"r", 1, 1, 0, "pty:stdin", "input", "q\"", Encoding::kText, ""})};
  CHECK(EncodeEvents(Transport::kNative, "r", one) ==
        R"({"event":"run:event","data":{"channel":"pty:stdin","encoding":"text","payload":"q\"",)"
        R"("runId":"r","seq":1,"timestamp":0,"type":"input"}})");
  CHECK(EncodeEventRaw(Transport::kNative, "a\"b", "{}") == R"({"event":"a\"b","data":{}})");
}

TEST_CASE("An event's own frame is the run:event frame, with headroom in front") {
  std::string payload;
  for (int i = 0; i < 5000; ++i) payload += static_cast<char>(i * 13);
  const std::vector<EventView> events = {
      {"run-f", 8, 3, 1'700'000'000'000'000, "pty:stdout", "chunk", payload, Encoding::kBytes, ""},
      {"run-f", 9, 4, 0, "pty:stdin", "input", "ls\r", Encoding::kText, "k1"},
      {"run-f", 10, 5, 0, "system:status", "closed", R"({"exitCode":3})", Encoding::kJson, ""}};
  for (const EventView& v : events) {
    for (size_t headroom : {size_t{0}, size_t{16}}) {
      auto w = MakeWireEvent(v, headroom);
      CHECK(w->headroom() == headroom);
      CHECK(std::string(w->NativeFrame() - headroom, headroom) == std::string(headroom, '\0'));
      std::string frame(w->NativeFrame(), w->NativeFrameSize());
      CHECK(frame == EncodeEvents(Transport::kNative, "run-f", {w}));
      auto j = nlohmann::json::parse(frame);
      CHECK(j["event"] == "run:event");
      CHECK(j["data"] == EventToJson(v));
      CHECK(w->seq == v.seq);
      CHECK(w->run_id == "run-f");
    }
  }
  CHECK(MakeWireEvent(events[2])->closes);
  CHECK_FALSE(MakeWireEvent(events[0])->closes);
}

TEST_CASE("Flags win over the environment and bad values are clear errors") {
  auto r = Parse({"serve", "--listen", "0.0.0.0:8080", "--allow-origin", "https://a",
                  "--allow-origin=https://b"},
                 {"DISPATCH_LISTEN=127.0.0.1:9", "DISPATCH_DATA=/tmp/x"});
  REQUIRE(r.ok());
  CHECK(r->config.listen_host == "0.0.0.0");
  CHECK(r->config.port == 8080);
  CHECK(r->config.data_dir == "/tmp/x");
  CHECK(r->config.allow_origins == std::vector<std::string>{"https://a", "https://b"});
  auto v6 = Parse({"serve", "--listen", "[::1]:7"});
  REQUIRE(v6.ok());
  CHECK(v6->config.listen_host == "::1");
  CHECK(!Parse({"serve", "--listen", "host:99999"}).ok());
  CHECK(!Parse({"serve", "--key"}).ok());
  CHECK(!Parse({"serve", "--bogus"}).ok());
  CHECK(!Parse({"serve"}, {"DISPATCH_KEY="}).ok());
  CHECK(Parse({"serve", "-h"})->show_help);
}

TEST_CASE("FinalizeConfig refuses weak keys and no-auth off loopback, generates keys") {
  Config c;
  c.workspaces_root = "/tmp";
  c.key = "changeme";
  CHECK(!FinalizeConfig(c).ok());
  c.key = "short";
  CHECK(!FinalizeConfig(c).ok());
  c.key = "";
  REQUIRE(FinalizeConfig(c).ok());
  CHECK(c.key_generated);
  CHECK(c.key.size() == 43);
  Config d;
  d.workspaces_root = "/tmp";
  d.no_auth = true;
  d.listen_host = "0.0.0.0";
  CHECK(!FinalizeConfig(d).ok());
  d.listen_host = "127.0.0.1";
  CHECK(FinalizeConfig(d).ok());
  CHECK(IsLoopbackHost("127.1.2.3"));
  CHECK(!IsLoopbackHost("10.0.0.1"));
  CHECK(GenerateKey() != GenerateKey());
}

TEST_CASE("Key check is exact; the limiter blocks an address after repeated failures") {
  CHECK(ConstantTimeEquals("abc", "abc"));
  CHECK(!ConstantTimeEquals("abc", "abd"));
  CHECK(!ConstantTimeEquals("abc", "abcd"));
  CHECK(!ConstantTimeEquals("", "a"));
  CHECK(BearerToken("Bearer  tok ") == "tok");
  CHECK(BearerToken("bearer tok") == "tok");
  CHECK(BearerToken("Basic xyz").empty());
  AuthGuard g("the-right-key-123", 3, 10);
  CHECK(!g.Check("a", "x", 0));
  CHECK(!g.Check("a", "x", 1));
  CHECK(!g.Blocked("a", 2));
  CHECK(!g.Check("a", "x", 2));
  CHECK(g.Blocked("a", 3));
  CHECK(!g.Blocked("b", 3));
  CHECK(g.RetryAfterSeconds("a", 3) == 10);
  CHECK(!g.Blocked("a", 10'003));
  CHECK(g.Check("a", "the-right-key-123", 10'004));
}

TEST_CASE("Origin: absent and same-origin pass, others only when allowed") {
  std::vector<std::string> none;
  CHECK(OriginAllowed("", "127.0.0.1:7070", none));
  CHECK(OriginAllowed("http://127.0.0.1:7070", "127.0.0.1:7070", none));
  CHECK(OriginAllowed("https://example.com", "example.com:443", none));
  CHECK(!OriginAllowed("http://evil.example", "127.0.0.1:7070", none));
  CHECK(!OriginAllowed("http://127.0.0.1:7071", "127.0.0.1:7070", none));
  CHECK(!OriginAllowed("null", "127.0.0.1:7070", none));
  std::vector<std::string> allowed = {"https://app.example"};
  CHECK(OriginAllowed("https://app.example", "127.0.0.1:7070", allowed));
  CHECK(!OriginAllowed("https://app.example.evil", "127.0.0.1:7070", allowed));
}

TEST_CASE("Query parameters are percent-decoded") {
  CHECK(QueryParam("a=1&authKey=x%2By&b", "authKey") == "x+y");
  CHECK(QueryParam("a=1", "authKey").empty());
  CHECK(PercentDecode("%zz%41") == "%zzA");
}
