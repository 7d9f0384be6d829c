// asciicast v2 export and JSON Lines export/import on real stores.
#include "dispatch/recording.h"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "support/store_helpers.h"
#include "support/temp_dir.h"

namespace dispatch {
namespace {

using json = nlohmann::json;
using testing::Ev;
using testing::OpenStore;
using testing::TempDir;

NewEvent At(NewEvent e, int64_t ts) {
  e.ts_us = ts;
  return e;
}

NewEvent Json(std::string channel, std::string type, std::string payload) {
  return Ev(std::move(payload), std::move(channel), std::move(type), Encoding::kJson);
}

std::vector<json> Lines(const std::string& s) {
  std::vector<json> v;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line)) v.push_back(json::parse(line));
  return v;
}

TEST_CASE("asciicast: header, relative times, resizes, UTF-8 joined across chunks, no redacted input") {
  TempDir dir;
  auto store = OpenStore(dir.file("s.db"));
  const int64_t t0 = 1700000000000000;
  std::vector<NewEvent> evs = {
      At(Json("system:status", "created", R"({"kind":"pty","options":{"cols":100,"rows":30}})"), t0),
      At(Json("system:status", "started", R"({"pid":1,"shell":"/bin/bash","cols":100,"rows":30})"), t0 + 1000),
      At(Ev("h\xc3"), t0 + 500000),  // é cut in two
      At(Ev("\xa9llo\r\n"), t0 + 600000),
      At(Json("pty:resize", "dimensions", R"({"cols":90,"rows":20})"), t0 + 1500000),
      At(Ev("secret? ", "pty:stdin", "input", Encoding::kBytes), t0 + 1600000),
      At(Json("pty:stdin", "input", R"({"redacted":true,"length":6})"), t0 + 1700000),
      At(Ev("bye\x1b[0m\xff"), t0 + 2000000),
      At(Json("system:status", "closed", R"({"exitCode":0,"signal":null})"), t0 + 2100000)};
  REQUIRE(store->Append("cast", evs).ok());
  std::ostringstream out;
  AsciicastOptions o;
  o.include_input = true;
  auto r = ExportAsciicast(*store, "cast", out, o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  auto lines = Lines(out.str());
  REQUIRE(lines.size() == 6);
  CHECK(lines[0]["version"] == 2);
  CHECK(lines[0]["width"] == 100);
  CHECK(lines[0]["height"] == 30);
  CHECK(lines[0]["timestamp"] == 1700000000);
  CHECK(lines[0]["env"]["SHELL"] == "/bin/bash");
  CHECK(lines[1][1] == "o");
  CHECK(lines[1][2] == "h");
  CHECK(lines[1][0].get<double>() == doctest::Approx(0.5));
  CHECK(lines[2][2] == "éllo\r\n");
  CHECK(lines[3][1] == "r");
  CHECK(lines[3][2] == "90x20");
  CHECK(lines[4][1] == "i");
  CHECK(lines[4][2] == "secret? ");
  CHECK(lines[5][2] == "bye\x1b[0m\xef\xbf\xbd");
  CHECK(r->redacted_skipped == 1);
  CHECK(r->invalid_utf8_bytes == 1);
  CHECK(out.str().find("redacted") == std::string::npos);
  // Without --input no "i" at all.
  std::ostringstream out2;
  REQUIRE(ExportAsciicast(*store, "cast", out2).ok());
  CHECK(out2.str().find("\"i\"") == std::string::npos);
  std::ostringstream none;
  CHECK(ExportAsciicast(*store, "missing", none).status().code() == StatusCode::kNotFound);
}

TEST_CASE("JSON Lines round-trips every encoding byte for byte into another store") {
  TempDir dir;
  auto a = OpenStore(dir.file("a.db"));
  std::string binary("\x00\x01\xff\xfe bin\x1b[", 10);
  std::vector<NewEvent> evs = {
      Json("system:status", "created", R"({"kind":"pty", "spaced" : [1, 2]})"),
      Ev(binary),
      Ev("plain text ünïcode", "file:edit", "text", Encoding::kText, "id-1"),
      Ev("bad \xff text", "file:edit", "text", Encoding::kText),
      Json("claude:message", "assistant", R"({"z":1,"a":{"b":"\u00e9\n"}})"),
      Ev("", "pty:stdout", "chunk"),
  };
  for (auto& e : evs) e.ts_us = 1700000000123456;
  REQUIRE(a->Append("run-1", evs).ok());
  REQUIRE(a->Append("run-2", std::vector<NewEvent>{Ev("other")}).ok());
  SessionRecord rec;
  rec.run_id = "run-1";
  rec.kind = "pty";
  rec.status = SessionStatus::kStopped;
  rec.workspace = "/w";
  rec.meta = R"({"x":1})";
  REQUIRE(a->catalog().PutSession(rec).ok());

  std::ostringstream out;
  auto ex = ExportJsonl(*a, "run-1", out);
  REQUIRE(ex.ok());
  CHECK(ex->events == 6);
  std::ostringstream out2;
  REQUIRE(ExportJsonl(*a, "run-2", out2).ok());

  auto b = OpenStore(dir.file("b.db"));
  std::istringstream in(out.str() + out2.str());
  auto im = ImportJsonl(*b, in);
  REQUIRE_MESSAGE(im.ok(), im.status().ToString());
  CHECK(im->events == 7);
  CHECK(im->sessions == 1);
  CHECK(im->runs == std::vector<std::string>{"run-1", "run-2"});
  CHECK(im->renumbered.empty());
  for (const char* run : {"run-1", "run-2"}) {
    auto ea = a->ReadEvents(run, 0);
    auto eb = b->ReadEvents(run, 0);
    REQUIRE(ea.ok());
    REQUIRE(eb.ok());
    REQUIRE(ea->size() == eb->size());
    for (size_t i = 0; i < ea->size(); ++i) {
      Event x = (*ea)[i], y = (*eb)[i];
      x.position = y.position = 0;  // store-wide order differs by design
      CHECK(x == y);
    }
  }
  auto s = b->catalog().GetSession("run-1");
  REQUIRE(s.ok());
  CHECK(s->workspace == "/w");
  CHECK(s->kind == "pty");

  // Importing again: the runs exist, nothing is written.
  std::istringstream again(out.str());
  auto dup = ImportJsonl(*b, again);
  CHECK(dup.status().code() == StatusCode::kConflict);
  CHECK(*b->LastSeq("run-1") == 6);
}

TEST_CASE("Import refuses malformed lines with their line number") {
  TempDir dir;
  auto store = OpenStore(dir.file("s.db"));
  std::istringstream in(
      "{\"runId\":\"r\",\"seq\":1,\"ts\":1,\"channel\":\"pty:stdout\",\"type\":\"chunk\","
      "\"encoding\":\"bytes\",\"payload\":\"aGk=\"}\n"
      "{not json\n");
  auto r = ImportJsonl(*store, in);
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK(r.status().message().find("line 2") != std::string::npos);
  std::istringstream bad64(
      "{\"runId\":\"q\",\"seq\":1,\"channel\":\"c\",\"type\":\"t\",\"encoding\":\"bytes\","
      "\"payload\":\"!!!\"}\n");
  CHECK(ImportJsonl(*store, bad64).status().code() == StatusCode::kInvalidArgument);
  std::istringstream badrun(
      "{\"runId\":\"bad id\",\"seq\":1,\"channel\":\"c\",\"type\":\"t\",\"encoding\":\"text\","
      "\"payload\":\"x\"}\n");
  CHECK(ImportJsonl(*store, badrun).status().code() == StatusCode::kInvalidArgument);
  // A json payload nested 100k deep: refused by name (dumping it would
  // recurse once per level), not a crash.
  std::istringstream deep(
      "{\"runId\":\"q\",\"seq\":1,\"channel\":\"c\",\"type\":\"t\",\"encoding\":\"json\","
      "\"payload\":" + std::string(100000, '[') + std::string(100000, ']') + "}\n");
  auto d = ImportJsonl(*store, deep);
  CHECK(d.status().code() == StatusCode::kInvalidArgument);
  CHECK(d.status().message().find("nested more than 256 deep") != std::string::npos);
  CHECK(*store->LastSeq("q") == 0);
}

}  // namespace
}  // namespace dispatch
