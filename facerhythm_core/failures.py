"""How a failed job is described: its whole error and the root cause.

A job's uncaught exception is logged by :func:`describe_exception` (the workflow
scripts do this in ``facerhythm_core.runtime.setup_logging``) and read back from the log by
:func:`error_in_log` for the run summary. The root cause is what the user can act on:
the system error behind a chain of exceptions (``No space left on device``), which
HDF5 reports only inside a multi-line message whose first line says something else
(``Can't decrement id ref count``).
"""

from __future__ import annotations

import errno as _errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

#: HDF5 puts the system error inside its message: "..., errno = 28, error message = 'No space...'"
_HDF5_SYSTEM_ERROR = re.compile(r"errno = (\d+), error message = '([^']*)'")
#: a logging record's first line: "2024-05-01 12:00:00,123 ERROR name: message"
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) [^:]*: (?P<msg>.*)$")
#: what the workflow scripts' exception hook puts before the error
_FAILED_FOR = re.compile(r"^\w+ failed for \{.*?\}: ")
ROOT_CAUSE = "root cause: "


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions behind it (``raise ... from`` or while handling), outermost first."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        chain.append(exc)
        seen.add(id(exc))
        exc = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)
    return chain


def _system_error_text(number: int, message: str | None = None) -> str:
    name = _errno.errorcode.get(number, "")
    return f"{message or os.strerror(number)} (errno {number}{', ' + name if name else ''})"


def system_error(exc: BaseException) -> str | None:
    """The operating-system error behind ``exc`` or its chain (innermost first), or None.

    Examples
    --------
    >>> system_error(OSError(28, "No space left on device"))
    'No space left on device (errno 28, ENOSPC)'
    """
    for e in reversed(exception_chain(exc)):
        if isinstance(e, OSError) and isinstance(e.errno, int) and e.errno > 0:
            return _system_error_text(e.errno)
        m = _HDF5_SYSTEM_ERROR.search(str(e))
        if m:
            return _system_error_text(int(m.group(1)), m.group(2))
    return None


def _one(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _said_in(root: str, first_line: str) -> bool:
    """Whether ``first_line`` already says ``root`` (its system-error text or message)."""
    core = root.split(" (errno")[0]
    return core in first_line or root.split(": ", 1)[-1] in first_line


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` (all lines), and a ``root cause:`` line when the cause adds to it.

    The root cause is the system error behind the chain (:func:`system_error`), else
    the innermost exception of the chain; it is left out when the message's first line
    already says it.
    """
    text = _one(exc)
    chain = exception_chain(exc)
    root = system_error(exc) or (_one(chain[-1]) if len(chain) > 1 else None)
    if root and not _said_in(root, text.splitlines()[0]):
        text += f"\n{ROOT_CAUSE}{root}"
    return text


@dataclass(frozen=True)
class Failure:
    """An error read back from a job's log."""

    message: str
    root_cause: str | None = None

    def one_line(self, limit: int = 600) -> str:
        """Message and root cause on one line (no tabs), for a table cell."""
        msg = " ".join(self.message.split())
        if len(msg) > limit:
            msg = msg[: limit - 3] + "..."
        return msg + (f"; {ROOT_CAUSE}{' '.join(self.root_cause.split())}" if self.root_cause else "")


_TRACEBACK = "Traceback (most recent call last):"


def _last_error_record(lines: list[str]) -> list[str] | None:
    """The lines of the last ERROR (or CRITICAL) logging record, its traceback included."""
    starts = [(i, m) for i, m in ((i, _RECORD.match(ln)) for i, ln in enumerate(lines)) if m]
    errors = [(i, m) for i, m in starts if m.group("level") in ("ERROR", "CRITICAL")]
    if not errors:
        return None
    i, m = errors[-1]
    end = next((j for j, _ in starts if j > i), len(lines))
    return [m.group("msg")] + lines[i + 1 : end]


def error_in_log(path: str | Path) -> Failure | None:
    """The last error a job logged, with its root cause, or None when it logged none.

    Reads the last ERROR record: its whole message, not just the first line. The root
    cause is the record's ``root cause:`` line (:func:`describe_exception`), else a
    system error that HDF5 quotes in the record or its traceback.
    """
    p = Path(path)
    if not p.is_file():
        return None
    record = _last_error_record(p.read_text(errors="replace").splitlines())
    if record is None:
        return None
    body = record[: record.index(_TRACEBACK)] if _TRACEBACK in record else record
    root = next((ln[len(ROOT_CAUSE) :] for ln in body if ln.startswith(ROOT_CAUSE)), None)
    message = _FAILED_FOR.sub("", "\n".join(ln for ln in body if not ln.startswith(ROOT_CAUSE)).strip())
    if root is None:
        m = _HDF5_SYSTEM_ERROR.search("\n".join(record))
        root = _system_error_text(int(m.group(1)), m.group(2)) if m else None
        if root and _said_in(root, message.splitlines()[0] if message else ""):
            root = None
    return Failure(message=message, root_cause=root)
