"""Study section ``defences``: one table of every defence the study ran, and the reading that compares each with the
plain model and with PGD adversarial training (issue 20, item 4).

The section adds no jobs (``plan`` does nothing): it reads the evaluations the preset and the other sections
recorded, under their own kinds:

- the preset's models (reporting/study_findings.DEFENSES): plain concat, MinSim, PGD-AT (``advtrain``), memory banks
  only and MinSim + banks, through their main evaluation (kind ``main``, with the preset's AutoAttack-only
  evaluation merged in by the study view) and, for the banks, the adaptive evaluation (``robustness.json``);
- section ``training_defences``: TRADES (``trades``) and fast AT (``fastat``), kind ``training_defences``;
- section ``defence_heads``: CRMT (``crmt``) and robust fusion (``robust``), kinds ``defence_heads`` (PGD) and
  ``defence_heads-aa`` (AutoAttack); CRMT's bound from the evaluation's ``crmt_certified.json``;
- section ``certified``: the noise-trained concat (``concat-noise``) and the plain concat, certified by randomized
  smoothing (kind ``certified``, ``certify.json``). The noise-trained concat has no attack evaluation: its clean
  cell is the smoothed classifier's accuracy (both inputs randomised; abstentions count as wrong), its PGD cells
  are empty and the reading says it was not compared.

Columns: clean, PGD on both inputs (the paper grid's (0.006, 0.006) point: the "both" row), AutoAttack on both
inputs where it ran, the adaptive worst case where the defence has inference-time machinery (the banks) and it ran,
the certified accuracy at ``CERT_RADIUS`` where the model is certifiable and was certified (the certificate named
in its own column: their units differ), and the training time per epoch over plain concat's (each run's per-epoch
training seconds, as section training_defences computes them). Over seeds: mean and range (one seed: the Wilson
95% interval), reporting/study_readings.acc_seeds.

The reading: each defence against plain concat and against PGD-AT under PGD on both inputs, an exact McNemar test
on the same clips in every seed both were evaluated with (each evaluation's per_sample.json;
reporting/stats.Comparisons words it: 'higher in k of n seeds, each p < 0.05'). A comparison whose per-clip file is
missing, or whose budgets differ, says so instead of a test.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from pipeline.sections.training_defences import _epoch_seconds
from pipeline.study_sections import Section, SeedPlan, register
from reporting.certify import certified_accuracy, read_certify
from reporting.per_sample import row_key
from reporting.stats import ALPHA, Comparisons
from reporting.study_readings import Clips, SeedRow, SeedRows, acc_seeds, find_rows, first_row, kind_by_seed
from reporting.study_report import Block
from reporting.tables import Column, Table, fmt_int
from utils.errors import MalformedFileError
from utils.rundir import eval_file

log = logging.getLogger(__name__)

PLAIN, AT = "concat", "advtrain"  # the two references of the reading
# the certified column's radius: L2, inside the demo's smoothing reach (pipeline/sections/certified.py RADII) and
# one of CRMT's report radii (pipeline/crmt_eval.RADII); our choice
CERT_RADIUS = 0.1
SMOOTHING_KIND = "certified"  # pipeline/sections/certified.kind_of("smoothing")
CRMT_KIND = "defence_heads"  # the crmt evaluation that carries crmt_certified.json


@dataclass(frozen=True)
class Defence:
    """A row of the table: its words, its run id, the kind of its attack evaluation (None: the preset's main one)
    and of its AutoAttack evaluation (None: merged into the main one or not run), whether it has inference-time
    machinery (an adaptive evaluation may exist), and which certificate applies (None, "smoothing" or "crmt")."""

    label: str
    run: str
    kind: Optional[str] = None
    aa_kind: Optional[str] = None
    adaptive: bool = False
    certificate: Optional[str] = None
    section: str = "the preset"  # what runs it (named when the row is absent)


DEFENCES: Tuple[Defence, ...] = (
    Defence("none (plain concat)", PLAIN, certificate="smoothing"),
    Defence("MinSim only", "minsim"),
    Defence("memory banks only", "banks", adaptive=True),
    Defence("MinSim + banks (paper)", "minsim-banks", adaptive=True),
    Defence("PGD adversarial training", AT),
    Defence("TRADES (beta 6)", "trades", "training_defences", section="--sections training_defences"),
    Defence("fast AT (FGSM-RS)", "fastat", "training_defences", section="--sections training_defences"),
    Defence("CRMT", "crmt", "defence_heads", "defence_heads-aa", certificate="crmt",
            section="--sections defence_heads"),
    Defence("robust fusion", "robust", "defence_heads", "defence_heads-aa", section="--sections defence_heads"),
    Defence("Gaussian noise training (smoothed)", "concat-noise", certificate="smoothing",
            section="--sections certified"),
)
CERTIFICATE_WORDS = {"smoothing": "randomized smoothing, both inputs randomised: joint L2 radius in sigma units",
                     "crmt": "CRMT's bound, both inputs: L2 radius in feature space"}


def attack_rows(s: Any, d: Defence) -> SeedRows:
    """The result rows of ``d``'s attack evaluation per seed (with its AutoAttack rows), seeds without one left
    out."""
    if d.kind is None:
        found = {k: s.results(d.run, seed=k) for k in s.model_seeds(d.run) if s.has_results(d.run, "results", seed=k)}
    else:
        found = kind_by_seed(s, d.run, d.kind)
        if d.aa_kind is not None:
            for k, aa in kind_by_seed(s, d.run, d.aa_kind).items():
                found[k] = found.get(k, []) + aa
    return {k: r for k, r in found.items() if r}


def adaptive_rows(s: Any, d: Defence) -> SeedRow:
    """The adaptive evaluation's row on both inputs (robustness.json) per seed where it ran."""
    out: Dict[int, Dict[str, Any]] = {}
    if not d.adaptive:
        return out
    for k in s.model_seeds(d.run):
        if s.has_results(d.run, "robustness", seed=k):
            row = next((r for r in s.results(d.run, "robustness", seed=k)
                        if r["eps_audio"] > 0 and r["eps_visual"] > 0), None)
            if row is not None:
                out[k] = row
    return out


def _smoothing_record(s: Any, run: str, seed: int) -> Optional[Dict[str, Any]]:
    folder = s.kind_dir(run, SMOOTHING_KIND, seed=seed)
    if folder is None:
        return None
    try:
        return read_certify(folder)
    except MalformedFileError as e:
        log.warning("defences: %s", e)
        return None


def certified_rows(s: Any, d: Defence, radius: float) -> SeedRow:
    """Per seed, the certified accuracy of ``d`` at ``radius`` as a row (``adv_acc``, ``n_samples``) for
    acc_seeds: smoothing's joint certificate with both inputs randomised, or CRMT's feature-space bound on both."""
    out: Dict[int, Dict[str, Any]] = {}
    for k in s.model_seeds(d.run):
        if d.certificate == "smoothing":
            rec = _smoothing_record(s, d.run, k)
            clips = ((rec or {}).get("settings", {}).get("both") or {}).get("clips")
            if clips:
                acc, = certified_accuracy(clips, "joint", [radius], rec["method"])
                out[k] = {"adv_acc": acc, "n_samples": len(clips)}
        elif d.certificate == "crmt":
            folder = s.kind_dir(d.run, CRMT_KIND, seed=k)
            path = eval_file(folder, "crmt_certified") if folder is not None else None
            if path is None or not path.is_file():
                continue
            row = next((r for r in json.loads(path.read_text()).get("rows", [])
                        if r["space"] == "feature" and r["perturbed"] == "both"), None)
            if row is not None and f"r={radius:g}" in row:
                out[k] = {"adv_acc": row[f"r={radius:g}"], "n_samples": row["n"]}
    return out


def smoothed_clean(s: Any, d: Defence) -> SeedRow:
    """The smoothed classifier's accuracy (certified at radius 0, both inputs randomised) per seed."""
    return certified_rows(s, d, 0.0) if d.certificate == "smoothing" else {}


def present(s: Any) -> Tuple[List[Defence], List[Defence]]:
    """The defences the study ran (an attack evaluation or a certificate recorded) and those it did not."""
    ran, absent = [], []
    for d in DEFENCES:
        has = bool(attack_rows(s, d)) or (d.run == "concat-noise" and bool(smoothed_clean(s, d)))
        (ran if has else absent).append(d)
    return ran, absent


def defence_table(s: Any, defences: List[Defence]) -> Table:
    """The combined table (module docstring); columns without any value in this study are left out."""
    plain = _epoch_seconds(s, PLAIN)
    body = []
    for d in defences:
        rows = attack_rows(s, d)
        clean = acc_seeds(first_row(rows), "clean_acc") if rows else None
        smooth = smoothed_clean(s, d) if not rows else {}
        if smooth:
            clean = acc_seeds(smooth) + " (smoothed)"
        cert = certified_rows(s, d, CERT_RADIUS) if d.certificate else {}
        rob = adaptive_rows(s, d)
        secs = _epoch_seconds(s, d.run)
        body.append({"model": d.label, "seeds": len(rows) or len(smooth), "clean": clean or "—",
                     "pgd": acc_seeds(find_rows(rows, "pgd", "both")),
                     "autoattack": acc_seeds(find_rows(rows, "autoattack", "both")),
                     "adaptive": acc_seeds(rob, "robust_acc") if rob else ("not run" if d.adaptive else "—"),
                     "certified": acc_seeds(cert) if cert else "—",
                     "certificate": CERTIFICATE_WORDS[d.certificate] if cert else "—",
                     "cost": round(secs / plain, 2) if secs is not None and plain else None})
    cols = [Column("model", "defence"), Column("seeds", "seeds", fmt_int, True), Column("clean", "clean", numeric=True),
            Column("pgd", "PGD on audio and visual", numeric=True),
            Column("autoattack", "AutoAttack on audio and visual", numeric=True),
            Column("adaptive", "adaptive worst case on audio and visual", numeric=True),
            Column("certified", f"certified at radius {CERT_RADIUS:g}", numeric=True),
            Column("certificate", "certificate"),
            Column("cost", "training time per epoch / plain concat's", numeric=True)]
    empty = {c.key for c in cols[3:] if all(r[c.key] in ("—", None) for r in body)}
    return Table([c for c in cols if c.key not in empty], body)


def _clips(s: Any, d: Defence, rows: SeedRow) -> Tuple[Clips, List[str]]:
    """Per-clip correctness of each seed's row (its evaluation's per_sample.json), and a note per seed whose file
    (or row in it) is missing."""
    out: Clips = {}
    missing: List[str] = []
    for k, row in rows.items():
        try:
            table = s.per_sample(d.run, seed=k) if d.kind is None else s.kind_per_sample(d.run, d.kind, seed=k)
            out[k] = table[row_key(row["attack"], row["eps_audio"], row["eps_visual"])]
        except (FileNotFoundError, MalformedFileError, KeyError) as e:
            missing.append(f"seed {k}: {e}")
    return out, missing


def _budget(row: Dict[str, Any]) -> Tuple[float, float]:
    return float(row["eps_audio"]), float(row["eps_visual"])


def readings(s: Any, defences: List[Defence]) -> Tuple[List[str], Comparisons]:
    """Each defence against plain concat and against PGD-AT under PGD on both inputs: the sentences and the ledger
    of their tests."""
    ledger, out = Comparisons(), []
    refs = {r: next((d for d in defences if d.run == r), None) for r in (PLAIN, AT)}
    ref_words = {PLAIN: "plain concat", AT: "PGD-AT"}
    ref_data = {}
    for r, d in refs.items():
        if d is not None:
            pgd = find_rows(attack_rows(s, d), "pgd", "both")
            ref_data[r] = (pgd, *_clips(s, d, pgd))
    for d in defences:
        if d.run == PLAIN:
            continue
        pgd = find_rows(attack_rows(s, d), "pgd", "both")
        if not pgd:
            out.append(f"{d.label}: no PGD evaluation on both inputs was recorded; not compared.")
            continue
        clips, missing = _clips(s, d, pgd)
        parts = []
        for r in (PLAIN, AT):
            if r == d.run:
                continue
            words = ref_words[r]
            if r not in ref_data or not ref_data[r][0]:
                parts.append(f"against {words}: not compared ({words} has no PGD evaluation on both inputs)")
                continue
            rpgd, rclips, rmissing = ref_data[r]
            mine, theirs = sorted({_budget(x) for x in pgd.values()}), sorted({_budget(x) for x in rpgd.values()})
            if mine != theirs:
                parts.append(f"against {words}: not compared (budgets differ: (audio, visual) {mine} vs {theirs})")
                continue
            seeds = sorted(set(clips) & set(rclips))
            gaps = "; ".join(missing + rmissing)
            if not seeds:
                parts.append(f"against {words} ({acc_seeds(rpgd)}): not tested, a per-clip file is missing "
                             f"({gaps or 'no seed evaluated both'})")
                continue
            try:
                res = ledger.compare(f"{d.label} vs {words} under PGD both", {k: clips[k] for k in seeds},
                                     {k: rclips[k] for k in seeds})
            except ValueError as e:  # the two evaluations share no clip
                parts.append(f"against {words}: not tested ({e})")
                continue
            text = f"against {words} ({acc_seeds(rpgd)}): " + ledger.sentence(res, "it", words)
            if gaps:
                text += f"; per-clip file missing for {gaps}, those seeds untested"
            parts.append(text)
        out.append(f"{d.label} keeps {acc_seeds(pgd)} under PGD on both inputs; " + "; ".join(parts) + ".")
    if ledger.made:
        out.append(ledger.summary())
    return out, ledger


def ledger_table(ledger: Comparisons) -> Table:
    """Every paired test of the reading, one row per comparison and seed."""
    return Table([Column("comparison", "comparison (A vs B)"), Column("seed", "seed", numeric=True),
                  Column("n", "clips", numeric=True), Column("a_right_b_wrong", "A right, B wrong", numeric=True),
                  Column("a_wrong_b_right", "A wrong, B right", numeric=True),
                  Column("p_value", "exact McNemar p", numeric=True), Column("reading", "reading in this seed"),
                  Column("across", "across seeds")], ledger.as_rows())


@register("defences", defaults=("demo",))  # adds no jobs: the demo gets it for free
class Defences(Section):
    title = "Every defence side by side"
    summary = ("one table of every defence the study ran (clean, PGD, AutoAttack, adaptive, certified, cost) and each "
               "compared with plain concat and PGD-AT by per-seed McNemar; adds no jobs")

    def plan(self, sp: SeedPlan) -> None:
        """Nothing: the section reads what the preset and the other sections recorded."""

    def report(self, s: Any) -> List[Block]:
        ran, absent = present(s)
        blocks = [Block("p", "Every defence this study ran, from the evaluations the preset and the other sections "
                             "recorded: PGD and AutoAttack on both inputs at the paper grid's both-inputs point, the "
                             "adaptive worst case for the defences with inference-time machinery (where it ran), the "
                             f"certified accuracy at radius {CERT_RADIUS:g} where the model was certified (the "
                             "certificates' units differ: named per row), and the training time per epoch over plain "
                             "concat's (each run's per-epoch training seconds; a fine-tuning run's epochs are its "
                             "own). Accuracy over seeds: mean and range (one seed: its Wilson 95% interval). A "
                             "smoothed model's clean cell is the smoothed classifier's accuracy (abstentions count as "
                             "wrong).")]
        if ran:
            blocks.append(Block("table", table=defence_table(s, ran)))
        if absent:
            blocks.append(Block("p", "Not run in this study: " + "; ".join(f"{d.label} ({d.section})" for d in absent)
                                     + "."))
        texts, ledger = readings(s, ran)
        blocks += [Block("p", t) for t in texts]
        if ledger.made:
            blocks.append(Block("p", f"The tests of this reading (exact two-sided McNemar per seed; 'higher'/'lower' "
                                     f"only when every seed's p < {ALPHA} in one direction):"))
            blocks.append(Block("table", table=ledger_table(ledger)))
        return blocks
