// Workspace path confinement (DESIGN §6): a requested path is resolved with
// realpath (symlinks included) and must lie inside the workspaces root,
// compared by path component, never by string prefix ("/root-evil" is not
// inside "/root").
//
// Thread-safety: pure functions (they read the file system).
#ifndef DISPATCH_HOST_PATHS_H_
#define DISPATCH_HOST_PATHS_H_

#include <string>
#include <string_view>

#include "dispatch/status.h"

namespace dispatch::host {

// realpath(dir), which must exist and be a directory. InvalidArgument or
// NotFound otherwise.
Result<std::string> ResolveExistingDir(const std::string& dir);

// True if `path` equals `root` or lies below it, both absolute and
// normalised; compared component by component.
bool IsWithin(std::string_view root, std::string_view path);

// Resolves `requested` (absolute, or relative to `root`; must exist and be a
// directory) and checks that it lies inside `root` (already resolved).
// InvalidArgument ("outside the workspaces root", NUL bytes, not a directory)
// or NotFound.
Result<std::string> ConfineWorkspacePath(const std::string& root, std::string_view requested);

}  // namespace dispatch::host

#endif  // DISPATCH_HOST_PATHS_H_
