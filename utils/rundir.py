"""The run folder: the one place that names every file a run writes.

Layout of ``<ckpt>/<id>/``::

    args.json              resolved configuration of the training run (written once the run is accepted)
    log.txt  metrics.jsonl  tb/                       training log, JSON-lines metrics, TensorBoard
    checkpoint_last.pth  checkpoint_best.pth          {model, optimizer, scheduler, epoch, best_acc, ...}
    features_train.pt                                 clean training features (--save_features)
    bank_audio.pt  bank_visual.pt                     memory banks built by main_defense.py
    done_train.json                                   written last by a finished training run
    resumes.jsonl                                     one record per accepted --resume (time, command, changes)
    evals/<eval_id>/       one folder per finished evaluation (see below)

A training run's records (``RUN_RECORDS``; args.json is written first, the marker of a started run) are never
rewritten by a resume: it appends to ``resumes.jsonl`` and keeps only the metrics rows of the epochs its
checkpoint holds, so its metrics.jsonl is the uninterrupted run's.

An evaluation is staged in ``evals/.<eval_id>.partial/`` and renamed to ``evals/<eval_id>/`` only when
all its files are written, so a killed evaluation leaves no folder claiming to be its output. Every eval
folder holds ``eval.json`` (the full evaluation configuration: attacks, eps grid, list, checkpoint and
its SHA-256) next to its results; earlier evaluations stay where they are. ``eval_id`` starts with the
UTC time, so names sort by age.

Shell scripts ask for names instead of spelling them::

    python -m utils.rundir runs/ave-concat checkpoint_best     # -> runs/ave-concat/checkpoint_best.pth
    python -m utils.rundir runs/ave-concat latest_eval         # -> runs/ave-concat/evals/<newest>
    python -m utils.rundir --names                             # every name this module owns
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from utils.fileio import atomic_write_text

PathLike = Union[str, Path]

# Files of the run folder itself.
FILES: Dict[str, str] = {
    "args": "args.json",
    "log": "log.txt",
    "metrics": "metrics.jsonl",
    "tb": "tb",
    "checkpoint_last": "checkpoint_last.pth",
    "checkpoint_best": "checkpoint_best.pth",
    "features": "features_train.pt",
    "done_train": "done_train.json",
    "resumes": "resumes.jsonl",
    "evals": "evals",
}
# The files whose presence means a training run started in the folder (args.json is its first write).
RUN_RECORDS = ("args", "metrics", "log", "checkpoint_last", "checkpoint_best", "done_train")
# metrics.jsonl tags written once per epoch by the training loop (pipeline/train.py); every other row of a
# training run (the test pass) is written after the loop
EPOCH_TAGS = ("train", "val")
BANK_PATTERN = "bank_{modality}.pt"
# Files inside one evaluation folder (stems without suffix are written as .json/.csv/.md).
EVAL_FILES: Dict[str, str] = {
    "config": "eval.json",
    "results": "results",
    "sweep": "sweep_results",
    "adaptive": "adaptive_results",
    "robustness": "robustness",
    "gradient_check": "gradient_check.json",
    "acc_vs_eps": "acc_vs_eps.png",
    "cosine_hist": "cosine_hist.png",
    "examples": "examples",
    "per_sample": "per_sample.json",
    # a fitted universal perturbation: its deltas, fit settings, model checkpoint and fitted list (pipeline/universal.py)
    "universal": "universal_{key}.pt",
    "certify": "certify.json",            # main_certify.py: every clip's certificate per setting
    "certify_table": "certified",         # .md/.csv: certified accuracy at the report's radii
    "certify_plot": "certified_accuracy.png",
    "crmt_certified": "crmt_certified.json",  # main_attack.py eval of a crmt head: CRMT's bound per clip
    "corruptions": "corruption_results",
    "missing": "missing_results",
    # per-clip correctness of the rows of corruption_results / missing_results (reporting/per_sample.py)
    "corruption_per_sample": "corruption_per_sample.json",
    "missing_per_sample": "missing_per_sample.json",
    # per clip, what desync (shift) and sparse_time (perturbed segments) chose, per row (reporting/attack_choices.py)
    "attack_choices": "attack_choices.json",
}
_PARTIAL = ".partial"


class RunDir:
    """Paths of one run folder; creates nothing until asked."""

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """The path of a run-folder file by key (see ``FILES``); unknown keys raise listing valid ones."""
        try:
            return self.root / FILES[key]
        except KeyError:
            raise KeyError(f"unknown run-folder file {key!r}; valid: {', '.join(sorted(FILES))}") from None

    @property
    def args(self) -> Path:
        return self.path("args")

    @property
    def log(self) -> Path:
        return self.path("log")

    @property
    def metrics(self) -> Path:
        return self.path("metrics")

    @property
    def tb(self) -> Path:
        return self.path("tb")

    @property
    def checkpoint_last(self) -> Path:
        return self.path("checkpoint_last")

    @property
    def checkpoint_best(self) -> Path:
        return self.path("checkpoint_best")

    @property
    def features(self) -> Path:
        return self.path("features")

    @property
    def done_train(self) -> Path:
        return self.path("done_train")

    @property
    def evals(self) -> Path:
        return self.path("evals")

    def bank(self, modality: str) -> Path:
        """The memory bank file of ``modality`` (audio or visual)."""
        return self.root / BANK_PATTERN.format(modality=modality)

    # -- evaluations ------------------------------------------------------------------------------------
    def eval_dir(self, eval_id: str) -> Path:
        """Final folder of evaluation ``eval_id``."""
        return self.evals / eval_id

    def staging_dir(self, eval_id: str) -> Path:
        """Where evaluation ``eval_id`` writes until it finishes (hidden, removed on failure)."""
        return self.evals / f".{eval_id}{_PARTIAL}"

    def begin_eval(self, eval_id: str) -> Path:
        """Create an empty staging folder for ``eval_id`` (a stale one from a killed run is replaced)."""
        staging = self.staging_dir(eval_id)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        return staging

    def finish_eval(self, eval_id: str) -> Path:
        """Publish the staging folder as ``evals/<eval_id>/`` (one rename)."""
        final = self.eval_dir(eval_id)
        if final.exists():
            raise FileExistsError(f"evaluation folder {final} already exists")
        self.staging_dir(eval_id).rename(final)
        return final

    def abort_eval(self, eval_id: str) -> None:
        """Remove the staging folder of a failed evaluation."""
        shutil.rmtree(self.staging_dir(eval_id), ignore_errors=True)

    def universal_deltas(self, key: str) -> List[Path]:
        """Saved universal perturbations with settings hash ``key`` in the finished evaluations, newest first."""
        name = EVAL_FILES["universal"].format(key=key)
        return [self.eval_dir(e) / name for e in reversed(self.eval_ids()) if (self.eval_dir(e) / name).is_file()]

    def eval_ids(self) -> List[str]:
        """Finished evaluations, oldest first."""
        if not self.evals.is_dir():
            return []
        return sorted(p.name for p in self.evals.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / EVAL_FILES["config"]).is_file())

    def latest_eval(self) -> Optional[Path]:
        """The newest finished evaluation folder, or None."""
        ids = self.eval_ids()
        return self.eval_dir(ids[-1]) if ids else None

    def find_eval(self, config_sha256: str) -> Optional[Path]:
        """The newest finished evaluation whose configuration hash is ``config_sha256``."""
        for eid in reversed(self.eval_ids()):
            cfg = json.loads((self.eval_dir(eid) / EVAL_FILES["config"]).read_text())
            if cfg.get("config_sha256") == config_sha256:
                return self.eval_dir(eid)
        return None

    def mark_done(self, payload: Dict[str, object]) -> Path:
        """Write ``done_train.json`` (a finished training run)."""
        return atomic_write_text(self.done_train, json.dumps(payload, indent=2, sort_keys=True))

    # -- training run records ---------------------------------------------------------------------------
    def started(self) -> List[str]:
        """File names of the run records present (see ``RUN_RECORDS``): empty when no training started here."""
        return [FILES[k] for k in RUN_RECORDS if self.path(k).exists()]

    def recorded_args(self) -> Optional[Dict[str, object]]:
        """The configuration args.json recorded when the run started, or None when there is none."""
        return json.loads(self.args.read_text()) if self.args.is_file() else None

    def keep_metrics_through(self, epoch: int) -> int:
        """Rewrite metrics.jsonl (atomically) to the per-epoch rows of epochs <= ``epoch``: what a resume from
        a checkpoint of ``epoch`` keeps, so rows of a redone epoch, rows written after the loop and a last
        line cut by a kill are not kept twice. Returns the number of rows kept."""
        if not self.metrics.is_file():
            return 0
        kept = []
        for line in self.metrics.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by kill -9 (only the last one can be)
                continue
            if row.get("tag") in EPOCH_TAGS and int(row.get("step", 0)) <= epoch:
                kept.append(line + "\n")
        atomic_write_text(self.metrics, "".join(kept))
        return len(kept)

    def append_resume(self, record: Dict[str, object]) -> Path:
        """Add one record to resumes.jsonl (the whole file rewritten atomically)."""
        old = self.path("resumes").read_text() if self.path("resumes").is_file() else ""
        return atomic_write_text(self.path("resumes"), old + json.dumps(record, sort_keys=True, default=str) + "\n")


def eval_file(eval_dir: PathLike, key: str, suffix: str = "") -> Path:
    """A file of an evaluation folder by key (see ``EVAL_FILES``), e.g. ``eval_file(d, "results", ".json")``."""
    try:
        return Path(eval_dir) / (EVAL_FILES[key] + suffix)
    except KeyError:
        raise KeyError(f"unknown evaluation file {key!r}; valid: {', '.join(sorted(EVAL_FILES))}") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the path of a run-folder file (for shell scripts); exit 2 on an unknown key, 1 for a missing
finished evaluation (or, with --exists, a missing file)."""
    p = argparse.ArgumentParser(description="Print paths inside a run folder (the names live here only).")
    p.add_argument("run", nargs="?", help="the run folder <ckpt>/<id>")
    p.add_argument("key", nargs="?", help=f"{', '.join(sorted(FILES))}, bank_audio, bank_visual or latest_eval")
    p.add_argument("--names", action="store_true", help="list every file name of a run and of an eval folder")
    p.add_argument("--exists", action="store_true", help="exit 1 when the file does not exist (yet)")
    a = p.parse_args(argv)
    if a.names:
        for k, v in sorted(FILES.items()):
            print(f"{k}\t{v}")
        for k, v in sorted(EVAL_FILES.items()):
            print(f"evals/<eval_id>/{k}\t{v}")
        return 0
    if not a.run or not a.key:
        p.error("give RUN and KEY, or --names")
    rd = RunDir(a.run)
    if a.key == "latest_eval":
        path = rd.latest_eval()
        if path is None:
            print(f"error: {rd.root} has no finished evaluation", file=sys.stderr)
            return 1
    elif a.key.startswith("bank_"):
        path = rd.bank(a.key[len("bank_"):])
    else:
        try:
            path = rd.path(a.key)
        except KeyError as e:
            print(f"error: {e.args[0]}", file=sys.stderr)
            return 2
    print(path)
    return 1 if a.exists and not path.exists() else 0


if __name__ == "__main__":
    sys.exit(main())
