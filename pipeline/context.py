"""Set-up of an accepted run: device, process group, the folder it writes, logging and seeds.

Called only after ``resolve_config`` and ``preflight`` passed, so nothing is written for a refused run.
A training run writes into its run folder (args.json first; a resume appends to resumes.jsonl instead); an
evaluation writes into a staging folder that ``finish`` publishes as ``evals/<eval_id>/`` (``abort`` removes
it), with ``eval.json`` recording the configuration, the checkpoint and list hashes that produced the results.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch

from dataset.fingerprint import media_fingerprint
from dataset.index import read_index
from pipeline.config import RunConfig, eval_identity, resume_changes
from pipeline.preflight import eval_weights, run_dir
from utils import distributed as du
from utils.errors import UsageError
from utils.fileio import atomic_write_text, sha256_file
from utils.logger import MetricLogger, setup_logging
from utils.rundir import EVAL_FILES, RunDir

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """Run state that must not live on the config."""

    device: torch.device
    run_dir: RunDir
    out_dir: Path  # where this invocation writes: the run folder (train) or the eval staging folder
    metrics: MetricLogger
    is_main: bool = True
    eval_id: str = ""
    record: Dict[str, Any] = field(default_factory=dict)

    def finish(self) -> Optional[Path]:
        """Publish an evaluation's folder (rank 0); training runs have nothing to publish."""
        self.metrics.close()
        if not self.eval_id or not self.is_main:
            return None
        self.record["finished"] = _utc_now()
        atomic_write_text(self.out_dir / EVAL_FILES["config"], json.dumps(self.record, indent=2, default=str))
        final = self.run_dir.finish_eval(self.eval_id)
        log.info("evaluation written to %s", final)
        print(f"evaluation folder: {final}")
        return final

    @contextlib.contextmanager
    def abort_on_error(self) -> Iterator[None]:
        """Set-up steps between ``setup`` and ``execute``: any failure removes the staging folder."""
        try:
            yield
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Remove an unfinished evaluation's staging folder (a killed process leaves only a hidden one)."""
        self.metrics.close()
        if self.eval_id and self.is_main:
            self.run_dir.abort_eval(self.eval_id)


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _hash_or_none(path: str) -> Optional[str]:
    return sha256_file(path) if path and Path(path).is_file() else None


