"""dispatch: durable, replayable, shareable interactive sessions.

Every session (a terminal, a Claude Code agent, a file editor) is an
append-only stream of immutable events with a per-session seq, stored in
SQLite. From Python you can:

* read and analyse logs: ``EventStore(path).read(run_id)`` yields ``Event``
  objects (fast: 100K events in a few milliseconds);
* append your own events (``NewEvent``) with optimistic concurrency and
  idempotency ids, and follow runs live (``EventStore.subscribe``);
* script live sessions like pexpect, with a durable log:
  ``SessionManager(store).create("pty", argv=["python3", "-q"])`` returns a
  ``Session`` with ``send``/``expect``/``wait``;
* replay what a terminal showed at any point (``screen(store, run_id,
  at_seq)``) and export recordings (``export_asciicast``, ``export_jsonl``,
  ``import_jsonl``).

Errors are ``dispatch.Error`` subclasses (``NotFound``, ``InvalidArgument``,
``Conflict``, ``Truncated``, ``Timeout``, ``Closed``, ...). Blocking calls
release the GIL; callbacks from the library's threads take it. See
doc/python.md.
"""

from __future__ import annotations

import atexit as _atexit
import json as _json
import os as _os
import re as _re
import time as _time
from typing import Any, Iterator, Optional, Union

from ._errors import (Busy, Closed, Conflict, Corruption, Error, InvalidArgument, NotFound,
                      ReadOnly, Timeout, Truncated)
from . import _dispatch
from ._dispatch import (AppendResult, Event, EventIterator, EventStore, LayoutRecord, NewEvent,
                        RunInfo, Screen, SessionRecord, Subscription, WorkspaceRecord,
                        export_asciicast, export_jsonl, import_jsonl, screen, session_status)

__version__: str = _dispatch.__version__

__all__ = [
    "EventStore", "Event", "EventIterator", "NewEvent", "AppendResult", "RunInfo",
    "SessionRecord", "WorkspaceRecord", "LayoutRecord", "Subscription", "SessionManager",
    "Session", "Screen", "screen", "session_status", "export_asciicast", "export_jsonl",
    "import_jsonl",
    "Error", "NotFound", "InvalidArgument", "Conflict", "Truncated", "Timeout", "Closed",
    "Busy", "ReadOnly", "Corruption",
]

# Close what is still open before the interpreter starts tearing down, so no
# library thread calls back into a finalising interpreter.
_atexit.register(_dispatch._shutdown)

Pattern = Union[bytes, str, "_re.Pattern[bytes]", "_re.Pattern[str]"]

#: How much of the recent output a Timeout/Closed from expect() carries.
_TAIL_BYTES = 2048
#: Unmatched output kept by expect(); older bytes are dropped (the store has them).
_MAX_BUFFER = 8 << 20


def _compile(pattern: Pattern) -> "_re.Pattern[bytes]":
    """A bytes regex for `pattern` (output is matched as raw bytes)."""
    if isinstance(pattern, _re.Pattern):
        if isinstance(pattern.pattern, str):
            return _re.compile(pattern.pattern.encode("utf-8"), pattern.flags & ~_re.UNICODE)
        return pattern
    if isinstance(pattern, str):
        return _re.compile(pattern.encode("utf-8"))
    if isinstance(pattern, (bytes, bytearray, memoryview)):
        return _re.compile(bytes(pattern))
    raise TypeError("pattern must be bytes, str or a compiled regular expression")


