"""The decoded eval-crop cache: every eval-mode uint8 crop of a list in one memmap file.

Adaptive evaluation reads the test set once per attack configuration; decoding its JPEGs every time is
most of the loader's work. ``open_crop_cache(ds, folder)`` returns the crops of ``ds`` (built on first use
with the loader's workers, then memory-mapped read-only), to pass to ``ds.set_transport(..., crop_cache=)``.

The file is ``<folder>/crops-<key>.u8`` with ``.json`` beside it (shape and what the key covers). The key
hashes the list file's bytes, the frame root, every setting that changes a crop (frames, stride, size) and
the fingerprint of the JPEGs the list reads (size and mtime_ns of each, dataset/fingerprint.py), so frames
replaced in place get new crops. Building writes a
temporary file and renames it (utils.fileio), so concurrent builders (DDP ranks) produce the same file, never a torn one.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, BinaryIO, Dict, Optional, Tuple, Union

import numpy as np

from dataset.av_dataset import AVDataset, build_loader
from dataset.fingerprint import media_fingerprint
from utils.fileio import atomic_write_text, atomic_write_with, sha256_file

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the layout or the crop computation changes


class CropCache:
    """Read-only (N, T, S, S, 3) uint8 crops by dataset index; opened lazily in each process (pickling it
    for DataLoader workers sends the path, never the data)."""

    def __init__(self, path: Union[str, Path], shape: Tuple[int, ...]) -> None:
        self.path, self.shape = str(path), tuple(int(s) for s in shape)
        self._arr: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        if self._arr is None:
            self._arr = np.memmap(self.path, dtype=np.uint8, mode="r", shape=self.shape)
        return np.array(self._arr[index])  # a private copy: torch tensors are made from it

    def __getstate__(self) -> Dict[str, Any]:
        return {"path": self.path, "shape": self.shape, "_arr": None}


def cache_identity(ds: AVDataset) -> Dict[str, Any]:
    """What the crops depend on (the key is its hash)."""
    return {"format": FORMAT, "list_sha256": sha256_file(Path(ds.list_path)),
            "frame_root": os.path.abspath(ds.frame_root), "num_frames": ds.num_frames, "stride": ds.stride,
            "img_size": ds.img_size, "clips": len(ds),
            "frames": media_fingerprint(ds.rows, ds.audio_root, ds.frame_root, audio=False)["sha256"]}


def open_crop_cache(ds: AVDataset, folder: Union[str, Path], workers: int = 0, batch_size: int = 16
                    ) -> CropCache:
    """The eval crops of ``ds`` from ``folder``, decoded (with ``workers`` loader processes) on first use."""
    ident = cache_identity(ds)
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    folder = Path(folder)
    path, meta = folder / f"crops-{key}.u8", folder / f"crops-{key}.json"
    shape = (len(ds), ds.num_frames, ds.img_size, ds.img_size, 3)
    if path.is_file() and meta.is_file() and path.stat().st_size == int(np.prod(shape)):
        log.info("%s: eval crops from %s", ds.list_path, path)
        return CropCache(path, shape)
    src = copy.copy(ds).set_transport(raw=True, crop_cache=None)
    src.train = False

    def write(fh: BinaryIO) -> None:  # the loader keeps the index order, so the file is written in order
        done = 0
        for batch in build_loader(src, batch_size=batch_size, workers=workers, shuffle=False):
            idx = batch["index"]
            if idx.tolist() != list(range(done, done + idx.numel())):
                raise RuntimeError("crop cache: the loader left the index order")
            fh.write(np.ascontiguousarray(batch["visual"].numpy()).tobytes())
            done += idx.numel()

    atomic_write_with(path, write)
    atomic_write_text(meta, json.dumps({**ident, "shape": list(shape)}, indent=1) + "\n")
    log.info("%s: wrote %d eval crops to %s (%.1f MiB)", ds.list_path, len(ds), path, np.prod(shape) / 2 ** 20)
    return CropCache(path, shape)