def eval_record(cfg: RunConfig, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """What eval.json says produced the results: configuration, checkpoint and list with their hashes."""
    weights = eval_weights(cfg)
    rec: Dict[str, Any] = {
        "config": dict(eval_identity(cfg)),
        "checkpoint": str(weights), "checkpoint_sha256": _hash_or_none(str(weights)),
        "list": cfg.eval_list, "list_sha256": _hash_or_none(cfg.eval_list),
        "base_weights_sha256": _hash_or_none(cfg.base_weights), "extra": dict(extra or {}),
        # the list names clips, not bytes: media replaced in place must not match an earlier evaluation
        "media": media_fingerprint(read_index(cfg.eval_list, cfg.categories), cfg.audio_path, cfg.frame_path),
    }
    if cfg.transfer_from:  # the source's checkpoint hash: a retrained source is another evaluation
        from pipeline.transfer import source_record
        rec["transfer_from"] = source_record(cfg)
    blob = json.dumps(rec, sort_keys=True, default=str).encode()
    rec["config_sha256"] = hashlib.sha256(blob).hexdigest()
    return rec


def _device(cfg: RunConfig) -> torch.device:
    device = du.init_distributed(cfg.device)
    if (cfg.amp or cfg.channels_last) and device.type != "cuda":
        raise UsageError("--amp" if cfg.amp else "--channels_last",
                         f"is a GPU option; this run is on {device} (drop the flag, or pass --device cuda on a GPU "
                         "machine)")
    return device


def set_kernel_switches(deterministic: bool, device: torch.device) -> None:
    """--deterministic: deterministic cuDNN and cuBLAS kernels and ``use_deterministic_algorithms`` (which
    raises on an op without a deterministic version); otherwise ``cudnn.benchmark`` on GPU (fixed shapes)."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts (CUDA docs)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def start(cfg: RunConfig) -> torch.device:
    """Device and process group, kernel switches, then the seeds (before the model is built, so its
    initialisation is seeded). Writes nothing."""
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before the first cuBLAS call
    device = _device(cfg)
    set_kernel_switches(cfg.deterministic, device)
    seed_everything(cfg.seed + du.rank())
    return device


def setup(cfg: RunConfig, device: torch.device, record: Optional[Dict[str, Any]] = None) -> RunContext:
    """Output folder, logging and metrics of an accepted run (after ``start`` and the model checks)."""
    rd = run_dir(cfg)
    is_main = du.is_main()
    if cfg.mode == "train":
        out, eval_id, rec = rd.root, "", dict(record or {})
        if is_main:
            rd.root.mkdir(parents=True, exist_ok=True)
            if cfg.resume:  # args.json stays the original run's; the resume adds its own record
                allowed, _ = resume_changes(rd.recorded_args() or {}, cfg)
                rd.append_resume({"time": _utc_now(), "command": sys.argv,
                                  "changes": {f: {"old": o, "new": n} for f, (o, n) in allowed.items()
                                              if f != "--resume"}})
            else:  # the first file of a run: from now on the folder holds a started run
                payload = {**cfg.as_dict(), **({"record": rec} if rec else {}), "command": sys.argv}
                atomic_write_text(rd.args, json.dumps(payload, indent=2, sort_keys=True, default=str))
    else:
        rec = eval_record(cfg, record)
        # UTC time to the microsecond first (names sort by age, also within one second), the configuration
        # hash, and a random tag
        eval_id = du.broadcast_object(f"{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%S.%f}Z-"
                                      f"{rec['config_sha256'][:8]}-{os.urandom(2).hex()}")
        rec.update({"eval_id": eval_id, "started": _utc_now(), "command": sys.argv})
        out = rd.staging_dir(eval_id)
        if is_main:
            rd.begin_eval(eval_id)
    setup_logging(out, is_main)
    metrics = MetricLogger(out, enabled=is_main)
    log.info("%s: writing to %s, device %s, world size %d", cfg.mode, out, device, du.world_size())
    return RunContext(device=device, run_dir=rd, out_dir=out, metrics=metrics, is_main=is_main,
                      eval_id=eval_id, record=rec)


def finished_eval(cfg: RunConfig, record: Optional[Dict[str, Any]] = None) -> Optional[Path]:
    """With --reuse_eval in eval mode: the folder of a finished evaluation with exactly this configuration
    (announced on stdout), else None."""
    if cfg.mode != "eval" or not cfg.reuse_eval:
        return None
    rec = eval_record(cfg, record)
    done = run_dir(cfg).find_eval(rec["config_sha256"])
    media = rec["media"]
    if done is not None:
        print(f"evaluation folder: {done} (already finished with this configuration: --reuse_eval)")
        log.info("reusing evaluation %s: same settings and same media fingerprint (%s: %d files, %d bytes under "
                 "%s and %s)", done.name, media["method"], media["files"], media["bytes"], cfg.audio_path,
                 cfg.frame_path)
    else:
        log.info("--reuse_eval: no finished evaluation with these settings and this media fingerprint (%s of %d "
                 "files): evaluating", media["method"], media["files"])
    return done


@contextlib.contextmanager
def published(ctx: "RunContext") -> Iterator[None]:
    """Run a main's work: on success publish its run/evaluation folder (``ctx.finish``), on any failure remove what
    it wrote (``ctx.abort``); then leave the process group either way (every main ends through here)."""
    ok = False
    try:
        yield
        ok = True
    finally:
        try:
            if ok:
                ctx.finish()
            else:
                ctx.abort()
        finally:
            du.cleanup(ok)