class Session:
    """A live session run by a SessionManager (create one with ``SessionManager.create``).

    Drive it like pexpect: ``send``/``sendline`` input, ``expect`` a regular
    expression in its output, ``wait`` for it to exit. Everything it does is
    also recorded in the store under ``run_id`` (``events()`` reads it back).
    A context manager: leaving the block closes the session and waits for it
    to end.

    Thread-safety: ``send``/``resize``/``close``/``info``/``events`` may be
    called from any thread; ``expect``/``read`` keep a read position and
    belong to one thread at a time.
    """

    def __init__(self, manager: "SessionManager", core: Any) -> None:
        self._manager = manager
        self._s = core
        self._buf = b""       # output not consumed by expect()/read()
        self._offset = 0      # absolute offset of the end of _buf in the output
        self._eof = False     # all output is in _buf and the session ended
        self._closed_payload: Optional[bytes] = None
        #: The last successful expect(): the match, the bytes before it, the matched bytes.
        self.match: Optional["_re.Match[bytes]"] = None
        self.before: bytes = b""
        self.after: bytes = b""

    # ---- identity
    @property
    def run_id(self) -> str:
        """The session's run id (its stream in the store)."""
        return self._s.run_id

    @property
    def kind(self) -> str:
        """The session kind: "pty", "claude", "file", ..."""
        return self._s.kind

    @property
    def manager(self) -> "SessionManager":
        """The SessionManager running it."""
        return self._manager

    # ---- input
    def send(self, data: Union[bytes, str]) -> None:
        """Sends input (keystrokes for a pty; str is sent as UTF-8). Raises Closed once
        the session has ended or the manager is closed."""
        try:
            self._s.send(data)
        except NotFound:
            raise Closed(f"session {self.run_id} has ended") from None

    def sendline(self, line: Union[bytes, str] = b"", newline: Union[bytes, str] = b"\r") -> None:
        """Sends `line` followed by Enter (``\\r``, as a terminal does)."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        if isinstance(newline, str):
            newline = newline.encode("utf-8")
        self.send(bytes(line) + bytes(newline))

    def resize(self, cols: int, rows: int) -> None:
        """Resizes the session's terminal (recorded as pty:resize/dimensions)."""
        self._s.resize(cols, rows)

    def command(self, name: str, payload: Any = None) -> Any:
        """A kind-specific command (e.g. a Claude interrupt); returns the parsed reply."""
        reply = self._s.command(name, _json.dumps({} if payload is None else payload))
        return _json.loads(reply) if reply else None

    # ---- output
    def _pull(self, timeout: Optional[float]) -> None:
        data, _start, end, closed = self._s.read_output(self._offset, timeout)
        if data:
            self._buf += data
            if len(self._buf) > _MAX_BUFFER:
                self._buf = self._buf[-_MAX_BUFFER:]
        self._offset = end
        self._eof = closed

    def expect(self, pattern: Pattern, timeout: Optional[float] = 10.0) -> "_re.Match[bytes]":
        """Waits until `pattern` (a regular expression: bytes, str or compiled) matches the
        session's output and returns the ``re.Match`` (over bytes).

        Output up to the end of the match is consumed: the next expect() searches after
        it. ``before``/``after``/``match`` are set like pexpect's. Raises Timeout after
        `timeout` seconds (None = no limit) and Closed if the session ends first; both
        carry the recent output in ``.tail``. The GIL is released while waiting.
        """
        rx = _compile(pattern)
        deadline = None if timeout is None else _time.monotonic() + timeout
        while True:
            m = rx.search(self._buf)
            if m is not None:
                self.before = self._buf[:m.start()]
                self.after = m.group(0)
                self.match = m
                self._buf = self._buf[m.end():]
                return m
            if self._eof:
                raise Closed(f"session {self.run_id} ended before {rx.pattern!r} was seen",
                             tail=self._buf[-_TAIL_BYTES:])
            remaining = None if deadline is None else deadline - _time.monotonic()
            if remaining is not None and remaining <= 0:
                raise Timeout(f"{rx.pattern!r} not seen in the output of {self.run_id} "
                              f"within {timeout}s", tail=self._buf[-_TAIL_BYTES:])
            self._pull(remaining)

    def expect_exact(self, text: Union[bytes, str],
                     timeout: Optional[float] = 10.0) -> "_re.Match[bytes]":
        """expect() for a literal string."""
        if isinstance(text, str):
            text = text.encode("utf-8")
        return self.expect(_re.compile(_re.escape(bytes(text))), timeout)

    def read(self, timeout: Optional[float] = 0.0) -> bytes:
        """Returns (and consumes) the output not consumed yet, waiting up to `timeout` seconds
        for some if there is none. b"" if nothing came (or the session ended)."""
        if not self._buf and not self._eof:
            self._pull(timeout)
        else:
            self._pull(0.0)
        data, self._buf = self._buf, b""
        return data

    # ---- end
    def wait(self, timeout: Optional[float] = None) -> int:
        """Waits for the session to end and returns its return code: the exit code, or
        -N if signal N killed it (like subprocess). Raises Timeout."""
        if self._closed_payload is None:
            payload = self._s.wait_closed(timeout)
            if payload is None:
                raise Timeout(f"session {self.run_id} still running after {timeout}s")
            self._closed_payload = payload
        return self.returncode  # type: ignore[return-value]

    @property
    def exit_info(self) -> Optional[dict]:
        """The closed event's payload ({"exitCode", "signal"[, "error"]}), or None while
        running."""
        if self._closed_payload is None:
            if not self._s.ended:
                return None
            self._closed_payload = self._s.wait_closed(0.0)
        try:
            return _json.loads(self._closed_payload or b"{}")
        except ValueError:
            return {}

    @property
    def returncode(self) -> Optional[int]:
        """None while running; then the exit code, or -N for signal N."""
        info = self.exit_info
        if info is None:
            return None
        sig = info.get("signal") or 0
        if isinstance(sig, int) and sig:
            return -sig
        code = info.get("exitCode")
        return code if isinstance(code, int) else 0

    @property
    def ended(self) -> bool:
        """True once the session's closed event was committed."""
        return bool(self._s.ended)

    def close(self, force: bool = False, timeout: Optional[float] = 10.0) -> Optional[int]:
        """Closes the session (SIGHUP, then SIGKILL after the manager's close timeout; at
        once when `force`) and waits up to `timeout` for it to end (None = don't wait).
        Returns the return code if it ended. Closing an ended session does nothing."""
        if not self._s.ended:
            self._s.close(force)
        if timeout is None:
            return self.returncode
        return self.wait(timeout)

    def info(self) -> Optional[dict]:
        """The runtime's view of the live session (status, description with the pid,
        last_seq, pending_bytes, paused...), or None once it has ended."""
        return self._s.info()

    def events(self, after_seq: int = 0, limit: Optional[int] = None) -> EventIterator:
        """The session's recorded events with seq > after_seq (from the store)."""
        return self._manager.store.read(self.run_id, after_seq, limit)

    def screen(self, at_seq: Optional[int] = None, **options: Any) -> Screen:
        """The session's terminal screen (pty sessions): ``dispatch.screen`` over its
        recorded output. With ``at_seq=None`` it first waits (up to 10 s) until everything
        the session emitted so far is committed, so the screen shows at least the output
        ``expect`` has seen."""
        if at_seq is None and not self._manager.closed:
            try:
                self._manager.wait_idle(self.run_id, 10.0)
            except (NotFound, Closed):
                pass
        return screen(self._manager.store, self.run_id, at_seq, **options)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._manager.closed:
            return
        try:
            self.close()
        except Timeout:
            self.close(force=True)

    def __repr__(self) -> str:
        state = "ended" if self._s.ended else "live"
        return f"<dispatch.Session {self.run_id} kind={self.kind} {state}>"


