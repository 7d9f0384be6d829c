// Retention (truncate, delete by age) and schema versioning.
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <chrono>
#include <future>

#include "store/schema.h"
#include "support/store_helpers.h"

using namespace dispatch;
using namespace dispatch::testing;

namespace {
std::vector<NewEvent> Numbered(int from, int to, int64_t ts = 0) {
  std::vector<NewEvent> b;
  for (int i = from; i <= to; ++i) {
    NewEvent e = Ev("event " + std::to_string(i));
    e.ts_us = ts;
    b.push_back(e);
  }
  return b;
}

void Exec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  REQUIRE_MESSAGE(rc == SQLITE_OK, msg);
}
}  // namespace

TEST_SUITE("Retention") {
  TEST_CASE("Truncating a run removes the prefix; reads below it say truncated") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    // Several blocks, so the cut falls inside one.
    REQUIRE(store->Append("r", Numbered(1, 10)).ok());
    REQUIRE(store->Append("r", Numbered(11, 20)).ok());
    REQUIRE(store->Append("r", Numbered(21, 30)).ok());
    auto removed = store->TruncateBefore("r", 15);
    REQUIRE(removed.ok());
    CHECK(*removed == 14);
    auto bad = store->ReadEvents("r", 0);
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.status().code() == StatusCode::kTruncated);
    CHECK(bad.status().earliest_available() == 15);
    CHECK(bad.status().message().find("earliest available is 15") != std::string::npos);
    CHECK(store->ReadEvents("r", 13).status().code() == StatusCode::kTruncated);
    auto from14 = store->ReadEvents("r", 14);
    REQUIRE(from14.ok());
    REQUIRE(from14->size() == 16);
    CHECK(from14->front().seq == 15);
    CHECK(from14->front().payload == "event 15");
    CHECK(from14->back().seq == 30);
    // Seq numbering does not restart, positions keep growing.
    auto next = store->Append("r", std::vector<NewEvent>{Ev("event 31")});
    REQUIRE(next.ok());
    CHECK(next->seqs[0] == 31);
    auto info = store->GetRun("r");
    CHECK(info->first_seq == 15);
    CHECK(info->event_count == 17);
    // Subscribing below the cut is refused the same way.
    auto sub = store->Subscribe("r", 3, {});
    CHECK(sub.status().code() == StatusCode::kTruncated);
    // Truncating again below the cut is a no-op; above the end stops at the end.
    CHECK(*store->TruncateBefore("r", 10) == 0);
    CHECK(*store->TruncateBefore("r", 1000) == 17);
    CHECK(store->ReadEvents("r", 31)->empty());
    CHECK(store->ReadEvents("r", 0).status().earliest_available() == 32);
    CHECK(store->Append("r", std::vector<NewEvent>{Ev("after")})->seqs[0] == 32);
    CHECK(store->TruncateBefore("ghost", 3).status().code() == StatusCode::kNotFound);
  }

  TEST_CASE("Paged reads agree with one read, also across a truncation of the block being paged") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    for (int b = 0; b < 3; ++b) REQUIRE(store->Append("r", Numbered(b * 100 + 1, b * 100 + 100)).ok());
    auto page = [&](int64_t after, size_t limit) {
      std::vector<std::string> got;
      ReadOptions o;
      o.limit = limit;
      for (;;) {
        auto r = store->Read("r", after, [&](const EventView& v) {
          got.push_back(std::to_string(v.seq) + "=" + std::string(v.payload));
          after = v.seq;
          return true;
        }, o);
        REQUIRE(r.ok());
        if (static_cast<size_t>(r->count) < limit) break;
      }
      return got;
    };
    auto whole = page(0, SIZE_MAX);
    REQUIRE(whole.size() == 300);
    CHECK(page(0, 7) == whole);
    CHECK(page(95, 3) == std::vector<std::string>(whole.begin() + 95, whole.end()));
    // Stop inside the second block, then cut that block in place.
    ReadOptions three;
    three.limit = 3;
    REQUIRE(store->Read("r", 140, [](const EventView&) { return true; }, three).ok());
    REQUIRE(*store->TruncateBefore("r", 150) == 149);
    CHECK(store->Read("r", 141, [](const EventView&) { return true; }, three).status().code() ==
          StatusCode::kTruncated);
    auto rest = page(149, 4);
    CHECK(rest == std::vector<std::string>(whole.begin() + 149, whole.end()));
  }

  TEST_CASE("Positions of removed events are never reused, also after a reopen") {
    TempDir dir;
    const std::string path = dir.file("s.db");
    {
      auto store = OpenStore(path);
      REQUIRE(store->Append("a", Numbered(1, 5)).ok());
      REQUIRE(store->Append("b", Numbered(1, 5)).ok());  // positions 6-10, the newest
      REQUIRE(*store->LastPosition() == 10);
      REQUIRE(*store->TruncateBefore("b", 6) == 5);        // every block of b is gone
      CHECK(*store->LastPosition() == 10);
      REQUIRE(store->Close().ok());
    }
    auto store = OpenStore(path);
    CHECK(*store->LastPosition() == 10);
    REQUIRE(store->Append("c", Numbered(1, 2)).ok());
    std::vector<int64_t> positions;
    REQUIRE(store->ReadAll(5, [&](const EventView& v) {
      positions.push_back(v.position);
      return true;
    }).ok());
    CHECK(positions == std::vector<int64_t>{11, 12});
    CHECK(*store->LastPosition() == 12);
  }

  TEST_CASE("A subscription refused as truncated does not hold up Close") {
    // Regression: the refused subscription was registered with the store
    // before the refusal and Close waited forever for a thread that never ran.
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    REQUIRE(store->Append("r", Numbered(1, 10)).ok());
    REQUIRE(store->TruncateBefore("r", 6).ok());
    for (int i = 0; i < 3; ++i) {
      CHECK(store->Subscribe("r", 2, {}).status().code() == StatusCode::kTruncated);
    }
    CHECK(store->Stats().subscribers == 0);
    auto closed = std::async(std::launch::async, [&] { return store->Close(); });
    REQUIRE_MESSAGE(closed.wait_for(std::chrono::seconds(10)) == std::future_status::ready,
                    "Close hung on a refused subscription");
    CHECK(closed.get().ok());
  }

  TEST_CASE("Deleting by age spares running sessions and keeps seq numbering") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    const int64_t old_ts = 1'000'000, new_ts = 9'000'000;
    REQUIRE(store->Append("stopped", Numbered(1, 5, old_ts)).ok());
    REQUIRE(store->Append("stopped", Numbered(6, 8, new_ts)).ok());
    REQUIRE(store->Append("running", Numbered(1, 5, old_ts)).ok());
    REQUIRE(store->Append("orphan", Numbered(1, 3, old_ts)).ok());
    SessionRecord s;
    s.kind = "pty";
    s.run_id = "stopped";
    s.status = SessionStatus::kStopped;
    REQUIRE(store->catalog().PutSession(s).ok());
    s.run_id = "running";
    s.status = SessionStatus::kRunning;
    REQUIRE(store->catalog().PutSession(s).ok());
    auto removed = store->DeleteOlderThan(5'000'000);
    REQUIRE(removed.ok());
    CHECK(*removed == 5 + 3);
    CHECK(store->ReadEvents("stopped", 0).status().earliest_available() == 6);
    CHECK(store->ReadEvents("stopped", 5)->size() == 3);
    CHECK(store->ReadEvents("running", 0)->size() == 5);
    CHECK(store->ReadEvents("orphan", 0).status().earliest_available() == 4);
    CHECK(store->Append("orphan", std::vector<NewEvent>{Ev("x")})->seqs[0] == 4);
  }

  TEST_CASE("ReadAll skips removed ranges without error") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    REQUIRE(store->Append("a", Numbered(1, 4)).ok());
    REQUIRE(store->Append("b", Numbered(1, 2)).ok());
    REQUIRE(store->TruncateBefore("a", 3).ok());
    std::vector<int64_t> positions;
    REQUIRE(store->ReadAll(0, [&](const EventView& v) {
                   positions.push_back(v.position);
                   return true;
                 }).ok());
    CHECK(positions == std::vector<int64_t>{3, 4, 5, 6});
  }

  TEST_CASE("An append after another connection changed the run reads the run's row again") {
    // The writer remembers each run's seq between its own commits; a write
    // from elsewhere (here: the run removed by another connection) must
    // not be answered from that memory.
    TempDir dir;
    std::string path = dir.file("s.db");
    auto store = OpenStore(path);
    REQUIRE(store->Append("r", Numbered(1, 3)).ok());
    REQUIRE(store->Append("r", Numbered(4, 4)).ok());
    CHECK(store->GetRun("r")->last_seq == 4);
    Exec(path,
         "DELETE FROM event_blocks WHERE run_pk = (SELECT run_pk FROM runs WHERE run_id = 'r');"
         "DELETE FROM runs WHERE run_id = 'r';");
    auto again = store->Append("r", Numbered(1, 2));
    REQUIRE(again.ok());
    CHECK(again->seqs == std::vector<int64_t>{1, 2});
    auto info = store->GetRun("r");
    REQUIRE(info.ok());
    CHECK(info->event_count == 2);
    CHECK(info->last_seq == 2);
    auto events = store->ReadEvents("r", 0);
    REQUIRE(events.ok());
    CHECK(events->size() == 2);
  }
}

