"""The exception hierarchy of the dispatch package.

Every failure of the C++ library (a ``Status`` with a code) becomes one of
these exceptions. The mapping lives in exactly one place, the extension's
``RaiseStatus`` (bindings/python/src/errors.cc), which looks the classes up
here by the library's status code name.
"""

from __future__ import annotations


class Error(Exception):
    """Base class of every dispatch error.

    ``code`` is the library's status name (``"not_found"``, ``"conflict"``,
    ``"io_error"``, ...); ``detail`` its code-specific number (0 if none).
    """

    code = "error"

    def __init__(self, message: str = "", *, code: str | None = None, detail: int = 0,
                 tail: bytes = b"") -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.detail = detail
        #: For Timeout/Closed raised by ``Session.expect``: the last output seen.
        self.tail = tail

    @property
    def message(self) -> str:
        """The error text without the code."""
        return str(self.args[0]) if self.args else ""


class NotFound(Error, LookupError):
    """The run, session, workspace or setting does not exist."""

    code = "not_found"


class InvalidArgument(Error, ValueError):
    """The input is malformed or out of limits; nothing was done."""

    code = "invalid_argument"


class Conflict(Error):
    """Optimistic concurrency failed (``expected_seq`` did not match), or an id is taken.

    ``actual_last_seq`` is the run's real last seq for a failed append.
    """

    code = "conflict"

    @property
    def actual_last_seq(self) -> int:
        """The run's last seq when the append was refused."""
        return self.detail


class Truncated(Error):
    """The requested range was removed by retention.

    ``earliest_seq`` is the first seq still stored (the first position for
    whole-store reads): read again from ``earliest_seq - 1``.
    """

    code = "truncated"

    @property
    def earliest_seq(self) -> int:
        """The first seq (or position) still stored."""
        return self.detail


class Timeout(Error, TimeoutError):
    """A deadline passed. From ``Session.expect``, ``tail`` holds the recent output."""

    code = "timeout"


class Closed(Error):
    """The store, manager or session was closed (or the session ended)."""

    code = "closed"


class Busy(Error):
    """A bound was hit (slow subscriber, full queue); retry later."""

    code = "busy"


class ReadOnly(Error):
    """The store was opened read-only (or the file is not writable)."""

    code = "read_only"


class Corruption(Error):
    """The stored data is not what dispatch wrote."""

    code = "corruption"


#: status code name -> exception class (codes not listed raise plain Error).
BY_CODE: dict[str, type[Error]] = {
    "not_found": NotFound,
    "invalid_argument": InvalidArgument,
    "conflict": Conflict,
    "truncated": Truncated,
    "timeout": Timeout,
    "closed": Closed,
    "busy": Busy,
    "read_only": ReadOnly,
    "corruption": Corruption,
}

__all__ = ["Error", "NotFound", "InvalidArgument", "Conflict", "Truncated", "Timeout",
           "Closed", "Busy", "ReadOnly", "Corruption"]

# Show them as dispatch.X (where users import them from) in tracebacks and reprs.
for _cls in (Error, NotFound, InvalidArgument, Conflict, Truncated, Timeout, Closed, Busy,
             ReadOnly, Corruption):
    _cls.__module__ = "dispatch"
del _cls
