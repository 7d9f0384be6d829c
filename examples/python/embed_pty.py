#!/usr/bin/env python3
"""embed_pty.py: the Python twin of examples/embed_pty.cc.

Starts a shell on a pty, types `echo hello`, waits for the output, closes the
session and prints its event log as the store recorded it.

    embed_pty.py [STORE_PATH] [WORKSPACES_ROOT]
    (defaults: ./data/embed_pty.db and the current directory)
"""

import os
import sys

import dispatch


def printable(data: bytes, limit: int = 72) -> str:
    """Text as is, control bytes escaped."""
    out = []
    for c in data[:limit]:
        if c == 0x0A:
            out.append("\\n")
        elif c == 0x0D:
            out.append("\\r")
        elif c < 0x20 or c == 0x7F or c >= 0x80:
            out.append(f"\\x{c:02x}")
        else:
            out.append(chr(c))
    return "".join(out) + ("…" if len(data) > limit else "")


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "data/embed_pty.db"
    root = sys.argv[2] if len(sys.argv) > 2 else os.getcwd()
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)

    with dispatch.EventStore(path) as store:
        # The manager runs its own loop thread; leaving the block stops it.
        with dispatch.SessionManager(store, root) as manager:
            session = manager.create("pty", shell="/bin/sh", env={"PS1": "$ "}, cols=100, rows=30)
            print(f"session {session.run_id} started")
            session.send("echo hello\n")
            try:
                # The terminal echoes the typed line ("echo hello\r\n"); the
                # command's own output is a second "hello\r\n".
                session.expect(rb"hello\r\n(.|\n)*hello\r\n", timeout=10)
            except dispatch.Timeout as e:
                print(f"no output after 10 s; got: {printable(e.tail, 500)}", file=sys.stderr)
                return 1
            print("got the output; closing")
            session.close(timeout=10)

        print(f"\nevent log of {session.run_id}:")
        for e in store.read(session.run_id):
            print(f"  {e.seq:3d}  {e.channel:<14} {e.type:<10} {printable(e.payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
