// SqliteCatalog: sessions, workspaces, settings, layouts, snapshots.
#include "store/sqlite_catalog.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <fmt/format.h>

#include <optional>

#include "dispatch/event.h"
#include "store/sqlite_event_store.h"
#include "util/json_check.h"

namespace dispatch {

std::string_view SessionStatusName(SessionStatus s) {
  switch (s) {
    case SessionStatus::kStarting: return "starting";
    case SessionStatus::kRunning: return "running";
    case SessionStatus::kStopped: return "stopped";
    case SessionStatus::kError: return "error";
  }
  return "error";
}

std::optional<SessionStatus> ParseSessionStatus(std::string_view name) {
  for (SessionStatus s : {SessionStatus::kStarting, SessionStatus::kRunning, SessionStatus::kStopped,
                          SessionStatus::kError}) {
    if (SessionStatusName(s) == name) return s;
  }
  return std::nullopt;
}

std::string_view WorkspaceStatusName(WorkspaceStatus s) {
  switch (s) {
    case WorkspaceStatus::kActive: return "active";
    case WorkspaceStatus::kArchived: return "archived";
    case WorkspaceStatus::kError: return "error";
  }
  return "error";
}

std::optional<WorkspaceStatus> ParseWorkspaceStatus(std::string_view name) {
  for (WorkspaceStatus s : {WorkspaceStatus::kActive, WorkspaceStatus::kArchived,
                            WorkspaceStatus::kError}) {
    if (WorkspaceStatusName(s) == name) return s;
  }
  return std::nullopt;
}

namespace internal {
namespace {

Status CheckKey(std::string_view what, std::string_view key) {
  if (key.empty()) return Status::InvalidArgument(fmt::format("{} is empty", what));
  if (key.size() > 256) return Status::InvalidArgument(fmt::format("{} is longer than 256 bytes", what));
  return Status::Ok();
}

Status CheckJsonObject(std::string_view what, std::string_view json) {
  if (!IsJsonObject(json)) {  // (which checks the depth too: only a refusal says which)
    if (!JsonDepthWithin(json)) {
      return Status::InvalidArgument(fmt::format("{} is nested more than {} deep", what, kMaxJsonDepth));
    }
    return Status::InvalidArgument(fmt::format("{} must be a JSON object", what));
  }
  return Status::Ok();
}

Status CheckJson(std::string_view what, std::string_view json) {
  if (const char* problem = JsonProblem(json)) {
    return Status::InvalidArgument(fmt::format("{} {}", what, problem));
  }
  return Status::Ok();
}

SessionRecord SessionFromRow(SQLite::Statement& st) {
  SessionRecord r;
  r.run_id = st.getColumn(0).getString();
  r.kind = st.getColumn(1).getString();
  r.status = ParseSessionStatus(st.getColumn(2).getString()).value_or(SessionStatus::kError);
  r.workspace = st.getColumn(3).getString();
  r.meta = st.getColumn(4).getString();
  r.created_us = st.getColumn(5).getInt64();
  r.updated_us = st.getColumn(6).getInt64();
  return r;
}

WorkspaceRecord WorkspaceFromRow(SQLite::Statement& st) {
  WorkspaceRecord r;
  r.id = st.getColumn(0).getString();
  r.name = st.getColumn(1).getString();
  r.path = st.getColumn(2).getString();
  r.status = ParseWorkspaceStatus(st.getColumn(3).getString()).value_or(WorkspaceStatus::kError);
  r.metadata = st.getColumn(4).getString();
  r.created_us = st.getColumn(5).getInt64();
  r.last_accessed_us = st.getColumn(6).getInt64();
  return r;
}

LayoutRecord LayoutFromRow(SQLite::Statement& st) {
  LayoutRecord r;
  r.client_id = st.getColumn(0).getString();
  r.workspace_id = st.getColumn(1).getString();
  r.layout = st.getColumn(2).getString();
  r.updated_us = st.getColumn(3).getInt64();
  return r;
}

constexpr const char* kSessionCols =
    "SELECT run_id, kind, status, workspace, meta, created_us, updated_us FROM sessions";
constexpr const char* kWorkspaceCols =
    "SELECT id, name, path, status, metadata, created_us, last_accessed_us FROM workspaces";
constexpr const char* kLayoutCols =
    "SELECT client_id, workspace_id, layout, updated_us FROM layouts";

}  // namespace

// ---- sessions

Status SqliteCatalog::PutSession(const SessionRecord& in) {
  Status s = ValidateRunId(in.run_id);
  if (s.ok()) s = CheckKey("session kind", in.kind);
  if (s.ok()) s = CheckJsonObject("session meta", in.meta);
  if (!s.ok()) return s;
  SessionRecord rec = in;
  int64_t now = NowMicros();
  rec.updated_us = now;
  return store_->Write([rec, now](SQLite::Database& db) {
    SQLite::Statement st(db,
                         "INSERT INTO sessions (run_id, kind, status, workspace, meta, created_us, "
                         "updated_us) VALUES (?,?,?,?,?,?,?) ON CONFLICT(run_id) DO UPDATE SET "
                         "kind=excluded.kind, status=excluded.status, workspace=excluded.workspace, "
                         "meta=excluded.meta, updated_us=excluded.updated_us, created_us=CASE WHEN "
                         "?8 <> 0 THEN ?8 ELSE sessions.created_us END");
    st.bind(1, rec.run_id);
    st.bind(2, rec.kind);
    st.bind(3, std::string(SessionStatusName(rec.status)));
    st.bind(4, rec.workspace);
    st.bind(5, rec.meta);
    st.bind(6, rec.created_us != 0 ? rec.created_us : now);
    st.bind(7, rec.updated_us);
    st.bind(8, rec.created_us);
    st.exec();
    return Status::Ok();
  });
}

Status SqliteCatalog::SetSessionStatus(std::string_view run_id, SessionStatus status) {
  Status s = ValidateRunId(run_id);
  if (!s.ok()) return s;
  std::string rid(run_id);
  return store_->Write([rid, status](SQLite::Database& db) {
    SQLite::Statement st(db, "UPDATE sessions SET status = ?, updated_us = ? WHERE run_id = ?");
    st.bind(1, std::string(SessionStatusName(status)));
    st.bind(2, NowMicros());
    st.bind(3, rid);
    if (st.exec() == 0) return Status::NotFound(fmt::format("no session {}", rid));
    return Status::Ok();
  });
}

Result<SessionRecord> SqliteCatalog::GetSession(std::string_view run_id) {
  std::optional<SessionRecord> rec;
  std::string rid(run_id);
  Status s = store_->WithReader([&](SQLite::Database& db) {
    SQLite::Statement st(db, std::string(kSessionCols) + " WHERE run_id = ?");
    st.bind(1, rid);
    if (st.executeStep()) rec = SessionFromRow(st);
    return Status::Ok();
  });
  if (!s.ok()) return s;
  if (!rec) return Status::NotFound(fmt::format("no session {}", run_id));
  return std::move(*rec);
}

Result<std::vector<SessionRecord>> SqliteCatalog::ListSessions() {
  std::vector<SessionRecord> out;
  Status s = store_->WithReader([&](SQLite::Database& db) {
    SQLite::Statement st(db, std::string(kSessionCols) + " ORDER BY created_us, run_id");
    while (st.executeStep()) out.push_back(SessionFromRow(st));
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return out;
}

Status SqliteCatalog::DeleteSession(std::string_view run_id) {
  std::string rid(run_id);
  return store_->Write([rid](SQLite::Database& db) {
    SQLite::Statement st(db, "DELETE FROM sessions WHERE run_id = ?");
    st.bind(1, rid);
    if (st.exec() == 0) return Status::NotFound(fmt::format("no session {}", rid));
    return Status::Ok();
  });
}

// ---- workspaces

namespace {
Status CheckWorkspace(const WorkspaceRecord& w) {
  Status s = CheckKey("workspace id", w.id);
  if (s.ok()) s = CheckKey("workspace name", w.name);
  if (s.ok() && w.path.empty()) s = Status::InvalidArgument("workspace path is empty");
  if (s.ok()) s = CheckJsonObject("workspace metadata", w.metadata);
  return s;
}

void BindWorkspace(SQLite::Statement& st, const WorkspaceRecord& w) {
  st.bind(1, w.id);
  st.bind(2, w.name);
  st.bind(3, w.path);
  st.bind(4, std::string(WorkspaceStatusName(w.status)));
  st.bind(5, w.metadata);
  st.bind(6, w.created_us);
  st.bind(7, w.last_accessed_us);
}
}  // namespace

Status SqliteCatalog::CreateWorkspace(const WorkspaceRecord& in) {
  Status s = CheckWorkspace(in);
  if (!s.ok()) return s;
  WorkspaceRecord w = in;
  int64_t now = NowMicros();
  if (w.created_us == 0) w.created_us = now;
  if (w.last_accessed_us == 0) w.last_accessed_us = now;
  return store_->Write([w](SQLite::Database& db) {
    SQLite::Statement exists(db, "SELECT 1 FROM workspaces WHERE id = ?");
    exists.bind(1, w.id);
    if (exists.executeStep()) return Status::Conflict(fmt::format("workspace {} exists", w.id), 0);
    SQLite::Statement st(db,
                         "INSERT INTO workspaces (id, name, path, status, metadata, created_us, "
                         "last_accessed_us) VALUES (?,?,?,?,?,?,?)");
    BindWorkspace(st, w);
    st.exec();
    return Status::Ok();
  });
}

Status SqliteCatalog::UpdateWorkspace(const WorkspaceRecord& in) {
  Status s = CheckWorkspace(in);
  if (!s.ok()) return s;
  WorkspaceRecord w = in;
  return store_->Write([w](SQLite::Database& db) {
    SQLite::Statement st(db,
                         "UPDATE workspaces SET name = ?2, path = ?3, status = ?4, metadata = ?5, "
                         "created_us = CASE WHEN ?6 <> 0 THEN ?6 ELSE created_us END, "
                         "last_accessed_us = CASE WHEN ?7 <> 0 THEN ?7 ELSE last_accessed_us END "
                         "WHERE id = ?1");
    BindWorkspace(st, w);
    if (st.exec() == 0) return Status::NotFound(fmt::format("no workspace {}", w.id));
    return Status::Ok();
  });
}

Result<WorkspaceRecord> SqliteCatalog::GetWorkspace(std::string_view id) {
  std::optional<WorkspaceRecord> rec;
  std::string key(id);
  Status s = store_->WithReader([&](SQLite::Database& db) {
    SQLite::Statement st(db, std::string(kWorkspaceCols) + " WHERE id = ?");
    st.bind(1, key);
    if (st.executeStep()) rec = WorkspaceFromRow(st);
    return Status::Ok();
  });
  if (!s.ok()) return s;
  if (!rec) return Status::NotFound(fmt::format("no workspace {}", id));
  return std::move(*rec);
}

Result<std::vector<WorkspaceRecord>> SqliteCatalog::ListWorkspaces() {
  std::vector<WorkspaceRecord> out;
  Status s = store_->WithReader([&](SQLite::Database& db) {
    SQLite::Statement st(db, std::string(kWorkspaceCols) + " ORDER BY created_us, id");
    while (st.executeStep()) out.push_back(WorkspaceFromRow(st));
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return out;
}

Status SqliteCatalog::TouchWorkspace(std::string_view id) {
  std::string key(id);
  return store_->Write([key](SQLite::Database& db) {
    SQLite::Statement st(db, "UPDATE workspaces SET last_accessed_us = ? WHERE id = ?");
    st.bind(1, NowMicros());
    st.bind(2, key);
    if (st.exec() == 0) return Status::NotFound(fmt::format("no workspace {}", key));
    return Status::Ok();
  });
}

Status SqliteCatalog::DeleteWorkspace(std::string_view id) {
  std::string key(id);
  return store_->Write([key](SQLite::Database& db) {
    SQLite::Statement st(db, "DELETE FROM workspaces WHERE id = ?");
    st.bind(1, key);
    if (st.exec() == 0) return Status::NotFound(fmt::format("no workspace {}", key));
    SQLite::Statement lay(db, "DELETE FROM layouts WHERE workspace_id = ?");
    lay.bind(1, key);
    lay.exec();
    return Status::Ok();
  });
}

// ---- settings

Status SqliteCatalog::PutSettings(std::string_view category, std::string_view json) {
  Status s = CheckKey("settings category", category);
  if (s.ok()) s = CheckJson("settings", json);
  if (!s.ok()) return s;
  std::string cat(category), val(json);
  return store_->Write([cat, val](SQLite::Database& db) {
    SQLite::Statement st(db,
                         "INSERT INTO settings (category, value, updated_us) VALUES (?,?,?) "
                         "ON CONFLICT(category) DO UPDATE SET value=excluded.value, "
                         "updated_us=excluded.updated_us");
    st.bind(1, cat);
    st.bind(2, val);
    st.bind(3, NowMicros());
    st.exec();
    return Status::Ok();
  });
}

Result<std::string> SqliteCatalog::GetSettings(std::string_view category) {
  std::optional<std::string> val;
  std::string cat(category);
  Status s = store_->WithReader([&](SQLite::Database& db) {
    SQLite::Statement st(db, "SELECT value FROM settings WHERE category = ?");
    st.bind(1, cat);
    if (st.executeStep()) val = st.getColumn(0).getString();
    return Status::Ok();
  });
  if (!s.ok()) return s;
  if (!val) return Status::NotFound(fmt::format("no settings for category {}", category));
  return std::move(*val);
}

Result<std::vector<std::pair<std::string, std::string>>> SqliteCatalog::ListSettings() {
  std::vector<std::pair<std::string, std::string>> out;
  Status s = store_->WithReader([&](SQLite::Database& db) {
    SQLite::Statement st(db, "SELECT category, value FROM settings ORDER BY category");
    while (st.executeStep()) out.emplace_back(st.getColumn(0).getString(), st.getColumn(1).getString());
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return out;
}

// ---- layouts

Status SqliteCatalog::PutLayout(const LayoutRecord& in) {
  Status s = CheckKey("layout client id", in.client_id);
  if (s.ok()) s = CheckKey("layout workspace id", in.workspace_id);
  if (s.ok()) s = CheckJson("layout", in.layout);
  if (!s.ok()) return s;
  LayoutRecord l = in;
  l.updated_us = NowMicros();
  return store_->Write([l](SQLite::Database& db) {
    SQLite::Statement st(db,
                         "INSERT INTO layouts (client_id, workspace_id, layout, updated_us) "
                         "VALUES (?,?,?,?) ON CONFLICT(client_id, workspace_id) DO UPDATE SET "
                         "layout=excluded.layout, updated_us=excluded.updated_us");
    st.bind(1, l.client_id);
    st.bind(2, l.workspace_id);
    st.bind(3, l.layout);
    st.bind(4, l.updated_us);
    st.exec();
    return Status::Ok();
  });
}

Result<LayoutRecord> SqliteCatalog::GetLayout(std::string_view client_id,
                                              std::string_view workspace_id) {
  std::optional<LayoutRecord> rec;
  std::string c(client_id), w(workspace_id);
  Status s = store_->WithReader([&](SQLite::Database& db) {
    SQLite::Statement st(db, std::string(kLayoutCols) + " WHERE client_id = ? AND workspace_id = ?");
    st.bind(1, c);
    st.bind(2, w);
    if (st.executeStep()) rec = LayoutFromRow(st);
    return Status::Ok();
  });
  if (!s.ok()) return s;
  if (!rec) return Status::NotFound(fmt::format("no layout for client {} in workspace {}", c, w));
  return std::move(*rec);
}

Result<std::vector<LayoutRecord>> SqliteCatalog::ListLayouts(std::string_view client_id) {
  std::vector<LayoutRecord> out;
  std::string c(client_id);
  Status s = store_->WithReader([&](SQLite::Database& db) {
    SQLite::Statement st(db, std::string(kLayoutCols) + " WHERE client_id = ? ORDER BY workspace_id");
    st.bind(1, c);
    while (st.executeStep()) out.push_back(LayoutFromRow(st));
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return out;
}

Status SqliteCatalog::DeleteLayout(std::string_view client_id, std::string_view workspace_id) {
  std::string c(client_id), w(workspace_id);
  return store_->Write([c, w](SQLite::Database& db) {
    SQLite::Statement st(db, "DELETE FROM layouts WHERE client_id = ? AND workspace_id = ?");
    st.bind(1, c);
    st.bind(2, w);
    if (st.exec() == 0) return Status::NotFound(fmt::format("no layout for client {} in workspace {}", c, w));
    return Status::Ok();
  });
}

// ---- snapshots

Status SqliteCatalog::PutSnapshot(const SnapshotRecord& in) {
  Status s = ValidateRunId(in.run_id);
  if (s.ok()) s = CheckKey("snapshot name", in.name);
  if (s.ok() && in.seq < 0) s = Status::InvalidArgument("snapshot seq must be >= 0");
  if (!s.ok()) return s;
  SnapshotRecord r = in;
  if (r.created_us == 0) r.created_us = NowMicros();
  return store_->Write([r](SQLite::Database& db) {
    SQLite::Statement st(db,
                         "INSERT OR REPLACE INTO snapshots (run_id, name, seq, version, data, "
                         "created_us) VALUES (?,?,?,?,?,?)");
    st.bind(1, r.run_id);
    st.bind(2, r.name);
    st.bind(3, r.seq);
    st.bind(4, r.version);
    st.bind(5, r.data.data(), static_cast<int>(r.data.size()));
    st.bind(6, r.created_us);
    st.exec();
    return Status::Ok();
  });
}

Result<SnapshotRecord> SqliteCatalog::GetSnapshot(std::string_view run_id, std::string_view name,
                                                  int64_t at_or_before_seq) {
  std::optional<SnapshotRecord> rec;
  std::string rid(run_id), nm(name);
  Status s = store_->WithReader([&](SQLite::Database& db) {
    SQLite::Statement st(db,
                         "SELECT seq, version, data, created_us FROM snapshots WHERE run_id = ? "
                         "AND name = ? AND seq <= ? ORDER BY seq DESC LIMIT 1");
    st.bind(1, rid);
    st.bind(2, nm);
    st.bind(3, at_or_before_seq);
    if (st.executeStep()) {
      SnapshotRecord r;
      r.run_id = rid;
      r.name = nm;
      r.seq = st.getColumn(0).getInt64();
      r.version = st.getColumn(1).getInt();
      SQLite::Column d = st.getColumn(2);
      r.data.assign(static_cast<const char*>(d.getBlob()), static_cast<size_t>(d.getBytes()));
      r.created_us = st.getColumn(3).getInt64();
      rec = std::move(r);
    }
    return Status::Ok();
  });
  if (!s.ok()) return s;
  if (!rec) return Status::NotFound(fmt::format("no {} snapshot of run {}", name, run_id));
  return std::move(*rec);
}

Status SqliteCatalog::DeleteSnapshotsBefore(std::string_view run_id, std::string_view name,
                                            int64_t before_seq) {
  std::string rid(run_id), nm(name);
  return store_->Write([rid, nm, before_seq](SQLite::Database& db) {
    SQLite::Statement st(db, "DELETE FROM snapshots WHERE run_id = ? AND name = ? AND seq < ?");
    st.bind(1, rid);
    st.bind(2, nm);
    st.bind(3, before_seq);
    st.exec();
    return Status::Ok();
  });
}

}  // namespace internal
}  // namespace dispatch
