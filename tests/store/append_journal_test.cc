// The exclusive writer's append journal (StoreOptions::exclusive,
// doc/storage.md): the lock file, journaled appends that every read of the
// store sees at once, the copy into SQLite, and recovery after the process
// ended with blocks only in the journal (a forked child that _exits).
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <mutex>
#include <random>
#include <thread>

#include <SQLiteCpp/SQLiteCpp.h>

#include "store/append_journal.h"
#include "store/sqlite_event_store.h"
#include "support/store_helpers.h"

using namespace dispatch;
using namespace dispatch::testing;

namespace {

std::unique_ptr<EventStore> OpenExclusive(const std::string& path) {
  return OpenStore(path, Durability::kNormal, /*exclusive=*/true);
}

// Another reader of the file (as another process would open it).
std::unique_ptr<EventStore> OpenReadOnly(const std::string& path) {
  StoreOptions o;
  o.path = path;
  o.read_only = true;
  auto r = EventStore::Open(o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return std::move(r).value();
}

std::string Payload(int64_t seq) { return "event " + std::to_string(seq) + std::string(seq % 13, '.'); }

// Records of the journal's current generation (those not known to be in
// SQLite yet, or copied and not yet followed by a new generation), and the
// offset where they end.
size_t JournalRecords(const std::string& db_path, uint64_t* end = nullptr) {
  std::vector<internal::JournalRecord> records;
  uint64_t stopped_at = 0;
  REQUIRE(internal::AppendJournal::ReadAll(db_path + "-append.log", &records, &stopped_at).ok());
  if (end) *end = stopped_at;
  return records.size();
}

uint64_t FileSize(const std::string& path) {
  std::error_code ec;
  auto n = std::filesystem::file_size(path, ec);
  return ec ? 0 : n;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void Spit(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

// Every event of `run` is 1..n in order with its own payload.
void CheckRun(EventStore& store, const std::string& run, int64_t n) {
  int64_t expect = 1;
  auto sum = store.Read(run, 0, [&](const EventView& v) {
    CHECK(v.seq == expect);
    CHECK(v.payload == Payload(v.seq));
    ++expect;
    return true;
  });
  REQUIRE_MESSAGE(sum.ok(), sum.status().ToString());
  CHECK(expect - 1 == n);
  auto last = store.LastSeq(run);
  REQUIRE(last.ok());
  CHECK(*last == n);
}

// Positions over the whole store are strictly increasing, each event once.
int64_t CountAll(EventStore& store) {
  int64_t count = 0, prev = 0;
  auto sum = store.ReadAll(0, [&](const EventView& v) {
    CHECK(v.position > prev);
    prev = v.position;
    ++count;
    return true;
  });
  REQUIRE_MESSAGE(sum.ok(), sum.status().ToString());
  return count;
}

// Keeps journaled blocks in the journal (no idle copy) while alive.
struct NoIdleCopy {
  int64_t before = internal::SetJournalIdleMicrosForTest(int64_t{600} * 1000 * 1000);
  ~NoIdleCopy() { internal::SetJournalIdleMicrosForTest(before); }
};

// A child process appends `n` events to "r" on an exclusive store (the first
// commits as usual and makes the run, the rest are journaled), keeps a copy
// of the journal at `path`.saved and ends without closing the store.
void AppendAndDie(const std::string& path, int64_t n) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    internal::SetJournalIdleMicrosForTest(int64_t{600} * 1000 * 1000);
    StoreOptions o;
    o.path = path;
    o.exclusive = true;
    auto store = EventStore::Open(o);
    if (!store.ok()) _exit(3);
    for (int64_t seq = 1; seq <= n; ++seq) {
      auto r = (*store)->Append("r", std::vector<NewEvent>{Ev(Payload(seq))});
      if (!r.ok() || r->last_seq != seq) _exit(4);
    }
    if ((*store)->Stats().journal_appends != n - 1) _exit(5);
    Spit(path + ".saved", Slurp(path + "-append.log"));
    _exit(0);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}

}  // namespace

TEST_SUITE("Append journal") {
  TEST_CASE("An exclusive store keeps other writers out, readers in") {
    TempDir dir;
    std::string path = dir.file("x.db");
    {
      auto a = OpenExclusive(path);
      StoreOptions o;
      o.path = path;
      auto b = EventStore::Open(o);
      REQUIRE_FALSE(b.ok());
      CHECK(b.status().code() == StatusCode::kBusy);
      CHECK(b.status().message().find("held exclusively") != std::string::npos);
      o.exclusive = true;
      auto c = EventStore::Open(o);
      REQUIRE_FALSE(c.ok());
      CHECK(c.status().code() == StatusCode::kBusy);
      o.exclusive = false;
      o.read_only = true;
      auto d = EventStore::Open(o);
      CHECK_MESSAGE(d.ok(), d.status().ToString());
    }
    {
      // Plain writers share the file; an exclusive open then waits its turn.
      auto a = OpenStore(path);
      auto b = OpenStore(path);
      StoreOptions o;
      o.path = path;
      o.exclusive = true;
      auto c = EventStore::Open(o);
      REQUIRE_FALSE(c.ok());
      CHECK(c.status().code() == StatusCode::kBusy);
    }
    auto again = OpenExclusive(path);  // everyone closed
  }

  TEST_CASE("Journaled appends are seen by every read at once, and reach SQLite") {
    NoIdleCopy keep;
    TempDir dir;
    std::string path = dir.file("j.db");
    auto store = OpenExclusive(path);
    for (int64_t seq = 1; seq <= 50; ++seq) {
      NewEvent e = Ev(Payload(seq));
      e.ts_us = 1'000'000'000 + seq * seq * 37;  // their own timestamps, kept through the copy
      auto r = store->Append("r", std::vector<NewEvent>{e});
      REQUIRE_MESSAGE(r.ok(), r.status().ToString());
      CHECK(r->last_seq == seq);
      CHECK(r->first_seq == seq);
      CHECK(r->first_position == seq);
    }
    StoreStats st = store->Stats();
    CHECK(st.journal_appends == 49);  // the first one made the run
    CHECK(st.events_appended == 50);
    CHECK(JournalRecords(path) == 49);
    {
      // Another reader of the file does not see journaled blocks yet…
      CHECK(*OpenReadOnly(path)->LastSeq("r") == 1);
    }
    // …this store's reads do (they copy first).
    CheckRun(*store, "r", 50);
    CHECK(store->Stats().journal_drains == 1);
    REQUIRE(store->Read("r", 0, [&](const EventView& v) {
      CHECK(v.ts_us == 1'000'000'000 + v.seq * v.seq * 37);
      return true;
    }).ok());
    {
      // The 49 journaled appends became one block (the first made the run).
      SQLite::Database raw(path, SQLite::OPEN_READONLY);
      CHECK(raw.execAndGet("SELECT count(*) FROM event_blocks").getInt() == 2);
    }
    CHECK(JournalRecords(path) == 0);
    CHECK(CountAll(*store) == 50);
    auto info = store->GetRun("r");
    REQUIRE(info.ok());
    CHECK(info->event_count == 50);

    // Flush copies too; then a reader of the file sees everything. (The
    // read's copy ran on the writer thread, which may still hold the writer
    // role for a moment: an append meanwhile is queued, so paced, and only
    // some of them need be journaled.)
    for (int64_t seq = 51; seq <= 60; ++seq) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      REQUIRE(store->Append("r", std::vector<NewEvent>{Ev(Payload(seq))}).ok());
    }
    CHECK(store->Stats().journal_appends > 49);
    REQUIRE(store->Flush().ok());
    CHECK(JournalRecords(path) == 0);
    CheckRun(*OpenReadOnly(path), "r", 60);
  }

  TEST_CASE("What does not qualify commits as usual, after the journaled blocks") {
    NoIdleCopy keep;
    TempDir dir;
    auto store = OpenExclusive(dir.file("q.db"));
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev(Payload(1))}).ok());
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev(Payload(2))}).ok());  // journaled
    // An id, an expected seq, a big batch: each a transaction of its own,
    // which writes the pending journaled block first.
    auto with_id = Ev(Payload(3), "pty:stdout", "chunk", Encoding::kBytes, "id-3");
    REQUIRE(store->Append("r", std::vector<NewEvent>{with_id}).ok());
    AppendOptions ao;
    ao.expected_last_seq = 3;
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev(Payload(4))}, ao).ok());
    ao.expected_last_seq = 3;
    auto conflict = store->Append("r", std::vector<NewEvent>{Ev(Payload(4))}, ao);
    CHECK(conflict.status().code() == StatusCode::kConflict);
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev(Payload(5) + std::string(70000, 'x'))}).ok());
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev(Payload(6))}).ok());  // journaled
    StoreStats st = store->Stats();
    CHECK(st.journal_appends == 2);
    int64_t expect = 1;
    auto sum = store->Read("r", 0, [&](const EventView& v) {
      CHECK(v.seq == expect);
      CHECK(v.payload.substr(0, Payload(v.seq).size()) == Payload(v.seq));
      ++expect;
      return true;
    });
    REQUIRE(sum.ok());
    CHECK(expect == 7);
    // A duplicate id is still found (its event went through a transaction).
    auto dup = store->Append("r", std::vector<NewEvent>{with_id});
    REQUIRE(dup.ok());
    CHECK(dup->duplicates == 1);
    CHECK(dup->seqs[0] == 3);
  }

  TEST_CASE("Subscribers get journaled events exactly once, in order, with the backlog") {
    TempDir dir;
    auto store = OpenExclusive(dir.file("s.db"));
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev(Payload(1))}).ok());
    constexpr int64_t kEvents = 2000;
    std::atomic<bool> go{false};
    std::thread writer([&] {
      while (!go.load()) std::this_thread::yield();
      for (int64_t seq = 2; seq <= kEvents; ++seq) {
        AppendOptions ao;
        ao.commit_inline = true;
        std::promise<void> done;
        store->AppendAsync("r", {Ev(Payload(seq))}, ao,
                           [&](Result<AppendResult> r) {
                             CHECK(r.ok());
                             done.set_value();
                           });
        done.get_future().wait();
      }
    });
    std::mutex mu;
    std::vector<int64_t> seen, seen_all;
    SubscriptionHandlers h;
    h.on_event = [&](const EventView& v) {
      std::lock_guard<std::mutex> l(mu);
      CHECK(v.payload == Payload(v.seq));
      seen.push_back(v.seq);
    };
    SubscriptionHandlers ha;
    ha.on_event = [&](const EventView& v) {
      std::lock_guard<std::mutex> l(mu);
      seen_all.push_back(v.position);
    };
    go = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // some appended, some to come
    auto sub = store->Subscribe("r", 0, h, {});
    REQUIRE(sub.ok());
    auto sub_all = store->SubscribeAll(0, ha, {});
    REQUIRE(sub_all.ok());
    writer.join();
    for (int i = 0; i < 1000; ++i) {
      {
        std::lock_guard<std::mutex> l(mu);
        if (seen.size() >= kEvents && seen_all.size() >= kEvents) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::lock_guard<std::mutex> l(mu);
    REQUIRE(seen.size() == kEvents);
    REQUIRE(seen_all.size() == kEvents);
    for (int64_t i = 0; i < kEvents; ++i) {
      CHECK(seen[static_cast<size_t>(i)] == i + 1);
      CHECK(seen_all[static_cast<size_t>(i)] == i + 1);
    }
    CHECK(store->Stats().journal_appends > 0);
  }

  TEST_CASE("Retention and catalog writes see journaled events; journaling resumes after") {
    NoIdleCopy keep;
    TempDir dir;
    auto store = OpenExclusive(dir.file("t.db"));
    for (int64_t seq = 1; seq <= 20; ++seq) {
      REQUIRE(store->Append("r", std::vector<NewEvent>{Ev(Payload(seq))}).ok());
    }
    auto removed = store->TruncateBefore("r", 11);
    REQUIRE_MESSAGE(removed.ok(), removed.status().ToString());
    CHECK(*removed == 10);
    int64_t journaled = store->Stats().journal_appends;
    for (int64_t seq = 21; seq <= 25; ++seq) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));  // see above
      REQUIRE(store->Append("r", std::vector<NewEvent>{Ev(Payload(seq))}).ok());
    }
    // The first append after the write re-reads the run in a transaction;
    // later ones are journaled again.
    CHECK(store->Stats().journal_appends > journaled);
    auto info = store->GetRun("r");
    REQUIRE(info.ok());
    CHECK(info->first_seq == 11);
    CHECK(info->last_seq == 25);
    CHECK(info->event_count == 15);
    int64_t expect = 11;
    REQUIRE(store->Read("r", 10, [&](const EventView& v) {
      CHECK(v.seq == expect++);
      return true;
    }).ok());
    CHECK(expect == 26);
  }

  TEST_CASE("Blocks only in the journal when the process ended are recovered at the next open") {
    TempDir dir;
    std::string path = dir.file("c.db");
    AppendAndDie(path, 40);
    std::string saved = Slurp(path + ".saved");
    REQUIRE(saved.size() > 0);
    CHECK(Slurp(path + "-append.log") == saved);
    {
      auto store = OpenStore(path);  // any writable open recovers
      CHECK(FileSize(path + "-append.log") == 0);  // emptied once recovered
      CheckRun(*store, "r", 40);
      CHECK(CountAll(*store) == 40);
      auto info = store->GetRun("r");
      REQUIRE(info.ok());
      CHECK(info->event_count == 40);
      // Appends go on after the recovered ones.
      REQUIRE(store->Append("r", std::vector<NewEvent>{Ev(Payload(41))}).ok());
    }
    // The journal as it was (its records now all in SQLite: a crash between
    // the copy's commit and emptying the file) plus a torn record: nothing
    // is doubled, nothing lost.
    uint64_t end = 0;
    std::string torn = saved;
    {
      std::vector<internal::JournalRecord> records;
      REQUIRE(internal::AppendJournal::ReadAll(path + ".saved", &records, &end).ok());
      REQUIRE(records.size() == 39);
      // The first record's first bytes again, after the last record.
      torn.replace(end, 40, saved.substr(internal::AppendJournal::kHeaderBytes, 40));
    }
    Spit(path + "-append.log", torn);
    {
      auto store = OpenExclusive(path);
      CHECK(JournalRecords(path) == 0);
      CheckRun(*store, "r", 41);
      CHECK(CountAll(*store) == 41);
      for (int64_t seq = 42; seq <= 45; ++seq) {
        REQUIRE(store->Append("r", std::vector<NewEvent>{Ev(Payload(seq))}).ok());
      }
    }
    auto store = OpenStore(path);
    CheckRun(*store, "r", 45);
    CHECK(CountAll(*store) == 45);
  }

  TEST_CASE("A journal that does not belong to its store is refused and kept") {
    TempDir dir;
    std::string path = dir.file("c.db");
    AppendAndDie(path, 10);
    std::string saved = Slurp(path + ".saved");
    REQUIRE(saved.size() > 0);
    // Next to a different store (without run "r"): refused, and kept.
    std::string other = dir.file("other.db");
    { auto s = OpenStore(other); }
    Spit(other + "-append.log", saved);
    StoreOptions o;
    o.path = other;
    auto r = EventStore::Open(o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kCorruption);
    CHECK(r.status().message().find("append journal") != std::string::npos);
    CHECK(Slurp(other + "-append.log") == saved);
    // A read-only open does not touch it.
    o.read_only = true;
    CHECK(EventStore::Open(o).ok());
    CHECK(Slurp(other + "-append.log") == saved);
  }
}

