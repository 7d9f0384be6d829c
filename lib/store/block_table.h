// The event_blocks table: the SQL that reads and writes a block row, shared
// by the writer, retention and the schema migration (doc/storage.md).
#ifndef DISPATCH_LIB_STORE_BLOCK_TABLE_H_
#define DISPATCH_LIB_STORE_BLOCK_TABLE_H_

#include <cstdint>
#include <string>

#include "store/block_codec.h"

namespace SQLite {
class Statement;
}

namespace dispatch::internal {

// The columns VisitBlock reads, in its order (columns 0-6 of a select).
#define DISPATCH_BLOCK_COLUMNS "first_seq, last_seq, last_pos, base_ts, codec, raw_size, data"

inline constexpr const char* kInsertBlockSql =
    "INSERT INTO event_blocks (last_pos, run_pk, first_seq, last_seq, base_ts, max_ts, codec, "
    "raw_size, data) VALUES (?,?,?,?,?,?,?,?,?)";

// One block row to insert. `data` is the compressed body; `raw_size` the
// body's size before compression.
struct BlockRow {
  int64_t last_pos = 0;
  int64_t run_pk = 0;
  int64_t first_seq = 0;
  int64_t last_seq = 0;
  int64_t base_ts = 0;
  int64_t max_ts = 0;
  Codec codec = Codec::kNone;
  int64_t raw_size = 0;
  const std::string* data = nullptr;  // borrowed for the call
};

// Binds `row` to a statement prepared from kInsertBlockSql and runs it.
// Throws SQLite::Exception on failure (callers convert at their boundary).
void InsertBlock(SQLite::Statement& insert, const BlockRow& row);

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_STORE_BLOCK_TABLE_H_
