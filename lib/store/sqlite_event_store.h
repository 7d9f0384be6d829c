// SqliteEventStore: the embedded EventStore backend (one SQLite file, WAL).
//
// Layout (doc/storage.md): a run's events from one group commit are packed
// into one `event_blocks` row, LZ4-compressed (block_codec.h). One writer
// thread owns the write connection and group-commits everything queued;
// readers use a small pool of read connections (WAL lets them run beside the
// writer). Subscriptions get committed blocks pushed from the writer and each
// runs on its own thread (subscription.h).
//
// Thread-safety: thread-safe (see EventStore).
#ifndef DISPATCH_LIB_STORE_SQLITE_EVENT_STORE_H_
#define DISPATCH_LIB_STORE_SQLITE_EVENT_STORE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "dispatch/event_store.h"
#include "store/append_journal.h"
#include "store/subscription.h"

struct sqlite3;

namespace SQLite {
class Database;
}

namespace dispatch::internal {

// For tests: how long the append journal must be idle before the writer
// copies it into SQLite (default 20 ms); returns the previous value.
int64_t SetJournalIdleMicrosForTest(int64_t us);

class SqliteCatalog;
struct ReaderConn;
struct WriterStatements;

class SqliteEventStore final : public EventStore {
 public:
  static Result<std::unique_ptr<EventStore>> OpenStore(const StoreOptions& options);
  ~SqliteEventStore() override;

  Result<AppendResult> Append(std::string_view run_id, std::span<const NewEvent> events,
                              const AppendOptions& options) override;
  void AppendAsync(std::string run_id, std::vector<NewEvent> events, const AppendOptions& options,
                   AppendCallback done) override;
  Status Flush() override;

  Result<ReadSummary> Read(std::string_view run_id, int64_t after_seq, const EventVisitor& visit,
                           const ReadOptions& options) override;
  Result<ReadSummary> ReadAll(int64_t after_position, const EventVisitor& visit,
                              const ReadOptions& options) override;
  Result<int64_t> LastSeq(std::string_view run_id) override;
  Result<int64_t> LastPosition() override;
  Result<RunInfo> GetRun(std::string_view run_id) override;
  Result<std::vector<RunInfo>> ListRuns() override;

  Result<std::unique_ptr<Subscription>> Subscribe(std::string_view run_id, int64_t after_seq,
                                                  SubscriptionHandlers handlers,
                                                  const SubscribeOptions& options) override;
  Result<std::unique_ptr<Subscription>> SubscribeAll(int64_t after_position,
                                                     SubscriptionHandlers handlers,
                                                     const SubscribeOptions& options) override;

  Result<int64_t> TruncateBefore(std::string_view run_id, int64_t before_seq) override;
  Result<int64_t> DeleteOlderThan(int64_t ts_us) override;

  Catalog& catalog() override;
  StoreStats Stats() const override;
  Status Close() override;

  // For the catalog: runs `op` on the writer thread in a transaction of its
  // own and returns its status once committed (or rolled back on failure).
  Status Write(std::function<Status(SQLite::Database&)> op);
  // For the catalog: runs `fn` with a read connection.
  Status WithReader(const std::function<Status(SQLite::Database&)>& fn);

 private:
  struct Request {
    // Append (op empty) or a write op.
    std::string run_id;
    std::vector<NewEvent> events;
    AppendOptions options;
    AppendCallback done;
    std::function<Status(SQLite::Database&)> op;
    std::function<void(Status)> op_done;
    bool flush_marker = false;
  };
  struct GroupOutcome;

  SqliteEventStore(const StoreOptions& options, bool temporary);
  Status OpenDatabase();
  Status CheckOpen(bool for_write) const;
  // Queues a flush marker or a write op for the writer and waits for it.
  Status QueueAndWait(Request req);
  void WriterLoop();
  void CommitAppends(std::vector<Request>& group);
  void RunOp(Request& req);
  Result<int64_t> TruncateImpl(SQLite::Database& db, int64_t run_pk, int64_t before_seq);
  std::unique_ptr<ReaderConn> AcquireReader(Status* status);
  void ReleaseReader(std::unique_ptr<ReaderConn> conn);
  Result<ReadSummary> ReadWith(ReaderConn& conn, std::string_view run_id, int64_t after_seq,
                               const EventVisitor& visit, size_t limit);
  Result<std::unique_ptr<Subscription>> StartSubscription(std::shared_ptr<SubState> state,
                                                          int64_t cursor);
  // True on the writer thread and on a thread committing inline (a
  // commit_inline append), where Append/Flush/Write would deadlock.
  bool OnWriterThread() const;
  // Commits `req` on the calling thread (the caller holds the writer role).
  void CommitInline(Request req);
  // Counts a durable commit (a transaction or a journal write) begun at
  // `started` in the stats and the latency histogram.
  void CountCommit(std::chrono::steady_clock::time_point started);

