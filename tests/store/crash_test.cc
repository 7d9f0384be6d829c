// Crash safety: a child process appends as fast as it can and reports every
// acknowledged seq over a pipe; the parent SIGKILLs it at a random moment,
// reopens the store and checks that every acknowledged event is present,
// intact and contiguous. 20 trials by default; DISPATCH_CRASH_TRIALS=1000
// for the long run.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <random>
#include <thread>

#include "store/append_journal.h"
#include "support/store_helpers.h"

using namespace dispatch;
using namespace dispatch::testing;

namespace {

// The payload of (run, seq) is a function of both, so damage shows.
std::string PayloadFor(int run, int64_t seq) {
  std::string p = "run" + std::to_string(run) + " seq " + std::to_string(seq) + " ";
  p.push_back('\0');
  p.append(static_cast<size_t>(seq % 97), static_cast<char>('a' + seq % 26));
  p.push_back(static_cast<char>(0xff));
  return p;
}

struct Ack {
  int32_t run;
  int32_t pad;
  int64_t last_seq;
};

[[noreturn]] void ChildMain(const std::string& path, int fd, Durability d, bool exclusive) {
  StoreOptions o;
  o.path = path;
  o.durability = d;
  o.exclusive = exclusive;
  auto store = EventStore::Open(o);
  if (!store.ok()) _exit(3);
  std::vector<std::thread> threads;
  for (int run = 0; run < 3; ++run) {
    threads.emplace_back([&, run] {
      std::string run_id = "crash-" + std::to_string(run);
      std::mt19937 rng(static_cast<unsigned>(run * 7919 + getpid()));
      int64_t next = *(*store)->LastSeq(run_id) + 1;
      for (;;) {
        int n = 1 + static_cast<int>(rng() % 20);
        std::vector<NewEvent> batch;
        for (int i = 0; i < n; ++i) batch.push_back(Ev(PayloadFor(run, next + i)));
        AppendOptions ao;
        // A lost event would show as a conflict. (Exclusive: no expected
        // seq, so that small appends go to the append journal; a lost event
        // shows as a wrong last seq.)
        if (!exclusive) ao.expected_last_seq = next - 1;
        auto r = (*store)->Append(run_id, batch, ao);
        if (!r.ok() || r->last_seq != next + n - 1) _exit(4);
        next += n;
        // Exclusive: paced, so that the writer is often idle and appends are
        // journaled rather than queued behind each other.
        if (exclusive) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
        Ack a{run, 0, r->last_seq};
        if (write(fd, &a, sizeof a) != static_cast<ssize_t>(sizeof a)) _exit(5);
      }
    });
  }
  for (auto& t : threads) t.join();
  _exit(0);
}

void RunTrials(int trials, Durability d, bool exclusive = false) {
  TempDir dir;
  std::string path = dir.file("crash.db");
  std::mt19937 rng(12345);
  int64_t acked[3] = {0, 0, 0};
  int journal_left = 0;  // trials that ended with blocks only in the append journal
  // Exclusive: a few more trials if none happened to end with blocks only in
  // the journal (a loaded machine may not start appending before the kill).
  for (int trial = 0; trial < trials || (exclusive && journal_left == 0 && trial < trials + 60);
       ++trial) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      close(fds[0]);
      ChildMain(path, fds[1], d, exclusive);
    }
    close(fds[1]);
    std::this_thread::sleep_for(std::chrono::milliseconds(30 + rng() % 120));
    kill(pid, SIGKILL);
    // Drain every ack the child managed to send.
    Ack a;
    ssize_t got;
    while ((got = read(fds[0], &a, sizeof a)) == static_cast<ssize_t>(sizeof a)) {
      REQUIRE(a.run >= 0);
      REQUIRE(a.run < 3);
      acked[a.run] = std::max(acked[a.run], a.last_seq);
    }
    close(fds[0]);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE_MESSAGE(WIFSIGNALED(status), "child exited on its own with " << WEXITSTATUS(status));

    {
      std::vector<internal::JournalRecord> records;
      uint64_t end = 0;
      REQUIRE(internal::AppendJournal::ReadAll(path + "-append.log", &records, &end).ok());
      if (!records.empty()) ++journal_left;
    }
    auto store = OpenStore(path);
    for (int run = 0; run < 3; ++run) {
      std::string run_id = "crash-" + std::to_string(run);
      int64_t expect = 1;
      bool intact = true;
      auto sum = store->Read(run_id, 0, [&](const EventView& v) {
        if (v.seq != expect || v.payload != PayloadFor(run, v.seq)) {
          intact = false;
          return false;
        }
        ++expect;
        return true;
      });
      REQUIRE_MESSAGE(sum.ok(), sum.status().ToString());
      REQUIRE_MESSAGE(intact, "trial " << trial << " run " << run << ": damaged at seq " << expect);
      REQUIRE_MESSAGE(expect - 1 >= acked[run], "trial " << trial << " run " << run
                                                         << ": acknowledged " << acked[run]
                                                         << " but found " << expect - 1);
    }
  }
  MESSAGE("crash trials: " << trials << ", acknowledged seqs at the end: " << acked[0] << ", "
                           << acked[1] << ", " << acked[2] << "; trials recovering the append journal: "
                           << journal_left);
  if (exclusive) CHECK(journal_left > 0);
}

int Trials() {
  const char* env = std::getenv("DISPATCH_CRASH_TRIALS");
  return env ? std::max(1, std::atoi(env)) : 20;
}

}  // namespace

TEST_SUITE("Crash") {
  TEST_CASE("Every acknowledged event survives SIGKILL of the writer (normal durability)") {
    RunTrials(Trials(), Durability::kNormal);
  }
  TEST_CASE("Every acknowledged event survives SIGKILL of the writer (exclusive: append journal)") {
    RunTrials(Trials(), Durability::kNormal, /*exclusive=*/true);
  }
  TEST_CASE("Every acknowledged event survives SIGKILL of the writer (full durability)") {
    RunTrials(std::max(3, Trials() / 4), Durability::kFull);
  }
}
