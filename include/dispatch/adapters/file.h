// The file editor session kind ("file"): open, read, write, rename, delete,
// list and make directories inside the session's workspace, each operation
// recorded as an event. No process runs; operations arrive as commands
// (RunSessionManager::Command with a JSON payload, see doc/adapters.md).
//
// Every path is confined to the workspace: resolved with realpath (symlinks
// followed) and compared by path component, so `..`, absolute paths outside,
// symlinks that lead out and sibling directories sharing a name prefix are
// refused; the file is then opened relative to a descriptor of the
// workspace with RESOLVE_BENEATH (openat2), so a path swapped for a symlink
// between the check and the use is refused too. Writes are atomic: a
// temporary file in the same directory, fsync, rename, fsync of the directory.
//
// Events: file:opened, file:read, file:closed, file:saved {path, size,
// sha256, created}, file:renamed {from, to}, file:deleted {path, type},
// file:listed {path, count}, file:dir_created {path}, file:error {op, path,
// code, message}; and, when content recording is on, file:content/opened and
// file:content/saved with the exact bytes (encoding bytes). Paths in events
// are relative to the workspace.
//
// Thread-safety: FileOptions is a plain value; the factory is called by the
// RunSessionManager on its loop thread.
#ifndef DISPATCH_ADAPTERS_FILE_H_
#define DISPATCH_ADAPTERS_FILE_H_

#include <cstddef>
#include <string>

#include "dispatch/export.h"
#include "dispatch/ext/session_adapter.h"

namespace dispatch {

// Options of a file session (CreateSession's options JSON uses the same key
// names; unknown keys are refused).
struct FileOptions {
  // Record the content opened and saved as file:content events (bytes), so
  // the log alone can replay the edits. Files larger than
  // max_record_bytes are hashed but their content is not recorded.
  bool record_content = true;
  size_t max_record_bytes = size_t{1} << 20;
  // Largest file that read/open/write accept (InvalidArgument above).
  size_t max_file_bytes = size_t{32} << 20;
};

// The factory to register for kind "file". The kind keeps no state between
// commands, so a stopped session can be resumed.
DISPATCH_EXPORT AdapterFactory FileAdapterFactory();

}  // namespace dispatch

#endif  // DISPATCH_ADAPTERS_FILE_H_
