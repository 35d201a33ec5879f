"""The errors a user can cause, and the one place that turns them into a message and exit code 2.

Library code raises :class:`UsageError` (a bad flag value, naming the flag) or :class:`MalformedFileError`
(an input file that cannot be read as what it claims to be, naming the file and row); utils/fileio.py raises
:class:`OutputError` for an output it cannot write (naming the path and the reason). Only entry points
call :func:`run_cli`, which prints one line ``error: ...`` and exits 2, with no traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

EXIT_USAGE = 2  # argparse's own exit code for bad flags; every user error uses it


class UsageError(ValueError):
    """A flag (or option of a library call) whose value cannot be used; ``flag`` names it."""

    def __init__(self, flag: str, reason: str) -> None:
        self.flag, self.reason = flag, reason
        super().__init__(f"{flag}: {reason}" if flag else reason)


class MalformedFileError(ValueError):
    """An input file that cannot be parsed; the message names the file (and the row, when known)."""

    def __init__(self, path: object, reason: str, row: Optional[int] = None) -> None:
        self.path, self.row, self.reason = str(path), row, reason
        where = f"{path}, row {row}" if row is not None else f"{path}"
        super().__init__(f"{where}: {reason}")


class OutputError(OSError):
    """A file the run writes cannot be written (disk full, read-only file system, no permission, a file where
    a folder is expected): ``path`` and ``reason`` say which and why; ``errno`` is kept."""

    def __init__(self, path: object, reason: str, err: int = 0) -> None:
        super().__init__(err, reason)
        self.path, self.reason = str(path), reason

    def __str__(self) -> str:
        return f"{self.reason} while writing {self.path}"


USER_ERRORS = (UsageError, MalformedFileError, OutputError)


def run_cli(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None,
            extra: tuple = ()) -> int:
    """Call ``main(argv)``; a user error (or one of ``extra``) becomes one line on stderr and exit code 2."""
    try:
        return main(argv)
    except USER_ERRORS + tuple(extra) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
