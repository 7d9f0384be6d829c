// AppendJournal: the exclusive writer's append log (doc/storage.md, "The
// append journal").
//
// A store opened with StoreOptions::exclusive makes a small append durable by
// writing one record to this file (one pwrite) instead of committing a SQLite
// transaction; the writer copies the journaled blocks into SQLite shortly
// after (a "drain"), then empties the file. A record is one block exactly as
// event_blocks holds it (uncompressed), with its run, seqs and position, and
// a CRC: at the next writable open, records not yet in SQLite are inserted,
// and a torn last record (a crash inside the write, never acknowledged) is
// dropped.
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
  // Opens (creating) the journal file for appending after what it holds.
  static Result<std::unique_ptr<AppendJournal>> Open(const std::string& path);
  ~AppendJournal();
  AppendJournal(const AppendJournal&) = delete;
  AppendJournal& operator=(const AppendJournal&) = delete;

  // Writes one record after the last one. On failure nothing counts as
  // written: the next record goes to the same offset.
  Status Append(const JournalRecord& record);
  // Empties the file (after its records were committed to SQLite).
  Status Reset();
  // Bytes written since the last Reset.
  uint64_t size() const { return end_; }

  // Reads every intact record of the file at `path` (none if it does not
  // exist). Reading stops at the first record that is short or fails its
  // check; `*dropped_bytes` says how much was left unread.
  static Status ReadAll(const std::string& path, std::vector<JournalRecord>* records,
                        uint64_t* dropped_bytes);

 private:
  AppendJournal(int fd, uint64_t end) : fd_(fd), end_(end) {}
  int fd_;
  uint64_t end_;
  std::string buf_;  // the record being written (reused)
};

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_STORE_APPEND_JOURNAL_H_
