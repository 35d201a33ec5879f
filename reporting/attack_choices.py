"""What the desync and sparse_time attacks chose, per clip: the shift applied (``attacks/desync.py``,
``last_shifts_s``) and the perturbed segments (``attacks/sparse_time.py``, ``last_support``).

``ChoiceCollector`` is an ``on_batch`` hook of the attack grid (``attacks.evaluate``: the info's ``shifts_s`` and
``support``). Per (attack, eps) row it keeps each clip's choice by dataset index; ``summarise`` adds to the
row's result: desync ``mean_abs_shift_s`` (mean |shift| over the clips, seconds) and ``shifted_share`` (the
fraction of clips shifted at all); sparse_time ``segments_chosen`` ("visual 3/0/1/0; audio ...": the number of
clips whose perturbation used segment t, t = 0..T-1). ``write_choices`` writes ``attack_choices.json``
(``utils.rundir.EVAL_FILES["attack_choices"]``)::

    {"format": "attack_choices/1",
     "rows": [{"attack": "desync", "eps_audio": 0.0, "eps_visual": 0.0, "n": 40,
               "shift_s": {"<dataset index>": 0.05, ...}, "histogram_s": {"-0.1": 3, "0": 30, "0.05": 7},
               "mean_abs_shift_s": 0.0163},
              {"attack": "sparse_time", "eps_audio": 0.006, "eps_visual": 0.006, "n": 40, "segments": {"visual": 4},
               "support": {"<dataset index>": {"visual": [2], "audio": [0]}, ...},
               "counts": {"visual": [5, 2, 30, 3], "audio": [...]}}]}

Like per_sample.json, the per-clip choices are complete only in one process: under torchrun nothing is written
and the rows get no summary (the evaluation logs it).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple, Union

import torch

from utils.errors import MalformedFileError
from utils.fileio import atomic_write_text

FORMAT = "attack_choices/1"
RowKey = Tuple[str, float, float]


def _key(attack: str, eps: Mapping[str, float]) -> RowKey:
    return str(attack), float(eps.get("audio", 0.0)), float(eps.get("visual", 0.0))


def seconds_label(s: float) -> str:
    """A shift in seconds as a histogram key: '%g' of the value rounded to microseconds ('0', '-0.05')."""
    v = round(float(s), 6)
    return format(0.0 if v == 0 else v, "g")


class ChoiceCollector:
    """``on_batch`` hook: per (attack, eps) row, each clip's shift (desync) or perturbed segments (sparse_time)."""

    def __init__(self) -> None:
        self.shifts: Dict[RowKey, Dict[int, float]] = {}
        self.support: Dict[RowKey, Dict[int, Dict[str, List[int]]]] = {}
        self.segments: Dict[RowKey, Dict[str, int]] = {}

    def __call__(self, info: Dict[str, Any]) -> None:
        shifts, support = info.get("shifts_s"), info.get("support")
        if shifts is None and not support:
            return
        index = [int(i) for i in torch.as_tensor(info["batch"]["index"]).tolist()]
        key = _key(info["attack"], info["eps"])
        if shifts is not None:
            values = torch.as_tensor(shifts).double().flatten().tolist()
            if len(values) != len(index):
                raise ValueError(f"{info['attack']}: {len(values)} shifts for a batch of {len(index)} clips")
            self.shifts.setdefault(key, {}).update(zip(index, values))
        if support:
            seg = self.support.setdefault(key, {})
            for m, mask in support.items():
                mask = torch.as_tensor(mask).bool().cpu()
                if mask.dim() != 2 or mask.shape[0] != len(index):
                    raise ValueError(f"{info['attack']}: {m} support of shape {tuple(mask.shape)} for a batch of "
                                     f"{len(index)} clips (expected ({len(index)}, T))")
                self.segments.setdefault(key, {})[m] = int(mask.shape[1])
                for i, row in zip(index, mask):
                    seg.setdefault(i, {})[m] = row.nonzero().flatten().tolist()

    def counts(self, key: RowKey) -> Dict[str, List[int]]:
        """Per modality, how many clips had segment t perturbed (t = 0..T-1)."""
        out = {m: [0] * t for m, t in self.segments.get(key, {}).items()}
        for chosen in self.support.get(key, {}).values():
            for m, ts in chosen.items():
                for t in ts:
                    out[m][t] += 1
        return out

    def summarise(self, rows: List[Dict[str, Any]]) -> None:
        """Add each desync / sparse_time row's summary of the clips' choices (module docstring), in place."""
        for r in rows:
            key = (str(r["attack"]), float(r["eps_audio"]), float(r["eps_visual"]))
            if key in self.shifts and self.shifts[key]:
                vals = list(self.shifts[key].values())
                r["mean_abs_shift_s"] = sum(abs(v) for v in vals) / len(vals)
                r["shifted_share"] = sum(v != 0 for v in vals) / len(vals)
            if key in self.support:
                r["segments_chosen"] = "; ".join(f"{m} " + "/".join(map(str, c)) for m, c in self.counts(key).items())

    def as_json(self) -> Dict[str, Any]:
        """The attack_choices.json document (module docstring)."""
        rows: List[Dict[str, Any]] = []
        for key in sorted(set(self.shifts) | set(self.support)):
            row: Dict[str, Any] = {"attack": key[0], "eps_audio": key[1], "eps_visual": key[2]}
            if key in self.shifts:
                vals = self.shifts[key]
                hist: Dict[str, int] = {}
                for v in sorted(vals.values()):
                    hist[seconds_label(v)] = hist.get(seconds_label(v), 0) + 1
                row.update(n=len(vals), shift_s={str(i): v for i, v in sorted(vals.items())}, histogram_s=hist,
                           mean_abs_shift_s=sum(abs(v) for v in vals.values()) / len(vals) if vals else None)
            if key in self.support:
                chosen = self.support[key]
                row.update(n=len(chosen), segments=dict(self.segments[key]),
                           support={str(i): c for i, c in sorted(chosen.items())}, counts=self.counts(key))
            rows.append(row)
        return {"format": FORMAT, "rows": rows}


def write_choices(collector: ChoiceCollector, path: Union[str, Path]) -> Path:
    """Write the collector's attack_choices.json (atomic)."""
    return atomic_write_text(Path(path), json.dumps(collector.as_json(), indent=1))


def read_choices(path: Union[str, Path]) -> Dict[RowKey, Dict[str, Any]]:
    """attack_choices.json back as ``{(attack, eps_audio, eps_visual): row}`` (per-clip keys as ints)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
        out = {}
        for r in data["rows"]:
            row = dict(r)
            for field in ("shift_s", "support"):
                if field in row:
                    row[field] = {int(i): v for i, v in row[field].items()}
            out[(str(r["attack"]), float(r["eps_audio"]), float(r["eps_visual"]))] = row
        return out
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise MalformedFileError(str(path), f"not an attack-choices file: {e}") from None


__all__ = ["FORMAT", "ChoiceCollector", "seconds_label", "write_choices", "read_choices"]
