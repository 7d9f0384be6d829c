// Catalog: the seed's data model next to the event log — sessions,
// workspaces, settings, per-client layouts — and projection snapshots.
//
// Reached through EventStore::catalog(); it lives in the same database so a
// session row and its events are never in different places. JSON fields are
// stored as text and validated on write (InvalidArgument if malformed).
//
// Thread-safety: thread-safe, like the EventStore that owns it. Writes go
// through the store's writer (they share its group commits) and are durable
// when the call returns.
#ifndef DISPATCH_CATALOG_H_
#define DISPATCH_CATALOG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/export.h"
#include "dispatch/status.h"

namespace dispatch {

enum class SessionStatus : uint8_t { kStarting, kRunning, kStopped, kError };
// "starting", "running", "stopped", "error".
DISPATCH_EXPORT std::string_view SessionStatusName(SessionStatus s);
DISPATCH_EXPORT std::optional<SessionStatus> ParseSessionStatus(std::string_view name);

struct SessionRecord {
  std::string run_id;
  std::string kind;  // "pty", "claude", "file", …
  SessionStatus status = SessionStatus::kStarting;
  std::string workspace;     // the workspace path (or id) it runs in
  std::string meta = "{}";   // JSON object: adapter options, claude session id…
  int64_t created_us = 0;    // set by the store on first Put when 0
  int64_t updated_us = 0;    // set by the store on every Put
};

enum class WorkspaceStatus : uint8_t { kActive, kArchived, kError };
// "active", "archived", "error".
DISPATCH_EXPORT std::string_view WorkspaceStatusName(WorkspaceStatus s);
DISPATCH_EXPORT std::optional<WorkspaceStatus> ParseWorkspaceStatus(std::string_view name);

struct WorkspaceRecord {
  std::string id;
  std::string name;
  std::string path;
  WorkspaceStatus status = WorkspaceStatus::kActive;
  std::string metadata = "{}";  // JSON object
  int64_t created_us = 0;
  int64_t last_accessed_us = 0;
};

struct LayoutRecord {
  std::string client_id;
  std::string workspace_id;
  std::string layout = "{}";  // JSON
  int64_t updated_us = 0;
};

struct SnapshotRecord {
  std::string run_id;
  std::string name;      // which projection ("screen", "status", …)
  int64_t seq = 0;       // state after applying events up to this seq
  int32_t version = 0;   // the projection's serialisation version
  std::string data;      // opaque bytes
  int64_t created_us = 0;
};

class DISPATCH_EXPORT Catalog {
 public:
  virtual ~Catalog() = default;

  // Sessions. Put inserts or replaces by run_id.
  virtual Status PutSession(const SessionRecord& session) = 0;
  // Changes only the status (and updated time). NotFound if absent.
  virtual Status SetSessionStatus(std::string_view run_id, SessionStatus status) = 0;
  virtual Result<SessionRecord> GetSession(std::string_view run_id) = 0;
  virtual Result<std::vector<SessionRecord>> ListSessions() = 0;
  virtual Status DeleteSession(std::string_view run_id) = 0;

  // Workspaces. Create fails Conflict if the id exists; Update fails
  // NotFound if it does not.
  virtual Status CreateWorkspace(const WorkspaceRecord& workspace) = 0;
  virtual Status UpdateWorkspace(const WorkspaceRecord& workspace) = 0;
  virtual Result<WorkspaceRecord> GetWorkspace(std::string_view id) = 0;
  virtual Result<std::vector<WorkspaceRecord>> ListWorkspaces() = 0;
  virtual Status TouchWorkspace(std::string_view id) = 0;  // last accessed = now
  virtual Status DeleteWorkspace(std::string_view id) = 0;

  // Settings: one JSON document per category. Get fails NotFound if unset.
  virtual Status PutSettings(std::string_view category, std::string_view json) = 0;
  virtual Result<std::string> GetSettings(std::string_view category) = 0;
  virtual Result<std::vector<std::pair<std::string, std::string>>> ListSettings() = 0;

  // Layouts per (client, workspace).
  virtual Status PutLayout(const LayoutRecord& layout) = 0;
  virtual Result<LayoutRecord> GetLayout(std::string_view client_id,
                                         std::string_view workspace_id) = 0;
  virtual Result<std::vector<LayoutRecord>> ListLayouts(std::string_view client_id) = 0;
  virtual Status DeleteLayout(std::string_view client_id, std::string_view workspace_id) = 0;

  // Projection snapshots. Put replaces one with the same (run, name, seq).
  virtual Status PutSnapshot(const SnapshotRecord& snapshot) = 0;
  // The newest snapshot of (run, name) with seq <= at_or_before_seq.
  // NotFound if none.
  virtual Result<SnapshotRecord> GetSnapshot(std::string_view run_id, std::string_view name,
                                             int64_t at_or_before_seq = INT64_MAX) = 0;
  // Removes snapshots of (run, name) with seq < before_seq.
  virtual Status DeleteSnapshotsBefore(std::string_view run_id, std::string_view name,
                                       int64_t before_seq) = 0;

 protected:
  Catalog() = default;
};

}  // namespace dispatch

#endif  // DISPATCH_CATALOG_H_
