"""Per-clip correctness of an evaluation's rows (``per_sample.json``), the input of the report's paired tests.

One file per evaluation folder (its name is ``utils.rundir.EVAL_FILES["per_sample"]``)::

    {"format": "per_sample/1",
     "rows": [{"attack": "pgd", "eps_audio": 0.0, "eps_visual": 0.006,
               "correct": {"<dataset index>": true, ...}}, ...]}

A row is keyed like a result row (attack, eps_audio, eps_visual); the clean row of the grid is the
(attack, 0, 0) row. Adaptive evaluations add rows whose ``attack`` names the per-sample worst case.

Evaluations whose rows are not attack rows keep per-clip correctness in a file of their own, keyed by their
own row fields (``write_per_clip`` / ``read_per_clip``; mixing them into per_sample.json would give its
readers rows that are not (attack, eps) rows)::

    {"format": "per_clip/1", "keys": ["missing_input", "missing_fill"],
     "rows": [{"missing_input": "audio", "missing_fill": "zeros", "correct": {"<dataset index>": true, ...}}]}

``missing_per_sample.json`` (pipeline/missing_eval.py: keys missing_input, missing_fill; the "none" row is the
clean pass) and ``corruption_per_sample.json`` (pipeline/corruption_eval.py: keys corruption, severity; the
clean pass is the row ``("none", 0)``), named in ``utils.rundir.EVAL_FILES``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Sequence, Tuple, Union

from utils.errors import MalformedFileError
from utils.fileio import atomic_write_text

FORMAT = "per_sample/1"
CLIP_FORMAT = "per_clip/1"  # per-clip correctness keyed by an evaluation's own row fields
MISSING_KEYS = ("missing_input", "missing_fill")  # the row fields keying missing_per_sample.json
CORRUPTION_KEYS = ("corruption", "severity")  # the row fields keying corruption_per_sample.json
CORRUPTION_CLEAN = ("none", 0)  # corruption_per_sample.json's row of the clean pass
WORST_CASE = "adaptive worst case"  # the attack name of an adaptive evaluation's per-sample worst case
RowKey = Tuple[str, float, float]
PerSample = Dict[RowKey, Dict[int, bool]]


def row_key(attack: str, eps_audio: float, eps_visual: float) -> RowKey:
    """The key of one row: (attack, eps_audio, eps_visual) as floats."""
    return str(attack), float(eps_audio), float(eps_visual)


def write_per_sample(per_sample: Mapping[RowKey, Mapping[int, bool]], path: Union[str, Path]) -> Path:
    """Write ``{row_key: {dataset index: correct}}`` as JSON (atomic)."""
    rows = [{"attack": a, "eps_audio": ea, "eps_visual": ev,
             "correct": {str(int(i)): bool(c) for i, c in sorted(per_sample[(a, ea, ev)].items())}}
            for (a, ea, ev) in sorted(per_sample, key=lambda k: (k[0], k[1], k[2]))]
    return atomic_write_text(Path(path), json.dumps({"format": FORMAT, "rows": rows}, indent=1))


def read_per_sample(path: Union[str, Path]) -> PerSample:
    """Read a per_sample.json back into ``{row_key: {dataset index: correct}}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
        return {row_key(r["attack"], r["eps_audio"], r["eps_visual"]):
                {int(i): bool(c) for i, c in r["correct"].items()} for r in data["rows"]}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise MalformedFileError(str(path), f"not a per-sample correctness file: {e}") from None


def write_per_clip(per_clip: Mapping[Tuple[Any, ...], Mapping[int, bool]], keys: Sequence[str],
                   path: Union[str, Path]) -> Path:
    """Write ``{(value of each of keys): {dataset index: correct}}`` as a per_clip/1 JSON file (atomic)."""
    keys = [str(k) for k in keys]
    rows = []
    for key in sorted(per_clip, key=lambda k: tuple(str(v) for v in k)):
        if len(key) != len(keys):
            raise ValueError(f"row key {key!r} has {len(key)} values for the {len(keys)} fields {keys}")
        rows.append({**dict(zip(keys, key)),
                     "correct": {str(int(i)): bool(c) for i, c in sorted(per_clip[key].items())}})
    return atomic_write_text(Path(path), json.dumps({"format": CLIP_FORMAT, "keys": keys, "rows": rows}, indent=1))


def read_per_clip(path: Union[str, Path], keys: Sequence[str]) -> Dict[Tuple[Any, ...], Dict[int, bool]]:
    """Read a per_clip/1 file written with ``keys`` into ``{(values of keys): {dataset index: correct}}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        if data.get("format") != CLIP_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {CLIP_FORMAT!r}")
        if list(data["keys"]) != list(keys):
            raise ValueError(f"its rows are keyed by {data['keys']}, expected {list(keys)}")
        return {tuple(r[k] for k in keys): {int(i): bool(c) for i, c in r["correct"].items()} for r in data["rows"]}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise MalformedFileError(str(path), f"not a per-clip correctness file: {e}") from None


__all__ = ["FORMAT", "CLIP_FORMAT", "MISSING_KEYS", "CORRUPTION_KEYS", "CORRUPTION_CLEAN", "WORST_CASE", "RowKey", "PerSample", "row_key", "write_per_sample",
           "read_per_sample", "write_per_clip", "read_per_clip"]
