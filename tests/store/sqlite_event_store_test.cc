// SqliteEventStore: append, read, concurrency control, idempotency, limits,
// bad input and reopening — on real SQLite files in temp dirs.
#include <doctest/doctest.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "support/store_helpers.h"
#include "support/temp_dir.h"

using namespace dispatch;
using namespace dispatch::testing;

TEST_SUITE("SqliteEventStore") {
  TEST_CASE("Append then read returns events in seq order starting at 1") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    std::vector<NewEvent> batch = {Ev("a"), Ev("b"), Ev("c")};
    auto r = store->Append("run-1", batch);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    CHECK(r->seqs == std::vector<int64_t>{1, 2, 3});
    CHECK(r->first_seq == 1);
    CHECK(r->last_seq == 3);
    CHECK(r->written == 3);
    auto r2 = store->Append("run-1", std::vector<NewEvent>{Ev("d")});
    REQUIRE(r2.ok());
    CHECK(r2->seqs == std::vector<int64_t>{4});

    auto events = store->ReadEvents("run-1", 0);
    REQUIRE(events.ok());
    REQUIRE(events->size() == 4);
    const char* want[] = {"a", "b", "c", "d"};
    for (size_t i = 0; i < 4; ++i) {
      CHECK((*events)[i].seq == static_cast<int64_t>(i + 1));
      CHECK((*events)[i].payload == want[i]);
      CHECK((*events)[i].run_id == "run-1");
      CHECK((*events)[i].channel == "pty:stdout");
      CHECK((*events)[i].type == "chunk");
    }
    CHECK(*store->LastSeq("run-1") == 4);
    CHECK(*store->LastSeq("never-written") == 0);
  }

  TEST_CASE("Payloads with NUL bytes and invalid UTF-8 round-trip byte-exact") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    std::string all;
    for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
    std::vector<NewEvent> batch = {Ev(std::string("\0\0\0", 3)), Ev(all),
                                   Ev("\xff\xfe\xc3\x28\xed\xa0\x80", "pty:stdout", "chunk", Encoding::kText),
                                   Ev(std::string(100000, '\0')), Ev("")};
    REQUIRE(store->Append("bin", batch).ok());
    store.reset();
    store = OpenStore(dir.file("s.db"));  // through the file, not a cache
    auto events = store->ReadEvents("bin", 0);
    REQUIRE(events.ok());
    REQUIRE(events->size() == batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      CHECK((*events)[i].payload == batch[i].payload);
      CHECK((*events)[i].encoding == batch[i].encoding);
    }
  }

  TEST_CASE("Timestamps are recorded, and given ones are kept") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    int64_t before = NowMicros();
    NewEvent given = Ev("x");
    given.ts_us = 1234567;
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev("now"), given}).ok());
    auto ev = store->ReadEvents("r", 0);
    REQUIRE(ev.ok());
    CHECK((*ev)[0].ts_us >= before);
    CHECK((*ev)[0].ts_us <= NowMicros());
    CHECK((*ev)[1].ts_us == 1234567);
  }

  TEST_CASE("Read honours the cursor, the limit and a visitor that stops") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    std::vector<NewEvent> batch;
    for (int i = 1; i <= 50; ++i) batch.push_back(Ev(std::to_string(i)));
    REQUIRE(store->Append("r", batch).ok());
    auto tail = store->ReadEvents("r", 45);
    REQUIRE(tail.ok());
    REQUIRE(tail->size() == 5);
    CHECK(tail->front().seq == 46);
    auto limited = store->ReadEvents("r", 10, 3);
    REQUIRE(limited.ok());
    REQUIRE(limited->size() == 3);
    CHECK(limited->back().seq == 13);
    int seen = 0;
    auto sum = store->Read("r", 0, [&](const EventView& v) {
      ++seen;
      return v.seq < 7;
    });
    REQUIRE(sum.ok());
    CHECK(seen == 7);
    CHECK(sum->stopped);
    CHECK(sum->last_seq == 7);
    auto past_end = store->ReadEvents("r", 50);
    REQUIRE(past_end.ok());
    CHECK(past_end->empty());
    CHECK(store->ReadEvents("r", -1).status().code() == StatusCode::kInvalidArgument);
  }

  TEST_CASE("ReadAll returns every run's events in commit (position) order") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    REQUIRE(store->Append("a", std::vector<NewEvent>{Ev("a1"), Ev("a2")}).ok());
    REQUIRE(store->Append("b", std::vector<NewEvent>{Ev("b1")}).ok());
    REQUIRE(store->Append("a", std::vector<NewEvent>{Ev("a3")}).ok());
    std::vector<std::string> order;
    std::vector<int64_t> positions;
    auto sum = store->ReadAll(0, [&](const EventView& v) {
      order.push_back(std::string(v.payload));
      positions.push_back(v.position);
      return true;
    });
    REQUIRE(sum.ok());
    CHECK(order == std::vector<std::string>{"a1", "a2", "b1", "a3"});
    CHECK(positions == std::vector<int64_t>{1, 2, 3, 4});
    CHECK(*store->LastPosition() == 4);
    order.clear();
    REQUIRE(store->ReadAll(2, [&](const EventView& v) {
                   order.push_back(std::string(v.payload));
                   return true;
                 }).ok());
    CHECK(order == std::vector<std::string>{"b1", "a3"});
  }

  TEST_CASE("A stale expected seq is a conflict that writes nothing") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    AppendOptions empty_only;
    empty_only.expected_last_seq = 0;
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev("1")}, empty_only).ok());
    auto again = store->Append("r", std::vector<NewEvent>{Ev("2"), Ev("3")}, empty_only);
    REQUIRE_FALSE(again.ok());
    CHECK(again.status().code() == StatusCode::kConflict);
    CHECK(again.status().actual_last_seq() == 1);
    CHECK(*store->LastSeq("r") == 1);
    AppendOptions at1;
    at1.expected_last_seq = 1;
    auto ok = store->Append("r", std::vector<NewEvent>{Ev("2")}, at1);
    REQUIRE(ok.ok());
    CHECK(ok->seqs == std::vector<int64_t>{2});
  }

  TEST_CASE("Re-appending an idempotency id returns the original seq and writes nothing") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    auto first = store->Append("r", std::vector<NewEvent>{Ev("x", "c", "t", Encoding::kBytes, "k1"),
                                                          Ev("y", "c", "t", Encoding::kBytes, "k2")});
    REQUIRE(first.ok());
    auto retry = store->Append("r", std::vector<NewEvent>{Ev("x", "c", "t", Encoding::kBytes, "k1"),
                                                          Ev("y", "c", "t", Encoding::kBytes, "k2")});
    REQUIRE(retry.ok());
    CHECK(retry->seqs == std::vector<int64_t>{1, 2});
    CHECK(retry->written == 0);
    CHECK(retry->duplicates == 2);
    CHECK(*store->LastSeq("r") == 2);

    // A retry with a now-stale expected seq is still an idempotent success.
    AppendOptions stale;
    stale.expected_last_seq = 0;
    auto stale_retry =
        store->Append("r", std::vector<NewEvent>{Ev("x", "c", "t", Encoding::kBytes, "k1")}, stale);
    REQUIRE(stale_retry.ok());
    CHECK(stale_retry->seqs == std::vector<int64_t>{1});

    // Mixed batch: the duplicate keeps its seq, the new one is appended;
    // a repeated id inside one batch is written once.
    auto mixed = store->Append("r", std::vector<NewEvent>{Ev("y", "c", "t", Encoding::kBytes, "k2"),
                                                          Ev("z", "c", "t", Encoding::kBytes, "k3"),
                                                          Ev("z", "c", "t", Encoding::kBytes, "k3")});
    REQUIRE(mixed.ok());
    CHECK(mixed->seqs == std::vector<int64_t>{2, 3, 3});
    CHECK(mixed->written == 1);
    CHECK(store->ReadEvents("r", 0)->size() == 3);
    // Ids are per run.
    auto other = store->Append("other", std::vector<NewEvent>{Ev("x", "c", "t", Encoding::kBytes, "k1")});
    REQUIRE(other.ok());
    CHECK(other->written == 1);
  }

  TEST_CASE("Concurrent writers on one run never duplicate or skip a seq") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    constexpr int kThreads = 8, kPerThread = 300;
    std::vector<std::thread> threads;
    std::mutex mu;
    std::vector<int64_t> acked;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          auto r = store->Append("shared", std::vector<NewEvent>{Ev(std::to_string(t) + ":" + std::to_string(i))});
          REQUIRE(r.ok());
          std::lock_guard<std::mutex> lk(mu);
          acked.push_back(r->seqs[0]);
        }
      });
    }
    for (auto& t : threads) t.join();
    std::set<int64_t> unique(acked.begin(), acked.end());
    CHECK(unique.size() == acked.size());
    CHECK(*unique.begin() == 1);
    CHECK(*unique.rbegin() == kThreads * kPerThread);
    auto events = store->ReadEvents("shared", 0);
    REQUIRE(events.ok());
    REQUIRE(events->size() == static_cast<size_t>(kThreads * kPerThread));
    std::set<std::string> payloads;
    for (size_t i = 0; i < events->size(); ++i) {
      CHECK((*events)[i].seq == static_cast<int64_t>(i + 1));
      payloads.insert((*events)[i].payload);
    }
    CHECK(payloads.size() == events->size());  // every write exactly once
  }

  TEST_CASE("Concurrent writers with expected seq: exactly one wins each slot") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    constexpr int kThreads = 6, kTarget = 200;
    std::atomic<int> conflicts{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (;;) {
          int64_t last = *store->LastSeq("cas");
          if (last >= kTarget) return;
          AppendOptions o;
          o.expected_last_seq = last;
          auto r = store->Append("cas", std::vector<NewEvent>{Ev(std::to_string(t) + "@" + std::to_string(last + 1))}, o);
          if (!r.ok()) {
            REQUIRE(r.status().code() == StatusCode::kConflict);
            CHECK(r.status().actual_last_seq() > last);
            ++conflicts;
          } else {
            CHECK(r->seqs[0] == last + 1);
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    auto events = store->ReadEvents("cas", 0);
    REQUIRE(events.ok());
    // Each event's payload names the seq its writer expected to get.
    for (size_t i = 0; i < events->size(); ++i) {
      const std::string& p = (*events)[i].payload;
      CHECK(p.substr(p.find('@') + 1) == std::to_string(i + 1));
    }
    CHECK(events->size() >= static_cast<size_t>(kTarget));
    MESSAGE("conflicts observed: " << conflicts.load());
  }

  TEST_CASE("AppendAsync calls back once the events are committed") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    std::promise<Result<AppendResult>> p;
    store->AppendAsync("r", {Ev("x")}, {}, [&](Result<AppendResult> r) {
      // Committed: a separate read connection already sees it.
      CHECK(*store->LastSeq("r") == 1);
      p.set_value(std::move(r));
    });
    auto r = p.get_future().get();
    REQUIRE(r.ok());
    CHECK(r->seqs[0] == 1);
    // Validation errors call back on the caller's thread, before returning.
    bool called = false;
    store->AppendAsync("bad id", {Ev("x")}, {}, [&](Result<AppendResult> res) {
      called = true;
      CHECK(res.status().code() == StatusCode::kInvalidArgument);
    });
    CHECK(called);
    CHECK(store->Flush().ok());
  }

  TEST_CASE("Appends queued together share one group commit") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    constexpr int kAppends = 2000;
    std::atomic<int> done{0};
    std::promise<void> all_done;
    for (int i = 0; i < kAppends; ++i) {
      store->AppendAsync("run-" + std::to_string(i % 16), {Ev(std::to_string(i))}, {},
                         [&](Result<AppendResult> r) {
                           CHECK(r.ok());
                           if (++done == kAppends) all_done.set_value();
                         });
    }
    all_done.get_future().wait();
    StoreStats st = store->Stats();
    CHECK(st.appends == kAppends);
    CHECK(st.events_appended == kAppends);
    CHECK(st.group_commits < kAppends / 4);  // many appends per transaction
    int64_t histogram_total = 0;
    for (int64_t c : st.commit_latency_counts) histogram_total += c;
    CHECK(histogram_total == st.group_commits);
    // Every run still reads back contiguous from 1.
    for (int r = 0; r < 16; ++r) {
      auto ev = store->ReadEvents("run-" + std::to_string(r), 0);
      REQUIRE(ev.ok());
      CHECK(ev->size() == kAppends / 16);
      for (size_t i = 0; i < ev->size(); ++i) CHECK((*ev)[i].seq == static_cast<int64_t>(i + 1));
    }
  }

  TEST_CASE("An append reports the positions of what it wrote, also inside a shared group") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    constexpr int kAppends = 600;
    std::mutex mu;
    std::map<std::pair<std::string, int64_t>, int64_t> expected;  // (run, seq) -> position
    std::atomic<int> done{0};
    std::promise<void> all_done;
    for (int i = 0; i < kAppends; ++i) {
      std::string run = "run-" + std::to_string(i % 7);
      std::vector<NewEvent> batch;
      for (int k = 0; k <= i % 3; ++k) batch.push_back(Ev(std::to_string(i) + "." + std::to_string(k)));
      // Every 5th append repeats an id: its duplicate is not written.
      if (i % 5 == 0) batch.push_back(Ev("dup", "pty:stdout", "chunk", Encoding::kBytes, "id-" + run));
      store->AppendAsync(run, std::move(batch), {}, [&, run](Result<AppendResult> r) {
        REQUIRE(r.ok());
        {
          std::lock_guard<std::mutex> lk(mu);
          if (r->written == 0) {
            CHECK(r->first_position == 0);
          } else {
            CHECK(r->first_position > 0);
            for (int64_t k = 0; k < r->written; ++k) expected[{run, r->first_seq + k}] = r->first_position + k;
          }
        }
        if (++done == kAppends) all_done.set_value();
      });
    }
    all_done.get_future().wait();
    size_t seen = 0;
    REQUIRE(store->ReadAll(0, [&](const EventView& v) {
      auto it = expected.find({std::string(v.run_id), v.seq});
      REQUIRE(it != expected.end());
      CHECK(it->second == v.position);
      ++seen;
      return true;
    }).ok());
    CHECK(seen == expected.size());
  }

  TEST_CASE("commit_inline: an idle store commits on the caller's thread, before AppendAsync returns") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    AppendOptions inline_opts;
    inline_opts.commit_inline = true;
    std::thread::id caller = std::this_thread::get_id(), ran_on;
    bool called = false;
    store->AppendAsync("r", {Ev("x")}, inline_opts, [&](Result<AppendResult> r) {
      REQUIRE(r.ok());
      CHECK(r->seqs[0] == 1);
      ran_on = std::this_thread::get_id();
      called = true;
      // Committed: another connection sees it already.
      CHECK(*store->LastSeq("r") == 1);
      // Waiting calls from the callback are refused instead of deadlocking;
      // queued ones are taken by the writer thread afterwards.
      CHECK(store->Append("r", std::vector<NewEvent>{Ev("y")}).status().code() == StatusCode::kBusy);
      CHECK(store->Flush().code() == StatusCode::kBusy);
      CHECK(store->Close().code() == StatusCode::kBusy);
      store->AppendAsync("r", {Ev("z")}, inline_opts, [](Result<AppendResult> r2) {
        CHECK(r2.ok());
        CHECK(r2->seqs[0] == 2);
      });
    });
    CHECK(called);
    CHECK(ran_on == caller);
    REQUIRE(store->Flush().ok());
    auto ev = store->ReadEvents("r", 0);
    REQUIRE(ev.ok());
    REQUIRE(ev->size() == 2);
    CHECK((*ev)[0].payload == "x");
    CHECK((*ev)[1].payload == "z");
    // Without the option the callback runs on the writer thread.
    std::promise<std::thread::id> where;
    store->AppendAsync("r", {Ev("w")}, {}, [&](Result<AppendResult>) { where.set_value(std::this_thread::get_id()); });
    CHECK(where.get_future().get() != caller);
  }

  TEST_CASE("return_events hands the appended events back with the result, inline or queued") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    std::string big(300 * 1024, 'q');
    for (bool inline_commit : {true, false}) {
      CAPTURE(inline_commit);
      AppendOptions o;
      o.commit_inline = inline_commit;
      o.return_events = true;
      NewEvent dup = Ev("again");
      dup.id = "id-1";
      std::promise<Result<AppendResult>> got;
      store->AppendAsync("r", {Ev("a"), Ev(big), dup}, o,
                         [&](Result<AppendResult> r) { got.set_value(std::move(r)); });
      auto r = got.get_future().get();
      REQUIRE(r.ok());
      REQUIRE(r->events.size() == 3);  // duplicates included, in input order
      CHECK(r->events[0].payload == "a");
      CHECK(r->events[1].payload == big);
      CHECK(r->events[2].id == "id-1");
      CHECK(r->seqs.size() == 3);
      // Without the option nothing comes back.
      auto plain = store->Append("r", std::vector<NewEvent>{Ev("b")});
      REQUIRE(plain.ok());
      CHECK(plain->events.empty());
    }
    // A failed append returns no result (and no events).
    AppendOptions o;
    o.return_events = true;
    o.expected_last_seq = 1;
    std::promise<Result<AppendResult>> got;
    store->AppendAsync("r", {Ev("c")}, o, [&](Result<AppendResult> r) { got.set_value(std::move(r)); });
    CHECK(got.get_future().get().status().code() == StatusCode::kConflict);
  }

  TEST_CASE("commit_inline mixed with queued appends from many threads keeps every run gap-free, in commit order") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    constexpr int kThreads = 6, kPerThread = 300;
    std::atomic<int> inline_calls{0};
    std::mutex mu;
    std::map<std::string, std::vector<std::pair<int64_t, int64_t>>> acked;  // run -> (seq, position)
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          std::string run = "run-" + std::to_string((t + i) % 3);
          AppendOptions o;
          o.commit_inline = (i % 3) != 0;
          std::promise<void> done;
          std::thread::id me = std::this_thread::get_id();
          store->AppendAsync(run, {Ev(std::to_string(t) + ":" + std::to_string(i))}, o,
                             [&, run, me](Result<AppendResult> r) {
                               REQUIRE(r.ok());
                               if (std::this_thread::get_id() == me) ++inline_calls;
                               std::lock_guard<std::mutex> lk(mu);
                               acked[run].emplace_back(r->first_seq, r->first_position);
                               done.set_value();
                             });
          done.get_future().wait();
        }
      });
    }
    for (auto& th : threads) th.join();
    CHECK(inline_calls > 0);  // some found the writer idle
    int64_t total = 0;
    for (auto& [run, list] : acked) {
      std::sort(list.begin(), list.end());
      for (size_t i = 0; i < list.size(); ++i) {
        CHECK(list[i].first == static_cast<int64_t>(i + 1));  // no gap, no duplicate
        if (i > 0) CHECK(list[i].second > list[i - 1].second);  // positions follow seqs
      }
      total += static_cast<int64_t>(list.size());
    }
    CHECK(total == kThreads * kPerThread);
    CHECK(*store->LastPosition() == total);
    std::set<int64_t> positions;
    REQUIRE(store->ReadAll(0, [&](const EventView& v) {
      positions.insert(v.position);
      return true;
    }).ok());
    CHECK(positions.size() == static_cast<size_t>(total));
  }

  TEST_CASE("Close while other threads commit inline loses no acknowledged event") {
    TempDir dir;
    const std::string path = dir.file("s.db");
    std::atomic<int64_t> acked{0};
    {
      auto store = OpenStore(path);
      std::atomic<bool> stop{false};
      std::vector<std::thread> threads;
      for (int t = 0; t < 3; ++t) {
        threads.emplace_back([&, t] {
          AppendOptions o;
          o.commit_inline = true;
          for (int i = 0; !stop; ++i) {
            std::promise<bool> done;
            store->AppendAsync("run-" + std::to_string(t), {Ev(std::to_string(i))}, o,
                               [&](Result<AppendResult> r) { done.set_value(r.ok()); });
            if (!done.get_future().get()) break;  // closed
            ++acked;
          }
        });
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      REQUIRE(store->Close().ok());
      stop = true;
      for (auto& th : threads) th.join();
    }
    auto store = OpenStore(path);
    int64_t stored = 0;
    REQUIRE(store->ReadAll(0, [&](const EventView&) {
      ++stored;
      return true;
    }).ok());
    CHECK(acked > 0);
    CHECK(stored >= acked);  // every acknowledged event is on disk
  }

  TEST_CASE("The WAL is checkpointed in the background and stays bounded") {
    TempDir dir;
    const std::string path = dir.file("s.db");
    auto store = OpenStore(path);
    // 48 MiB of incompressible payload in 512 KiB events: without
    // checkpoints the WAL would hold all of it.
    std::mt19937_64 rng(42);
    std::string chunk(512 * 1024, '\0');
    for (int i = 0; i < 96; ++i) {
      for (auto& c : chunk) c = static_cast<char>(rng());
      REQUIRE(store->Append("big", std::vector<NewEvent>{Ev(chunk)}).ok());
    }
    // The checkpointer runs beside the writer; give it a moment to finish.
    for (int i = 0; i < 200 && store->Stats().checkpoints == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(store->Stats().checkpoints >= 1);
    auto wal = std::filesystem::file_size(path + "-wal");
    CHECK_MESSAGE(wal < 24u * 1024 * 1024, "WAL grew to ", wal, " bytes");
    // And everything reads back after a reopen.
    REQUIRE(store->Close().ok());
    auto again = OpenStore(path);
    auto events = again->ReadEvents("big", 0);
    REQUIRE(events.ok());
    CHECK(events->size() == 96);
    CHECK(events->back().payload == chunk);
  }

  TEST_CASE("Reopening a store keeps events, and seq and position continue") {
    TempDir dir;
    {
      auto store = OpenStore(dir.file("s.db"), Durability::kFull);
      REQUIRE(store->Append("r", std::vector<NewEvent>{Ev("1"), Ev("2")}).ok());
      REQUIRE(store->Close().ok());
      CHECK(store->Append("r", std::vector<NewEvent>{Ev("x")}).status().code() == StatusCode::kClosed);
      CHECK(store->ReadEvents("r", 0).status().code() == StatusCode::kClosed);
      CHECK(store->Close().ok());  // idempotent
    }
    auto store = OpenStore(dir.file("s.db"));
    auto r = store->Append("r", std::vector<NewEvent>{Ev("3")});
    REQUIRE(r.ok());
    CHECK(r->seqs[0] == 3);
    CHECK(*store->LastPosition() == 3);
    auto info = store->GetRun("r");
    REQUIRE(info.ok());
    CHECK(info->event_count == 3);
    CHECK(info->payload_bytes == 3);
    CHECK(info->first_seq == 1);
    auto runs = store->ListRuns();
    REQUIRE(runs.ok());
    REQUIRE(runs->size() == 1);
    CHECK(store->GetRun("nope").status().code() == StatusCode::kNotFound);
  }

  TEST_CASE("An in-memory store works like a file store and leaves nothing behind") {
    TempDir dir;
    std::string old_tmp = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "";
    setenv("TMPDIR", dir.path().c_str(), 1);
    StoreOptions o;
    o.path = ":memory:";
    auto store = EventStore::Open(o);
    if (old_tmp.empty()) unsetenv("TMPDIR"); else setenv("TMPDIR", old_tmp.c_str(), 1);
    REQUIRE(store.ok());
    REQUIRE((*store)->Append("m", std::vector<NewEvent>{Ev("1"), Ev("2")}).ok());
    // A reader's callback may append (its own connection, no shared lock).
    auto sum = (*store)->Read("m", 0, [&](const EventView& v) {
      if (v.seq == 1) CHECK((*store)->Append("other", std::vector<NewEvent>{Ev("x")}).ok());
      return true;
    });
    REQUIRE(sum.ok());
    auto ev = (*store)->ReadEvents("m", 1);
    REQUIRE(ev.ok());
    REQUIRE(ev->size() == 1);
    CHECK((*ev)[0].payload == "2");
    CHECK(*(*store)->LastSeq("other") == 1);
    REQUIRE((*store)->Close().ok());
    CHECK(std::filesystem::is_empty(dir.path()));
  }

  TEST_CASE("Bad input is refused with a clear error and changes nothing") {
    TempDir dir;
    auto store = OpenStore(dir.file("s.db"));
    REQUIRE(store->Append("r", std::vector<NewEvent>{Ev("keep")}).ok());
    auto code = [&](std::string_view run, std::vector<NewEvent> b) {
      return store->Append(run, b).status().code();
    };
    CHECK(code("", {Ev("x")}) == StatusCode::kInvalidArgument);
    CHECK(code("has space", {Ev("x")}) == StatusCode::kInvalidArgument);
    CHECK(code("../etc", {Ev("x")}) == StatusCode::kInvalidArgument);
    CHECK(code(std::string(129, 'r'), {Ev("x")}) == StatusCode::kInvalidArgument);
    CHECK(code("r", {}) == StatusCode::kInvalidArgument);
    CHECK(code("r", {Ev(std::string(kMaxPayloadBytes + 1, 'x'))}) == StatusCode::kInvalidArgument);
    CHECK(code("r", {Ev("x", "")}) == StatusCode::kInvalidArgument);
    CHECK(code("r", {Ev("x", "bad channel")}) == StatusCode::kInvalidArgument);
    CHECK(code("r", {Ev("x", "c", std::string(65, 't'))}) == StatusCode::kInvalidArgument);
    CHECK(code("r", {Ev("x", "c", "t", Encoding::kBytes, std::string(129, 'i'))}) ==
          StatusCode::kInvalidArgument);
    // Malformed JSON where the encoding says json; the good event in the
    // same batch is not written either (all or nothing).
    auto bad_json = store->Append(
        "r", std::vector<NewEvent>{Ev("{\"ok\":1}", "c", "t", Encoding::kJson),
                                   Ev("{\"a\":", "c", "t", Encoding::kJson)});
    CHECK(bad_json.status().code() == StatusCode::kInvalidArgument);
    CHECK(bad_json.status().message().find("event 1") != std::string::npos);
    // JSON nested deeper than the library serialises safely (copies and
    // dumps recurse once per level): refused by name, nothing written.
    std::string deep = std::string(100000, '[') + std::string(100000, ']');
    auto too_deep = store->Append("r", std::vector<NewEvent>{Ev(deep, "c", "t", Encoding::kJson)});
    CHECK(too_deep.status().code() == StatusCode::kInvalidArgument);
    CHECK(too_deep.status().message().find("nested more than 256 deep") != std::string::npos);
    std::string at_limit = std::string(256, '[') + std::string(256, ']');
    CHECK(store->Append("deep", std::vector<NewEvent>{Ev(at_limit, "c", "t", Encoding::kJson)}).ok());
    CHECK(code("r", {Ev("[" + at_limit + "]", "c", "t", Encoding::kJson)}) ==
          StatusCode::kInvalidArgument);
    // Brackets inside strings are text, not nesting.
    CHECK(store->Append("deep", std::vector<NewEvent>{Ev("[\"" + std::string(1000, '[') + "\\\"\"]", "c",
                                                         "t", Encoding::kJson)})
              .ok());
    NewEvent weird = Ev("x");
    weird.encoding = static_cast<Encoding>(7);
    CHECK(code("r", {weird}) == StatusCode::kInvalidArgument);
    // An exactly-at-limit payload is fine.
    CHECK(store->Append("big", std::vector<NewEvent>{Ev(std::string(kMaxPayloadBytes, 'x'))}).ok());
    auto ev = store->ReadEvents("r", 0);
    REQUIRE(ev.ok());
    REQUIRE(ev->size() == 1);
    CHECK((*ev)[0].payload == "keep");
    CHECK(store->ReadEvents("bad run", 0).status().code() == StatusCode::kInvalidArgument);
  }

  TEST_CASE("A file that is not a database is refused as corruption and left untouched") {
    TempDir dir;
    std::string path = dir.file("junk.db");
    std::string junk(8192, '\0');
    for (size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<char>((i * 131) ^ 0x5a);
    { std::ofstream(path, std::ios::binary) << junk; }
    StoreOptions o;
    o.path = path;
    auto r = EventStore::Open(o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kCorruption);
    std::ifstream in(path, std::ios::binary);
    std::string after((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(after == junk);
  }

  TEST_CASE("A SQLite database that is not ours is refused") {
    TempDir dir;
    std::string path = dir.file("other.db");
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "CREATE TABLE foo(x); INSERT INTO foo VALUES (1);", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
    StoreOptions o;
    o.path = path;
    auto r = EventStore::Open(o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kCorruption);
  }

  TEST_CASE("A damaged block reads as corruption; other runs still read") {
    TempDir dir;
    std::string path = dir.file("s.db");
    {
      auto store = OpenStore(path);
      std::vector<NewEvent> batch;
      for (int i = 0; i < 100; ++i) batch.push_back(Ev("line " + std::to_string(i) + " of some terminal output\r\n"));
      REQUIRE(store->Append("victim", batch).ok());
      REQUIRE(store->Append("bystander", std::vector<NewEvent>{Ev("fine")}).ok());
    }
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db,
                         "UPDATE event_blocks SET data = substr(data, 1, length(data) / 2) "
                         "WHERE run_pk = (SELECT run_pk FROM runs WHERE run_id = 'victim')",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
    auto store = OpenStore(path);
    auto bad = store->ReadEvents("victim", 0);
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.status().code() == StatusCode::kCorruption);
    auto good = store->ReadEvents("bystander", 0);
    REQUIRE(good.ok());
    CHECK(good->size() == 1);
  }

  TEST_CASE("A read-only store reads but refuses writes") {
    TempDir dir;
    std::string path = dir.file("s.db");
    { REQUIRE(OpenStore(path)->Append("r", std::vector<NewEvent>{Ev("x")}).ok()); }
    StoreOptions o;
    o.path = path;
    o.read_only = true;
    auto store = EventStore::Open(o);
    REQUIRE_MESSAGE(store.ok(), store.status().ToString());
    CHECK((*store)->ReadEvents("r", 0)->size() == 1);
    CHECK((*store)->Append("r", std::vector<NewEvent>{Ev("y")}).status().code() == StatusCode::kReadOnly);
    CHECK((*store)->catalog().PutSettings("ui", "{}").code() == StatusCode::kReadOnly);
    o.path = dir.file("missing.db");
    CHECK(EventStore::Open(o).status().code() == StatusCode::kNotFound);
  }

  TEST_CASE("A file without write permission is refused unless opened read-only") {
    if (geteuid() == 0) {
      MESSAGE("skipped: root ignores file permissions (the read_only option is tested above)");
      return;
    }
    TempDir dir;
    std::string path = dir.file("s.db");
    { REQUIRE(OpenStore(path)->Append("r", std::vector<NewEvent>{Ev("x")}).ok()); }
    REQUIRE(chmod(path.c_str(), 0444) == 0);
    StoreOptions o;
    o.path = path;
    auto r = EventStore::Open(o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kReadOnly);
  }

  TEST_CASE("Options are validated") {
    StoreOptions o;
    CHECK(EventStore::Open(o).status().code() == StatusCode::kInvalidArgument);
    o.path = "/nonexistent-dir/x/y.db";
    CHECK_FALSE(EventStore::Open(o).ok());
  }
}
