"""The study's "corruptions" section: clean accuracy under every test-time corruption (corruptions/) of the
headline models (audio, visual and the plain concat model) in every seed, with the mean corruption accuracy
(mCA) and ImageNet-C's mCE and relative mCE (Hendrycks & Dietterich, ICLR 2019, Section 4) against the plain
concat model of the same seed (reporting/corruption_summary.py).

Budgets: the demo and quick presets run severities 1, 3 and 5 (one pass over the test list per model, every
corruption and severity per batch); the paper preset runs 1-5 and also evaluates the other fusion heads it
trained. ``--corruptions all`` gives each model the corruptions of the inputs it reads (a unimodal model is
not evaluated under the other modality's corruptions, nor under the bimodal ones).

The reading: concat under each corruption against concat clean, clip by clip (corruption_per_sample.json: each
row's per-clip correctness and the clean pass's), at one severity (``READING_SEVERITY``, the middle of 1-5; the
middle of those run when it was not), an exact McNemar test in every seed ("lower" only when every seed's test
says so at p < 0.05, as in the rest of the report), then per family (visual, audio, both) how many corruptions
lower it in every seed.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from pipeline.study_sections import SeedPlan, Section, register
from reporting.corruption_summary import corruption_summary, severity_table
from reporting.per_sample import CORRUPTION_CLEAN, CORRUPTION_KEYS
from reporting.stats import ALPHA, Comparisons
from reporting.study_readings import clips_acc
from reporting.study_report import Block
from reporting.tables import Column, Table, fmt_generic

SEVERITIES = {"demo": "1,3,5", "quick": "1,3,5", "paper": "1-5"}  # the demo's time budget: three of five
HEADLINE = ("audio", "visual", "concat")
REFERENCE = "concat"  # the study's plain audio-visual model: the relative corruption error's reference
READING_SEVERITY = 3  # the reading's severity: the middle of ImageNet-C's 1-5 (severity 5 nearly always hurts)
FAMILIES = ("visual", "audio", "both")  # corruptions/base.py: the modality a corruption changes


@register("corruptions")
class Corruptions(Section):
    """Accuracy per corruption and severity, mCA, mCE and relative mCE against concat."""

    title = "Corruptions at test time"
    summary = "clean accuracy under 9 visual, 7 audio and 4 bimodal corruptions at 5 severities; mCA, relative mCE"

    def models(self, sp: SeedPlan) -> List[str]:
        """The models this seed evaluates: the headline ones, and at paper scale every head trained."""
        names = [m for m in HEADLINE if m in sp.trained]
        if sp.scale == "paper":
            names += [m for m in sp.trained if m not in names]
        return names

    def plan(self, sp: SeedPlan) -> None:
        for model in self.models(sp):
            sp.evaluate("corruptions", model, ["--corruptions", "all", "--severities", SEVERITIES[sp.scale]],
                        self.name)

    def report(self, s: Any) -> List[Block]:
        models = [m for m in _ordered(s) if any(s.kind_results(m, self.name, seed=k, name="corruptions")
                                                 for k in s.model_seeds(m))]
        if not models:
            return [Block("p", "No corruption evaluation was found in this study's records.")]
        table_rows: List[Dict[str, Any]] = []
        for m in models:
            per_seed: Dict[int, Dict[str, Any]] = {}
            for k in s.model_seeds(m):
                rows = s.kind_results(m, self.name, seed=k, name="corruptions")
                ref = s.kind_results(REFERENCE, self.name, seed=k, name="corruptions")
                if rows:
                    per_seed[k] = corruption_summary(rows, ref or None)
            table_rows.append({"model": m, "seeds": len(per_seed),
                               "clean": _over_seeds({k: v["clean_acc"] for k, v in per_seed.items()}),
                               "mca": _over_seeds({k: v["mca"] for k, v in per_seed.items()}),
                               "mce": _over_seeds({k: v.get("mce") for k, v in per_seed.items()}, percent=True),
                               "rmce": _over_seeds({k: v.get("relative_mce") for k, v in per_seed.items()},
                                                   percent=True)})
        cols = [Column("model", "model"), Column("seeds", "seeds", fmt_generic, True),
                Column("clean", "clean accuracy", fmt_generic, True),
                Column("mca", "mean corruption accuracy (mCA)", fmt_generic, True),
                Column("mce", f"mCE vs {REFERENCE} (%)", fmt_generic, True),
                Column("rmce", f"relative mCE vs {REFERENCE} (%)", fmt_generic, True)]
        out = [Block("p", "Each model evaluated clean under every corruption its inputs allow (corruptions/: "
                          "ImageNet-C's visual corruptions and severities, our audio ones, AVRobustBench's bimodal "
                          "pairs; each clip corrupted from its own seeded generator). mCA: the mean accuracy over "
                          "corruptions and severities. mCE and relative mCE follow Hendrycks & Dietterich (ICLR "
                          f"2019, Section 4) with the plain {REFERENCE} model of the same seed as the reference "
                          "(100% = as corruption-robust as it; relative: the drop from clean accuracy compared), "
                          "over the corruptions both were evaluated under. Several seeds: mean (min-max: each "
                          "seed's)."),
               Block("table", table=Table(cols, table_rows))]
        k0 = min(s.model_seeds(REFERENCE)) if REFERENCE in models else None
        if k0 is not None:
            out.append(Block("p", f"Accuracy of {REFERENCE} per corruption and severity (seed {k0}):"))
            out.append(Block("table", table=severity_table(
                s.kind_results(REFERENCE, self.name, seed=k0, name="corruptions"))))
            out += self.readings(s)
        return out

    def readings(self, s: Any) -> List[Block]:
        """concat under each corruption (at one severity) against concat clean, per seed (module docstring)."""
        rows = {k: s.kind_results(REFERENCE, self.name, seed=k, name="corruptions")
                for k in s.model_seeds(REFERENCE)}
        rows = {k: r for k, r in rows.items() if r}
        clips = {k: s.kind_per_clip(REFERENCE, self.name, "corruption_per_sample", CORRUPTION_KEYS, seed=k)
                 for k in rows}
        if not any(clips.values()):
            return [Block("p", f"No per-clip correctness was recorded for {REFERENCE}'s corruption evaluations (no "
                               "corruption_per_sample.json): no paired test against clean.")]
        sev = reading_severity(sorted({int(r["severity"]) for rs in rows.values() for r in rs}))
        ledger = Comparisons()
        names: Dict[str, str] = {}  # corruption -> family, in the rows' order
        for rs in rows.values():
            names.update({str(r["corruption"]): str(r["corruption_modality"]) for r in rs})
        table: List[Dict[str, Any]] = []
        verdicts: Dict[str, List[Tuple[str, str]]] = {f: [] for f in FAMILIES}
        for name, family in names.items():
            a = {k: c[(name, sev)] for k, c in clips.items() if (name, sev) in c and CORRUPTION_CLEAN in c}
            if not a:
                continue
            b = {k: clips[k][CORRUPTION_CLEAN] for k in a}
            res = ledger.compare(f"corruption {name} (severity {sev}): {REFERENCE} vs clean", a, b)
            table.append({"corruption": name, "family": family, "acc": clips_acc(a), "clean": clips_acc(b),
                          "reading": ledger.sentence(res, "corrupted", "clean")})
            verdicts.setdefault(family, []).append((name, res.verdict))
        if not table:
            return [Block("p", f"{REFERENCE}'s per-clip files have no row at severity {sev}: no paired test.")]
        summary = []
        for family, got in verdicts.items():
            if got:
                lower = [n for n, v in got if v == "lower"]
                summary.append(f"{len(lower)} of {len(got)} {family} corruption(s) lower its accuracy in every seed"
                               + (f" ({', '.join(lower)})" if lower else ""))
        cols = [Column("corruption", "corruption"), Column("family", "changes"),
                Column("acc", f"accuracy at severity {sev}", fmt_generic, True),
                Column("clean", "clean accuracy", fmt_generic, True), Column("reading", "reading (paired test)")]
        return [Block("p", f"Is {REFERENCE} hurt by each corruption? Its accuracy under each corruption at severity "
                           f"{sev} against its clean accuracy on the same clips (exact McNemar test in every seed; "
                           f"'lower' only when every seed's test gives p < {ALPHA}): " + "; ".join(summary) + "."),
                Block("table", table=Table(cols, table)), Block("p", ledger.summary())]


def reading_severity(run: List[int]) -> int:
    """The severity the reading tests: ``READING_SEVERITY`` when it was run, else the middle one of those run."""
    if not run:
        raise ValueError("no severity in the corruption rows")
    return READING_SEVERITY if READING_SEVERITY in run else run[(len(run) - 1) // 2]


def _ordered(s: Any) -> List[str]:
    """The headline models first, then the fusion heads the study trained."""
    return list(HEADLINE) + [f for f in getattr(s, "fusions", ()) if f not in HEADLINE]


def _over_seeds(values: Dict[int, Optional[float]], percent: bool = True) -> str:
    """A fraction over seeds in percent: one seed's value, or the mean (min-max: each seed's); '—' if none."""
    got = {k: v for k, v in sorted(values.items()) if v is not None}
    if not got:
        return "—"
    pct = [100 * v for v in got.values()]
    if len(pct) == 1:
        return f"{pct[0]:.1f}%"
    return (f"{sum(pct) / len(pct):.1f}% ({min(pct):.1f}-{max(pct):.1f}: "
            + ", ".join(f"{p:.1f}" for p in pct) + ")")
