"""Study section "transfer": the transfer matrix between the study's models (pipeline/transfer.py; issue 19,
items 3 and 6).

For each (source, target) pair with source != target, the target is evaluated under PGD crafted on the source
(``main_attack.py --mode eval --attack_type pgd --transfer_from <source run folder>``) at the paper grid's budget
on both inputs (attacks/metrics.PAPER_EPS_GRID: 0.006 each, in the main evaluation's units and steps), so the
diagonal is the target's white-box PGD row of the preset's main evaluation. A unimodal source perturbs only the
input it reads (only the budgets of the modalities the source reads apply, README "Transfer attacks").

Cost: one evaluation per pair. On the first seed every pair among the unimodal models and every audio-visual
fusion head the seed trained (the full preset: 7 models, 42 pairs; the demo trains concat only: 6 pairs); on later
seeds, and at the quick scale, the headline models only (audio, visual, concat: 6 pairs). Each pair is recorded under its own kind,
``transfer-<source>`` (one evaluation per model, kind and seed in study.json).

The report: the matrix (rows source, columns target; accuracy in %, one seed with its Wilson interval, several
seeds as mean with range), the targets' clean accuracy, and one sentence comparing the mean accuracy of the
audio-visual targets under PGD from another fusion head with that under PGD from a unimodal model.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from pipeline.sections.shared import acc_by_seed, av_heads, grid_point, main_by_seed, main_flags
from pipeline.study_sections import Section, SeedPlan, register
from reporting.study_readings import SeedRow, acc_seeds, find_rows, first_row, kind_by_seed
from reporting.study_report import Block
from reporting.tables import Column, Table

UNIMODAL = ("audio", "visual")
HEADLINE = ("audio", "visual", "concat")


def kind_of(source: str) -> str:
    """The kind (study.json) of a target's evaluation under PGD crafted on ``source``."""
    return f"transfer-{source}"


@register("transfer")
class Transfer(Section):
    """PGD crafted on one model, evaluated on another: every pair on the first seed, the headline pairs later."""

    title = "Transfer between models"
    summary = ("PGD on both inputs crafted on each model and evaluated on every other one (every head on the "
               "first seed, audio, visual and concat on the others)")

    def models(self, sp: SeedPlan) -> List[str]:
        """The matrix's models in this seed: the unimodal ones and the fusion heads it trained (later seeds and
        the quick scale: the headline ones)."""
        heads = av_heads(list(sp.trained), sp.arch_of)
        found = [m for m in (*UNIMODAL, *heads) if m in sp.trained]
        if not sp.first or sp.scale == "quick":
            found = [m for m in found if m in HEADLINE]
        return list(dict.fromkeys(found))

    def plan(self, sp: SeedPlan) -> None:
        models = self.models(sp)
        for target in models:
            for source in models:
                if source == target:
                    continue  # the diagonal: the main evaluation's white-box PGD row
                sp.evaluate(f"transfer from {source} to", target,
                            ["--attack_type", "pgd", "--transfer_from", sp.run_folder(source),
                             *main_flags(sp, target), "--eps", grid_point("both")],
                            kind_of(source), deps=[sp.trained[source]])

    def report(self, s: Any) -> List[Block]:
        models = [m for m in dict.fromkeys([*HEADLINE, *getattr(s, "fusions", ())]) if s.model_seeds(m)]
        cells = {(src, tgt): _transferred(kind_by_seed(s, tgt, kind_of(src)))
                 for src in models for tgt in models if src != tgt}
        cells = {k: v for k, v in cells.items() if v}
        if not cells:
            return [Block("p", "No transfer evaluation was recorded in this study (the section's evaluations did not "
                               "run, or their folders are missing).")]
        used = [m for m in models if any(m in k for k in cells)]
        white = {m: find_rows(main_by_seed(s, m), "pgd", "both") for m in used}
        clean = {m: first_row(main_by_seed(s, m)) for m in used}
        body: List[Dict[str, Any]] = [{"source": "none (clean)", **{t: acc_seeds(clean[t], "clean_acc") for t in used}}]
        for src in used:
            line: Dict[str, Any] = {"source": src}
            for tgt in used:
                rows = white[tgt] if src == tgt else cells.get((src, tgt), {})
                line[tgt] = (acc_seeds(rows) + (" (white-box)" if src == tgt and rows else "")) if rows else "—"
            body.append(line)
        table = Table([Column("source", "source (crafted on) \\ target (evaluated)"),
                       *[Column(t, t, numeric=True) for t in used]], body)
        seeds = sorted({k for v in cells.values() for k in v})
        return [Block("p", "PGD on both inputs at the paper grid's budget (0.006 each, L-inf) crafted on the row's "
                           "model and evaluated on the column's: accuracy of the column's model (one seed: Wilson "
                           "95% interval; several: mean over seeds, range and each seed's). The diagonal is the "
                           "white-box PGD of the main evaluation; the first row the clean accuracy. A unimodal "
                           "source perturbs only the input it reads. Pairs: every one among the models of the "
                           f"study's first seed (seed {seeds[0]}); the later seeds run audio, visual and concat only, "
                           "so the other cells have one seed."),
                Block("table", table=table),
                Block("p", _sentence(cells, white, clean, used))]


