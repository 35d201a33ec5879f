"""The errors of the dataset layer, one class per concept.

* :class:`MediaError`: a media file (video, WAV, frame folder, JPEG) that cannot give what is asked of it.
  Raised by the ffmpeg helpers (``dataset.media``) and by the loader (``dataset.av_dataset``); it is a
  ``RuntimeError`` because it is found while working, not while parsing the user's input.
* :class:`IndexFormatError`: an index CSV (or clip list) that cannot be parsed; the message names the file
  and the 1-based row. It is a :class:`utils.errors.MalformedFileError`, so entry points exit 2 on it.
* :class:`ExtractionBusyError`: another extraction holds the lock of the output folder (a
  :class:`utils.errors.UsageError` naming ``--out_dir``, so entry points exit 2 on it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

from utils.errors import MalformedFileError, UsageError

PathLike = Union[str, "Path"]


class MediaError(RuntimeError):
    """A media file that cannot give the requested output; ``reason`` is a short human-readable cause.

    The message is ``"<path>: <reason>"``; ``path`` and ``reason`` are kept as attributes (skip reports
    record the reason alone).
    """

    def __init__(self, path: PathLike, reason: Optional[str] = None) -> None:
        if reason is None:  # re-raised from a DataLoader worker: torch passes the formatted traceback alone
            path, reason = _from_worker(str(path))
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def _from_worker(text: str) -> Tuple[str, str]:
    """(path, reason) from the last ``...MediaError: <path>: <reason>`` line of a worker's traceback."""
    lines = [ln for ln in text.splitlines() if "MediaError: " in ln]
    last = lines[-1].split("MediaError: ", 1)[1] if lines else text.strip().splitlines()[-1]
    path, sep, reason = last.partition(": ")
    return (path, reason) if sep else ("", last)


class IndexFormatError(MalformedFileError):
    """A malformed index file: ``"<file>, row <n>: <reason>"`` (``row`` is None for a whole-file problem)."""

    def __init__(self, path: PathLike, reason: str, row: Optional[int] = None) -> None:
        super().__init__(path, reason, row)


class ExtractionBusyError(UsageError):
    """Another extraction run holds the lock of ``folder`` (``pid`` is its process id when recorded)."""

    def __init__(self, folder: PathLike, pid: Optional[int] = None) -> None:
        self.folder, self.pid = Path(folder), pid
        holder = f" (pid {pid})" if pid is not None else ""
        super().__init__("--out_dir", f"another extraction is running into {folder}{holder}; "
                                      "wait for it to finish or use another --out_dir")
