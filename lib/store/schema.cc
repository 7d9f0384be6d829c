// Schema creation and migrations (see schema.h).
#include "store/schema.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <fmt/format.h>
#include <sqlite3.h>

#include <nlohmann/json.hpp>
#include <string>

#include "store/block_codec.h"
#include "store/block_table.h"

namespace dispatch::internal {
namespace {

constexpr const char* kV1 = R"sql(
CREATE TABLE session_events (
  run_id TEXT NOT NULL, seq INTEGER NOT NULL, channel TEXT NOT NULL, type TEXT NOT NULL,
  payload TEXT, ts INTEGER NOT NULL, PRIMARY KEY (run_id, seq));
CREATE TABLE sessions (
  run_id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, workspace TEXT,
  meta TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE workspaces (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, path TEXT NOT NULL, status TEXT NOT NULL,
  metadata TEXT, created_at INTEGER NOT NULL, last_accessed INTEGER NOT NULL);
CREATE TABLE settings (category TEXT PRIMARY KEY, value TEXT NOT NULL);
PRAGMA user_version = 1;
)sql";

constexpr const char* kV2Tables = R"sql(
CREATE TABLE IF NOT EXISTS runs (
  run_pk INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE,
  first_seq INTEGER NOT NULL DEFAULT 1, last_seq INTEGER NOT NULL DEFAULT 0,
  event_count INTEGER NOT NULL DEFAULT 0, payload_bytes INTEGER NOT NULL DEFAULT 0,
  created_us INTEGER NOT NULL, updated_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS event_blocks (
  last_pos INTEGER PRIMARY KEY, run_pk INTEGER NOT NULL,
  first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
  base_ts INTEGER NOT NULL, max_ts INTEGER NOT NULL,
  codec INTEGER NOT NULL, raw_size INTEGER NOT NULL, data BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS event_blocks_run ON event_blocks (run_pk, last_seq);
CREATE TABLE IF NOT EXISTS event_ids (
  run_pk INTEGER NOT NULL, id BLOB NOT NULL, seq INTEGER NOT NULL,
  PRIMARY KEY (run_pk, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO store_meta (key, value) VALUES ('next_position', 1);
CREATE TABLE IF NOT EXISTS sessions2 (
  run_id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, workspace TEXT NOT NULL,
  meta TEXT NOT NULL, created_us INTEGER NOT NULL, updated_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS workspaces2 (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, path TEXT NOT NULL, status TEXT NOT NULL,
  metadata TEXT NOT NULL, created_us INTEGER NOT NULL, last_accessed_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS settings2 (
  category TEXT PRIMARY KEY, value TEXT NOT NULL, updated_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS layouts (
  client_id TEXT NOT NULL, workspace_id TEXT NOT NULL, layout TEXT NOT NULL,
  updated_us INTEGER NOT NULL, PRIMARY KEY (client_id, workspace_id));
CREATE TABLE IF NOT EXISTS snapshots (
  run_id TEXT NOT NULL, name TEXT NOT NULL, seq INTEGER NOT NULL, version INTEGER NOT NULL,
  data BLOB NOT NULL, created_us INTEGER NOT NULL, PRIMARY KEY (run_id, name, seq));
)sql";

// Renames the *2 tables to their final names once the v1 ones are gone.
constexpr const char* kV2Rename = R"sql(
ALTER TABLE sessions2 RENAME TO sessions;
ALTER TABLE workspaces2 RENAME TO workspaces;
ALTER TABLE settings2 RENAME TO settings;
PRAGMA user_version = 2;
)sql";

// v1 → v2: pack each run's rows into blocks of up to 4096 events.
void MigrateV1ToV2(SQLite::Database& db) {
  db.exec(kV2Tables);
  int64_t next_pos = 1;
  SQLite::Statement runs(db, "SELECT DISTINCT run_id FROM session_events ORDER BY run_id");
  std::vector<std::string> run_ids;
  while (runs.executeStep()) run_ids.push_back(runs.getColumn(0).getString());
  SQLite::Statement rows(db,
                         "SELECT seq, channel, type, payload, ts FROM session_events "
                         "WHERE run_id = ? ORDER BY seq");
  SQLite::Statement ins_run(db,
                            "INSERT INTO runs (run_id, first_seq, last_seq, event_count, "
                            "payload_bytes, created_us, updated_us) VALUES (?,?,?,?,?,?,?)");
  SQLite::Statement ins_block(db, kInsertBlockSql);
  std::string body, packed;
  for (const std::string& run_id : run_ids) {
    rows.reset();
    rows.bind(1, run_id);
    struct Pending {
      int64_t first_seq = 0, last_seq = 0, base_ts = 0, prev_ts = 0, max_ts = 0, count = 0;
    } blk;
    int64_t run_first = 0, run_last = 0, count = 0, bytes = 0, created = 0, updated = 0;
    std::vector<std::pair<BlockRow, std::string>> blocks;
    auto flush = [&]() {
      if (blk.count == 0) return;
      BlockRow row;
      row.codec = CompressBody(body, &packed);
      row.last_pos = next_pos + blk.count - 1;
      row.first_seq = blk.first_seq;
      row.last_seq = blk.last_seq;
      row.base_ts = blk.base_ts;
      row.max_ts = blk.max_ts;
      row.raw_size = static_cast<int64_t>(body.size());
      blocks.emplace_back(row, packed);
      next_pos += blk.count;
      body.clear();
      blk = Pending{};
    };
    while (rows.executeStep()) {
      int64_t seq = rows.getColumn(0).getInt64();
      NewEvent e;
      e.channel = rows.getColumn(1).getString();
      e.type = rows.getColumn(2).getString();
      SQLite::Column p = rows.getColumn(3);
      e.payload.assign(static_cast<const char*>(p.getBlob()), static_cast<size_t>(p.getBytes()));
      // The seed stored payloads as JSON text; keep JSON where it parses.
      e.encoding = nlohmann::json::accept(e.payload) ? Encoding::kJson : Encoding::kBytes;
      int64_t ts = rows.getColumn(4).getInt64() * 1000;  // ms → µs
      if (run_first == 0) {
        run_first = seq;
        created = ts;
      }
      if (blk.count > 0 && (seq != blk.last_seq + 1 || blk.count >= 4096)) flush();
      if (blk.count == 0) {
        blk.first_seq = seq;
        blk.base_ts = blk.prev_ts = blk.max_ts = ts;
      }
      EncodeEvent(e, ts, &blk.prev_ts, &body);
      blk.last_seq = seq;
      blk.max_ts = std::max(blk.max_ts, ts);
      ++blk.count;
      run_last = seq;
      updated = ts;
      ++count;
      bytes += static_cast<int64_t>(e.payload.size());
    }
    flush();
    ins_run.reset();
    ins_run.bind(1, run_id);
    ins_run.bind(2, run_first);
    ins_run.bind(3, run_last);
    ins_run.bind(4, count);
    ins_run.bind(5, bytes);
    ins_run.bind(6, created);
    ins_run.bind(7, updated);
    ins_run.exec();
    int64_t pk = db.getLastInsertRowid();
    for (auto& [row, data] : blocks) {
      row.run_pk = pk;
      row.data = &data;
      InsertBlock(ins_block, row);
    }
  }
  db.exec(fmt::format("UPDATE store_meta SET value = {} WHERE key = 'next_position'", next_pos));
  db.exec(
      "INSERT INTO sessions2 SELECT run_id, kind, status, COALESCE(workspace, ''), "
      "COALESCE(meta, '{}'), created_at * 1000, updated_at * 1000 FROM sessions");
  db.exec(
      "INSERT INTO workspaces2 SELECT id, name, path, status, COALESCE(metadata, '{}'), "
      "created_at * 1000, last_accessed * 1000 FROM workspaces");
  db.exec("INSERT INTO settings2 SELECT category, value, 0 FROM settings");
  db.exec("DROP TABLE session_events; DROP TABLE sessions; DROP TABLE workspaces; DROP TABLE settings;");
  db.exec(kV2Rename);
}

}  // namespace

const char* SchemaV1Sql() { return kV1; }

Status Migrate(SQLite::Database& db) {
  try {
    int version = db.execAndGet("PRAGMA user_version").getInt();
    if (version == kSchemaVersion) return Status::Ok();
    if (version > kSchemaVersion) {
      return Status::Corruption(fmt::format(
          "database schema version {} is newer than this build supports ({})", version,
          kSchemaVersion));
    }
    SQLite::Transaction txn(db, SQLite::TransactionBehavior::IMMEDIATE);
    version = db.execAndGet("PRAGMA user_version").getInt();  // re-read under the lock
    if (version == 0) {
      // Refuse to adopt a non-empty database that is not ours.
      int tables = db.execAndGet("SELECT count(*) FROM sqlite_master WHERE type='table'").getInt();
      if (tables != 0) {
        return Status::Corruption("database has tables but no dispatch schema version");
      }
      db.exec(kV2Tables);
      db.exec(kV2Rename);
    } else if (version == 1) {
      MigrateV1ToV2(db);
    }
    txn.commit();
    return Status::Ok();
  } catch (const SQLite::Exception& e) {
    int code = e.getErrorCode();
    if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT) {
      return Status::Corruption(fmt::format("not a valid database: {}", e.what()));
    }
    if (code == SQLITE_READONLY) return Status::ReadOnly(fmt::format("cannot migrate: {}", e.what()));
    return Status::IOError(fmt::format("schema migration failed: {}", e.what()));
  }
}

}  // namespace dispatch::internal
