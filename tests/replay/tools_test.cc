// The dispatch-host operator tools, run as the real binary on a temp store:
// sessions, events, export (asciicast played back with Debian's
// `asciinema cat` under a real pty; JSON Lines) and import.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <vector>

#include "dispatch/event_store.h"
#include "pty_capture.h"
#include "support/store_helpers.h"
#include "support/temp_dir.h"

namespace dispatch {
namespace {

using testing::CapturePty;
using testing::Ev;
using testing::OpenStore;
using testing::TempDir;

struct Run {
  int code = -1;
  std::string out, err;
};

std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Run Tool(const TempDir& dir, const std::string& args, const std::string& env = "") {
  std::string cmd = fmt::format("{} {} {} > {} 2> {}", env, DISPATCH_HOST_BIN, args,
                                dir.file("tool.out"), dir.file("tool.err"));
  int st = std::system(cmd.c_str());
  Run r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = Slurp(dir.file("tool.out"));
  r.err = Slurp(dir.file("tool.err"));
  return r;
}

NewEvent Json(std::string channel, std::string type, std::string payload) {
  return Ev(std::move(payload), std::move(channel), std::move(type), Encoding::kJson);
}

TEST_CASE("dispatch-host tools on a store holding a real terminal session") {
  TempDir dir;
  std::string data = dir.file("data");
  REQUIRE(std::system(("mkdir -p " + data).c_str()) == 0);
  auto chunks = CapturePty("printf 'h\\303\\251llo \\342\\224\\200\\n'; ls -l --color=always /", 80, 24);
  REQUIRE(!chunks.empty());
  std::string all;
  {
    auto store = OpenStore(data + "/dispatch.db");
    std::vector<NewEvent> evs = {
        Json("system:status", "created", R"({"kind":"pty","options":{"cols":80,"rows":24}})"),
        Json("system:status", "started", R"({"pid":1,"shell":"/bin/sh","cols":80,"rows":24})")};
    for (auto& c : chunks) {
      evs.push_back(Ev(c));
      all += c;
    }
    evs.push_back(Json("pty:resize", "dimensions", R"({"cols":100,"rows":30})"));
    evs.push_back(Json("pty:stdin", "input", R"({"redacted":true,"length":7})"));
    evs.push_back(Json("system:status", "closed", R"({"exitCode":0,"signal":null})"));
    REQUIRE(store->Append("term-1", evs).ok());
    REQUIRE(store->Append("other.run", std::vector<NewEvent>{Ev("x")}).ok());
  }
  std::string d = "--data " + data;

  // sessions
  Run s = Tool(dir, "sessions " + d);
  REQUIRE_MESSAGE(s.code == 0, s.err);
  CHECK(s.out.find("term-1") != std::string::npos);
  CHECK(s.out.find("pty") != std::string::npos);
  CHECK(s.out.find("closed") != std::string::npos);
  CHECK(s.out.find(fmt::format("{}", chunks.size() + 5)) != std::string::npos);
  CHECK(s.out.find("other.run") != std::string::npos);
  // DISPATCH_DATA instead of --data.
  Run s2 = Tool(dir, "sessions", "DISPATCH_DATA=" + data);
  CHECK(s2.code == 0);
  CHECK(s2.out == s.out);

  // events
  Run e = Tool(dir, "events term-1 --after-seq 2 --limit 1 " + d);
  REQUIRE_MESSAGE(e.code == 0, e.err);
  CHECK(e.out.rfind("       3  ", 0) == 0);
  CHECK(e.out.find("pty:stdout/chunk") != std::string::npos);
  CHECK(std::count(e.out.begin(), e.out.end(), '\n') == 1);

  // asciicast, played by asciinema
  std::string cast = dir.file("t.cast");
  Run x = Tool(dir, "export term-1 --format asciicast --input -o " + cast + " " + d);
  REQUIRE_MESSAGE(x.code == 0, x.err);
  std::string cast_text = Slurp(cast);
  CHECK(cast_text.rfind("{\"env\"", 0) == 0);
  CHECK(cast_text.find("redacted") == std::string::npos);
  CHECK(cast_text.find("\"r\", \"100x30\"") != std::string::npos);
  auto played = CapturePty("asciinema cat " + cast, 80, 24);
  std::string got;
  for (auto& c : played) got += c;
  CHECK(got == all);

  // jsonl → import into another store → the same events
  std::string jl = dir.file("t.jsonl");
  Run j = Tool(dir, "export term-1 --format jsonl -o " + jl + " " + d);
  REQUIRE_MESSAGE(j.code == 0, j.err);
  std::string data2 = dir.file("data2");
  Run im = Tool(dir, "import " + jl + " --data " + data2);
  REQUIRE_MESSAGE(im.code == 0, im.err);
  CHECK(im.out.find("imported " + std::to_string(chunks.size() + 5) + " events") != std::string::npos);
  {
    auto a = OpenStore(data + "/dispatch.db");
    auto b = OpenStore(data2 + "/dispatch.db");
    auto ea = a->ReadEvents("term-1", 0);
    auto eb = b->ReadEvents("term-1", 0);
    REQUIRE(ea.ok());
    REQUIRE(eb.ok());
    REQUIRE(ea->size() == eb->size());
    for (size_t i = 0; i < ea->size(); ++i) {
      CHECK((*ea)[i].payload == (*eb)[i].payload);
      CHECK((*ea)[i].ts_us == (*eb)[i].ts_us);
      CHECK((*ea)[i].seq == (*eb)[i].seq);
      CHECK((*ea)[i].channel == (*eb)[i].channel);
    }
  }
  // The import is refused the second time; jsonl from stdin works too.
  Run again = Tool(dir, "import " + jl + " --data " + data2);
  CHECK(again.code == 1);
  CHECK(again.err.find("already has") != std::string::npos);
  Run piped = Tool(dir, "import - --data " + dir.file("data3") + " < " + jl);
  CHECK(piped.code == 0);

  // Errors are clear and exit non-zero.
  Run nostore = Tool(dir, "sessions --data " + dir.file("nowhere"));
  CHECK(nostore.code == 1);
  CHECK(nostore.err.find("no store at") != std::string::npos);
  Run norun = Tool(dir, "export nope --format jsonl " + d);
  CHECK(norun.code == 1);
  CHECK(norun.err.find("not_found") != std::string::npos);
  Run badfmt = Tool(dir, "export term-1 --format mp4 " + d);
  CHECK(badfmt.code == 2);
  Run badopt = Tool(dir, "events term-1 --after-seq x " + d);
  CHECK(badopt.code == 2);
}

}  // namespace
}  // namespace dispatch
