// FileEditorAdapter on a private loop (AdapterHarness) with real files in a
// temp dir: every operation and its event, atomic writes, and confinement —
// `..`, absolute paths outside, symlink escapes (directory, file, dangling),
// sibling-prefix directories, NUL bytes — each refused with nothing touched
// outside the workspace.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "adapter_harness.h"
#include "adapters/file/file_util.h"
#include "util/text_codec.h"
#include "dispatch/adapters/file.h"
#include "support/temp_dir.h"

using namespace dispatch;
using dispatch::testing::AdapterHarness;
using dispatch::testing::TempDir;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string ReadAll(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void WriteAll(const std::string& p, const std::string& data) {
  std::ofstream f(p, std::ios::binary);
  f << data;
}

// A workspace /tmp/…/ws next to a sibling /tmp/…/ws2 and an outside dir.
struct Layout {
  TempDir base;
  std::string ws, sibling, outside;
  Layout() {
    ws = base.file("ws");
    sibling = base.file("ws2");
    outside = base.file("outside");
    fs::create_directories(ws + "/sub");
    fs::create_directories(sibling);
    fs::create_directories(outside + "/dir");
    WriteAll(outside + "/secret.txt", "outside secret");
    WriteAll(sibling + "/secret.txt", "sibling secret");
    WriteAll(ws + "/hello.txt", "hello\n");
  }
  SessionSpec Spec(json options = json::object()) const {
    SessionSpec s;
    s.run_id = "file-test";
    s.kind = "file";
    s.workspace = ws;
    s.options_json = options.dump();
    return s;
  }
};

struct Session {
  AdapterHarness h;
  explicit Session(const SessionSpec& spec) : h(spec) {
    REQUIRE(h.Start(FileAdapterFactory()).ok());
  }
  Result<json> Do(const std::string& op, const json& args) {
    auto r = h.adapter().Command(SessionCommand{op, args.dump()});
    if (!r.ok()) return r.status();
    return json::parse(*r);
  }
  json LastError() {
    auto e = h.Find("file:error", "error");
    REQUIRE(!e.empty());
    return json::parse(e.back().payload);
  }
};

}  // namespace

