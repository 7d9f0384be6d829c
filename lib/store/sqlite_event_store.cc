// SqliteEventStore implementation: open/migrate, the group-commit writer,
// reads, subscriptions and retention. See sqlite_event_store.h.
#include "store/sqlite_event_store.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <fmt/format.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <system_error>
#include <map>
#include <unordered_set>

#include "store/block_codec.h"
#include "store/block_table.h"
#include "store/schema.h"
#include "store/sqlite_catalog.h"
#include "util/json_check.h"
#include "util/thread_name.h"

namespace dispatch::internal {

// A block's decompressed body, remembered with the block's identity: a read
// that stops at its limit inside a block is usually continued by the next
// read from the same thread (paging), which then starts in the same block and
// need not decompress it again. A block is identified by its row (last_pos)
// and first seq, which truncation changes when it rewrites a block in place.
struct DecodedBlock {
  std::string body;
  int64_t last_pos = -1;
  int64_t first_seq = 0;
  void Forget() { last_pos = -1; }
};

// A read connection with its prepared statements and a reusable buffer.
struct ReaderConn {
  ReaderConn(const std::string& path, int flags, int busy_ms)
      : owned(std::make_unique<SQLite::Database>(path, flags, busy_ms)), db(owned.get()) {
    Prepare();
  }
  void Prepare() {
    get_run = std::make_unique<SQLite::Statement>(
        *db, "SELECT run_pk, first_seq, last_seq FROM runs WHERE run_id = ?");
    blocks = std::make_unique<SQLite::Statement>(
        *db,
        "SELECT " DISPATCH_BLOCK_COLUMNS " FROM event_blocks WHERE run_pk = ? AND last_seq > ? "
        "ORDER BY last_seq");
    blocks_all = std::make_unique<SQLite::Statement>(
        *db,
        "SELECT b.first_seq, b.last_seq, b.last_pos, b.base_ts, b.codec, b.raw_size, b.data, "
        "r.run_id FROM event_blocks b JOIN runs r ON r.run_pk = b.run_pk "
        "WHERE b.last_pos > ? ORDER BY b.last_pos");
  }
  std::unique_ptr<SQLite::Database> owned;
  SQLite::Database* db;
  std::unique_ptr<SQLite::Statement> get_run, blocks, blocks_all;
  DecodedBlock scratch;
};

// The next global position: the floor retention leaves in store_meta, or
// the last block's last_pos + 1, whichever is larger.
constexpr const char* kNextPositionSql =
    "SELECT max((SELECT value FROM store_meta WHERE key='next_position'), "
    "(SELECT coalesce(max(last_pos), 0) + 1 FROM event_blocks))";

// The writer's statements, prepared once: a commit of one small event is a
// handful of B-tree writes, and re-preparing ten statements per commit used
// to cost more than the writes themselves.
struct WriterStatements {
  explicit WriterStatements(SQLite::Database& db)
      : begin(db, "BEGIN IMMEDIATE"),
        commit(db, "COMMIT"),
        rollback(db, "ROLLBACK"),
        get_run(db, "SELECT run_pk, first_seq, last_seq FROM runs WHERE run_id = ?"),
        get_id(db, "SELECT seq FROM event_ids WHERE run_pk = ? AND id = ?"),
        get_next_pos(db, kNextPositionSql),
        ins_run(db,
                "INSERT INTO runs (run_id, first_seq, last_seq, event_count, payload_bytes, "
                "created_us, updated_us) VALUES (?, 1, ?, ?, ?, ?, ?)"),
        upd_run(db,
                "UPDATE runs SET last_seq = ?, event_count = event_count + ?, "
                "payload_bytes = payload_bytes + ?, updated_us = ? WHERE run_pk = ?"),
        ins_block(db, kInsertBlockSql),
        ins_id(db, "INSERT INTO event_ids (run_pk, id, seq) VALUES (?, ?, ?)"),
        upd_pos(db, "UPDATE store_meta SET value = max(value, ?) WHERE key='next_position'") {}
  SQLite::Statement begin, commit, rollback, get_run, get_id, get_next_pos, ins_run, upd_run,
      ins_block, ins_id, upd_pos;
  // A run's row after `events` more events (`bytes` of payload) up to `last_seq`.
  void UpdateRun(int64_t run_pk, int64_t last_seq, int64_t events, int64_t bytes, int64_t now) {
    upd_run.reset();
    upd_run.bind(1, last_seq);
    upd_run.bind(2, events);
    upd_run.bind(3, bytes);
    upd_run.bind(4, now);
    upd_run.bind(5, run_pk);
    upd_run.exec();
  }
};

namespace {

// A write transaction on the writer's cached statements: rolled back unless
// committed (also when an exception unwinds through it).
class WriteTransaction {
 public:
  explicit WriteTransaction(WriterStatements& st) : st_(st) { Run(st_.begin); }
  ~WriteTransaction() {
    if (done_) return;
    try {
      Run(st_.rollback);
    } catch (const SQLite::Exception&) {
      // Nothing to do: SQLite rolls back a failed transaction itself.
    }
  }
  void Commit() {
    Run(st_.commit);
    done_ = true;
  }
  WriteTransaction(const WriteTransaction&) = delete;
  WriteTransaction& operator=(const WriteTransaction&) = delete;