  // ---- the append journal (exclusive stores; doc/storage.md) ----
  // Takes the lock file: exclusively, or shared for a plain writable open.
  Status LockFile();
  // At a writable open: inserts the journal's records that SQLite does not
  // hold yet, then empties it (writer connection, before the writer starts).
  Status RecoverJournal();
  // Writer role: makes `req` durable with one journal record and completes
  // it, if it qualifies (a small append to a run this writer knows, no ids,
  // no expected seq, room left); false = commit it the usual way.
  bool TryJournalAppend(Request& req);
  // Writer role, inside a write transaction: inserts journaled blocks (the
  // pending ones, or those recovered), consecutive records of a run as one
  // block, and updates their runs. FinishDrain after the copy's commit
  // forgets the pending ones and starts a new generation of the file.
  void WriteJournaled(const std::vector<JournalRecord>& records);
  void FinishDrain();
  // Writer role: copies the pending blocks into SQLite in a transaction.
  Status DrainJournal();
  // Before a read: journaled blocks not yet in SQLite are copied first.
  Status EnsureDrained();

  const StoreOptions options_;
  const bool temporary_;  // a ":memory:" store: a temp file removed at Close
  std::unique_ptr<SQLite::Database> writer_db_;
  // The writer's prepared statements (writer thread only; closed before
  // writer_db_).
  std::unique_ptr<WriterStatements> writer_stmts_;
  std::unique_ptr<SqliteCatalog> catalog_;

  // Lifetime: public calls hold life_mu_ shared; Close takes it exclusively
  // to tear down connections.
  mutable std::shared_mutex life_mu_;
  std::atomic<bool> closing_{false};
  bool closed_ = false;  // guarded by life_mu_

  // The writer queue.
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<Request> queue_;  // guarded by queue_mu_
  bool stop_writer_ = false;   // guarded by queue_mu_
  // Someone holds the writer role: the writer thread with a group, or a
  // caller committing inline. The write connection is used only by the
  // holder. Guarded by queue_mu_.
  bool writer_busy_ = false;
  std::thread writer_;
  std::thread::id writer_id_;

  // Checkpoints run on their own thread and connection, so the writer never
  // stalls on a checkpoint's fsyncs: the writer's WAL hook counts pages and
  // wakes it (doc/storage.md).
  static int OnWalCommit(void* self, sqlite3* db, const char* name, int pages);
  void CheckpointLoop();
  void StopCheckpointer();
  std::mutex ckpt_mu_;
  std::condition_variable ckpt_cv_;
  bool ckpt_wanted_ = false;  // guarded by ckpt_mu_
  bool ckpt_stop_ = false;    // guarded by ckpt_mu_
  bool ckpt_running_ = false; // guarded by ckpt_mu_: the checkpointer is copying
  // The WAL's size in pages after the last commit, set by the WAL hook (by
  // the writer role's holder). When it outgrows what the background
  // checkpoints keep up with (a sustained flood), the writer thread
  // checkpoints itself between two groups.
  int wal_pages_ = 0;
  bool writer_ckpt_due_ = false;  // writer role only
  // Whether the writer thread should checkpoint after `group` (just
  // committed): past kWriterCheckpointPages after a flood-sized group, or past
  // the hard bound. Sticky until the writer thread has done it.
  bool WriterCheckpointDue(const std::vector<Request>& group);
  // The next global position (writer thread only): max(store_meta's
  // next_position, last block's last_pos + 1), kept in memory; store_meta is
  // only written when retention deletes blocks (doc/storage.md).
  int64_t next_pos_ = 1;
  // The compressed form of the block being written (writer role only),
  // kept between commits; released when a huge event made it large.
  std::string pack_buffer_;
  // run id → (run_pk, first_seq, last_seq) as this writer's last commits
  // left them (writer role only), so that a commit need not read its run's
  // row first. Valid only while the database's data version
  // (SQLITE_FCNTL_DATA_VERSION, which any other write bumps, this
  // connection's catalog writes and retention included) is still the one
  // after that commit; otherwise cleared at the next commit.
  struct RunState {
    int64_t pk = 0, first_seq = 1, last_seq = 0;
  };
  std::unordered_map<std::string, RunState> run_state_;
  unsigned int run_state_version_ = 0;
  bool run_state_valid_ = false;
  // The append journal (null unless exclusive) and the blocks written to it
  // but not yet to SQLite (writer role), in append order. journal_pending_
  // (their count) may be read by anyone.
  std::unique_ptr<AppendJournal> journal_;
  std::vector<JournalRecord> pending_;
  size_t pending_bytes_ = 0;
  std::atomic<int64_t> journal_pending_{0};
  std::atomic<int64_t> last_journal_us_{0};  // NowMicros of the last journaled append
  std::atomic<int64_t> stat_journal_appends_{0}, stat_journal_drains_{0};
  int lock_fd_ = -1;
  std::thread checkpointer_;
  std::atomic<int64_t> stat_checkpoints_{0};

  std::mutex readers_mu_;
  std::vector<std::unique_ptr<ReaderConn>> readers_;  // idle, guarded by readers_mu_

  // run id → run_pk, filled after commits (pks never change).
  std::mutex pk_mu_;
  std::unordered_map<std::string, int64_t> pk_cache_;

  SubscriptionHub hub_;

  // Stats.
  std::atomic<int64_t> stat_appends_{0}, stat_events_{0}, stat_bytes_{0}, stat_commits_{0},
      stat_commit_us_{0};
  static constexpr int kLatencyBuckets = 12;
  std::atomic<int64_t> latency_counts_[kLatencyBuckets] = {};
};

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_STORE_SQLITE_EVENT_STORE_H_
