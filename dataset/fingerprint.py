"""The fingerprint of the media an index list reads: the identity of the data behind an evaluation.

A list file names clips, not their bytes: JPEGs or WAVs replaced in place under the same ``--frame_path`` /
``--audio_path`` leave the list's hash unchanged. ``media_fingerprint`` hashes the size and ``st_mtime_ns``
of every file the list's clips read (each WAV and frames 1..num_frames), so ``--reuse_eval`` and the eval-crop
cache (dataset/crop_cache.py) recompute when the media change. Stat only, no reading: any rewrite of a file
changes its mtime; a copy that keeps both the size and the mtime of the file it replaces (``cp -p``,
``rsync -a`` of other bytes with the same length) is not detected. Cost: README, "Evaluation identity".
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, Iterator, Sequence, Tuple

from dataset.errors import MediaError
from dataset.index import IndexRow

METHOD = "size and mtime_ns of every file read"


def media_files(rows: Sequence[IndexRow], audio_root: str, frame_root: str, audio: bool = True,
                frames: bool = True) -> Iterator[Tuple[str, str]]:
    """(root, path under it) of every file the clips of ``rows`` read: each WAV (``audio``) and frames
    1..num_frames (``frames``)."""
    a, f = str(audio_root).rstrip("/"), str(frame_root).rstrip("/")
    for r in rows:
        if audio:
            yield a, r.audio
        if frames:
            for k in range(1, r.num_frames + 1):
                yield f, f"{r.frames}/{k:06d}.jpg"


def media_fingerprint(rows: Sequence[IndexRow], audio_root: str, frame_root: str, audio: bool = True,
                      frames: bool = True) -> Dict[str, Any]:
    """``{"method", "files", "bytes", "sha256"}``: the hash runs over each file's path relative to its root,
    size and mtime_ns, in list order. A missing file is a ``MediaError`` naming it."""
    h = hashlib.sha256()
    n = total = 0
    for root, rel in media_files(rows, audio_root, frame_root, audio, frames):
        try:
            st = os.stat(root + rel)
        except OSError as e:
            raise MediaError(root + rel, f"cannot stat ({e.strerror or e})") from None
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        n, total = n + 1, total + st.st_size
    return {"method": METHOD, "files": n, "bytes": total, "sha256": h.hexdigest()}