TEST_SUITE("Schema") {
  TEST_CASE("A database of schema version 1 (the seed's layout) opens and upgrades") {
    TempDir dir;
    std::string path = dir.file("v1.db");
    Exec(path, internal::SchemaV1Sql());
    Exec(path,
         "INSERT INTO session_events VALUES ('old-run', 1, 'pty:stdout', 'chunk', '\"hello\"', 1700000000000);"
         "INSERT INTO session_events VALUES ('old-run', 2, 'pty:stdout', 'chunk', 'not json', 1700000000005);"
         "INSERT INTO session_events VALUES ('old-run', 3, 'system:status', 'closed', "
         "'{\"exitCode\":0,\"signal\":null}', 1700000000010);"
         "INSERT INTO session_events VALUES ('b', 1, 'claude:message', 'result', '{}', 1700000000001);"
         "INSERT INTO sessions VALUES ('old-run', 'pty', 'stopped', '/ws', '{}', 1700000000000, 1700000000010);"
         "INSERT INTO workspaces VALUES ('ws', 'WS', '/ws', 'active', NULL, 1, 2);"
         "INSERT INTO settings VALUES ('ui', '{\"a\":1}');");
    auto store = OpenStore(path);
    auto ev = store->ReadEvents("old-run", 0);
    REQUIRE_MESSAGE(ev.ok(), ev.status().ToString());
    REQUIRE(ev->size() == 3);
    CHECK((*ev)[0].payload == "\"hello\"");
    CHECK((*ev)[0].encoding == Encoding::kJson);
    CHECK((*ev)[1].encoding == Encoding::kBytes);
    CHECK((*ev)[2].type == "closed");
    CHECK((*ev)[0].ts_us == 1700000000000000);
    CHECK(store->Append("old-run", std::vector<NewEvent>{Ev("new")})->seqs[0] == 4);
    CHECK(store->catalog().GetSession("old-run")->status == SessionStatus::kStopped);
    CHECK(store->catalog().GetWorkspace("ws")->metadata == "{}");
    CHECK(*store->catalog().GetSettings("ui") == "{\"a\":1}");
    // Positions are unique and ordered across migrated runs.
    std::vector<int64_t> pos;
    REQUIRE(store->ReadAll(0, [&](const EventView& v) {
                   pos.push_back(v.position);
                   return true;
                 }).ok());
    CHECK(pos == std::vector<int64_t>{1, 2, 3, 4, 5});
    store.reset();
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    CHECK(sqlite3_column_int(st, 0) == internal::kSchemaVersion);
    sqlite3_finalize(st);
    sqlite3_close(db);
  }

  TEST_CASE("A database from a newer version is refused, not modified") {
    TempDir dir;
    std::string path = dir.file("future.db");
    { OpenStore(path); }
    Exec(path, "PRAGMA user_version = 99");
    StoreOptions o;
    o.path = path;
    auto r = EventStore::Open(o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kCorruption);
    CHECK(r.status().message().find("newer") != std::string::npos);
  }
}