class SessionManager:
    """Runs live sessions (kinds "pty", "claude", "file", ...) and records everything they
    do in `store`.

    The runtime runs on its own thread; every method may be called from any Python thread
    and releases the GIL while it waits. Sessions' workspaces must lie inside
    `workspaces_root` (default: the current directory), checked by real path. A context
    manager: leaving the block closes every session gracefully and stops the runtime.
    """

    def __init__(self, store: EventStore, workspaces_root: Optional[Union[str, "_os.PathLike[str]"]] = None,
                 *, close_timeout: float = 3.0, max_pending_bytes: int = 4 << 20) -> None:
        if not isinstance(store, EventStore):
            raise TypeError("SessionManager needs a dispatch.EventStore")
        self._store = store
        root = None if workspaces_root is None else _os.fspath(workspaces_root)
        self._m = _dispatch._SessionManager(store, root, int(close_timeout * 1000),
                                            max_pending_bytes)

    @property
    def store(self) -> EventStore:
        """The store the sessions are recorded in."""
        return self._store

    @property
    def closed(self) -> bool:
        """True once close() stopped the runtime."""
        return bool(self._m.closed)

    def create(self, kind: str = "pty", workspace: Union[str, "_os.PathLike[str]"] = "", *,
               run_id: Optional[str] = None, **options: Any) -> Session:
        """Creates and starts a session and returns it once started.

        `workspace`: a directory inside the workspaces root (relative to it, or absolute);
        "" = the root. `options` are the adapter's options, passed as a JSON object; for
        "pty": shell (program), args (list), env (dict; None removes a variable), cols,
        rows. ``argv=[program, *args]`` is a shortcut for shell + args. `run_id`: the
        session's stream id (default: generated, "<kind>-<hex>").

        Raises InvalidArgument (unknown kind, bad options, workspace outside the root),
        NotFound (workspace missing), Conflict (run id taken), Closed.
        """
        if "argv" in options:
            argv = list(options.pop("argv"))
            if not argv:
                raise InvalidArgument("argv must name a program")
            options["shell"], options["args"] = str(argv[0]), [str(a) for a in argv[1:]]
        core = self._m.create(kind, _os.fspath(workspace), _json.dumps(options), run_id)
        return Session(self, core)

    def sessions(self) -> list:
        """The live sessions, as dicts (run_id, kind, status, workspace, description, ...)."""
        return self._m.sessions()

    def errors(self) -> list:
        """Failures the runtime had no caller to report to (a failed append of a session's
        events...): a list of (run_id, dispatch.Error), the last 100."""
        return self._m.errors()

    def wait_idle(self, run_id: str = "", timeout: float = 10.0) -> None:
        """Waits until every event emitted so far (by `run_id`, or by every session) is
        committed and delivered. Raises Timeout."""
        self._m.wait_idle(run_id, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Closes every live session gracefully (waiting up to `timeout` for their closed
        events) and stops the runtime. Idempotent."""
        self._m.close(timeout)

    def __enter__(self) -> "SessionManager":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<dispatch.SessionManager store={self._store.path!r}{' closed' if self.closed else ''}>"
