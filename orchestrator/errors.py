"""The exceptions the CLI turns into one line on stderr, each with its exit code.

- :class:`BadInput`: bad user input (a file, key or value), exit 2.
- :class:`EnvironmentFault`: the environment refused to store results (no space, read-only file
  system, permission, file size limit), exit 4. :func:`environment_fault` finds such an
  ``OSError`` anywhere in an exception's chain (Ray Tune and pyarrow wrap what they raise).
- :class:`Interrupted`: SIGINT or SIGTERM stopped the command, exit 130 or 143 (``exit_code``).
"""

from __future__ import annotations

import errno
from pathlib import Path

# errno values that say "the machine refused the write", not "the program is wrong"
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})


class BadInput(Exception):
    """Bad user input: the message names the file, key or value."""


class EnvironmentFault(Exception):
    """Writing results failed for a reason of the machine, not of the program: the message names the
    path and the error (``<path>: No space left on device``)."""

    def __init__(self, path: str | Path | None, error: OSError | str) -> None:
        self.path = str(path) if path is not None else None
        self.errno = error.errno if isinstance(error, OSError) else None
        self.strerror = _strerror(error) if isinstance(error, OSError) else str(error)
        super().__init__(f"{self.path}: {self.strerror}" if self.path else self.strerror)


class Interrupted(Exception):
    """SIGINT (``exit_code`` 130) or SIGTERM (143) stopped the command; the message says what was
    recorded and how to resume."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def is_environment_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an ``OSError`` whose errno is one of :data:`ENVIRONMENT_ERRNOS`."""
    return isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS


def environment_fault(exc: BaseException, where: str | Path | None = None) -> EnvironmentFault | None:
    """The :class:`EnvironmentFault` in ``exc``'s chain (``__cause__``, ``__context__``), or one made
    from the first environment ``OSError`` there (its file name, else ``where``); None if neither."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, EnvironmentFault):
            return e
        if is_environment_error(e):
            return EnvironmentFault(e.filename or where, e)
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
    return None


def _strerror(exc: OSError) -> str:
    """``No space left on device`` (the C library's text for the errno; pyarrow's own text otherwise)."""
    import os

    if exc.errno:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__