TEST_CASE("Append journal: a damaged journal gives a prefix of its events or a clear error") {
  // Byte flips, truncations and garbage in a real journal: every open either
  // recovers events 1..k in order with their payloads, or fails with
  // kCorruption naming the journal and leaves it as it was. Never a crash,
  // never a damaged block in the store.
  TempDir dir;
  std::string path = dir.file("c.db");
  AppendAndDie(path, 30);
  const std::string saved = Slurp(path + ".saved");
  REQUIRE(saved.size() > 0);
  uint64_t used = 0;
  {
    std::vector<internal::JournalRecord> records;
    REQUIRE(internal::AppendJournal::ReadAll(path + ".saved", &records, &used).ok());
    REQUIRE(records.size() == 29);
  }
  const std::string db = Slurp(path), wal = Slurp(path + "-wal");
  std::mt19937 rng(4242);
  int recovered_all = 0, prefixes = 0, refused = 0;
  for (int trial = 0; trial < 120; ++trial) {
    std::string t = dir.file("t" + std::to_string(trial) + ".db");
    Spit(t, db);
    Spit(t + "-wal", wal);
    std::string j = saved;
    switch (trial % 4) {
      case 0:  // flip a few bytes
        for (int k = 0; k < 1 + static_cast<int>(rng() % 3); ++k) j[rng() % used] ^= static_cast<char>(1 + rng() % 255);
        break;
      case 1:  // cut anywhere
        j.resize(rng() % used);
        break;
      case 2:  // garbage after a cut
        j.resize(rng() % used);
        for (int k = 0; k < 64; ++k) j.push_back(static_cast<char>(rng()));
        break;
      default:  // a record's length field set to something else
        j[internal::AppendJournal::kHeaderBytes + 4 + (rng() % 4)] = static_cast<char>(rng());
        break;
    }
    Spit(t + "-append.log", j);
    StoreOptions o;
    o.path = t;
    auto r = EventStore::Open(o);
    if (!r.ok()) {
      CHECK(r.status().code() == StatusCode::kCorruption);
      CHECK(r.status().message().find("append journal") != std::string::npos);
      CHECK(Slurp(t + "-append.log") == j);
      ++refused;
      continue;
    }
    auto& store = **r;
    int64_t expect = 1;
    auto sum = store.Read("r", 0, [&](const EventView& v) {
      CHECK(v.seq == expect);
      CHECK(v.payload == Payload(v.seq));
      ++expect;
      return true;
    });
    REQUIRE_MESSAGE(sum.ok(), sum.status().ToString());
    CHECK(expect - 1 >= 1);
    CHECK(expect - 1 <= 30);
    (expect - 1 == 30 ? recovered_all : prefixes)++;
  }
  MESSAGE("damaged journals: " << recovered_all << " recovered whole, " << prefixes
                               << " a prefix, " << refused << " refused");
  CHECK(prefixes > 0);
}

