// Workspace path confinement (see paths.h).
#include "paths.h"

#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

namespace dispatch::host {

Result<std::string> ResolveExistingDir(const std::string& dir) {
  if (dir.find('\0') != std::string::npos) return Status::InvalidArgument("path contains NUL");
  char buf[PATH_MAX];
  if (realpath(dir.c_str(), buf) == nullptr) {
    if (errno == ENOENT || errno == ENOTDIR)
      return Status::NotFound("no such directory: " + dir);
    return Status::InvalidArgument("cannot resolve " + dir + ": " + std::strerror(errno));
  }
  struct stat st;
  if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
    return Status::InvalidArgument("not a directory: " + dir);
  return std::string(buf);
}

bool IsWithin(std::string_view root, std::string_view path) {
  while (root.size() > 1 && root.back() == '/') root.remove_suffix(1);
  if (root == "/") return !path.empty() && path.front() == '/';
  if (!path.starts_with(root)) return false;
  if (path.size() == root.size()) return true;
  return path[root.size()] == '/';
}

Result<std::string> ConfineWorkspacePath(const std::string& root, std::string_view requested) {
  if (requested.empty()) return Status::InvalidArgument("workspace path is empty");
  if (requested.find('\0') != std::string_view::npos)
    return Status::InvalidArgument("workspace path contains NUL");
  if (requested.size() >= PATH_MAX) return Status::InvalidArgument("workspace path too long");
  std::string full = requested.front() == '/' ? std::string(requested)
                                               : root + "/" + std::string(requested);
  Result<std::string> resolved = ResolveExistingDir(full);
  if (!resolved.ok()) return resolved.status();
  if (!IsWithin(root, *resolved))
    return Status::InvalidArgument("workspace path is outside the workspaces root");
  return resolved;
}

}  // namespace dispatch::host
