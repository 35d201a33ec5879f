"""Study section "missing": every audio-visual model evaluated with one input absent (models/missing.py,
pipeline/missing_eval.py; issue 19, item 5).

The reading asks whether fusion degrades gracefully: each model with one input absent against the unimodal
model of the input that remains (its clean accuracy), clip by clip: the per-clip correctness of the missing
evaluation (missing_per_sample.json) paired with the unimodal model's clean row (per_sample.json of its main
evaluation), an exact McNemar test in every seed (reporting/study_readings.Reader; "higher"/"lower" only when
every seed's test agrees at p < 0.05, as in the rest of the report).
"""
from __future__ import annotations

from typing import Any, Dict, List

from models.fusion import FUSIONS
from pipeline.study_sections import Section, SeedPlan, register
from reporting.per_sample import MISSING_KEYS
from reporting.stats import fmt_acc_seeds
from reporting.study_readings import Clips, Reader, by_seed, clips_acc
from reporting.study_report import Block
from reporting.tables import Column, Table

INPUTS = ("none", "audio", "visual")
FEATURED = ("concat", "minsim")  # trained with --save_features by the presets: the training mean is known
OTHER_MODELS = ("minsim", "advtrain")  # the presets' concat models trained otherwise (pipeline/study_plan.py)
FILLS = (("zeros", "zeros", ""), ("mean", "training mean", "-mean"))  # fill, its words, the kind's suffix
REMAINING = {"audio": "visual", "visual": "audio"}  # absent input -> the unimodal model of the input left


@register("missing", defaults=("demo",))
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
                sp.evaluate("missing input (mean)", model, [*flags, "--missing_fill", "mean"], f"{self.name}-mean")

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
                Block("table", table=Table(cols, body)), *self.readings(s)]

    def readings(self, s: Any) -> List[Block]:
        """Each model with an input absent against the unimodal model of the remaining input, per seed."""
        rd = Reader(s)
        uni: Dict[str, Clips] = {}
        sentences: List[str] = []
        lacking: List[str] = []
        for model in _models(s):
            for fill, words, suffix in FILLS:
                kind = f"{self.name}{suffix}"
                found = {k: s.kind_per_clip(model, kind, "missing_per_sample", MISSING_KEYS, seed=k)
                         for k in s.model_seeds(model) if s.kind_results(model, kind, seed=k, name="missing")}
                if not found:
                    continue
                if not any(found.values()):
                    lacking.append(f"{model} ({words})")
                    continue
                for absent, left in REMAINING.items():
                    a = {k: t[(absent, fill)] for k, t in found.items() if (absent, fill) in t}
                    if not a:
                        continue
                    if left not in uni:
                        uni[left] = rd.clean_clips(left, by_seed(s, left)) if s.model_seeds(left) else {}
                    b = {k: c for k, c in uni[left].items() if k in a}
                    if not b:
                        continue
                    a = {k: c for k, c in a.items() if k in b}
                    sentences.append(
                        f"{model} with its {absent} absent ({words}) keeps {clips_acc(a)}, the {left} model alone "
                        f"{clips_acc(b)}: " + rd.says(f"missing {absent} ({words}): {model} vs {left} model",
                                                      f"{model} without {absent}", a, f"the {left} model", b) + ".")
        out: List[Block] = []
        if sentences:
            out.append(Block("p", "Does fusion degrade gracefully? Each model with one input absent against the "
                                  "unimodal model of the input that remains, on the same clips (per-clip "
                                  "correctness, exact McNemar test in every seed):"))
            out += [Block("p", t[:1].upper() + t[1:]) for t in sentences]
            out.append(Block("p", rd.ledger.summary()))
        if lacking:
            out.append(Block("p", "No per-clip correctness was recorded for " + ", ".join(lacking) + " (an "
                                  "evaluation without missing_per_sample.json): no paired test for them."))
        return out


def _models(s: Any) -> List[str]:
    """The study's models that could have a missing-input evaluation (every head's name, and the presets'
    concat variants), those the study ran, in that order."""
    candidates = ["concat", *FUSIONS.names(), *OTHER_MODELS]
    return [m for m in dict.fromkeys(candidates) if s.model_seeds(m)]


def _count(row: Dict[str, Any]):
    n = int(row["n_samples"])
    return int(round(float(row["missing_acc"]) * n)), n
