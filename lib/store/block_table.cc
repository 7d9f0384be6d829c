// Block row insertion (see block_table.h).
#include "store/block_table.h"

#include <SQLiteCpp/SQLiteCpp.h>

namespace dispatch::internal {

void InsertBlock(SQLite::Statement& insert, const BlockRow& row) {
  insert.reset();
  insert.bind(1, row.last_pos);
  insert.bind(2, row.run_pk);
  insert.bind(3, row.first_seq);
  insert.bind(4, row.last_seq);
  insert.bind(5, row.base_ts);
  insert.bind(6, row.max_ts);
  insert.bind(7, static_cast<int>(row.codec));
  insert.bind(8, row.raw_size);
  insert.bindNoCopy(9, row.data->data(), static_cast<int>(row.data->size()));
  insert.exec();
}

}  // namespace dispatch::internal
