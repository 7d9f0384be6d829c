// SqliteCatalog: the Catalog of a SqliteEventStore (same database file).
// Writes run on the store's writer thread; reads on its read connections.
//
// Thread-safety: thread-safe.
#ifndef DISPATCH_LIB_STORE_SQLITE_CATALOG_H_
#define DISPATCH_LIB_STORE_SQLITE_CATALOG_H_

#include "dispatch/catalog.h"

namespace dispatch::internal {

class SqliteEventStore;

class SqliteCatalog final : public Catalog {
 public:
  // `store` must outlive this catalog (it owns it).
  explicit SqliteCatalog(SqliteEventStore* store) : store_(store) {}

  Status PutSession(const SessionRecord& session) override;
  Status SetSessionStatus(std::string_view run_id, SessionStatus status) override;
  Result<SessionRecord> GetSession(std::string_view run_id) override;
  Result<std::vector<SessionRecord>> ListSessions() override;
  Status DeleteSession(std::string_view run_id) override;

  Status CreateWorkspace(const WorkspaceRecord& workspace) override;
  Status UpdateWorkspace(const WorkspaceRecord& workspace) override;
  Result<WorkspaceRecord> GetWorkspace(std::string_view id) override;
  Result<std::vector<WorkspaceRecord>> ListWorkspaces() override;
  Status TouchWorkspace(std::string_view id) override;
  Status DeleteWorkspace(std::string_view id) override;

  Status PutSettings(std::string_view category, std::string_view json) override;
  Result<std::string> GetSettings(std::string_view category) override;
  Result<std::vector<std::pair<std::string, std::string>>> ListSettings() override;

  Status PutLayout(const LayoutRecord& layout) override;
  Result<LayoutRecord> GetLayout(std::string_view client_id,
                                 std::string_view workspace_id) override;
  Result<std::vector<LayoutRecord>> ListLayouts(std::string_view client_id) override;
  Status DeleteLayout(std::string_view client_id, std::string_view workspace_id) override;

  Status PutSnapshot(const SnapshotRecord& snapshot) override;
  Result<SnapshotRecord> GetSnapshot(std::string_view run_id, std::string_view name,
                                     int64_t at_or_before_seq) override;
  Status DeleteSnapshotsBefore(std::string_view run_id, std::string_view name,
                               int64_t before_seq) override;

 private:
  SqliteEventStore* store_;
};

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_STORE_SQLITE_CATALOG_H_