TEST_CASE("Append journal: a record whose block does not match its header is refused") {
  // Written through the journal itself (so its CRC holds): it claims three
  // events but holds one. It must not reach event_blocks.
  TempDir dir;
  std::string path = dir.file("c.db");
  AppendAndDie(path, 3);
  std::string saved = Slurp(path + ".saved");
  REQUIRE(saved.size() > 0);
  std::vector<internal::JournalRecord> records;
  uint64_t end = 0;
  REQUIRE(internal::AppendJournal::ReadAll(path + ".saved", &records, &end).ok());
  REQUIRE(records.size() == 2);
  internal::JournalRecord bad = records[0];
  bad.count = 3;
  std::remove((path + "-append.log").c_str());
  {
    auto j = internal::AppendJournal::Open(path + "-append.log");
    REQUIRE(j.ok());
    REQUIRE((*j)->Append(bad).ok());
  }
  const std::string written = Slurp(path + "-append.log");
  StoreOptions o;
  o.path = path;
  auto r = EventStore::Open(o);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kCorruption);
  CHECK(r.status().message().find("not a valid block") != std::string::npos);
  CHECK(Slurp(path + "-append.log") == written);
  // Without the journal the store opens with what SQLite holds.
  std::remove((path + "-append.log").c_str());
  auto ok = EventStore::Open(o);
  REQUIRE(ok.ok());
  CHECK(*(*ok)->LastSeq("r") == 1);
}
