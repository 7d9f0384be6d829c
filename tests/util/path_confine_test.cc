// Tests of workspace confinement on real directories and symlinks.
#include "util/path_confine.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "support/temp_dir.h"

using dispatch::StatusCode;
using dispatch::internal::ConfineExisting;
using dispatch::internal::ConfineNew;
using dispatch::internal::IsWithinRoot;

namespace {

struct Tree {
  dispatch::testing::TempDir tmp;
  std::string root, sibling, outside;
  Tree() {
    // tmp/ws (root), tmp/ws-evil (a sibling sharing the prefix), tmp/out.
    root = tmp.file("ws");
    sibling = tmp.file("ws-evil");
    outside = tmp.file("out");
    REQUIRE(::mkdir(root.c_str(), 0755) == 0);
    REQUIRE(::mkdir(sibling.c_str(), 0755) == 0);
    REQUIRE(::mkdir(outside.c_str(), 0755) == 0);
    REQUIRE(::mkdir((root + "/sub").c_str(), 0755) == 0);
    std::ofstream(root + "/sub/file.txt") << "hi";
    std::ofstream(outside + "/secret") << "s";
    REQUIRE(::symlink(outside.c_str(), (root + "/escape").c_str()) == 0);
    REQUIRE(::symlink("sub", (root + "/inner").c_str()) == 0);
    REQUIRE(::symlink((outside + "/nothing-yet").c_str(), (root + "/dangling").c_str()) == 0);
  }
};

}  // namespace

TEST_SUITE("PathConfine") {
  TEST_CASE("IsWithinRoot compares by component, not by prefix") {
    CHECK(IsWithinRoot("/srv/ws", "/srv/ws"));
    CHECK(IsWithinRoot("/srv/ws", "/srv/ws/a/b"));
    CHECK_FALSE(IsWithinRoot("/srv/ws", "/srv/ws-evil"));
    CHECK_FALSE(IsWithinRoot("/srv/ws", "/srv/wsx/a"));
    CHECK_FALSE(IsWithinRoot("/srv/ws", "/srv"));
    CHECK(IsWithinRoot("/", "/anything"));
  }

  TEST_CASE("Existing paths inside the root resolve to canonical paths") {
    Tree t;
    auto canon_root = dispatch::internal::CanonicalRoot(t.root);
    REQUIRE(canon_root.ok());
    auto r = ConfineExisting(t.root, "");
    REQUIRE(r.ok());
    CHECK(*r == *canon_root);
    r = ConfineExisting(t.root, "sub/file.txt");
    REQUIRE(r.ok());
    CHECK(*r == *canon_root + "/sub/file.txt");
    r = ConfineExisting(t.root, "inner/./file.txt");  // symlink inside the root
    REQUIRE(r.ok());
    CHECK(*r == *canon_root + "/sub/file.txt");
    r = ConfineExisting(t.root, *canon_root + "/sub");  // absolute inside
    REQUIRE(r.ok());
    CHECK(*r == *canon_root + "/sub");
    r = ConfineExisting(t.root, "sub/../sub");
    REQUIRE(r.ok());
  }

  TEST_CASE("Escapes are refused: .., absolute, symlink, sibling prefix") {
    Tree t;
    for (std::string bad : {std::string(".."), std::string("../out/secret"),
                            std::string("sub/../../out"), t.outside + "/secret",
                            std::string("/etc/passwd"), std::string("escape"),
                            std::string("escape/secret"), t.sibling,
                            std::string("../ws-evil")}) {
      CAPTURE(bad);
      auto r = ConfineExisting(t.root, bad);
      REQUIRE_FALSE(r.ok());
      CHECK(r.status().code() == StatusCode::kInvalidArgument);
    }
  }

  TEST_CASE("Missing paths and bad input give clear errors") {
    Tree t;
    auto r = ConfineExisting(t.root, "nope");
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kNotFound);
    r = ConfineExisting(t.root, std::string("sub\0x", 5));
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    r = ConfineExisting(t.tmp.file("no-root"), "x");
    CHECK(r.status().code() == StatusCode::kNotFound);
    r = ConfineExisting(t.root + "/sub/file.txt", "");
    CHECK(r.status().code() == StatusCode::kInvalidArgument);  // root is a file
  }

  TEST_CASE("ConfineNew resolves the deepest existing parent") {
    Tree t;
    auto canon_root = dispatch::internal::CanonicalRoot(t.root);
    REQUIRE(canon_root.ok());
    auto r = ConfineNew(t.root, "sub/new.txt");
    REQUIRE(r.ok());
    CHECK(*r == *canon_root + "/sub/new.txt");
    r = ConfineNew(t.root, "inner/a/b/c.txt");
    REQUIRE(r.ok());
    CHECK(*r == *canon_root + "/sub/a/b/c.txt");
    r = ConfineNew(t.root, "sub/file.txt");  // exists already
    REQUIRE(r.ok());
    CHECK(*r == *canon_root + "/sub/file.txt");
  }

  TEST_CASE("ConfineNew refuses escapes, dot-dot below missing dirs and dangling links") {
    Tree t;
    for (std::string bad :
         {std::string("../x"), std::string("escape/new"), std::string("../ws-evil/new"),
          t.outside + "/new", std::string("missing/../../out/x"), std::string("dangling"),
          std::string("dangling/x"), std::string("sub/file.txt/x")}) {
      CAPTURE(bad);
      auto r = ConfineNew(t.root, bad);
      REQUIRE_FALSE(r.ok());
      CHECK((r.status().code() == StatusCode::kInvalidArgument ||
             r.status().code() == StatusCode::kNotFound));
    }
  }
}