 private:
  static void Run(SQLite::Statement& stmt) {
    stmt.reset();
    stmt.exec();
  }
  WriterStatements& st_;
  bool done_ = false;
};

constexpr int64_t kLatencyBoundsUs[] = {50,   100,   250,   500,   1000,   2500,
                                        5000, 10000, 25000, 50000, 100000, INT64_MAX};
constexpr size_t kMaxBlockRawBytes = size_t{1} << 20;
constexpr int64_t kMaxBlockEvents = 8192;
constexpr size_t kMaxIdleReaders = 8;
// WAL pages after which the checkpointer is woken (SQLite's own default for
// its automatic checkpoint).
constexpr int kCheckpointPages = 1000;
// A background checkpoint copies what was committed when it started; while
// writers never pause (a flood), it never catches up and the WAL is never
// restarted. Past this many pages (16 MiB), after a large group (a flood's),
// the writer checkpoints itself between two groups: nothing
// is appended meanwhile, so it completes and the next transaction restarts
// the WAL from its beginning. Once writes pause, the background checkpointer
// catches up on its own, so commits then never wait for a checkpoint (a
// keystroke after a flood would otherwise wait for the whole copy and its
// fsync) — unless the WAL passes the hard bound (64 MiB).
constexpr int kWriterCheckpointPages = 4000;
constexpr int kWriterCheckpointHardPages = 16000;
constexpr size_t kFloodGroupBytes = 256 * 1024;
// The append journal (exclusive stores): what one journaled append may hold,
// and how much may wait for the copy into SQLite. The writer copies once the
// journal has been idle for g_journal_idle_us (20 ms) or past the soft bound; past the
// hard bounds appends commit the usual way (which copies too).
constexpr size_t kJournalMaxAppendEvents = 256;
constexpr size_t kJournalMaxAppendBytes = 64 * 1024;
constexpr int64_t kJournalSoftPending = 256;
constexpr size_t kJournalMaxPending = 1024;
constexpr size_t kJournalMaxPendingBytes = size_t{1} << 20;
std::atomic<int64_t> g_journal_idle_us{20'000};

// > 0 while this thread is inside a read (holding the store's life lock):
// Close from there would deadlock, so it is refused.
thread_local int tl_read_depth = 0;
struct ReadDepth {
  ReadDepth() { ++tl_read_depth; }
  ~ReadDepth() { --tl_read_depth; }
};

Status ValidateBatch(std::string_view run_id, std::span<const NewEvent> events) {
  Status s = ValidateRunId(run_id);
  if (!s.ok()) return s;
  if (events.empty()) return Status::InvalidArgument("append of an empty batch");
  if (events.size() > kMaxBatchEvents) {
    return Status::InvalidArgument(
        fmt::format("batch has {} events; the limit is {}", events.size(), kMaxBatchEvents));
  }
  size_t total = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    const NewEvent& e = events[i];
    if (!IsValidEventName(e.channel)) {
      return Status::InvalidArgument(fmt::format(
          "event {}: channel must be 1-{} bytes of [A-Za-z0-9._:/-]", i, kMaxChannelBytes));
    }
    if (!IsValidEventName(e.type)) {
      return Status::InvalidArgument(fmt::format(
          "event {}: type must be 1-{} bytes of [A-Za-z0-9._:/-]", i, kMaxChannelBytes));
    }
    if (e.id.size() > kMaxEventIdBytes) {
      return Status::InvalidArgument(
          fmt::format("event {}: id is {} bytes; the limit is {}", i, e.id.size(), kMaxEventIdBytes));
    }
    if (e.payload.size() > kMaxPayloadBytes) {
      return Status::InvalidArgument(fmt::format("event {}: payload is {} bytes; the limit is {}",
                                                 i, e.payload.size(), kMaxPayloadBytes));
    }
    if (static_cast<uint8_t>(e.encoding) > static_cast<uint8_t>(Encoding::kText)) {
      return Status::InvalidArgument(fmt::format("event {}: unknown encoding", i));
    }
    if (e.encoding == Encoding::kJson) {
      if (const char* problem = JsonProblem(e.payload)) {
        return Status::InvalidArgument(
            fmt::format("event {}: payload {} but its encoding is json", i, problem));
      }
    }
    total += e.payload.size();
  }
  if (total > kMaxBatchBytes) {
    return Status::InvalidArgument(
        fmt::format("batch payloads total {} bytes; the limit is {}", total, kMaxBatchBytes));
  }
  return Status::Ok();
}

Status FromSqlite(const SQLite::Exception& e, std::string_view what) {
  int code = e.getErrorCode() & 0xff;
  std::string msg = fmt::format("{}: {}", what, e.what());
  switch (code) {
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
      return Status::Corruption(std::move(msg));
    case SQLITE_READONLY:
      return Status::ReadOnly(std::move(msg));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Status::Busy(std::move(msg));
    default:
      return Status::IOError(std::move(msg));
  }
}

// A run's state while a group commit is being built.
struct RunWork {
  int64_t pk = 0;  // 0 = new run, inserted at commit
  int64_t first_seq = 1;
  int64_t last_seq = 0;
  int64_t added_events = 0;
  int64_t added_bytes = 0;
  int64_t commit_first_pos = 0;  // position of blocks.front()'s first event
  // Blocks being built.
  struct Block {
    int64_t first_seq = 0, count = 0, base_ts = 0, prev_ts = 0, max_ts = 0;
    std::string body;
  };
  std::vector<Block> blocks;
  std::vector<std::pair<std::string, int64_t>> new_ids;
  std::unordered_map<std::string, int64_t> batch_ids;  // ids seen in this group
};

}  // namespace

int64_t SetJournalIdleMicrosForTest(int64_t us) { return g_journal_idle_us.exchange(us); }

SqliteEventStore::SqliteEventStore(const StoreOptions& options, bool temporary)
    : options_(options), temporary_(temporary) {}

Result<std::unique_ptr<EventStore>> SqliteEventStore::OpenStore(const StoreOptions& options) {
  if (options.path.empty()) return Status::InvalidArgument("store path is empty");
  StoreOptions opts = options;
  bool temporary = false;
  if (opts.path == ":memory:") {
    // A private store that vanishes on close. It is a file in $TMPDIR (removed
    // at Close) rather than SQLite's :memory:, so that readers and the writer
    // get separate connections exactly as with any other store.
    if (opts.read_only) return Status::InvalidArgument("a :memory: store cannot be read-only");
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/dispatch-mem-XXXXXX";
    int fd = mkstemp(tmpl.data());
    if (fd < 0) return Status::IOError(fmt::format("cannot create a private store in {}", tmpl));
    ::close(fd);
    opts.path = tmpl;
    opts.durability = Durability::kNormal;
    opts.create_if_missing = true;
    temporary = true;
  }
  std::unique_ptr<SqliteEventStore> store(new SqliteEventStore(opts, temporary));
  Status s = store->LockFile();
  if (!s.ok()) return s;
  s = store->OpenDatabase();
  if (!s.ok()) return s;
  store->catalog_ = std::make_unique<SqliteCatalog>(store.get());
  store->writer_ = std::thread([raw = store.get()] { raw->WriterLoop(); });
  store->writer_id_ = store->writer_.get_id();
  if (!opts.read_only) {
    store->checkpointer_ = std::thread([raw = store.get()] { raw->CheckpointLoop(); });
  }
  return std::unique_ptr<EventStore>(std::move(store));
}

Status SqliteEventStore::OpenDatabase() {
  const bool ro = options_.read_only;
  {
    std::error_code ec;
    bool exists = std::filesystem::exists(options_.path, ec);
    if (!exists && (ro || !options_.create_if_missing)) {
      return Status::NotFound(fmt::format("store file does not exist: {}", options_.path));
    }
  }
  int flags = SQLite::OPEN_NOMUTEX |
              (ro ? SQLite::OPEN_READONLY
                  : (SQLite::OPEN_READWRITE | (options_.create_if_missing ? SQLite::OPEN_CREATE : 0)));
  try {
    writer_db_ = std::make_unique<SQLite::Database>(options_.path, flags, options_.busy_timeout_ms);
    SQLite::Database& db = *writer_db_;
    // Touch the file: a non-database fails here with SQLITE_NOTADB.
    db.execAndGet("SELECT count(*) FROM sqlite_master");
    if (!ro && sqlite3_db_readonly(db.getHandle(), "main") == 1) {
      return Status::ReadOnly(fmt::format(
          "store file is not writable: {} (open it with read_only to read it)", options_.path));
    }
    if (!ro) {
      std::string mode = db.execAndGet("PRAGMA journal_mode=WAL").getString();
      if (mode != "wal") {
        return Status::IOError(fmt::format("cannot switch {} to WAL mode (got {})", options_.path, mode));
      }
    }
    db.exec(temporary_ ? "PRAGMA synchronous=OFF"
            : options_.durability == Durability::kFull ? "PRAGMA synchronous=FULL"
                                                       : "PRAGMA synchronous=NORMAL");
    db.exec("PRAGMA cache_size=-32768");
    db.exec("PRAGMA temp_store=MEMORY");
    if (ro) {
      int version = db.execAndGet("PRAGMA user_version").getInt();
      if (version != kSchemaVersion) {
        return Status::Corruption(fmt::format(
            "read-only store has schema version {}; this build reads version {} (open it "
            "writable once to migrate)",
            version, kSchemaVersion));
      }
    } else {
      Status s = Migrate(db);
      if (!s.ok()) return s;
    }
    // Check the file is one of ours and readable all the way to the blocks.
    db.execAndGet("SELECT count(*) FROM runs");
    if (!ro) {
      writer_stmts_ = std::make_unique<WriterStatements>(db);
      // Blocks a crashed exclusive writer had only journaled (before the
      // next position is read: they hold positions too).
      if (!temporary_) {
        Status rs = RecoverJournal();
        if (!rs.ok()) return rs;
      }
      if (options_.exclusive && options_.durability != Durability::kFull) {
        // Without it (no space for the file, no mapping) appends commit as
        // usual: the journal is only a faster path.
        auto j = AppendJournal::Open(options_.path + "-append.log");
        if (j.ok()) journal_ = std::move(*j);
      }
      SQLite::Statement& np = writer_stmts_->get_next_pos;
      if (!np.executeStep()) return Status::Corruption("store_meta has no next_position");
      next_pos_ = np.getColumn(0).getInt64();
      np.reset();
      // Replaces SQLite's automatic checkpoint (which would run inside the
      // writer's COMMIT) with a wake-up of the checkpointer thread.
      sqlite3_wal_hook(db.getHandle(), &SqliteEventStore::OnWalCommit, this);
    }
  } catch (const SQLite::Exception& e) {
    return FromSqlite(e, fmt::format("cannot open store {}", options_.path));
  }
  return Status::Ok();
}

SqliteEventStore::~SqliteEventStore() { (void)Close(); }

Status SqliteEventStore::CheckOpen(bool for_write) const {
  if (closing_.load()) return Status::Closed("the store is closed");
  if (for_write && options_.read_only) return Status::ReadOnly("the store was opened read-only");
  return Status::Ok();
}

// ---------------------------------------------------------------- writing

Result<AppendResult> SqliteEventStore::Append(std::string_view run_id,
                                              std::span<const NewEvent> events,
                                              const AppendOptions& options) {
  if (OnWriterThread()) {
    return Status::Busy("Append called from a store callback would deadlock; use AppendAsync");
  }
  std::promise<Result<AppendResult>> promise;
  auto future = promise.get_future();
  // The caller waits anyway: if the writer is idle, it commits itself.
  AppendOptions opts = options;
  opts.commit_inline = true;
  AppendAsync(std::string(run_id), std::vector<NewEvent>(events.begin(), events.end()), opts,
              [&promise](Result<AppendResult> r) { promise.set_value(std::move(r)); });
  return future.get();
}

namespace {
// The store whose writer role this thread holds for an inline commit.
thread_local const SqliteEventStore* tl_inline_store = nullptr;
}  // namespace

bool SqliteEventStore::OnWriterThread() const {
  return std::this_thread::get_id() == writer_id_ || tl_inline_store == this;
}

void SqliteEventStore::AppendAsync(std::string run_id, std::vector<NewEvent> events,
                                   const AppendOptions& options, AppendCallback done) {
  Status s = CheckOpen(true);
  if (s.ok()) s = ValidateBatch(run_id, events);
  if (!s.ok()) {
    if (done) done(s);
    return;
  }
  Request req;
  req.run_id = std::move(run_id);
  req.events = std::move(events);
  req.options = options;
  req.done = std::move(done);
  bool inline_commit = false;
  {
    std::lock_guard<std::mutex> lk(queue_mu_);
    if (stop_writer_) {
      if (req.done) req.done(Status::Closed("the store is closed"));
      return;
    }
    // Inline only with nothing queued: what is queued was appended first and
    // must commit first (and a nested inline commit from a callback queues).
    if (options.commit_inline && queue_.empty() && !writer_busy_ && tl_inline_store == nullptr) {
      writer_busy_ = true;
      inline_commit = true;
    } else {
      queue_.push_back(std::move(req));
    }
  }
  if (inline_commit) {
    CommitInline(std::move(req));
  } else {
    queue_cv_.notify_one();
  }
}

bool SqliteEventStore::WriterCheckpointDue(const std::vector<Request>& group) {
  if (wal_pages_ < kWriterCheckpointPages) return writer_ckpt_due_;
  size_t bytes = 0;
  for (const Request& r : group) {
    for (const NewEvent& e : r.events) bytes += e.payload.size();
  }
  if (wal_pages_ >= kWriterCheckpointHardPages || bytes >= kFloodGroupBytes) writer_ckpt_due_ = true;
  return writer_ckpt_due_;
}

void SqliteEventStore::CommitInline(Request req) {
  std::vector<Request> group;
  group.push_back(std::move(req));
  tl_inline_store = this;
  if (!TryJournalAppend(group.front())) CommitAppends(group);
  tl_inline_store = nullptr;
  bool wake = false;
  {
    std::lock_guard<std::mutex> lk(queue_mu_);
    writer_busy_ = false;
    // The writer thread checkpoints (it can take a while, so not here): a
    // marker wakes it.
    if (WriterCheckpointDue(group) && !stop_writer_) {
      Request marker;
      marker.flush_marker = true;
      queue_.push_back(std::move(marker));
    }
    wake = !queue_.empty() || stop_writer_;
  }
  if (wake) queue_cv_.notify_all();
}

// ---------------------------------------------------------------- the append journal

namespace {
// The event_blocks row of a journaled block, compressed into `packed`.
BlockRow JournaledRow(const JournalRecord& r, std::string* packed) {
  BlockRow row;
  row.codec = CompressBody(*r.body, packed);
  row.last_pos = r.first_pos + r.count - 1;
  row.run_pk = r.run_pk;
  row.first_seq = r.first_seq;
  row.last_seq = r.first_seq + r.count - 1;
  row.base_ts = r.base_ts;
  row.max_ts = r.max_ts;
  row.raw_size = static_cast<int64_t>(r.body->size());
  row.data = packed;
  return row;
}
}  // namespace

Status SqliteEventStore::LockFile() {
  if (options_.read_only || temporary_) return Status::Ok();
  const std::string path = options_.path + "-lock";
  lock_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) {
    if (!options_.exclusive) return Status::Ok();  // as before lock files: SQLite's locks alone
    return Status::IOError(
        fmt::format("cannot create the lock file {}: {}", path, std::strerror(errno)));
  }
  if (::flock(lock_fd_, (options_.exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0) {
    return Status::Ok();
  }
  int err = errno;
  ::close(lock_fd_);
  lock_fd_ = -1;
  if (err != EWOULDBLOCK) {
    return Status::IOError(fmt::format("cannot lock {}: {}", path, std::strerror(err)));
  }
  if (options_.exclusive) {
    return Status::Busy(fmt::format(
        "store {} is open for writing elsewhere; an exclusive open needs it alone", options_.path));
  }
  return Status::Busy(fmt::format(
      "store {} is held exclusively by another process (a running dispatch-host?); open it "
      "read_only, or stop that process first",
      options_.path));
}

Status SqliteEventStore::RecoverJournal() {
  const std::string path = options_.path + "-append.log";
  std::vector<JournalRecord> records;
  uint64_t stopped_at = 0;
  Status s = AppendJournal::ReadAll(path, &records, &stopped_at);
  if (!s.ok()) return s;
  if (records.empty()) return Status::Ok();
  SQLite::Database& db = *writer_db_;
  WriterStatements& st = *writer_stmts_;
  try {
    WriteTransaction txn(st);
    SQLite::Statement get_last(db, "SELECT last_seq FROM runs WHERE run_pk = ?");
    std::unordered_map<int64_t, int64_t> last;  // run_pk → last seq, as recovered so far
    std::vector<JournalRecord> missing;         // what SQLite does not hold yet, in order
    for (JournalRecord& r : records) {
      // A record passed its CRC, so it is what some writer wrote; still, what
      // goes into event_blocks must be a block readers can read.
      int64_t decoded = 0;
      {
        BlockReader reader(*r.body, r.base_ts);
        EventView v;
        while (reader.Next(&v)) ++decoded;
        if (!reader.status().ok()) decoded = -1;
      }
      if (r.first_seq < 1 || r.first_pos < 1 || r.count > kMaxBlockEvents || decoded != r.count ||
          r.first_seq > INT64_MAX / 2 || r.first_pos > INT64_MAX / 2) {
        return Status::Corruption(fmt::format(
            "append journal {}: a record of run {} is not a valid block (seq {}, {} events, {} "
            "decoded); the journal is kept",
            path, r.run_id, r.first_seq, r.count, decoded));
      }
      auto it = last.find(r.run_pk);
      if (it == last.end()) {
        get_last.reset();
        get_last.bind(1, r.run_pk);
        if (!get_last.executeStep()) {
          return Status::Corruption(fmt::format(
              "append journal {}: a record of run {} (pk {}), which the store does not hold; "
              "the journal is kept",
              path, r.run_id, r.run_pk));
        }
        it = last.emplace(r.run_pk, get_last.getColumn(0).getInt64()).first;
      }
      const int64_t end_seq = r.first_seq + r.count - 1;
      if (end_seq <= it->second) continue;  // copied before the process ended
      if (r.first_seq != it->second + 1) {
        return Status::Corruption(fmt::format(
            "append journal {}: run {} continues at seq {}, but the store's last seq is {}; "
            "the journal is kept",
            path, r.run_id, r.first_seq, it->second));
      }
      it->second = end_seq;
      missing.push_back(std::move(r));
    }
    WriteJournaled(missing);
    txn.Commit();
  } catch (const SQLite::Exception& e) {
    return FromSqlite(e, fmt::format("recovering the append journal {}", path));
  }
  if (::truncate(path.c_str(), 0) != 0) {
    return Status::IOError(fmt::format("cannot empty {}: {}", path, std::strerror(errno)));
  }
  return Status::Ok();
}

void SqliteEventStore::CountCommit(std::chrono::steady_clock::time_point started) {
  int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(
                   std::chrono::steady_clock::now() - started)
                   .count();
  stat_commits_.fetch_add(1);
  stat_commit_us_.fetch_add(us);
  for (int i = 0; i < kLatencyBuckets; ++i) {
    if (us <= kLatencyBoundsUs[i]) {
      latency_counts_[i].fetch_add(1);
      break;
    }
  }
}

bool SqliteEventStore::TryJournalAppend(Request& req) {
  if (!journal_ || !run_state_valid_ || req.options.expected_last_seq) return false;
  if (req.events.size() > kJournalMaxAppendEvents) return false;
  auto known = run_state_.find(req.run_id);
  if (known == run_state_.end()) return false;  // a new run: its row is made by a transaction
  size_t bytes = 0;
  for (const NewEvent& e : req.events) {
    if (!e.id.empty()) return false;  // deduplication needs the event_ids table
    bytes += e.payload.size();
  }
  if (bytes > kJournalMaxAppendBytes || pending_.size() >= kJournalMaxPending ||
      pending_bytes_ + bytes > kJournalMaxPendingBytes) {
    return false;
  }
  auto started = std::chrono::steady_clock::now();
  RunState& rs = known->second;
  const int64_t now = NowMicros();
  const auto n = static_cast<int64_t>(req.events.size());
  auto body = std::make_shared<std::string>();
  JournalRecord rec;
  rec.run_pk = rs.pk;
  rec.first_seq = rs.last_seq + 1;
  rec.count = n;
  rec.first_pos = next_pos_;
  rec.payload_bytes = static_cast<int64_t>(bytes);
  rec.run_id = req.run_id;
  int64_t prev_ts = 0;
  for (size_t i = 0; i < req.events.size(); ++i) {
    const NewEvent& e = req.events[i];
    int64_t ts = e.ts_us != 0 ? e.ts_us : now;
    if (i == 0) rec.base_ts = prev_ts = rec.max_ts = ts;
    EncodeEvent(e, ts, &prev_ts, body.get());
    rec.max_ts = std::max(rec.max_ts, ts);
  }
  rec.body = body;
  // A failed write is not an error of this append: the usual commit takes it
  // (and reports whatever is really wrong).
  if (!journal_->Append(rec).ok()) return false;
  rs.last_seq += n;
  next_pos_ += n;
  pending_bytes_ += bytes;
  pending_.push_back(std::move(rec));
  const JournalRecord& kept = pending_.back();
  const bool first = journal_pending_.fetch_add(1) == 0;
  last_journal_us_.store(now);

  CountCommit(started);
  stat_journal_appends_.fetch_add(1);
  stat_appends_.fetch_add(1);
  stat_events_.fetch_add(n);
  stat_bytes_.fetch_add(static_cast<int64_t>(bytes));

  auto cb = std::make_shared<CommittedBlock>();
  cb->run_id = req.run_id;
  cb->first_seq = kept.first_seq;
  cb->first_pos = kept.first_pos;
  cb->count = n;
  cb->base_ts = kept.base_ts;
  cb->body = kept.body;
  hub_.Publish(BlockList{std::move(cb)});

  AppendResult ar;
  ar.seqs.resize(req.events.size());
  for (int64_t i = 0; i < n; ++i) ar.seqs[static_cast<size_t>(i)] = kept.first_seq + i;
  ar.first_seq = kept.first_seq;
  ar.first_position = kept.first_pos;
  ar.last_seq = rs.last_seq;
  ar.written = n;
  if (req.options.return_events) ar.events = std::move(req.events);
  if (req.done) req.done(std::move(ar));
  // The writer copies the journal into SQLite once it is idle: it is told
  // when there is something to copy.
  if (first) queue_cv_.notify_all();
  return true;
}

void SqliteEventStore::WriteJournaled(const std::vector<JournalRecord>& records) {
  if (records.empty()) return;
  WriterStatements& st = *writer_stmts_;
  const int64_t now = NowMicros();
  struct Totals {
    int64_t last_seq = 0, events = 0, bytes = 0;
  };
  std::unordered_map<int64_t, Totals> runs;
  // Consecutive records of one run (contiguous in seq and position) become
  // one block, as one group commit of theirs would have: an interactive
  // session is not stored as a row per keystroke, and the copy is one insert.
  auto insert = [&](const JournalRecord& r) {
    InsertBlock(st.ins_block, JournaledRow(r, &pack_buffer_));
    Totals& t = runs[r.run_pk];
    t.last_seq = r.first_seq + r.count - 1;
    t.events += r.count;
    t.bytes += r.payload_bytes;
  };
  JournalRecord merged;
  std::string body;
  for (size_t i = 0; i < records.size();) {
    const JournalRecord& first = records[i];
    size_t j = i + 1;
    int64_t count = first.count;
    size_t raw = first.body->size();
    while (j < records.size()) {
      const JournalRecord& r = records[j];
      if (r.run_pk != first.run_pk || r.first_seq != first.first_seq + count ||
          r.first_pos != first.first_pos + count || count + r.count > kMaxBlockEvents ||
          raw + r.body->size() > kMaxBlockRawBytes) {
        break;
      }
      count += r.count;
      raw += r.body->size();
      ++j;
    }
    bool intact = j > i + 1;
    if (intact) {
      merged = first;
      merged.count = count;
      body.clear();
      body.reserve(raw);
      int64_t prev_ts = first.base_ts;
      for (size_t k = i; k < j && intact; ++k) {
        const JournalRecord& r = records[k];
        merged.max_ts = std::max(merged.max_ts, r.max_ts);
        if (k > i) merged.payload_bytes += r.payload_bytes;
        BlockReader reader(*r.body, r.base_ts);
        EventView v;
        int64_t n = 0;
        for (; reader.Next(&v); ++n) EncodeEventView(v, &prev_ts, &body);
        intact = reader.status().ok() && n == r.count;
      }
    }
    if (intact) {
      merged.body = std::make_shared<const std::string>(body);
      insert(merged);
    } else {  // one record (or, not expected: a body that does not decode) a block
      for (size_t k = i; k < j; ++k) insert(records[k]);
    }
    i = j;
  }
  for (const auto& [pk, t] : runs) st.UpdateRun(pk, t.last_seq, t.events, t.bytes, now);
}

void SqliteEventStore::FinishDrain() {
  if (pending_.empty()) return;
  pending_.clear();
  pending_bytes_ = 0;
  journal_pending_.store(0);
  stat_journal_drains_.fetch_add(1);
  journal_->Reset();
}

Status SqliteEventStore::DrainJournal() {
  if (pending_.empty()) return Status::Ok();
  try {
    WriteTransaction txn(*writer_stmts_);
    WriteJournaled(pending_);
    txn.Commit();
  } catch (const SQLite::Exception& e) {
    return FromSqlite(e, "copying the append journal into the store failed");
  }
  if (run_state_valid_) {
    run_state_valid_ = sqlite3_file_control(writer_db_->getHandle(), "main",
                                            SQLITE_FCNTL_DATA_VERSION,
                                            &run_state_version_) == SQLITE_OK;
  }
  FinishDrain();
  return Status::Ok();
}

Status SqliteEventStore::EnsureDrained() {
  if (journal_pending_.load() == 0) return Status::Ok();
  if (OnWriterThread()) return DrainJournal();  // this thread holds the writer role
  Status s = Flush();
  return s.code() == StatusCode::kClosed ? Status::Ok() : s;  // the read reports it
}

Status SqliteEventStore::Flush() {
  Status s = CheckOpen(false);
  if (!s.ok()) return s;
  if (OnWriterThread()) return Status::Busy("Flush called from a store callback");
  Request req;
  req.flush_marker = true;
  return QueueAndWait(std::move(req));
}

Status SqliteEventStore::Write(std::function<Status(SQLite::Database&)> op) {
  Status s = CheckOpen(true);
  if (!s.ok()) return s;
  if (OnWriterThread()) return Status::Busy("catalog write called from a store callback");
  Request req;
  req.op = std::move(op);
  return QueueAndWait(std::move(req));
}

Status SqliteEventStore::QueueAndWait(Request req) {
  std::promise<Status> promise;
  auto future = promise.get_future();
  req.op_done = [&promise](Status st) { promise.set_value(std::move(st)); };
  {
    std::lock_guard<std::mutex> lk(queue_mu_);
    if (stop_writer_) return Status::Closed("the store is closed");
    queue_.push_back(std::move(req));
  }
  queue_cv_.notify_one();
  return future.get();
}

void SqliteEventStore::WriterLoop() {
  SetThreadName("dispatch-writer");
  std::vector<Request> group;
  for (;;) {
    group.clear();
    {
      std::unique_lock<std::mutex> lk(queue_mu_);
      // An inline commit holds the writer role: wait for it (also to stop,
      // so that Close never closes the connection under it). Journaled
      // blocks are copied into SQLite once appends pause (or many wait).
      bool drain = false;
      for (;;) {
        if (!writer_busy_ && (stop_writer_ || !queue_.empty())) break;
        const int64_t pending = journal_pending_.load();
        if (writer_busy_ || pending == 0) {
          queue_cv_.wait(lk);
          continue;
        }
        const int64_t idle = NowMicros() - last_journal_us_.load();
        const int64_t idle_needed = g_journal_idle_us.load();
        if (idle >= idle_needed || pending >= kJournalSoftPending) {
          drain = true;
          break;
        }
        queue_cv_.wait_for(lk, std::chrono::microseconds(idle_needed - idle));
      }
      if (drain || queue_.empty()) {
        // Copy (also when stopping: everything else was written).
        const bool stopping = !drain;
        writer_busy_ = true;
        lk.unlock();
        (void)DrainJournal();  // on failure the blocks stay pending: retried later
        lk.lock();
        writer_busy_ = false;
        if (stopping) return;
        continue;
      }
      // Either one op / flush marker, or a run of appends up to the limit.
      if (!queue_.front().op && !queue_.front().flush_marker) {
        size_t events = 0;
        while (!queue_.empty() && !queue_.front().op && !queue_.front().flush_marker &&
               (group.empty() || events + queue_.front().events.size() <= options_.max_group_events)) {
          events += queue_.front().events.size();
          group.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      } else {
        group.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      writer_busy_ = true;
    }
    if (group.front().flush_marker) {
      // Everything before it was committed (a marker without op_done only
      // wakes the writer for a checkpoint); journaled blocks are copied.
      Status ds = DrainJournal();
      if (group.front().op_done) group.front().op_done(std::move(ds));
    } else if (group.front().op) {
      RunOp(group.front());
    } else {
      CommitAppends(group);
    }
    // After the group's callbacks: no one waits on this group.
    if (WriterCheckpointDue(group)) {
      writer_ckpt_due_ = false;
      wal_pages_ = 0;  // the next commit reports the new size
      auto checkpoint = [this] {
        int log = 0, done = 0;
        return sqlite3_wal_checkpoint_v2(writer_db_->getHandle(), nullptr,
                                         SQLITE_CHECKPOINT_PASSIVE, &log, &done);
      };
      int rc = checkpoint();
      if (rc == SQLITE_BUSY) {
        // The background checkpointer is copying (one checkpoint at a
        // time): wait for it, then copy the rest. Skipping instead let the
        // WAL grow without bound while a slow (descheduled) checkpointer
        // held the checkpoint lock under a flood.
        {
          std::unique_lock<std::mutex> lk(ckpt_mu_);
          ckpt_cv_.wait_for(lk, std::chrono::seconds(5), [this] { return !ckpt_running_ || ckpt_stop_; });
        }
        rc = checkpoint();
      }
      if (rc == SQLITE_OK) stat_checkpoints_.fetch_add(1);
    }
    std::lock_guard<std::mutex> lk(queue_mu_);
    writer_busy_ = false;
  }
}

int SqliteEventStore::OnWalCommit(void* self, sqlite3* /*db*/, const char* /*name*/, int pages) {
  auto* store = static_cast<SqliteEventStore*>(self);
  store->wal_pages_ = pages;  // on the writer role's thread
  if (pages >= kCheckpointPages) {
    {
      std::lock_guard<std::mutex> lk(store->ckpt_mu_);
      store->ckpt_wanted_ = true;
    }
    store->ckpt_cv_.notify_all();  // (the writer may wait on it too, see WriterLoop)
  }
  return SQLITE_OK;
}

void SqliteEventStore::CheckpointLoop() {
  SetThreadName("dispatch-ckpt");
  std::unique_ptr<SQLite::Database> db;
  try {
    db = std::make_unique<SQLite::Database>(options_.path, SQLite::OPEN_READWRITE | SQLite::OPEN_NOMUTEX,
                                            options_.busy_timeout_ms);
    // Checkpoints sync like the writer's commits would (none for a private
    // temporary store).
    db->exec(temporary_ ? "PRAGMA synchronous=OFF" : "PRAGMA synchronous=NORMAL");
  } catch (const SQLite::Exception&) {
    // Without its own connection the checkpointer cannot run; the WAL is
    // then checkpointed at Close (and by SQLite when the next opener finds it).
    return;
  }
  std::unique_lock<std::mutex> lk(ckpt_mu_);
  bool behind = false;  // the last checkpoint left frames behind
  for (;;) {
    if (behind) {
      // Frames committed while it ran were left behind: try again shortly,
      // so once writes pause the WAL is fully copied (readers then read the
      // database file directly, and the next commit restarts the WAL).
      ckpt_cv_.wait_for(lk, std::chrono::milliseconds(20), [this] { return ckpt_stop_ || ckpt_wanted_; });
    } else {
      ckpt_cv_.wait(lk, [this] { return ckpt_stop_ || ckpt_wanted_; });
    }
    if (ckpt_stop_) return;
    ckpt_wanted_ = false;
    ckpt_running_ = true;
    lk.unlock();
    // PASSIVE: copies what no reader still needs, never blocks the writer.
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(db->getHandle(), nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    if (rc == SQLITE_OK) stat_checkpoints_.fetch_add(1);
    behind = rc == SQLITE_BUSY || (rc == SQLITE_OK && done < log);
    lk.lock();
    ckpt_running_ = false;
    ckpt_cv_.notify_all();  // a writer may wait for this one to finish
  }
}

void SqliteEventStore::StopCheckpointer() {
  {
    std::lock_guard<std::mutex> lk(ckpt_mu_);
    ckpt_stop_ = true;
  }
  ckpt_cv_.notify_all();
  if (checkpointer_.joinable()) checkpointer_.join();
}

void SqliteEventStore::RunOp(Request& req) {
  // The op may read or change runs (retention): journaled blocks first.
  Status s = DrainJournal();
  if (s.ok()) {
    try {
      WriteTransaction txn(*writer_stmts_);
      s = req.op(*writer_db_);
      if (s.ok()) txn.Commit();
    } catch (const SQLite::Exception& e) {
      s = FromSqlite(e, "store write failed");
    }
  }
  // What the op changed is read back by the next commit, before anything is
  // journaled again.
  run_state_valid_ = false;
  req.op_done(std::move(s));
}

void SqliteEventStore::CommitAppends(std::vector<Request>& group) {
  auto started = std::chrono::steady_clock::now();
  SQLite::Database& db = *writer_db_;

  std::vector<Result<AppendResult>> results;
  results.reserve(group.size());
  // Runs in first-touch order so blocks get positions in a stable order.
  std::vector<std::string> order;
  std::unordered_map<std::string, RunWork> runs;
  BlockList published;
  std::unordered_map<std::string, int64_t> new_pks;
  Status failure;

  try {
    WriterStatements& st = *writer_stmts_;
    WriteTransaction txn(st);
    // Journaled blocks go first: they were appended first (and the run rows
    // read below must include them).
    WriteJournaled(pending_);
    // The remembered run states hold if nothing else wrote since this
    // writer's last commit (read now that the transaction has started).
    if (run_state_valid_) {
      unsigned int version = 0;
      if (sqlite3_file_control(db.getHandle(), "main", SQLITE_FCNTL_DATA_VERSION, &version) !=
              SQLITE_OK ||
          version != run_state_version_) {
        run_state_.clear();
      }
      run_state_valid_ = false;  // until this commit succeeds
    } else {
      run_state_.clear();
    }
    SQLite::Statement& get_run = st.get_run;
    SQLite::Statement& get_id = st.get_id;
    const int64_t now = NowMicros();

    for (Request& req : group) {
      auto it = runs.find(req.run_id);
      if (it == runs.end()) {
        RunWork w;
        if (auto known = run_state_.find(req.run_id); known != run_state_.end()) {
          w.pk = known->second.pk;
          w.first_seq = known->second.first_seq;
          w.last_seq = known->second.last_seq;
        } else {
          get_run.reset();
          get_run.bind(1, req.run_id);
          if (get_run.executeStep()) {
            w.pk = get_run.getColumn(0).getInt64();
            w.first_seq = get_run.getColumn(1).getInt64();
            w.last_seq = get_run.getColumn(2).getInt64();
          }
          get_run.reset();
        }
        it = runs.emplace(req.run_id, std::move(w)).first;
        order.push_back(req.run_id);
      }
      RunWork& w = it->second;

      // Deduplicate by id: within this group first, then against the table.
      AppendResult ar;
      ar.seqs.assign(req.events.size(), 0);
      std::vector<bool> dup(req.events.size(), false);
      std::unordered_map<std::string, size_t> in_request;  // id → index (new events)
      for (size_t i = 0; i < req.events.size(); ++i) {
        const std::string& id = req.events[i].id;
        if (id.empty()) continue;
        if (auto b = w.batch_ids.find(id); b != w.batch_ids.end()) {
          ar.seqs[i] = b->second;
          dup[i] = true;
          continue;
        }
        if (in_request.count(id)) {
          dup[i] = true;  // seq filled in below from the first occurrence
          continue;
        }
        if (w.pk != 0) {
          get_id.reset();
          get_id.bind(1, w.pk);
          get_id.bind(2, id.data(), static_cast<int>(id.size()));
          bool found = get_id.executeStep();
          if (found) ar.seqs[i] = get_id.getColumn(0).getInt64();
          get_id.reset();
          if (found) {
            dup[i] = true;
            continue;
          }
        }
        in_request.emplace(id, i);
      }
      size_t fresh = 0;
      for (bool d : dup) fresh += d ? 0 : 1;
      ar.duplicates = static_cast<int64_t>(req.events.size() - fresh);

      if (fresh > 0 && req.options.expected_last_seq && *req.options.expected_last_seq != w.last_seq) {
        results.emplace_back(Status::Conflict(
            fmt::format("run {}: expected last seq {}, but it is {}", req.run_id,
                        *req.options.expected_last_seq, w.last_seq),
            w.last_seq));
        continue;
      }
      for (size_t i = 0; i < req.events.size(); ++i) {
        if (dup[i]) continue;
        const NewEvent& e = req.events[i];
        int64_t seq = ++w.last_seq;
        ar.seqs[i] = seq;
        if (ar.first_seq == 0) ar.first_seq = seq;
        int64_t ts = e.ts_us != 0 ? e.ts_us : now;
        if (w.blocks.empty() || w.blocks.back().count >= kMaxBlockEvents ||
            w.blocks.back().body.size() >= kMaxBlockRawBytes) {
          RunWork::Block b;
          b.first_seq = seq;
          b.base_ts = b.prev_ts = b.max_ts = ts;
          w.blocks.push_back(std::move(b));
        }
        RunWork::Block& b = w.blocks.back();
        EncodeEvent(e, ts, &b.prev_ts, &b.body);
        b.max_ts = std::max(b.max_ts, ts);
        ++b.count;
        ++w.added_events;
        w.added_bytes += static_cast<int64_t>(e.payload.size());
        if (!e.id.empty()) {
          w.new_ids.emplace_back(e.id, seq);
          w.batch_ids.emplace(e.id, seq);
        }
      }
      // Duplicates inside this request point at the first occurrence.
      for (size_t i = 0; i < req.events.size(); ++i) {
        if (dup[i] && ar.seqs[i] == 0) ar.seqs[i] = ar.seqs[in_request.at(req.events[i].id)];
      }
      ar.written = static_cast<int64_t>(fresh);
      ar.last_seq = w.last_seq;
      results.emplace_back(std::move(ar));
    }

    // Write blocks, runs and ids.
    int64_t next_pos = next_pos_;
    SQLite::Statement& ins_run = st.ins_run;
    SQLite::Statement& ins_block = st.ins_block;
    SQLite::Statement& ins_id = st.ins_id;
    std::string& packed = pack_buffer_;  // reused: no allocation per commit
    for (const std::string& run_id : order) {
      RunWork& w = runs[run_id];
      if (w.added_events == 0) continue;
      if (w.pk == 0) {
        ins_run.reset();
        ins_run.bind(1, run_id);
        ins_run.bind(2, w.last_seq);
        ins_run.bind(3, w.added_events);
        ins_run.bind(4, w.added_bytes);
        ins_run.bind(5, now);
        ins_run.bind(6, now);
        ins_run.exec();
        w.pk = db.getLastInsertRowid();
        new_pks.emplace(run_id, w.pk);
      } else {
        st.UpdateRun(w.pk, w.last_seq, w.added_events, w.added_bytes, now);
      }
      for (RunWork::Block& b : w.blocks) {
        Codec codec = CompressBody(b.body, &packed);
        int64_t first_pos = next_pos;
        if (w.commit_first_pos == 0) w.commit_first_pos = first_pos;
        next_pos += b.count;
        BlockRow row;
        row.last_pos = next_pos - 1;
        row.run_pk = w.pk;
        row.first_seq = b.first_seq;
        row.last_seq = b.first_seq + b.count - 1;
        row.base_ts = b.base_ts;
        row.max_ts = b.max_ts;
        row.codec = codec;
        row.raw_size = static_cast<int64_t>(b.body.size());
        row.data = &packed;
        InsertBlock(ins_block, row);
        // Always built (it moves the body, no copy): whether anyone
        // subscribes is only known after the commit (see Publish).
        auto cb = std::make_shared<CommittedBlock>();
        cb->run_id = run_id;
        cb->first_seq = b.first_seq;
        cb->first_pos = first_pos;
        cb->count = b.count;
        cb->base_ts = b.base_ts;
        cb->body = std::make_shared<const std::string>(std::move(b.body));
        published.push_back(std::move(cb));
      }
      for (const auto& [id, seq] : w.new_ids) {
        ins_id.reset();
        ins_id.bind(1, w.pk);
        ins_id.bindNoCopy(2, id.data(), static_cast<int>(id.size()));
        ins_id.bind(3, seq);
        ins_id.exec();
      }
    }
    txn.Commit();
    FinishDrain();
    next_pos_ = next_pos;
    if (pack_buffer_.capacity() > (size_t{4} << 20)) std::string().swap(pack_buffer_);
    // Bounded: a long-lived store sees many runs, most of them finished.
    if (run_state_.size() + runs.size() > 4096) run_state_.clear();
    for (const auto& [id, w] : runs) {
      if (w.pk != 0) run_state_[id] = RunState{w.pk, w.first_seq, w.last_seq};
    }
    run_state_valid_ = sqlite3_file_control(db.getHandle(), "main", SQLITE_FCNTL_DATA_VERSION,
                                            &run_state_version_) == SQLITE_OK;
    // A run's new events in this group have contiguous seqs and positions.
    for (size_t i = 0; i < group.size(); ++i) {
      if (!results[i].ok() || results[i]->written == 0) continue;
      const RunWork& w = runs[group[i].run_id];
      results[i]->first_position =
          w.commit_first_pos + (results[i]->first_seq - w.blocks.front().first_seq);
    }
  } catch (const SQLite::Exception& e) {
    failure = FromSqlite(e, "append failed");
  }

  if (!failure.ok()) {
    for (Request& req : group) {
      if (req.done) req.done(failure);
    }
    return;
  }
  CountCommit(started);
  if (!new_pks.empty()) {
    std::lock_guard<std::mutex> lk(pk_mu_);
    pk_cache_.insert(new_pks.begin(), new_pks.end());
  }
  for (auto& [id, w] : runs) {
    stat_events_.fetch_add(w.added_events);
    stat_bytes_.fetch_add(w.added_bytes);
  }
  // Subscribers first, so a writer woken by its callback finds them fed.
  if (!published.empty()) hub_.Publish(published);
  for (size_t i = 0; i < group.size(); ++i) {
    if (results[i].ok()) {
      stat_appends_.fetch_add(1);
      if (group[i].options.return_events) results[i]->events = std::move(group[i].events);
    }
    if (group[i].done) group[i].done(std::move(results[i]));
  }
}

// ---------------------------------------------------------------- reading

std::unique_ptr<ReaderConn> SqliteEventStore::AcquireReader(Status* status) {
  {
    std::lock_guard<std::mutex> lk(readers_mu_);
    if (!readers_.empty()) {
      auto conn = std::move(readers_.back());
      readers_.pop_back();
      return conn;
    }
  }
  try {
    return std::make_unique<ReaderConn>(options_.path, SQLite::OPEN_READONLY | SQLite::OPEN_NOMUTEX,
                                        options_.busy_timeout_ms);
  } catch (const SQLite::Exception& e) {
    *status = FromSqlite(e, "cannot open a read connection");
    return nullptr;
  }
}

void SqliteEventStore::ReleaseReader(std::unique_ptr<ReaderConn> conn) {
  if (!conn) return;
  conn->get_run->reset();
  conn->blocks->reset();
  conn->blocks_all->reset();
  if (conn->scratch.body.capacity() > (size_t{4} << 20)) {
    std::string().swap(conn->scratch.body);
    conn->scratch.Forget();
  }
  std::lock_guard<std::mutex> lk(readers_mu_);
  if (readers_.size() < kMaxIdleReaders) readers_.push_back(std::move(conn));
}

namespace {
// Leases a reader for one call and gives it back.
struct ReaderLease {
  ReaderLease(SqliteEventStore* s, std::unique_ptr<ReaderConn> c,
              void (SqliteEventStore::*release)(std::unique_ptr<ReaderConn>))
      : store(s), conn(std::move(c)), rel(release) {}
  ~ReaderLease() { (store->*rel)(std::move(conn)); }
  SqliteEventStore* store;
  std::unique_ptr<ReaderConn> conn;
  void (SqliteEventStore::*rel)(std::unique_ptr<ReaderConn>);
};

// Visits the events of one block row.
template <typename Fn>
Status VisitBlock(SQLite::Statement& st, DecodedBlock* scratch, int64_t* first_seq_out, Fn&& fn) {
  int64_t first_seq = st.getColumn(0).getInt64();
  int64_t last_seq = st.getColumn(1).getInt64();
  int64_t last_pos = st.getColumn(2).getInt64();
  int64_t base_ts = st.getColumn(3).getInt64();
  int codec = st.getColumn(4).getInt();
  int64_t raw_size = st.getColumn(5).getInt64();
  SQLite::Column data = st.getColumn(6);
  *first_seq_out = first_seq;
  int64_t count = last_seq - first_seq + 1;
  if (count <= 0 || raw_size < 0 || codec < 0 || codec > 255) {
    return Status::Corruption("block header out of range");
  }
  if (scratch->last_pos != last_pos || scratch->first_seq != first_seq ||
      scratch->body.size() != static_cast<size_t>(raw_size)) {
    scratch->Forget();
    Status s = DecompressBody(static_cast<Codec>(codec),
                              std::string_view(static_cast<const char*>(data.getBlob()),
                                               static_cast<size_t>(data.getBytes())),
                              static_cast<size_t>(raw_size), &scratch->body);
    if (!s.ok()) return s;
    scratch->last_pos = last_pos;
    scratch->first_seq = first_seq;
  }
  BlockReader reader(scratch->body, base_ts);
  EventView v;
  int64_t i = 0;
  for (; reader.Next(&v); ++i) {
    if (i >= count) return Status::Corruption("block holds more events than its header says");
    v.seq = first_seq + i;
    v.position = last_pos - count + 1 + i;
    if (!fn(v)) return Status::Ok();
  }
  if (!reader.status().ok()) return reader.status();
  if (i != count) return Status::Corruption("block holds fewer events than its header says");
  return Status::Ok();
}
// Visits the events of the block rows `st` yields, skipping keys (seq, or
// position when by_position) <= after, until the visitor stops or `limit`
// events were visited. The run id comes from column `run_id_column`, or is
// `run_id` when that is -1.
Status ScanBlocks(SQLite::Statement& st, DecodedBlock* scratch, int64_t after, bool by_position,
                  std::string& run_id, int run_id_column, const EventVisitor& visit, size_t limit,
                  ReadSummary* sum) {
  bool stop = false;
  while (!stop && st.executeStep()) {
    if (run_id_column >= 0) run_id = st.getColumn(run_id_column).getString();
    int64_t bfirst = 0;
    Status bs = VisitBlock(st, scratch, &bfirst, [&](EventView& v) {
      int64_t key = by_position ? v.position : v.seq;
      if (key <= after) return true;
      v.run_id = run_id;
      if (!visit(v)) {
        sum->stopped = true;
        stop = true;
      }
      ++sum->count;
      sum->last_seq = key;
      if (static_cast<size_t>(sum->count) >= limit) stop = true;
      return !stop;
    });
    if (!bs.ok()) {
      st.reset();
      return Status(bs.code(), fmt::format("run {} near seq {}: {}", run_id, bfirst, bs.message()));
    }
  }
  st.reset();
  return Status::Ok();
}

}  // namespace

Result<ReadSummary> SqliteEventStore::Read(std::string_view run_id, int64_t after_seq,
                                           const EventVisitor& visit, const ReadOptions& options) {
  Status s = ValidateRunId(run_id);
  if (!s.ok()) return s;
  if (after_seq < 0) return Status::InvalidArgument("after_seq must be >= 0");
  s = EnsureDrained();
  if (!s.ok()) return s;
  std::shared_lock<std::shared_mutex> life(life_mu_);
  if (closed_) return Status::Closed("the store is closed");
  ReadDepth depth;
  ReaderLease lease(this, AcquireReader(&s), &SqliteEventStore::ReleaseReader);
  if (!lease.conn) return s;
  return ReadWith(*lease.conn, run_id, after_seq, visit, options.limit);
}

Result<ReadSummary> SqliteEventStore::ReadWith(ReaderConn& conn, std::string_view run_id,
                                               int64_t after_seq, const EventVisitor& visit,
                                               size_t limit) {
  ReadSummary sum;
  sum.last_seq = after_seq;
  if (limit == 0) return sum;
  try {
    // One read transaction: the run row and its blocks from one snapshot.
    SQLite::Transaction txn(*conn.db);
    SQLite::Statement& gr = *conn.get_run;
    gr.reset();
    gr.bind(1, std::string(run_id));
    if (!gr.executeStep()) return sum;
    int64_t pk = gr.getColumn(0).getInt64();
    int64_t first_seq = gr.getColumn(1).getInt64();
    gr.reset();
    if (after_seq + 1 < first_seq) {
      return Status::Truncated(
          fmt::format("run {}: events before seq {} were removed by retention; earliest "
                      "available is {}",
                      run_id, first_seq, first_seq),
          first_seq);
    }
    SQLite::Statement& st = *conn.blocks;
    st.reset();
    st.bind(1, pk);
    st.bind(2, after_seq);
    std::string rid(run_id);
    Status bs = ScanBlocks(st, &conn.scratch, after_seq, /*by_position=*/false, rid, -1, visit,
                           limit, &sum);
    if (!bs.ok()) return bs;
  } catch (const SQLite::Exception& e) {
    return FromSqlite(e, "read failed");
  }
  return sum;
}

Result<ReadSummary> SqliteEventStore::ReadAll(int64_t after_position, const EventVisitor& visit,
                                              const ReadOptions& options) {
  if (after_position < 0) return Status::InvalidArgument("after_position must be >= 0");
  Status s = EnsureDrained();
  if (!s.ok()) return s;
  std::shared_lock<std::shared_mutex> life(life_mu_);
  if (closed_) return Status::Closed("the store is closed");
  ReadDepth depth;
  ReaderLease lease(this, AcquireReader(&s), &SqliteEventStore::ReleaseReader);
  if (!lease.conn) return s;
  ReaderConn& conn = *lease.conn;
  ReadSummary sum;
  sum.last_seq = after_position;
  if (options.limit == 0) return sum;
  try {
    SQLite::Transaction txn(*conn.db);
    SQLite::Statement& st = *conn.blocks_all;
    st.reset();
    st.bind(1, after_position);
    std::string rid;
    Status bs = ScanBlocks(st, &conn.scratch, after_position, /*by_position=*/true, rid, 7, visit,
                           options.limit, &sum);
    if (!bs.ok()) return bs;
  } catch (const SQLite::Exception& e) {
    return FromSqlite(e, "read failed");
  }
  return sum;
}

Result<int64_t> SqliteEventStore::LastSeq(std::string_view run_id) {
  Result<RunInfo> r = GetRun(run_id);
  if (r.ok()) return r->last_seq;
  if (r.status().code() == StatusCode::kNotFound) return int64_t{0};
  return r.status();
}

Result<int64_t> SqliteEventStore::LastPosition() {
  int64_t pos = 0;
  Status s = EnsureDrained();
  if (!s.ok()) return s;
  s = WithReader([&](SQLite::Database& db) {
    // Positions are kept by the blocks themselves; store_meta holds a floor
    // written when retention deletes the newest blocks.
    pos = db.execAndGet(kNextPositionSql).getInt64() - 1;
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return pos;
}

namespace {
constexpr const char* kRunColumns =
    "SELECT run_id, first_seq, last_seq, event_count, payload_bytes, created_us, updated_us "
    "FROM runs";
RunInfo RunFromRow(SQLite::Statement& st) {
  RunInfo r;
  r.run_id = st.getColumn(0).getString();
  r.first_seq = st.getColumn(1).getInt64();
  r.last_seq = st.getColumn(2).getInt64();
  r.event_count = st.getColumn(3).getInt64();
  r.payload_bytes = st.getColumn(4).getInt64();
  r.created_us = st.getColumn(5).getInt64();
  r.updated_us = st.getColumn(6).getInt64();
  return r;
}
}  // namespace

Result<RunInfo> SqliteEventStore::GetRun(std::string_view run_id) {
  Status s = ValidateRunId(run_id);
  if (!s.ok()) return s;
  s = EnsureDrained();
  if (!s.ok()) return s;
  std::optional<RunInfo> info;
  s = WithReader([&](SQLite::Database& db) {
    SQLite::Statement st(db, std::string(kRunColumns) + " WHERE run_id = ?");
    st.bind(1, std::string(run_id));
    if (st.executeStep()) info = RunFromRow(st);
    return Status::Ok();
  });
  if (!s.ok()) return s;
  if (!info) return Status::NotFound(fmt::format("run {} has no events", run_id));
  return std::move(*info);
}

Result<std::vector<RunInfo>> SqliteEventStore::ListRuns() {
  std::vector<RunInfo> out;
  Status s = EnsureDrained();
  if (!s.ok()) return s;
  s = WithReader([&](SQLite::Database& db) {
    SQLite::Statement st(db, std::string(kRunColumns) + " ORDER BY run_id");
    while (st.executeStep()) out.push_back(RunFromRow(st));
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return out;
}

Status SqliteEventStore::WithReader(const std::function<Status(SQLite::Database&)>& fn) {
  std::shared_lock<std::shared_mutex> life(life_mu_);
  if (closed_) return Status::Closed("the store is closed");
  Status s;
  ReadDepth depth;
  ReaderLease lease(this, AcquireReader(&s), &SqliteEventStore::ReleaseReader);
  if (!lease.conn) return s;
  try {
    return fn(*lease.conn->db);
  } catch (const SQLite::Exception& e) {
    return FromSqlite(e, "read failed");
  }
}

// ---------------------------------------------------------------- following

Result<std::unique_ptr<Subscription>> SqliteEventStore::Subscribe(std::string_view run_id,
                                                                  int64_t after_seq,
                                                                  SubscriptionHandlers handlers,
                                                                  const SubscribeOptions& options) {
  Status s = ValidateRunId(run_id);
  if (!s.ok()) return s;
  if (after_seq < 0) return Status::InvalidArgument("after_seq must be >= 0");
  auto state = std::make_shared<SubState>();
  state->run_id = std::string(run_id);
  state->handlers = std::move(handlers);
  state->options = options;
  std::string rid(run_id);
  state->read = [this, rid](int64_t after, const EventVisitor& v, size_t limit) {
    return Read(rid, after, v, ReadOptions{limit});
  };
  state->high_water = [this, rid]() { return LastSeq(rid); };
  return StartSubscription(std::move(state), after_seq);
}

Result<std::unique_ptr<Subscription>> SqliteEventStore::SubscribeAll(
    int64_t after_position, SubscriptionHandlers handlers, const SubscribeOptions& options) {
  if (after_position < 0) return Status::InvalidArgument("after_position must be >= 0");
  auto state = std::make_shared<SubState>();
  state->all = true;
  state->handlers = std::move(handlers);
  state->options = options;
  state->read = [this](int64_t after, const EventVisitor& v, size_t limit) {
    return ReadAll(after, v, ReadOptions{limit});
  };
  state->high_water = [this]() { return LastPosition(); };
  return StartSubscription(std::move(state), after_position);
}

Result<std::unique_ptr<Subscription>> SqliteEventStore::StartSubscription(
    std::shared_ptr<SubState> state, int64_t cursor) {
  Status s = CheckOpen(false);
  if (!s.ok()) return s;
  if (state->options.max_queued_events == 0) {
    return Status::InvalidArgument("max_queued_events must be > 0");
  }
  state->cursor = cursor;
  // Register before reading the high-water mark: every later commit is
  // queued, every earlier one is in the backlog.
  hub_.Add(state);
  // No delivery thread will run for an abandoned state: take it out of the
  // hub now (Close waits for every registered state's thread to exit).
  auto abandon = [&](Status st) -> Result<std::unique_ptr<Subscription>> {
    hub_.Remove(state);
    return st;
  };
  Result<int64_t> hw = state->high_water();
  if (!hw.ok()) return abandon(hw.status());
  if (!state->all) {
    Result<RunInfo> run = GetRun(state->run_id);
    if (run.ok() && cursor + 1 < run->first_seq) {
      return abandon(Status::Truncated(
          fmt::format("run {}: events before seq {} were removed by retention; earliest "
                      "available is {}",
                      state->run_id, run->first_seq, run->first_seq),
          run->first_seq));
    }
  }
  std::thread t;
  try {
    t = std::thread([state, target = *hw] { state->Run(target); });
  } catch (const std::system_error& e) {
    return abandon(Status::Busy(fmt::format("cannot start a subscription thread: {}", e.what())));
  }
  return std::unique_ptr<Subscription>(new SubscriptionImpl(std::move(state), std::move(t)));
}

// ---------------------------------------------------------------- retention

Result<int64_t> SqliteEventStore::TruncateImpl(SQLite::Database& db, int64_t run_pk,
                                               int64_t before_seq) {
  SQLite::Statement gr(db, "SELECT first_seq, last_seq FROM runs WHERE run_pk = ?");
  gr.bind(1, run_pk);
  if (!gr.executeStep()) return int64_t{0};
  int64_t first = gr.getColumn(0).getInt64();
  int64_t last = gr.getColumn(1).getInt64();
  before_seq = std::min(before_seq, last + 1);
  if (before_seq <= first) return int64_t{0};
  int64_t removed = 0, removed_bytes = 0;
  DecodedBlock scratch;
  // Blocks entirely below the cut: count, then delete.
  {
    SQLite::Statement st(db,
                         "SELECT " DISPATCH_BLOCK_COLUMNS
                         " FROM event_blocks WHERE run_pk = ? AND first_seq < ? ORDER BY last_seq");
    st.bind(1, run_pk);
    st.bind(2, before_seq);
    struct Rewrite {
      int64_t last_pos, last_seq, new_first, base_ts, max_ts;
      std::string body;
    };
    std::vector<Rewrite> rewrites;
    while (st.executeStep()) {
      int64_t bfirst = 0;
      int64_t blast = st.getColumn(1).getInt64();
      int64_t last_pos = st.getColumn(2).getInt64();
      Rewrite rw{last_pos, blast, before_seq, 0, 0, {}};
      int64_t prev_ts = 0;
      bool first_kept = true;
      Status bs = VisitBlock(st, &scratch, &bfirst, [&](EventView& v) {
        if (v.seq < before_seq) {
          ++removed;
          removed_bytes += static_cast<int64_t>(v.payload.size());
        } else {
          if (first_kept) {
            rw.base_ts = prev_ts = rw.max_ts = v.ts_us;
            first_kept = false;
          }
          rw.max_ts = std::max(rw.max_ts, v.ts_us);
          EncodeEventView(v, &prev_ts, &rw.body);
        }
        return true;
      });
      if (!bs.ok()) return bs;
      if (blast >= before_seq) rewrites.push_back(std::move(rw));
    }
    st.reset();
    // Deleting the newest blocks must not let their positions be reused
    // after a reopen: record the floor first (same transaction).
    writer_stmts_->upd_pos.reset();
    writer_stmts_->upd_pos.bind(1, next_pos_);
    writer_stmts_->upd_pos.exec();
    SQLite::Statement del(db, "DELETE FROM event_blocks WHERE run_pk = ? AND last_seq < ?");
    del.bind(1, run_pk);
    del.bind(2, before_seq);
    del.exec();
    std::string packed;
    for (Rewrite& rw : rewrites) {
      Codec codec = CompressBody(rw.body, &packed);
      SQLite::Statement upd(db,
                            "UPDATE event_blocks SET first_seq = ?, base_ts = ?, max_ts = ?, "
                            "codec = ?, raw_size = ?, data = ? WHERE last_pos = ?");
      upd.bind(1, rw.new_first);
      upd.bind(2, rw.base_ts);
      upd.bind(3, rw.max_ts);
      upd.bind(4, static_cast<int>(codec));
      upd.bind(5, static_cast<int64_t>(rw.body.size()));
      upd.bind(6, packed.data(), static_cast<int>(packed.size()));
      upd.bind(7, rw.last_pos);
      upd.exec();
    }
  }
  SQLite::Statement upd_run(db,
                            "UPDATE runs SET first_seq = ?, event_count = event_count - ?, "
                            "payload_bytes = payload_bytes - ? WHERE run_pk = ?");
  upd_run.bind(1, before_seq);
  upd_run.bind(2, removed);
  upd_run.bind(3, removed_bytes);
  upd_run.bind(4, run_pk);
  upd_run.exec();
  return removed;
}

Result<int64_t> SqliteEventStore::TruncateBefore(std::string_view run_id, int64_t before_seq) {
  Status s = ValidateRunId(run_id);
  if (!s.ok()) return s;
  int64_t removed = 0;
  std::string rid(run_id);
  s = Write([&](SQLite::Database& db) -> Status {
    SQLite::Statement st(db, "SELECT run_pk FROM runs WHERE run_id = ?");
    st.bind(1, rid);
    if (!st.executeStep()) return Status::NotFound(fmt::format("run {} has no events", rid));
    int64_t pk = st.getColumn(0).getInt64();
    st.reset();
    Result<int64_t> r = TruncateImpl(db, pk, before_seq);
    if (!r.ok()) return r.status();
    removed = *r;
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return removed;
}

Result<int64_t> SqliteEventStore::DeleteOlderThan(int64_t ts_us) {
  int64_t removed = 0;
  Status s = Write([&](SQLite::Database& db) -> Status {
    std::vector<int64_t> pks;
    {
      SQLite::Statement st(db,
                           "SELECT r.run_pk FROM runs r LEFT JOIN sessions s ON s.run_id = "
                           "r.run_id WHERE s.status IS NULL OR s.status <> 'running'");
      while (st.executeStep()) pks.push_back(st.getColumn(0).getInt64());
    }
    DecodedBlock scratch;
    for (int64_t pk : pks) {
      // The cut is the first event recorded at or after ts_us, in seq order.
      SQLite::Statement st(db,
                           "SELECT " DISPATCH_BLOCK_COLUMNS
                           ", max_ts FROM event_blocks WHERE run_pk = ? ORDER BY last_seq");
      st.bind(1, pk);
      int64_t cut = 0;
      int64_t last_seen = 0;
      while (cut == 0 && st.executeStep()) {
        last_seen = st.getColumn(1).getInt64();
        if (st.getColumn(7).getInt64() < ts_us) continue;  // whole block is older
        int64_t bfirst = 0;
        Status bs = VisitBlock(st, &scratch, &bfirst, [&](EventView& v) {
          if (v.ts_us >= ts_us) {
            cut = v.seq;
            return false;
          }
          return true;
        });
        if (!bs.ok()) return bs;
      }
      st.reset();
      if (cut == 0) cut = last_seen + 1;  // every event is older
      if (last_seen == 0) continue;
      Result<int64_t> r = TruncateImpl(db, pk, cut);
      if (!r.ok()) return r.status();
      removed += *r;
    }
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return removed;
}

// ---------------------------------------------------------------- the rest

Catalog& SqliteEventStore::catalog() { return *catalog_; }

StoreStats SqliteEventStore::Stats() const {
  StoreStats st;
  st.appends = stat_appends_.load();
  st.events_appended = stat_events_.load();
  st.bytes_appended = stat_bytes_.load();
  st.group_commits = stat_commits_.load();
  st.commit_latency_us_total = stat_commit_us_.load();
  st.checkpoints = stat_checkpoints_.load();
  st.subscribers = hub_.size();
  st.subscriber_lags = hub_.total_lags();
  st.journal_appends = stat_journal_appends_.load();
  st.journal_drains = stat_journal_drains_.load();
  for (int i = 0; i < kLatencyBuckets; ++i) {
    st.commit_latency_bounds_us.push_back(kLatencyBoundsUs[i]);
    st.commit_latency_counts.push_back(latency_counts_[i].load());
  }
  return st;
}

Status SqliteEventStore::Close() {
  if (OnWriterThread() || tl_read_depth > 0) {
    return Status::Busy("Close called from a store callback; call it from another thread");
  }
  if (closing_.exchange(true)) {
    return Status::Ok();
  }
  {
    std::lock_guard<std::mutex> lk(queue_mu_);
    stop_writer_ = true;
  }
  queue_cv_.notify_all();
  if (writer_.joinable()) writer_.join();  // commits everything queued
  StopCheckpointer();
  hub_.CloseAll();
  std::unique_lock<std::shared_mutex> life(life_mu_);
  closed_ = true;
  {
    std::lock_guard<std::mutex> lk(readers_mu_);
    readers_.clear();
  }
  Status s;
  if (writer_db_ && !options_.read_only && !temporary_) {
    try {
      writer_db_->exec("PRAGMA wal_checkpoint(PASSIVE)");
    } catch (const SQLite::Exception& e) {
      s = FromSqlite(e, "checkpoint at close failed");
    }
  }
  writer_stmts_.reset();
  writer_db_.reset();
  // Everything journaled was copied by the writer before it stopped (if a
  // copy failed, the blocks stay in the file for the next open).
  if (journal_ && pending_.empty()) journal_->Discard();
  journal_.reset();
  if (temporary_) {
    for (const char* suffix : {"", "-wal", "-shm", "-append.log"}) {
      ::unlink((options_.path + suffix).c_str());
    }
  }
  if (lock_fd_ >= 0) {
    ::close(lock_fd_);  // releases the lock (the file stays, as SQLite's -shm does)
    lock_fd_ = -1;
  }
  return s;
}

}  // namespace dispatch::internal

namespace dispatch {

Result<std::unique_ptr<EventStore>> EventStore::Open(const StoreOptions& options) {
  return internal::SqliteEventStore::OpenStore(options);
}

}  // namespace dispatch
