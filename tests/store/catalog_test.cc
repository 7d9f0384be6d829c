// The catalog: sessions, workspaces, settings, layouts, snapshots.
#include <doctest/doctest.h>

#include "support/store_helpers.h"

using namespace dispatch;
using namespace dispatch::testing;

TEST_SUITE("Catalog") {
  TEST_CASE("Sessions are put, updated, listed and deleted") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    Catalog& cat = store->catalog();
    SessionRecord s;
    s.run_id = "sess-1";
    s.kind = "pty";
    s.workspace = "/w/a";
    s.meta = R"({"shell":"/bin/bash"})";
    REQUIRE(cat.PutSession(s).ok());
    auto got = cat.GetSession("sess-1");
    REQUIRE(got.ok());
    CHECK(got->kind == "pty");
    CHECK(got->status == SessionStatus::kStarting);
    CHECK(got->meta == s.meta);
    CHECK(got->created_us > 0);
    int64_t created = got->created_us;
    REQUIRE(cat.SetSessionStatus("sess-1", SessionStatus::kRunning).ok());
    got = cat.GetSession("sess-1");
    CHECK(got->status == SessionStatus::kRunning);
    CHECK(got->created_us == created);
    CHECK(got->updated_us >= created);
    CHECK(cat.SetSessionStatus("nope", SessionStatus::kRunning).code() == StatusCode::kNotFound);
    s.run_id = "sess-2";
    s.kind = "claude";
    REQUIRE(cat.PutSession(s).ok());
    auto all = cat.ListSessions();
    REQUIRE(all.ok());
    CHECK(all->size() == 2);
    REQUIRE(cat.DeleteSession("sess-1").ok());
    CHECK(cat.GetSession("sess-1").status().code() == StatusCode::kNotFound);
    CHECK(cat.DeleteSession("sess-1").code() == StatusCode::kNotFound);
    s.meta = "[1,2]";
    CHECK(cat.PutSession(s).code() == StatusCode::kInvalidArgument);
    s.meta = "{";
    CHECK(cat.PutSession(s).code() == StatusCode::kInvalidArgument);
    s.meta = "{}";
    s.run_id = "bad id";
    CHECK(cat.PutSession(s).code() == StatusCode::kInvalidArgument);
    CHECK(ParseSessionStatus(SessionStatusName(SessionStatus::kError)) == SessionStatus::kError);
  }

  TEST_CASE("Workspaces have full CRUD") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    Catalog& cat = store->catalog();
    WorkspaceRecord w;
    w.id = "ws1";
    w.name = "Project";
    w.path = "/srv/ws1";
    w.metadata = R"({"color":"blue"})";
    REQUIRE(cat.CreateWorkspace(w).ok());
    CHECK(cat.CreateWorkspace(w).code() == StatusCode::kConflict);
    auto got = cat.GetWorkspace("ws1");
    REQUIRE(got.ok());
    CHECK(got->name == "Project");
    CHECK(got->status == WorkspaceStatus::kActive);
    CHECK(got->last_accessed_us > 0);
    w.status = WorkspaceStatus::kArchived;
    w.name = "Old project";
    REQUIRE(cat.UpdateWorkspace(w).ok());
    got = cat.GetWorkspace("ws1");
    CHECK(got->status == WorkspaceStatus::kArchived);
    CHECK(got->name == "Old project");
    CHECK(got->created_us > 0);
    int64_t before = got->last_accessed_us;
    REQUIRE(cat.TouchWorkspace("ws1").ok());
    CHECK(cat.GetWorkspace("ws1")->last_accessed_us >= before);
    WorkspaceRecord missing = w;
    missing.id = "ghost";
    CHECK(cat.UpdateWorkspace(missing).code() == StatusCode::kNotFound);
    CHECK(cat.TouchWorkspace("ghost").code() == StatusCode::kNotFound);
    REQUIRE(cat.ListWorkspaces()->size() == 1);
    REQUIRE(cat.DeleteWorkspace("ws1").ok());
    CHECK(cat.GetWorkspace("ws1").status().code() == StatusCode::kNotFound);
    CHECK(cat.DeleteWorkspace("ws1").code() == StatusCode::kNotFound);
    w.metadata = "nope";
    CHECK(cat.CreateWorkspace(w).code() == StatusCode::kInvalidArgument);
    w.metadata = "{}";
    w.path = "";
    CHECK(cat.CreateWorkspace(w).code() == StatusCode::kInvalidArgument);
  }

  TEST_CASE("Settings are one JSON document per category") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    Catalog& cat = store->catalog();
    CHECK(cat.GetSettings("ui").status().code() == StatusCode::kNotFound);
    REQUIRE(cat.PutSettings("ui", R"({"theme":"dark"})").ok());
    REQUIRE(cat.PutSettings("ui", R"({"theme":"light"})").ok());
    REQUIRE(cat.PutSettings("retention", "30").ok());
    CHECK(*cat.GetSettings("ui") == R"({"theme":"light"})");
    CHECK(cat.ListSettings()->size() == 2);
    CHECK(cat.PutSettings("ui", "{theme:1}").code() == StatusCode::kInvalidArgument);
    CHECK(cat.PutSettings("", "{}").code() == StatusCode::kInvalidArgument);
    // Deeper than the library serialises safely: refused, the old value kept.
    std::string deep = R"({"a":)" + std::string(100000, '[') + std::string(100000, ']') + "}";
    Status s = cat.PutSettings("ui", deep);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK(s.message().find("nested more than 256 deep") != std::string::npos);
    CHECK(*cat.GetSettings("ui") == R"({"theme":"light"})");
  }

  TEST_CASE("Layouts are kept per client and workspace") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    Catalog& cat = store->catalog();
    REQUIRE(cat.PutLayout({"client-a", "ws1", R"({"panes":2})"}).ok());
    REQUIRE(cat.PutLayout({"client-a", "ws2", R"({"panes":1})"}).ok());
    REQUIRE(cat.PutLayout({"client-b", "ws1", R"({"panes":4})"}).ok());
    REQUIRE(cat.PutLayout({"client-a", "ws1", R"({"panes":3})"}).ok());
    CHECK(cat.GetLayout("client-a", "ws1")->layout == R"({"panes":3})");
    CHECK(cat.ListLayouts("client-a")->size() == 2);
    REQUIRE(cat.DeleteLayout("client-a", "ws2").ok());
    CHECK(cat.GetLayout("client-a", "ws2").status().code() == StatusCode::kNotFound);
    CHECK(cat.PutLayout({"client-a", "ws1", "not json"}).code() == StatusCode::kInvalidArgument);
  }

  TEST_CASE("Snapshots are found by the newest seq at or before a point") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    Catalog& cat = store->catalog();
    for (int64_t seq : {10, 20, 30}) {
      SnapshotRecord s;
      s.run_id = "r";
      s.name = "screen";
      s.seq = seq;
      s.version = 1;
      s.data = std::string("state\0at ", 9) + std::to_string(seq);
      REQUIRE(cat.PutSnapshot(s).ok());
    }
    CHECK(cat.GetSnapshot("r", "screen")->seq == 30);
    CHECK(cat.GetSnapshot("r", "screen", 25)->seq == 20);
    CHECK(cat.GetSnapshot("r", "screen", 20)->data == std::string("state\0at 20", 11));
    CHECK(cat.GetSnapshot("r", "screen", 5).status().code() == StatusCode::kNotFound);
    CHECK(cat.GetSnapshot("r", "status").status().code() == StatusCode::kNotFound);
    REQUIRE(cat.DeleteSnapshotsBefore("r", "screen", 30).ok());
    CHECK(cat.GetSnapshot("r", "screen", 25).status().code() == StatusCode::kNotFound);
    CHECK(cat.GetSnapshot("r", "screen")->seq == 30);
  }

  TEST_CASE("Catalog data survives reopening") {
    TempDir dir;
    {
      auto store = OpenStore(dir.file("s.db"));
      REQUIRE(store->catalog().PutSettings("ui", "{}").ok());
      REQUIRE(store->catalog().CreateWorkspace({"w", "W", "/w", WorkspaceStatus::kActive, "{}", 0, 0}).ok());
    }
    auto store = OpenStore(dir.file("s.db"));
    CHECK(store->catalog().GetSettings("ui").ok());
    CHECK(store->catalog().GetWorkspace("w").ok());
  }
}
