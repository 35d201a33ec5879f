"""Study section "misalignment": the modality misalignment attack (attacks/mma.py) and the audio-visual
desynchronisation threat (attacks/desync.py) next to PGD at the same budgets (issue 19, items 2 and 6).

Per seed, the headline audio-visual model (concat) is evaluated with ``--attack_type mma,desync`` on three points:
no budget (desync: the worst shift alone; mma: the clean row), the paper grid's audio-only budget and its budget on
both inputs (attacks/metrics.PAPER_EPS_GRID), in the main evaluation's units and steps, so its PGD rows are the
comparison at equal budget. On the first seed every other audio-visual head the seed trained is evaluated too
(at the demo's sizes about 30 s per head and seed on 2 CPU cores, twice a one-budget PGD evaluation: measured once
on the demo's seed-0 runs). The quick preset runs PGD itself at its reduced steps (2), so that MMA and PGD compare
at equal steps.

The report: per model, accuracy with its Wilson interval (several seeds: mean, range, each seed's) under PGD, MMA
and desync(+PGD) at each budget, and the paired readings in each seed where both evaluations wrote
per_sample.json (exact McNemar, "higher"/"lower" only when every seed agrees, reporting/stats.SeedPaired): the
shift alone against clean, MMA against PGD and desync+PGD against PGD at equal budget.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

from pipeline.sections.shared import (KindView, av_heads, clips, compare, grid_point, main_by_seed, main_flags)
from pipeline.study_sections import Section, SeedPlan, register
from reporting.study_readings import Reader, SeedRows, acc_seeds, find_rows, first_row, kind_by_seed
from reporting.study_report import Block
from reporting.tables import Column, Table

MAX_SHIFT_S = {"demo": 0.25, "quick": 0.1, "paper": 0.25}  # seconds each way; 0.25 s fits the 2 s clips' context
SHIFT_STEP_S = 0.05  # the grid's spacing (attacks/desync.DEFAULT_STEP_S): 11 shifts at 0.25 s
QUICK_STEPS = 2  # quick: plumbing only; PGD then runs in the section too, at the same steps
PATTERNS = ("clean", "audio", "both")  # no budget (the shift alone), the audio-only and the both-inputs points
HEADLINE = "concat"


@register("misalignment")
class Misalignment(Section):
    """MMA and desync (worst shift, then PGD) against PGD at equal budget on concat, every head on seed 1."""

    title = "Modality misalignment and desynchronisation"
    summary = ("the modality misalignment attack (MMA) and the worst audio shift (desync, alone and with PGD) "
               "against PGD at equal budget")

    def models(self, sp: SeedPlan) -> List[str]:
        """concat in every seed; on the first seed every audio-visual head the seed trained."""
        heads = av_heads(list(sp.trained), sp.arch_of)
        return [m for m in heads if m == HEADLINE or sp.first]

    def plan(self, sp: SeedPlan) -> None:
        for model in self.models(sp):
            attacks = "pgd,mma,desync" if sp.scale == "quick" else "mma,desync"
            steps = ["--attack_steps", str(QUICK_STEPS)] if sp.scale == "quick" else []
            matched = main_flags(sp, model)
            if steps and "--attack_steps" in matched:  # quick: the section's own steps for all three attacks
                i = matched.index("--attack_steps")
                matched = matched[:i] + matched[i + 2:]
            sp.evaluate("misalignment", model,
                        ["--attack_type", attacks, "--max_shift_s", f"{MAX_SHIFT_S[sp.scale]:g}",
                         "--shift_step_s", f"{SHIFT_STEP_S:g}", *matched, *steps,
                         "--eps", *(grid_point(p) for p in PATTERNS)], self.name)

    def report(self, s: Any) -> List[Block]:
        models = [m for m in dict.fromkeys([HEADLINE, *getattr(s, "fusions", ())]) if kind_by_seed(s, m, self.name)]
        if not models:
            return [Block("p", "No misalignment evaluation was recorded in this study (the section's evaluations "
                               "did not run, or their folders are missing).")]
        main, own = Reader(s), Reader(KindView(s, self.name))
        own.ledger = main.ledger  # one count of the paired tests of the section
        blocks = [Block("p", "MMA (Zhang et al., ICLR 2025; attacks/mma.py): PGD steps on the cross-entropy minus the "
                             "cosine of the audio and visual features, so the two inputs are pushed to disagree. "
                             "Desync: per clip the worst shift of the audio against the frames over a grid of "
                             "0.05 s steps within the shown range (real audio read around the window, never "
                             "padded), alone or followed by PGD around the shifted audio. PGD: the same budget "
                             "and steps, from the main evaluation (the quick preset runs it here). Accuracy with "
                             "its Wilson 95% interval; several seeds: mean, range and each seed's value.")]
        for model in models:
            rows = kind_by_seed(s, model, self.name)
            pgd = rows if find_rows(rows, "pgd", "both") else main_by_seed(s, model)
            pgd_reader = own if pgd is rows else main
            blocks.append(Block("p", f"{model} ({len(rows)} seed{'s' * (len(rows) > 1)}, shifts up to "
                                     f"±{_max_shift(s, model, self.name, sorted(rows))}):"))
            blocks.append(Block("table", table=self._table(rows, pgd)))
            blocks.append(Block("p", self._reading(model, rows, pgd, own, pgd_reader, main)))
        blocks.append(Block("p", main.ledger.summary()))
        return blocks

    def _table(self, rows: SeedRows, pgd: SeedRows) -> Table:
        # (label, attack, its rows, the no-budget cell): PGD's is the clean accuracy, desync's the shift alone
        spec = [("PGD", "pgd", pgd, acc_seeds(first_row(rows), "clean_acc")), ("MMA (lam 1)", "mma", rows, "—"),
                ("desync (worst shift), then PGD", "desync", rows, acc_seeds(find_rows(rows, "desync", "clean")))]
        lines: List[Dict[str, Any]] = [{"attack": label, "clean": none, **{p: acc_seeds(find_rows(src, attack, p))
                                                                         for p in ("audio", "both")}}
                                       for label, attack, src, none in spec]
        words = {p: _eps_words(rows, p) for p in ("audio", "both")}
        return Table([Column("attack", "attack"), Column("clean", "no budget (PGD: clean; desync: the shift alone)",
                                                         numeric=True),
                      Column("audio", f"audio attacked ({words['audio']})", numeric=True),
                      Column("both", f"both attacked ({words['both']})", numeric=True)], lines)

    def _reading(self, model: str, rows: SeedRows, pgd: SeedRows, own: Reader, pgd_reader: Reader,
                 main: Reader) -> str:
        shift = find_rows(rows, "desync", "clean")
        try:
            clean = own.clean_clips(model, {k: rows[k] for k in shift})
        except (FileNotFoundError, KeyError, ValueError):
            clean = None
        out = [compare(main, f"{model}: desync shift alone vs clean", "accuracy under the worst shift alone",
                       clips(own, model, shift), "clean accuracy", clean)]
        for p in ("audio", "both"):
            ref = clips(pgd_reader, model, find_rows(pgd, "pgd", p))
            where = "on the audio" if p == "audio" else "on both inputs"
            out.append(compare(main, f"{model}: mma vs pgd ({p})", f"accuracy under MMA {where}",
                               clips(own, model, find_rows(rows, "mma", p)), "under PGD at the same budget", ref))
            out.append(compare(main, f"{model}: desync+pgd vs pgd ({p})", f"accuracy under desync then PGD {where}",
                               clips(own, model, find_rows(rows, "desync", p)), "under PGD alone", ref))
        return "; ".join(s[:1].upper() + s[1:] if i == 0 else s for i, s in enumerate(out)) + "."


def _eps_words(rows: SeedRows, pattern: str) -> str:
    """The budget of a pattern's rows in words ('audio 0.012', 'audio 0.006, visual 0.006')."""
    r = next((x for xs in rows.values() for x in xs if (x["eps_audio"] > 0, x["eps_visual"] > 0)
              == {"audio": (True, False), "both": (True, True)}[pattern]), None)
    if r is None:
        return "not run"
    return ", ".join(f"{m} {r[f'eps_{m}']:g}" for m in ("audio", "visual") if r[f"eps_{m}"] > 0)


def _max_shift(s: Any, model: str, kind: str, seeds: Sequence[int]) -> str:
    """The evaluations' --max_shift_s as their eval.json records it ('?' where a folder does not say)."""
    found = set()
    for k in seeds:
        folder = s.kind_dir(model, kind, seed=k) if hasattr(s, "kind_dir") else None
        path = Path(folder) / "eval.json" if folder is not None else None
        if path is None or not path.is_file():
            found.add("?")
            continue
        value = json.loads(path.read_text()).get("config", {}).get("max_shift_s")
        found.add("?" if value is None else f"{float(value):g} s")
    return ", ".join(sorted(found))
