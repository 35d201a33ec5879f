"""Study section "universal": one perturbation per modality for every clip (attacks/universal.py, fitted on the
training list) against per-clip PGD at the same budget (issue 19, items 3 and 6).

Per seed, audio, visual and concat are evaluated with ``--attack_type universal`` at the paper grid's points that
attack an input the model reads (attacks/metrics.PAPER_EPS_GRID: audio 0.012, visual 0.012, and 0.006 on each;
a unimodal model's both-inputs point keeps its own input's 0.006), in the main evaluation's units, so the main
evaluation's PGD rows are the per-clip attack at the same budget. Each point fits its own delta: ``epochs``
passes over the training list (cost: per point about ``epochs * train clips / (10 * test clips)`` PGD-10
evaluations of the test list), 2 at demo scale and 1 at quick (our choices, for time), 5 at paper scale (the
attack's default; Shafahi et al. use about 10), in mini-batches of 32 clips (the attack's default).

The report: per model and budget, accuracy under per-clip PGD and under the universal perturbation (one seed:
Wilson 95% interval; several: mean, range and each seed's value) and the per-seed exact McNemar reading of the
two where both evaluations wrote per_sample.json.
"""
from __future__ import annotations

from typing import Any, Dict, List

from pipeline.sections.shared import KindView, clips, compare, grid_point, main_by_seed, main_flags, reads
from pipeline.study_sections import Section, SeedPlan, register
from reporting.study_readings import Reader, acc_seeds, find_rows, kind_by_seed
from reporting.study_report import Block
from reporting.tables import Column, Table

EPOCHS = {"demo": 2, "quick": 1, "paper": 5}  # passes over the training list per fitted delta (module docstring)
FIT_BATCH = 32  # clips per ascent step (attacks/universal.py's default)
MODELS = ("audio", "visual", "concat")
PATTERNS = ("audio", "visual", "both")


def points(model: str) -> List[str]:
    """The paper grid's points with a budget on an input ``model`` reads."""
    inputs = reads(model)
    return [p for p in PATTERNS if p == "both" or p in inputs]


@register("universal")
class Universal(Section):
    """A universal perturbation per modality, fitted on the training list, against per-clip PGD."""

    title = "Universal perturbations"
    summary = "one perturbation per modality for every clip (fitted on the training list) against per-clip PGD"

    def plan(self, sp: SeedPlan) -> None:
        for model in MODELS:
            if model in sp.trained:
                sp.evaluate("universal", model,
                            ["--attack_type", "universal", "--attack_args",
                             f"universal:epochs={EPOCHS[sp.scale]},fit_batch={FIT_BATCH}", *main_flags(sp, model),
                             "--eps", *(grid_point(p) for p in points(model))], self.name)

    def report(self, s: Any) -> List[Block]:
        main, own = Reader(s), Reader(KindView(s, self.name))
        own.ledger = main.ledger
        body: List[Dict[str, Any]] = []
        readings: List[str] = []
        for model in MODELS:
            rows = kind_by_seed(s, model, self.name)
            if not rows:
                continue
            pgd = main_by_seed(s, model)
            for p in PATTERNS:
                uap = find_rows(rows, "universal", p)
                if not uap:
                    continue
                ref = find_rows(pgd, "pgd", p)
                r = next(iter(uap.values()))
                budget = ", ".join(f"{m} {r[f'eps_{m}']:g}" for m in ("audio", "visual") if r[f"eps_{m}"] > 0)
                body.append({"model": model, "budget": budget, "seeds": len(uap), "pgd": acc_seeds(ref),
                             "universal": acc_seeds(uap)})
                readings.append(f"{model}, {budget}: " + compare(
                    main, f"{model}: universal vs pgd ({p})", "accuracy under the universal perturbation",
                    clips(own, model, uap), "under per-clip PGD", clips(main, model, ref) if ref else None))
        if not body:
            return [Block("p", "No universal-perturbation evaluation was recorded in this study (the section's "
                               "evaluations did not run, or their folders are missing).")]
        cols = [Column("model", "model"), Column("budget", "budget (L-inf)"), Column("seeds", "seeds"),
                Column("pgd", "per-clip PGD (%)", numeric=True), Column("universal", "universal (%)", numeric=True)]
        return [Block("p", "One perturbation per attacked modality, the same for every test clip, fitted on the "
                           "training list by projected gradient ascent on the loss of the clips it does not yet "
                           "fool (attacks/universal.py), against PGD crafted for each clip (the main evaluation) at "
                           "the same budget. A model's budget on an input it does not read is dropped. Accuracy: "
                           "one seed with its Wilson 95% interval; several: mean, range and each seed's value."),
                Block("table", table=Table(cols, body)),
                Block("p", "; ".join(readings) + ". " + main.ledger.summary())]
