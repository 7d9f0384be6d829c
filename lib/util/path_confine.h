// Workspace confinement (DESIGN §6): resolving a user-supplied path to a
// canonical one and refusing anything that leaves a root directory.
//
// Paths are resolved with realpath (every symlink followed) and then compared
// with the canonical root by path component, never by string prefix, so
// "/srv/ws-evil" is not inside "/srv/ws". Used for pty working directories,
// by the file adapter for every operation and by the host for workspaces.
//
// These checks are made at the time of the call: a directory that an
// attacker can rewrite between the check and the use (a TOCTOU race) needs
// O_NOFOLLOW/openat at the point of use as well.
//
// Thread-safety: plain functions; safe from any thread.
#ifndef DISPATCH_LIB_UTIL_PATH_CONFINE_H_
#define DISPATCH_LIB_UTIL_PATH_CONFINE_H_

#include <string>
#include <string_view>

#include "dispatch/status.h"

namespace dispatch::internal {

// The canonical absolute form of an existing directory `root` (realpath).
// NotFound if it does not exist, InvalidArgument if it is not a directory.
Result<std::string> CanonicalRoot(std::string_view root);

// True when canonical `path` equals canonical `root` or lies below it,
// compared component by component. Both must already be canonical.
bool IsWithinRoot(std::string_view root, std::string_view path);

// Resolves `path` — relative to `root`, or absolute — to the canonical path
// of an existing file or directory inside `root` (root itself included; an
// empty path means root). `root` need not be canonical.
// Errors: InvalidArgument (NUL byte, resolves outside root), NotFound (the
// path or root does not exist), IOError (other realpath failures).
Result<std::string> ConfineExisting(std::string_view root, std::string_view path);

// The same for a path that may not exist yet (a file about to be created):
// the deepest existing ancestor is resolved with realpath and must lie inside
// `root`; the components below it must be plain names ("." and ".." are
// refused) and the first of them must not be a dangling symlink. Returns the
// canonical ancestor joined with the remaining components.
Result<std::string> ConfineNew(std::string_view root, std::string_view path);

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_UTIL_PATH_CONFINE_H_
