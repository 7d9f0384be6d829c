// Workspace path confinement for the host (DESIGN §6), on top of the
// library's util/path_confine: a requested workspace is resolved with
// realpath (symlinks included), must lie inside the workspaces root
// (compared by path component) and must be a directory.
//
// Thread-safety: pure functions (they read the file system).
#ifndef DISPATCH_HOST_PATHS_H_
#define DISPATCH_HOST_PATHS_H_

#include <string>
#include <string_view>

#include "dispatch/status.h"

namespace dispatch::host {

// realpath(dir), which must exist and be a directory. NotFound or
// InvalidArgument otherwise.
Result<std::string> ResolveExistingDir(const std::string& dir);

// Resolves `requested` (absolute, or relative to `root`) to an existing
// directory inside `root`. InvalidArgument ("outside the workspaces root",
// NUL bytes, not a directory) or NotFound.
Result<std::string> ConfineWorkspacePath(const std::string& root, std::string_view requested);

}  // namespace dispatch::host

#endif  // DISPATCH_HOST_PATHS_H_
