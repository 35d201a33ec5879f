"""Universal perturbations in an evaluation: the training list the delta is fitted on, and the store that
saves each fitted delta in the evaluation folder and reuses a saved one when its settings match.

``attacks/universal.py`` is the attack (one delta per modality for every clip). An evaluation hands every
attack whose constructor takes ``fit_data``/``store`` the loader of --list_train (evaluation transforms, no
augmentation; in every process the whole list in order, so processes under torchrun fit the same delta) and a
``DeltaStore``. The store's key is the attack's ``fit_settings()`` plus the checkpoint of the model the delta is
fitted on (the run's, or the --transfer_from source's) and the fitted list (path, SHA-256 and media
fingerprint) and input sizes; the file ``universal_<key>.pt`` holds the deltas, that key in full and the fit's
record. A later evaluation with the same key (any eval folder of the run) loads the delta instead of fitting.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from dataset.fingerprint import media_fingerprint
from dataset.index import read_index
from pipeline.build import build_dataset, build_loader
from pipeline.config import RunConfig
from utils.fileio import atomic_torch_save, sha256_file
from utils.rundir import EVAL_FILES, RunDir

log = logging.getLogger(__name__)


def fit_context(cfg: RunConfig, checkpoint: str) -> Dict[str, Any]:
    """What a fitted delta depends on besides the attack's settings: the model's checkpoint, the fitted list
    (path, SHA-256, media fingerprint) and the input sizes."""
    rows = read_index(cfg.list_train, cfg.categories)
    return {"checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint),
            "list": cfg.list_train, "list_sha256": sha256_file(cfg.list_train),
            "media": media_fingerprint(rows, cfg.audio_path, cfg.frame_path),
            "sizes": {k: getattr(cfg, k) for k in ("audLen", "audRate", "imgSize", "num_frames", "stride_frames",
                                                   "frameRate")}}


class DeltaStore:
    """Saves fitted deltas into ``out_dir`` and finds saved ones in the finished evaluations of ``run_dir``
    (and ``out_dir`` itself) by the hash of their key (``fit_context`` + the attack's ``fit_settings()``)."""

    def __init__(self, run_dir: RunDir, out_dir: Path, context: Dict[str, Any], write: bool = True) -> None:
        self.run_dir, self.out_dir, self.context, self.write = run_dir, Path(out_dir), context, write
        self.used: Dict[str, Dict[str, Any]] = {}  # key -> what eval.json records about it

    def key(self, attack: Any) -> Dict[str, Any]:
        return {"fit": attack.fit_settings(), **self.context}

    @staticmethod
    def digest(key: Dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def load(self, attack: Any) -> Optional[Dict[str, torch.Tensor]]:
        """A saved delta with exactly this key, else None."""
        key = self.key(attack)
        digest = self.digest(key)
        here = self.out_dir / EVAL_FILES["universal"].format(key=digest)
        for path in ([here] if here.is_file() else []) + self.run_dir.universal_deltas(digest):
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if json.dumps(blob.get("key"), sort_keys=True, default=str) == json.dumps(key, sort_keys=True,
                                                                                      default=str):
                log.info("universal: reusing the delta of %s (same fit settings, model and fitted list)", path)
                self.used[digest] = {"file": str(path), "reused": True, "settings": key["fit"]}
                if self.write and path != here:  # every eval folder holds the delta its rows used
                    atomic_torch_save(blob, here)
                return blob["deltas"]
        return None

    def save(self, attack: Any) -> Path:
        """Write the attack's fitted delta with its key and fit record; returns the file."""
        key = self.key(attack)
        digest = self.digest(key)
        path = self.out_dir / EVAL_FILES["universal"].format(key=digest)
        if self.write:
            atomic_torch_save({"deltas": {m: d.detach().cpu() for m, d in attack.delta.items()}, "key": key,
                               "fit": dict(attack.fit_info)}, path)
        self.used[digest] = {"file": str(path), "reused": False, "settings": key["fit"], "fit": dict(attack.fit_info)}
        return path


def universal_options(cfg: RunConfig, run_dir: RunDir, out_dir: Path, device: torch.device, checkpoint: str,
                      write: bool) -> Dict[str, Any]:
    """``fit_data`` (the --list_train loader, built when first iterated) and ``store`` for the attacks that
    take them."""
    if not cfg.list_train:
        from utils.errors import UsageError
        raise UsageError("--list_train", "the universal attack is fitted on the training list: give --list_train")
    store = DeltaStore(run_dir, out_dir, fit_context(cfg, checkpoint), write=write)

    class _TrainList:
        """The training list's batches, built on first use (an evaluation without a universal row builds none)."""

        def __iter__(self):
            loader = build_loader(build_dataset(cfg, cfg.list_train, train_mode=False), cfg, train=False,
                                  device=device, whole=True)
            return iter(loader)

    return {"fit_data": _TrainList(), "store": store}
