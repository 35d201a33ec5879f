"""What the attack sections (misalignment, transfer, universal) share: the paper grid's points, the flags of the
preset's main evaluation a section must match to compare with its PGD rows, the fusion heads a seed trained, and
paired tests between a section's evaluation and the main one (per-seed exact McNemar, reporting/stats.py)."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from attacks.metrics import PAPER_EPS_GRID, format_eps
from models.fusion import FUSIONS
from pipeline.study_sections import SeedPlan
from reporting.study_readings import PATTERNS, Clips, Reader, SeedRow
from utils.errors import MalformedFileError

MATCHED = ("--eps_unit", "--attack_steps")  # flags of the main evaluation that set what its PGD rows mean


def grid_point(pattern: str) -> str:
    """The paper grid's budget (attacks/metrics.PAPER_EPS_GRID) attacking ``pattern`` (audio, visual, both,
    clean) as an ``--eps`` value, e.g. ``visual=0,audio=0.012``."""
    want = PATTERNS[pattern]
    for eps in PAPER_EPS_GRID:
        if (eps.get("audio", 0) > 0, eps.get("visual", 0) > 0) == want:
            return format_eps(eps)
    raise KeyError(f"the paper grid has no {pattern} point")


def main_flags(sp: SeedPlan, model: str) -> List[str]:
    """The main evaluation's ``--eps_unit`` and ``--attack_steps`` for ``model`` in this seed (the paper preset
    runs its grid in normalised units), so a section's budgets and steps are those of its PGD rows; [] when the
    main evaluation sets neither (the defaults) or the seed has no main evaluation of ``model``."""
    job = next((j for j in sp.builder.jobs if j.kind == "eval" and j.model == model and j.seed == sp.seed
                and j.eval_kind == "main"), None)
    if job is None:
        return []
    argv, out = list(job.argv), []
    for flag in MATCHED:
        if flag in argv:
            out += [flag, argv[argv.index(flag) + 1]]
    return out


def av_heads(models: Sequence[str], arch_of: Mapping[str, str]) -> List[str]:
    """The audio-visual fusion heads among ``models`` trained under their own name (not the presets' concat
    variants minsim/advtrain, nor a section's own models, whose --arch_classifier differs from their name)."""
    return [m for m in models if m in FUSIONS and arch_of.get(m, m) == m and len(FUSIONS.get(m).modalities) == 2]


def reads(model: str) -> Sequence[str]:
    """The inputs a fusion head reads (audio, visual or both)."""
    return FUSIONS.get(model).modalities if model in FUSIONS else ("audio", "visual")


class KindView:
    """A study view whose ``per_sample`` is the per-clip record of a section's evaluation (``kind``), so that
    reporting.study_readings.Reader pairs a section's rows as it pairs the main evaluation's."""

    def __init__(self, s: Any, kind: str) -> None:
        self.s, self.kind = s, kind

    def per_sample(self, run_id: str, surface: bool = False, seed: Optional[int] = None):
        return self.s.kind_per_sample(run_id, self.kind, seed=seed)


def clips(reader: Reader, model: str, rows: SeedRow) -> Optional[Clips]:
    """Per-clip correctness of each seed's row, or None when a seed's per_sample.json (or its row) is missing."""
    try:
        return reader.clips(model, rows)
    except (FileNotFoundError, KeyError, MalformedFileError):
        return None


def compare(main: Reader, what: str, a_name: str, a: Optional[Clips], b_name: str, b: Optional[Clips]) -> str:
    """'A is higher than / lower than / about the same as B (exact McNemar per seed ...)' in the seeds both
    have (recorded in ``main``'s ledger), or why no test was made."""
    if a is None or b is None:
        return f"{a_name} against {b_name}: no paired test (per_sample.json missing in a seed)"
    if not set(a) & set(b):
        return f"{a_name} against {b_name}: no paired test (no seed has both)"
    return main.says(what, a_name, a, b_name, b)


def acc_by_seed(rows: Mapping[int, Optional[Mapping[str, Any]]], key: str = "adv_acc") -> Dict[int, float]:
    """``key`` of each seed's row as a fraction (seeds without the row or the value left out)."""
    return {k: float(r[key]) for k, r in rows.items() if r is not None and r.get(key) is not None}


def main_by_seed(s: Any, model: str) -> Dict[int, List[Dict[str, Any]]]:
    """The rows of ``model``'s main evaluation in each seed that has one (a model the preset evaluates on the
    first seed only has none in the later seeds)."""
    out: Dict[int, List[Dict[str, Any]]] = {}
    for k in s.model_seeds(model):
        try:
            rows = s.results(model, seed=k)
        except FileNotFoundError:
            continue
        if rows:
            out[k] = rows
    return out
