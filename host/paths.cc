// Workspace path confinement for the host (see paths.h).
#include "paths.h"

#include <sys/stat.h>

#include "util/path_confine.h"

namespace dispatch::host {

Result<std::string> ResolveExistingDir(const std::string& dir) {
  return internal::CanonicalRoot(dir);
}

Result<std::string> ConfineWorkspacePath(const std::string& root, std::string_view requested) {
  if (requested.empty()) return Status::InvalidArgument("workspace path is empty");
  Result<std::string> p = internal::ConfineExisting(root, requested);
  if (!p.ok()) {
    if (p.status().code() == StatusCode::kInvalidArgument)
      return Status::InvalidArgument("workspace path is outside the workspaces root or invalid: " +
                                     p.status().message());
    return p.status();
  }
  struct stat st;
  if (stat(p->c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return Status::InvalidArgument("workspace path is not a directory");
  return p;
}

}  // namespace dispatch::host
