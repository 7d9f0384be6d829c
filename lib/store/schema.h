// Schema versioning of the SQLite store: PRAGMA user_version holds the
// version, and Migrate() upgrades an older database step by step inside one
// transaction when the store opens.
//
//   0 — empty file: create the current schema.
//   1 — the seed's layout (Dispatch): one row per event in session_events
//       (run_id, seq, channel, type, payload, ts in milliseconds), sessions,
//       workspaces, settings. Upgraded by packing events into blocks.
//   2 — blocks (see block_codec.h), runs, event_ids, catalog tables, snapshots.
#ifndef DISPATCH_LIB_STORE_SCHEMA_H_
#define DISPATCH_LIB_STORE_SCHEMA_H_

#include "dispatch/status.h"

namespace SQLite {
class Database;
}

namespace dispatch::internal {

inline constexpr int kSchemaVersion = 2;

// Brings `db` to kSchemaVersion. Corruption if the database is newer than
// this build or not a database at all.
Status Migrate(SQLite::Database& db);

// The SQL of schema version 1, for tests that need an old database.
const char* SchemaV1Sql();

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_STORE_SCHEMA_H_
