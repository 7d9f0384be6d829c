// PtyAdapter (kind "pty"): a program on a pseudo-terminal, recorded.
//
// Options (JSON object): "shell" (program; default $SHELL, else /bin/bash),
// "args" (list of strings), "env" (object of strings, merged over the
// manager process's environment; a null value removes a variable), "cols",
// "rows" (default 80×24). The cwd is the session's workspace.
//
// Events: pty:stdout/chunk (raw bytes, read in large coalesced chunks),
// pty:stdin/input (raw bytes; {"redacted":true,"length":N} as JSON when the
// terminal has echo off in canonical mode — a password prompt),
// pty:resize/dimensions {"cols","rows"}. Stop(false) sends SIGHUP to the
// process group, Stop(true) SIGKILL; the exit is reported once the child is
// reaped and its output drained.
//
// Thread-safety: loop-affine (see SessionAdapter).
#ifndef DISPATCH_LIB_ADAPTERS_PTY_PTY_ADAPTER_H_
#define DISPATCH_LIB_ADAPTERS_PTY_PTY_ADAPTER_H_

#include "dispatch/ext/session_adapter.h"

namespace dispatch::internal {

AdapterFactory MakePtyAdapterFactory();

// Flood reader threads running now in this process (at most 16; see
// pty_adapter.cc). For tests and diagnostics.
int PtyFloodReaders();

}  // namespace dispatch::internal

#endif  // DISPATCH_LIB_ADAPTERS_PTY_PTY_ADAPTER_H_
