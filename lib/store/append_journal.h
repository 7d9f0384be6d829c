// AppendJournal: the exclusive writer's append log (doc/storage.md, "The
// append journal").
//
// A store opened with StoreOptions::exclusive makes a small append durable by
// writing one record to this file instead of committing a SQLite transaction;
// the writer copies the journaled blocks into SQLite shortly after (a
// "drain"), then starts a new generation of the file. A record is one block
// exactly as event_blocks holds it (uncompressed), with its run, seqs and
// position, the file's generation and a CRC: at the next writable open,
// records of the current generation not yet in SQLite are inserted, and a
// torn last record (a crash inside the write, never acknowledged) is dropped.
//
// The file is preallocated and mapped shared: a record is a memcpy into the
// page cache (durable against a crash of the process, as a WAL commit with
// synchronous=NORMAL is), with no system call. The pages ahead of the write
// position are dirtied in advance, off the append path (Open, Reset), so an
// append does not take the write fault of a clean page either.
//
// Thread-safety: not thread-safe; used by the store's writer role only.
#ifndef DISPATCH_LIB_STORE_APPEND_JOURNAL_H_
#define DISPATCH_LIB_STORE_APPEND_JOURNAL_H_
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dispatch/status.h"

namespace dispatch::internal {

struct JournalRecord {
  int64_t run_pk = 0;
  int64_t first_seq = 0;
  int64_t count = 0;
  int64_t first_pos = 0;
  int64_t base_ts = 0;
  int64_t max_ts = 0;
  int64_t payload_bytes = 0;  // sum of the events' payload sizes (runs.payload_bytes)
  std::string run_id;
  std::shared_ptr<const std::string> body;  // encoded events (block_codec.h)
};

class AppendJournal {
 public:
  // Opens (creating) the journal file at `path`, sized `capacity` bytes, and
  // starts a new generation (what it held is no longer read back: recover it
  // first).
  static Result<std::unique_ptr<AppendJournal>> Open(const std::string& path,
                                                     uint64_t capacity = uint64_t{4} << 20);
  ~AppendJournal();
  AppendJournal(const AppendJournal&) = delete;
  AppendJournal& operator=(const AppendJournal&) = delete;

  // Writes one record after the last one; kBusy when it does not fit.
  Status Append(const JournalRecord& record);
  // Starts a new generation (after the records were committed to SQLite):
  // the records written so far are no longer read back.
  void Reset();
  // Empties the file (at a clean close: nothing in it is needed).
  void Discard();
  // Bytes of records written since the last Reset.
  uint64_t size() const { return end_ - kHeaderBytes; }

  // Reads every intact record of the current generation of the file at
  // `path` (none if it does not exist). Reading stops at the first record
  // that is short, of another generation, or fails its check;
  // `*stopped_at` is where.
  static Status ReadAll(const std::string& path, std::vector<JournalRecord>* records,
                        uint64_t* stopped_at);

  static constexpr uint64_t kHeaderBytes = 64;

 private:
  AppendJournal(int fd, char* map, uint64_t capacity, uint64_t generation)
      : fd_(fd), map_(map), capacity_(capacity), generation_(generation) {}
  // Dirties the pages of the next `kAhead` bytes from the write position.
  void TouchAhead();
  int fd_;
  char* map_;
  uint64_t capacity_;
  uint64_t generation_;
  uint64_t end_ = kHeaderBytes;
  std::string buf_;  // the record being built (reused)
};

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_STORE_APPEND_JOURNAL_H_