def _transferred(rows: Mapping[int, Sequence[Mapping[str, Any]]]) -> SeedRow:
    """Each seed's attacked PGD row of a transfer evaluation (its one budget; a unimodal source's row may
    record the budget it could not apply)."""
    found = {k: next((r for r in rs if r["attack"] == "pgd" and (r["eps_audio"] > 0 or r["eps_visual"] > 0)), None)
             for k, rs in rows.items()}
    return {k: r for k, r in found.items() if r is not None}


def _mean(rows: SeedRow, key: str = "adv_acc") -> Optional[float]:
    accs = acc_by_seed(rows, key)
    return sum(accs.values()) / len(accs) if accs else None


def _sentence(cells: Mapping[tuple, SeedRow], white: Mapping[str, SeedRow], clean: Mapping[str, SeedRow],
              used: Sequence[str]) -> str:
    """Whether PGD transfers between fusion heads more than from the unimodal models: the mean accuracy (over
    pairs, each pair's mean over seeds) of the audio-visual targets under each kind of source."""
    targets = [t for t in used if t not in UNIMODAL]
    between = [m for (src, tgt), rows in cells.items() if tgt in targets and src not in UNIMODAL
               for m in [_mean(rows)] if m is not None]
    uni = [m for (src, tgt), rows in cells.items() if tgt in targets and src in UNIMODAL
           for m in [_mean(rows)] if m is not None]
    if not targets or not between or not uni:
        return ("The matrix has no audio-visual target with both another fusion head and a unimodal model as "
                "source, so transfer between heads and from unimodal models is not compared.")
    avg = lambda xs: 100 * sum(xs) / len(xs)  # noqa: E731
    cl = [m for t in targets for m in [_mean(clean[t], "clean_acc")] if m is not None]
    wb = [m for t in targets for m in [_mean(white[t])] if m is not None]
    b, u = avg(between), avg(uni)
    verdict = ("transfers between fusion heads more than from the unimodal models" if b < u else
               "transfers from the unimodal models at least as much as between fusion heads")
    return (f"On the audio-visual targets ({', '.join(targets)}), PGD crafted on another fusion head leaves "
            f"{b:.1f}% accuracy on average ({_pairs(len(between))}), crafted on a unimodal model {u:.1f}% "
            f"({_pairs(len(uni))})" + (f"; white-box PGD leaves {avg(wb):.1f}%" if wb else "")
            + (f", clean {avg(cl):.1f}%" if cl else "") + f". By these averages PGD {verdict} (lower accuracy: "
            "stronger transfer; a mean over pairs, no paired test: each cell's interval or range is in the table).")


def _pairs(n: int) -> str:
    return f"{n} pair{'s' * (n != 1)}"
