"""Per-clip correctness of an evaluation's rows (``per_sample.json``), the input of the report's paired tests.

One file per evaluation folder (its name is ``utils.rundir.EVAL_FILES["per_sample"]``)::

    {"format": "per_sample/1",
     "rows": [{"attack": "pgd", "eps_audio": 0.0, "eps_visual": 0.006,
               "correct": {"<dataset index>": true, ...}}, ...]}

A row is keyed like a result row (attack, eps_audio, eps_visual); the clean row of the grid is the
(attack, 0, 0) row. Adaptive evaluations add rows whose ``attack`` names the per-sample worst case.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Mapping, Tuple, Union

from utils.errors import MalformedFileError
from utils.fileio import atomic_write_text

FORMAT = "per_sample/1"
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


__all__ = ["FORMAT", "WORST_CASE", "RowKey", "PerSample", "row_key", "write_per_sample", "read_per_sample"]
