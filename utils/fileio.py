"""Atomic file output and hashing: the one implementation every module uses.

A file is written to a temporary name in its destination folder, flushed and fsynced, then renamed over
the destination, so a reader (or a kill) never sees half a file. The temporary file is removed on any
failure, and a full disk is reported with the path it was writing. Files get the permissions the
process umask allows (``mkstemp`` alone would make them 0600).
"""
from __future__ import annotations

import csv
import errno
import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, Union

PathLike = Union[str, "os.PathLike[str]"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_with(path: PathLike, writer: Callable[[Any], None]) -> Path:
    """Create ``path`` atomically; ``writer(f)`` fills the open binary temp file ``f``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path}") from e
        raise
    return path


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
