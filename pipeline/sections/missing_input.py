"""Study section "missing": every audio-visual model evaluated with one input absent (models/missing.py,
pipeline/missing_eval.py; issue 19, item 5)."""
from __future__ import annotations

from typing import Any, Dict, List

from models.fusion import FUSIONS
from pipeline.study_sections import Section, SeedPlan, register
from reporting.stats import fmt_acc_seeds
from reporting.study_report import Block
from reporting.tables import Column, Table

INPUTS = ("none", "audio", "visual")
FEATURED = ("concat", "minsim")  # trained with --save_features by the presets: the training mean is known
OTHER_MODELS = ("minsim", "advtrain")  # the presets' concat models trained otherwise (pipeline/study_plan.py)


@register("missing", defaults=("demo", "quick", "paper"))
class MissingSection(Section):
    """Each audio-visual model of the seed without its audio and without its visual input: the feature filled
    with zeros, and for the models with training features also with the training mean."""

    title = "Missing input"
    summary = "every audio-visual model with its audio, then its visual input absent (zeros; training mean)"

    def plan(self, sp: SeedPlan) -> None:
        for model in list(sp.trained):
            if len(FUSIONS.get(sp.arch_of.get(model, model)).modalities) < 2:
                continue
            flags = ["--missing_modality", *INPUTS]
            sp.evaluate("missing input", model, [*flags, "--missing_fill", "zeros"], self.name)
            if model in FEATURED:
                sp.evaluate("missing input", model, [*flags, "--missing_fill", "mean"], f"{self.name}-mean")

    def report(self, s: Any) -> List[Block]:
        body: List[Dict[str, Any]] = []
        for model in _models(s):
            for kind, fill in ((self.name, "zeros"), (f"{self.name}-mean", "training mean")):
                rows = {k: s.kind_results(model, kind, seed=k, name="missing") for k in s.model_seeds(model)}
                rows = {k: r for k, r in rows.items() if r}
                if not rows:
                    continue
                line = {"model": model, "fill": fill, "seeds": len(rows)}
                for m in INPUTS:
                    line[m] = fmt_acc_seeds({k: _count(next(r for r in rs if r["missing_input"] == m))
                                             for k, rs in rows.items() if any(r["missing_input"] == m for r in rs)})
                body.append(line)
        if not body:
            return [Block("p", "No missing-input evaluation was recorded.")]
        cols = [Column("model", "model"), Column("fill", "absent input filled with"), Column("seeds", "seeds"),
                Column("none", "both inputs (%)", numeric=True), Column("audio", "audio absent (%)", numeric=True),
                Column("visual", "visual absent (%)", numeric=True)]
        return [Block("p", "Accuracy with one input absent at test time: its feature replaced by zeros or by the "
                           "training set's mean feature (models/missing.py), the input itself never read; Wilson "
                           "95% interval (several seeds: mean, range, each seed's)."),
                Block("table", table=Table(cols, body))]


def _models(s: Any) -> List[str]:
    """The study's models that could have a missing-input evaluation (every head's name, and the presets'
    concat variants), those the study ran, in that order."""
    candidates = ["concat", *FUSIONS.names(), *OTHER_MODELS]
    return [m for m in dict.fromkeys(candidates) if s.model_seeds(m)]


def _count(row: Dict[str, Any]):
    n = int(row["n_samples"])
    return int(round(float(row["missing_acc"]) * n)), n
