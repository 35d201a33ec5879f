"""Atomic file output and hashing: the one implementation every module uses.

A file is written to a temporary name in its destination folder, flushed and fsynced, then renamed over
the destination, so a reader (or a kill) never sees half a file. The temporary file is removed on any
failure, and a full disk, a read-only or forbidden folder are reported as one ``OutputError`` naming the path
(also when torch.save wraps the OSError in its RuntimeError). Files get the permissions the
process umask allows (``mkstemp`` alone would make them 0600).
"""
from __future__ import annotations

import csv
import errno
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from utils.errors import OutputError

PathLike = Union[str, "os.PathLike[str]"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# errno -> the reason an output could not be written (one line, with the path: utils.errors.OutputError)
_WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a file is where a folder is expected",
    errno.EEXIST: "a file is where a folder is expected",
}
# torch.save's zip writer reports a failed write of its file object as RuntimeError("[enforce fail at
# inline_container.cc:NNN] ... file write failed" / "unexpected pos"), dropping the errno
_TORCH_WRITE_FAILURE = ("inline_container", "file write failed")


def output_error(e: BaseException, path: PathLike) -> Optional[OutputError]:
    """``e`` as an :class:`OutputError` naming ``path``, when it is a failure to write there; else None.

    An OSError with a known errno (also one wrapped by torch's RuntimeError, found on the exception's
    cause/context chain) keeps its reason; torch's failure without one says that the write failed and how
    much space is left."""
    seen = e
    while seen is not None:
        if isinstance(seen, OutputError):
            return seen
        if isinstance(seen, OSError) and seen.errno in _WRITE_ERRNOS:
            return OutputError(path, _WRITE_ERRNOS[seen.errno], seen.errno)
        seen = seen.__cause__ or seen.__context__
    if isinstance(e, RuntimeError) and any(m in str(e) for m in _TORCH_WRITE_FAILURE):
        try:
            free = f"{shutil.disk_usage(Path(path).parent).free} bytes free there"
        except OSError:
            free = "free space unknown"
        return OutputError(path, f"the write failed (torch.save: {str(e).splitlines()[0][:120]}; {free}; "
                           "a full disk is the usual cause)", errno.EIO)
    return None


def atomic_write_with(path: PathLike, writer: Callable[[Any], None]) -> Path:
    """Create ``path`` atomically; ``writer(f)`` fills the open binary temp file ``f``.

    Any failure removes the temporary file and leaves an existing ``path`` as it was; a full disk, a
    read-only or forbidden folder (creating it included) raise :class:`OutputError` naming ``path``."""
    path = Path(path)
    tmp: Optional[str] = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.remove(tmp)
            except FileNotFoundError:
                pass
        err = output_error(e, path)
        if err is not None and err is not e:
            raise err from e
        raise
    return path


def append_text(path: PathLike, text: str) -> Path:
    """Append UTF-8 ``text`` to ``path`` (JSON-lines logs; a reader may see a last line cut by a kill, which
    utils/rundir.py drops on resume); write failures raise :class:`OutputError` naming ``path``."""
    path = Path(path)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        err = output_error(e, path)
        if err is not None and err is not e:
            raise err from e
        raise
    return path


def creatable_problem(folder: PathLike) -> Optional[str]:
    """Why ``folder`` (existing or to be created) could not hold new files, or None when it can: its nearest
    existing ancestor must be a folder this process may write into (os.access; root passes every
    permission check, so only a file in the way or a read-only mount stop root)."""
    p = Path(os.path.abspath(folder))
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        return f"{p} is a file, not a folder"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{p} is not writable by this user"
    try:
        if os.statvfs(p).f_flag & os.ST_RDONLY:
            return f"{p} is on a read-only file system"
    except (AttributeError, OSError):  # no statvfs on this platform: os.access decided
        pass
    return None


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write_with(path, lambda f: f.write(data))


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_csv(path: PathLike, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    """Write a CSV with a header row atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(header))
    w.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save`` atomically (checkpoints, features, memory banks)."""
    import torch  # kept local: the rest of this module must not need torch

    return atomic_write_with(path, lambda f: torch.save(obj, f))


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (ties features and memory banks to the checkpoint they came from)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