TEST_SUITE("FileEditorAdapter") {
  TEST_CASE("Open and read return the content and record size and hash") {
    Layout l;
    Session s(l.Spec());
    auto r = s.Do("open", {{"path", "hello.txt"}});
    REQUIRE(r.ok());
    CHECK((*r)["content"] == "hello\n");
    CHECK((*r)["encoding"] == "text");
    CHECK((*r)["sha256"] == internal::file::Sha256Hex("hello\n"));
    auto opened = s.h.Find("file:opened", "opened");
    REQUIRE(opened.size() == 1);
    json p = json::parse(opened[0].payload);
    CHECK(p["path"] == "hello.txt");
    CHECK(p["size"] == 6);
    auto content = s.h.Find("file:content", "opened");
    REQUIRE(content.size() == 1);
    CHECK(content[0].payload == "hello\n");
    CHECK(content[0].encoding == Encoding::kBytes);

    // Binary content comes back as base64, byte-exact.
    std::string bin("\x00\xff\x01zz", 5);
    WriteAll(l.ws + "/bin.dat", bin);
    auto b = s.Do("read", {{"path", "bin.dat"}});
    REQUIRE(b.ok());
    CHECK((*b)["encoding"] == "base64");
    CHECK(internal::Base64Decode((*b)["content"].get<std::string>()) == bin);
    CHECK(s.h.Count("file:read", "read") == 1);

    CHECK(s.Do("close", {{"path", "hello.txt"}}).ok());
    CHECK(s.h.Count("file:closed", "closed") == 1);
    CHECK(s.Do("close", {{"path", "hello.txt"}}).status().code() == StatusCode::kNotFound);
  }

  TEST_CASE("Write is atomic, records size and hash, and keeps the file's mode") {
    Layout l;
    Session s(l.Spec());
    ::chmod((l.ws + "/hello.txt").c_str(), 0600);
    auto r = s.Do("write", {{"path", "hello.txt"}, {"content", "new text"}});
    REQUIRE(r.ok());
    CHECK(ReadAll(l.ws + "/hello.txt") == "new text");
    struct stat st {};
    REQUIRE(::stat((l.ws + "/hello.txt").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
    auto saved = s.h.Find("file:saved", "saved");
    REQUIRE(saved.size() == 1);
    json p = json::parse(saved[0].payload);
    CHECK(p["path"] == "hello.txt");
    CHECK(p["size"] == 8);
    CHECK(p["sha256"] == internal::file::Sha256Hex("new text"));
    CHECK(p["created"] == false);
    CHECK(s.h.Find("file:content", "saved").at(0).payload == "new text");
    // No temporary file is left behind.
    int files = 0;
    for (auto& e : fs::directory_iterator(l.ws)) files += e.is_regular_file();
    CHECK(files == 1);

    // New files, binary content, nested directories on request.
    std::string bin("\x00\x01\x02\xff", 4);
    auto c = s.Do("write", {{"path", "a/b/c.bin"},
                            {"content_base64", internal::Base64Encode(bin)},
                            {"create_dirs", true}});
    REQUIRE(c.ok());
    CHECK((*c)["created"] == true);
    CHECK(ReadAll(l.ws + "/a/b/c.bin") == bin);
    auto no_parent = s.Do("write", {{"path", "x/y.txt"}, {"content", "z"}});
    CHECK(no_parent.status().code() == StatusCode::kNotFound);
    CHECK_FALSE(fs::exists(l.ws + "/x"));
  }

  TEST_CASE("A write with a stale expected hash is refused and changes nothing") {
    Layout l;
    Session s(l.Spec());
    std::string h0 = internal::file::Sha256Hex("hello\n");
    REQUIRE(s.Do("write", {{"path", "hello.txt"}, {"content", "v1"}, {"expected_sha256", h0}})
                .ok());
    auto stale =
        s.Do("write", {{"path", "hello.txt"}, {"content", "v2"}, {"expected_sha256", h0}});
    CHECK(stale.status().code() == StatusCode::kConflict);
    CHECK(ReadAll(l.ws + "/hello.txt") == "v1");
    CHECK(s.LastError()["code"] == "conflict");
  }

  TEST_CASE("Rename, delete, mkdir and list record their events") {
    Layout l;
    Session s(l.Spec());
    REQUIRE(s.Do("mkdir", {{"path", "docs"}}).ok());
    CHECK(fs::is_directory(l.ws + "/docs"));
    REQUIRE(s.Do("rename", {{"from", "hello.txt"}, {"to", "docs/hi.txt"}}).ok());
    CHECK(ReadAll(l.ws + "/docs/hi.txt") == "hello\n");
    CHECK_FALSE(fs::exists(l.ws + "/hello.txt"));
    json ren = json::parse(s.h.Find("file:renamed", "renamed").at(0).payload);
    CHECK(ren["from"] == "hello.txt");
    CHECK(ren["to"] == "docs/hi.txt");

    WriteAll(l.ws + "/other.txt", "o");
    auto clash = s.Do("rename", {{"from", "other.txt"}, {"to", "docs/hi.txt"}});
    CHECK(clash.status().code() == StatusCode::kConflict);
    CHECK(ReadAll(l.ws + "/docs/hi.txt") == "hello\n");
    REQUIRE(s.Do("rename", {{"from", "other.txt"}, {"to", "docs/hi.txt"}, {"overwrite", true}})
                .ok());
    CHECK(ReadAll(l.ws + "/docs/hi.txt") == "o");

    auto list = s.Do("list", {{"path", "docs"}});
    REQUIRE(list.ok());
    REQUIRE((*list)["entries"].size() == 1);
    CHECK((*list)["entries"][0]["name"] == "hi.txt");
    CHECK((*list)["entries"][0]["type"] == "file");
    auto root = s.Do("list", json::object());
    REQUIRE(root.ok());
    CHECK((*root)["path"] == "");
    CHECK((*root)["count"] == 2);  // docs, sub
    CHECK(s.h.Count("file:listed", "listed") == 2);

    REQUIRE(s.Do("delete", {{"path", "docs/hi.txt"}}).ok());
    CHECK_FALSE(fs::exists(l.ws + "/docs/hi.txt"));
    REQUIRE(s.Do("delete", {{"path", "docs"}}).ok());
    CHECK(json::parse(s.h.Find("file:deleted", "deleted").back().payload)["type"] == "dir");
    CHECK(s.Do("delete", {{"path", "nope.txt"}}).status().code() == StatusCode::kNotFound);
    CHECK(s.Do("delete", {{"path", ""}}).status().code() == StatusCode::kInvalidArgument);
    CHECK(s.Do("delete", {{"path", "."}}).status().code() == StatusCode::kInvalidArgument);
  }

  TEST_CASE("'..' out of the workspace is refused for every operation") {
    Layout l;
    Session s(l.Spec());
    for (const char* p : {"../outside/secret.txt", "sub/../../outside/secret.txt", ".."}) {
      CHECK_MESSAGE(s.Do("read", {{"path", p}}).status().code() == StatusCode::kInvalidArgument,
                    p);
    }
    CHECK(s.Do("write", {{"path", "../outside/new.txt"}, {"content", "x"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(s.Do("write", {{"path", "sub/../../outside/new.txt"}, {"content", "x"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(s.Do("write", {{"path", "nodir/../../outside/new.txt"}, {"content", "x"}, {"create_dirs", true}})
              .status()
              .code() == StatusCode::kInvalidArgument);
    CHECK_FALSE(fs::exists(l.outside + "/new.txt"));
    CHECK(s.Do("delete", {{"path", "../outside/secret.txt"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(s.Do("rename", {{"from", "hello.txt"}, {"to", "../outside/stolen.txt"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(s.Do("rename", {{"from", "../outside/secret.txt"}, {"to", "got.txt"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(s.Do("list", {{"path", ".."}}).status().code() == StatusCode::kInvalidArgument);
    CHECK(s.Do("mkdir", {{"path", "../outside/newdir"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(ReadAll(l.outside + "/secret.txt") == "outside secret");
    CHECK(fs::exists(l.ws + "/hello.txt"));
    CHECK_FALSE(fs::exists(l.outside + "/stolen.txt"));
    CHECK_FALSE(fs::exists(l.outside + "/newdir"));
    json err = s.LastError();
    CHECK(err["op"] == "mkdir");
    CHECK(err["code"] == "invalid_argument");
    CHECK(s.h.Count("file:error", "error") == 11);  // one per refused operation
  }

  TEST_CASE("Absolute paths are allowed inside the workspace and refused outside it") {
    Layout l;
    Session s(l.Spec());
    CHECK(s.Do("read", {{"path", l.ws + "/hello.txt"}}).ok());
    CHECK(s.Do("read", {{"path", l.outside + "/secret.txt"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(s.Do("read", {{"path", "/etc/passwd"}}).status().code() == StatusCode::kInvalidArgument);
    CHECK(s.Do("write", {{"path", l.outside + "/abs.txt"}, {"content", "x"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(s.Do("delete", {{"path", l.outside + "/secret.txt"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK_FALSE(fs::exists(l.outside + "/abs.txt"));
    CHECK(fs::exists(l.outside + "/secret.txt"));
  }

  TEST_CASE("A sibling directory sharing the workspace's name prefix is outside") {
    Layout l;  // ws and ws2
    Session s(l.Spec());
    CHECK(s.Do("read", {{"path", l.sibling + "/secret.txt"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(s.Do("read", {{"path", "../ws2/secret.txt"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(s.Do("write", {{"path", l.sibling + "/planted.txt"}, {"content", "x"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(s.Do("list", {{"path", l.sibling}}).status().code() == StatusCode::kInvalidArgument);
    CHECK_FALSE(fs::exists(l.sibling + "/planted.txt"));
  }

  TEST_CASE("Symlinks that lead out of the workspace are refused; the link itself may be removed") {
    Layout l;
    fs::create_directory_symlink(l.outside + "/dir", l.ws + "/linkdir");
    fs::create_symlink(l.outside + "/secret.txt", l.ws + "/linkfile");
    fs::create_symlink(l.outside + "/created-by-link.txt", l.ws + "/dangling");
    fs::create_symlink(l.ws + "/hello.txt", l.ws + "/inner");  // stays inside: fine
    Session s(l.Spec());

    CHECK(s.Do("read", {{"path", "linkfile"}}).status().code() == StatusCode::kInvalidArgument);
    CHECK(s.Do("write", {{"path", "linkfile"}, {"content", "pwned"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(ReadAll(l.outside + "/secret.txt") == "outside secret");
    CHECK(s.Do("write", {{"path", "linkdir/new.txt"}, {"content", "x"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK_FALSE(fs::exists(l.outside + "/dir/new.txt"));
    CHECK(s.Do("list", {{"path", "linkdir"}}).status().code() == StatusCode::kInvalidArgument);
    CHECK(s.Do("write", {{"path", "dangling"}, {"content", "x"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK_FALSE(fs::exists(l.outside + "/created-by-link.txt"));
    CHECK(s.Do("rename", {{"from", "hello.txt"}, {"to", "linkdir/moved.txt"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(fs::exists(l.ws + "/hello.txt"));

    // A link that stays inside resolves to its target.
    auto inner = s.Do("read", {{"path", "inner"}});
    REQUIRE(inner.ok());
    CHECK((*inner)["path"] == "hello.txt");

    // Deleting or renaming the link acts on the link, never on its target.
    REQUIRE(s.Do("delete", {{"path", "linkfile"}}).ok());
    CHECK_FALSE(fs::is_symlink(l.ws + "/linkfile"));
    CHECK(ReadAll(l.outside + "/secret.txt") == "outside secret");
    REQUIRE(s.Do("rename", {{"from", "linkdir"}, {"to", "renamed-link"}}).ok());
    CHECK(fs::is_symlink(l.ws + "/renamed-link"));
    CHECK(fs::is_directory(l.outside + "/dir"));
  }

  TEST_CASE("NUL bytes, missing arguments, unknown commands and non-files are clear errors") {
    Layout l;
    Session s(l.Spec());
    CHECK(s.Do("read", {{"path", std::string("hello.txt\0../x", 15)}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(s.Do("read", json::object()).status().code() == StatusCode::kInvalidArgument);
    CHECK(s.Do("write", {{"path", "a.txt"}}).status().code() == StatusCode::kInvalidArgument);
    CHECK(s.Do("write", {{"path", "a.txt"}, {"content_base64", "!!"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(s.Do("read", {{"path", "sub"}}).status().code() == StatusCode::kInvalidArgument);
    CHECK(s.Do("write", {{"path", "sub"}, {"content", "x"}}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(s.Do("write", {{"path", ""}, {"content", "x"}}).status().code() ==
          StatusCode::kInvalidArgument);
    REQUIRE(::mkfifo((l.ws + "/fifo").c_str(), 0600) == 0);
    CHECK(s.Do("read", {{"path", "fifo"}}).status().code() == StatusCode::kInvalidArgument);
    CHECK(s.h.adapter().Command(SessionCommand{"chmod", "{}"}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(s.h.adapter().Command(SessionCommand{"read", "not json"}).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(s.h.adapter().Input("x", Encoding::kText).code() == StatusCode::kInvalidArgument);
  }

  TEST_CASE("Size limits and content recording follow the options") {
    Layout l;
    Session s(l.Spec({{"record_content", true}, {"max_record_bytes", 4}, {"max_file_bytes", 10}}));
    REQUIRE(s.Do("write", {{"path", "small.txt"}, {"content", "1234"}}).ok());
    REQUIRE(s.Do("write", {{"path", "mid.txt"}, {"content", "12345"}}).ok());
    CHECK(s.h.Count("file:content", "saved") == 1);  // only the one under max_record_bytes
    CHECK(s.h.Count("file:saved", "saved") == 2);
    CHECK(s.Do("write", {{"path", "big.txt"}, {"content", "12345678901"}}).status().code() ==
          StatusCode::kInvalidArgument);
    WriteAll(l.ws + "/big.txt", std::string(11, 'x'));
    CHECK(s.Do("read", {{"path", "big.txt"}}).status().code() == StatusCode::kInvalidArgument);

    AdapterHarness bad(l.Spec({{"record_contents", true}}));
    CHECK(bad.Start(FileAdapterFactory()).code() == StatusCode::kInvalidArgument);
  }

  TEST_CASE("Stop reports the exit at once") {
    Layout l;
    Session s(l.Spec());
    s.h.adapter().Stop(false);
    CHECK(s.h.exited());
    CHECK(s.h.exit_info().error.empty());
  }
}
