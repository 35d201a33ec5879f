"""The study's findings as report blocks: every table, figure link and reading computed from the results of
the study's evaluations (see pipeline/study.py, which runs them).

``build_report(s)`` reads through a ``StudyView``: any object with the attributes below. Nothing here
runs a model; every accuracy carries its Wilson 95% interval and every comparison of the reading its exact
McNemar test on the same clips (reporting/study_readings.py). The robustness-surface heat maps are drawn
into the study folder (``surface_<model>.png``).
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Sequence, Set, Tuple

from reporting.per_sample import PerSample
from reporting.results import results_table
from reporting.stats import ALPHA, Z95, binomial_se
from reporting.study_readings import acc_text, find_row, readings
from reporting.study_report import Block, rel
from reporting.surface import plot_surface, surface_matrix, surface_table
from reporting.tables import Column, Table

SURFACE_MODELS = {"audio": ("audio",), "visual": ("visual",), "concat": ("audio", "visual")}
SOFTWARE = ("torch", "torchvision", "numpy", "scipy", "matplotlib", "Pillow")
ATTACK_NAMES = {"fgsm": "FGSM", "pgd": "PGD-10", "mim": "MIM-10", "autoattack": "AutoAttack"}


class StudyView(Protocol):
    """What the report needs from a study."""

    out: Path
    clips: int
    seed: int
    fusions: Sequence[str]
    commands: List[str]
    timings: Dict[str, float]  # this call's steps, and "total": its wall time
    recorded: Dict[str, float]  # each step's time in the call that did its work (timings.json)
    reused: Set[str]  # steps this call found done (their time in ``recorded`` is an earlier call's)
    settings: Dict[str, str]  # what the study chose and why (surface attack, AutoAttack budget, ...)
    surface_eps: Sequence[float]

    def results(self, run_id: str, name: str = "results", surface: bool = False) -> List[Dict[str, Any]]: ...

    def has_results(self, run_id: str, name: str, surface: bool = False) -> bool: ...

    def per_sample(self, run_id: str, surface: bool = False) -> PerSample: ...

    def eval_path(self, run_id: str, key: str) -> Optional[Path]: ...

    def run_args(self, run_id: str) -> Dict[str, Any]: ...  # the run's args.json (its settings as trained)


# the audio nets in words (models/audio_net.py)
AUDIO_NET_WORDS = {"anet_lite": "anet's strides, channels 16/32/64/512", "anet": "the paper's, channels 64/128/256/512",
                   "vggish": "log-mel inside the model"}
# --eps_unit in words (pipeline/flags.py)
EPS_UNIT_WORDS = {"input": "input units (visual pixels in [0,1], audio waveform in [-1,1])",
                  "normalized": "ImageNet-normalised units for the visual input (pixel budget eps x std per channel) "
                                "and waveform units for the audio"}


def _one(values: Sequence[Any], what: str) -> str:
    """The value the runs agree on, or every value with its runs named ('audio 1, visual 2')."""
    distinct = list(dict.fromkeys(v for _, v in values))
    if len(distinct) == 1:
        return str(distinct[0])
    return ", ".join(f"{run} {v}" for run, v in values) + f" ({what} differ)"


def setup_text(s: StudyView) -> str:
    """The models and attacks as the runs recorded them: epochs, nets and input sizes from each run's
    args.json, the eps unit and PGD steps from the result rows of the study's own evaluations."""
    uni = [(r, s.run_args(r)["num_epoch"]) for r in ("audio", "visual")]
    av = [(r, s.run_args(r)["num_epoch"]) for r in s.fusions]
    c = s.run_args("concat")
    rows = [r for m in ("audio", "visual", "concat") for r in s.results(m)]
    units = sorted({str(r.get("eps_unit")) for r in rows})
    steps = sorted({int(r["steps"]) for r in rows if r["attack"] == "pgd" and r.get("steps") is not None})
    words = AUDIO_NET_WORDS.get(c["arch_sound"])
    audio = c["arch_sound"] + (f" ({words})" if words else "")
    unit_words = " and ".join(EPS_UNIT_WORDS.get(u, u) for u in units)
    return (f"unimodal models trained {_one(uni, 'epochs')} epochs from scratch, audio-visual models "
            f"{_one(av, 'epochs')} epochs starting from the unimodal nets; visual net {c['arch_frame']} at "
            f"{c['imgSize']}x{c['imgSize']}, audio net {audio} on {c['audLen']} samples "
            f"({c['audLen'] / c['audRate']:.2f} s at {c['audRate']} Hz); docs/demo.md says why. Budgets are L-inf in "
            f"{unit_words}{' (the evaluations differ in units)' if len(units) > 1 else ''}; the paper grid (v, a) = "
            f"(0,0), (0,0.012), (0.012,0), (0.006,0.006); {'/'.join(map(str, steps)) or 'no'} steps of eps/8 for "
            "PGD (paper: 10).")


def _eps_words(row: Optional[Dict[str, Any]]) -> str:
    if row is None:
        return ""
    ea, ev = row["eps_audio"], row["eps_visual"]
    if ea > 0 and ev > 0:
        return f"audio {ea:g} + visual {ev:g}" if ea != ev else f"eps {ea:g} each"
    return f"eps {ea if ea > 0 else ev:g}"


def accuracy_table(rows_by_model: Dict[str, List[Dict[str, Any]]], attack: str) -> Table:
    """One row per model: clean and attacked accuracies with 95% intervals; budgets in the headers."""
    pats = ("audio", "visual", "both")
    sample = {p: next((find_row(r, attack, p) for r in rows_by_model.values() if find_row(r, attack, p)), None)
              for p in pats}
    name = ATTACK_NAMES.get(attack, attack)
    cols = [Column("model", "model"), Column("clean", "clean, % [95% CI]", numeric=True)]
    cols += [Column(p, f"{name} on {'audio and visual' if p == 'both' else p}, {_eps_words(sample[p])}",
                    numeric=True) for p in pats]
    body = []
    for model, rows in rows_by_model.items():
        line = {"model": model, "clean": acc_text(rows[0] if rows else None, "clean_acc")}
        line.update({p: acc_text(find_row(rows, attack, p)) for p in pats})
        body.append(line)
    return Table(cols, body)


DEFENSES = (("plain (concat)", "concat", False), ("MinSim only", "minsim", False),
            ("PGD adversarial training", "advtrain", False), ("memory banks only", "banks", True),
            ("MinSim + banks (paper)", "minsim-banks", True))


# robustness.json's names of the adaptive attack families in words: (attack, which gradient modes by default)
ADAPTIVE_WORDS = {"paper pgd": ("the paper's PGD", ""),
                  "fgsm": ("FGSM", "through the other gradient mode (BPDA or unrolled)"),
                  "pgd": ("PGD", "through the other gradient mode"),
                  "pgd_restarts": ("random-start PGD", "in both modes"), "apgd-ce": ("APGD-CE", "in both modes"),
                  "apgd-t": ("APGD-T", "in both modes"), "square": ("the black-box Square attack", "")}


def _adaptive_attacks(s: StudyView, defenses: Sequence[Tuple[str, str, bool]]) -> str:
    """The attacks the adaptive worst case was taken over, as robustness.json names them ("apgd-t:unrolled":
    that family through one gradient mode only)."""
    names = {r.get("attacks") for _, rid, defended in defenses if defended and s.has_results(rid, "robustness")
             for r in s.results(rid, "robustness")}
    names.discard(None)
    if not names:
        return "the adaptive attacks of pipeline/adaptive.py"

    def word(entry: str) -> str:
        family, _, mode = entry.strip().partition(":")
        attack, modes = ADAPTIVE_WORDS.get(family, (family, ""))
        how = f"through {mode} gradients only" if mode else modes
        return f"{attack} {how}" if how else attack

    return "; ".join(", ".join(word(a) for a in n.split(",")) for n in sorted(names))


def present_defenses(s: StudyView) -> List[Tuple[str, str, bool]]:
    """The rows of DEFENSES whose run the study evaluated (the demo leaves 'memory banks only' out for time)."""
    return [d for d in DEFENSES if s.has_results(d[1], "results")]


def defense_table(s: StudyView, defenses: Sequence[Tuple[str, str, bool]]) -> Table:
    """The defence table (rows: ``defenses``, see :func:`present_defenses`) with headers in words (attack,
    modalities, budget) and 95% intervals."""
    res = {rid: s.results(rid) for _, rid, _ in defenses}
    rob_row = None
    for _, rid, defended in defenses:
        if defended and s.has_results(rid, "robustness"):
            rob_row = next((r for r in s.results(rid, "robustness") if r["eps_audio"] > 0 and r["eps_visual"] > 0),
                           rob_row)
    specs = [(f"pgd_{p}", "pgd", p) for p in ("audio", "visual", "both")] + [("aa_both", "autoattack", "both")]
    cols = [Column("model", "model"), Column("clean", "clean, % [95% CI]", numeric=True)]
    for key, attack, p in specs:
        row = next((find_row(r, attack, p) for r in res.values() if find_row(r, attack, p)), None)
        where = "audio and visual" if p == "both" else p
        cols.append(Column(key, f"{ATTACK_NAMES[attack]} on {where}, {_eps_words(row)}", numeric=True))
    cols += [Column("adaptive", f"adaptive worst case on audio and visual, {_eps_words(rob_row)}", numeric=True),
             Column("flags", "gradient-masking flags")]
    body = []
    for label, rid, defended in defenses:
        rows = res[rid]
        line: Dict[str, Any] = {"model": label, "clean": acc_text(rows[0], "clean_acc")}
        for key, attack, p in specs:
            line[key] = acc_text(find_row(rows, attack, p))
        if defended and s.has_results(rid, "robustness"):
            rob = s.results(rid, "robustness")
            r = next((x for x in rob if x["eps_audio"] > 0 and x["eps_visual"] > 0), None)
            line["adaptive"] = acc_text(r, "robust_acc")
            line["flags"] = "; ".join(sorted({x["flags"] for x in rob if x["flags"] != "none"})) or "none"
        body.append(line)
    return Table(cols, body)


def provenance(s: StudyView) -> List[Block]:
    """Software versions, the CPU, the seeds and the settings of the study."""
    versions = [f"python {platform.python_version()}"]
    for pkg in SOFTWARE:
        try:
            versions.append(f"{pkg} {importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{pkg} (not installed)")
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = [f"software: {', '.join(versions)}", f"platform: {platform.platform()}",
             f"CPU: {cpu}; {os.cpu_count()} logical cores visible", f"seed: {s.seed} (data, training, attacks, examples)"]
    lines += [f"{k}: {v}" for k, v in s.settings.items()]
    return [Block("h2", "Provenance"), Block("code", "\n".join(lines))]


def surface_blocks(s: StudyView) -> List[Block]:
    """Heat map and table of accuracy over (eps_audio x eps_visual) per model."""
    out = [Block("h2", "Robustness surface: accuracy over (eps audio x eps visual)"),
           Block("p", s.settings.get("surface", ""))]
    eps = list(s.surface_eps)
    for model, reads in SURFACE_MODELS.items():
        if not s.has_results(model, "results", surface=True):
            continue
        rows = s.results(model, surface=True)
        acc, n = surface_matrix(rows, eps, eps, reads)
        png = plot_surface(acc, eps, eps, s.out / f"surface_{model}.png", f"{model}: accuracy (%) over the budget grid")
        out.append(Block("img", f"{model}: robustness surface", path=rel(png, s.out)))
        out.append(Block("p", f"{model}: accuracy, % [95% CI], rows eps audio, columns eps visual"
                              + ("" if len(reads) == 2 else f" (reads only {reads[0]}: constant along the other axis)")))
        out.append(Block("table", table=surface_table(acc, n, eps, eps)))
    return out


def build_report(s: StudyView) -> List[Block]:
    """Blocks of the report: tables from the runs' results.json, plots, readings, commands."""
    B: List[Block] = [Block("h1", "Audio-visual robustness on the embedded dataset")]
    n_test = int(s.results("concat")[0]["n_samples"])
    cav = s.results("concat")[0]["clean_acc"]
    B.append(Block("p", f"Embedded synthetic dataset ({s.clips} clips per class; {n_test} test clips), "
                        + setup_text(s)))
    B.append(Block("p", f"Statistics: every accuracy is shown with its Wilson 95% interval in brackets. On {n_test} "
                        f"test clips the standard error of one accuracy is {100 * binomial_se(0.5, n_test):.1f} points at "
                        f"50% (sqrt(p(1-p)/n); {100 * binomial_se(cav, n_test):.1f} points at the concat model's "
                        f"clean {100 * cav:.1f}%), so a 95% interval spans about +-{100 * Z95 * binomial_se(0.5, n_test):.0f} "
                        "points. Comparisons are paired (all models see the same clips): the reading says 'higher' or "
                        f"'lower' only when the exact two-sided McNemar test gives p < {ALPHA}, and shows the discordant "
                        "counts and p."))
    uni_av = {m: s.results(m) for m in ("audio", "visual", "concat")}
    attacks = [a for a in ATTACK_NAMES if any(r["attack"] == a for r in uni_av["concat"])]
    names = [ATTACK_NAMES[a].split("-")[0] for a in attacks]
    B.append(Block("h2", "Unimodal vs audio-visual (concat) under "
                         + (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names))))
    for attack in attacks:
        B.append(Block("p", f"{ATTACK_NAMES[attack]}: accuracy, % [95% CI]"))
        B.append(Block("table", table=accuracy_table(uni_av, attack)))
    if "autoattack" in s.settings:
        B.append(Block("p", s.settings["autoattack"]))
    B.append(Block("p", "A unimodal model attacked on the modality it does not read keeps its clean accuracy: that "
                        "budget cannot change its output."))
    B.append(Block("h2", "Fusion heads under PGD-10"))
    B.append(Block("table", table=accuracy_table({h: s.results(h) for h in s.fusions}, "pgd")))
    B.append(Block("h2", "Defenses"))
    defenses = present_defenses(s)
    B.append(Block("table", table=defense_table(s, defenses)))
    banked = [label for label, _, defended in defenses if defended]
    missing = [label for label, rid, defended in DEFENSES if (label, rid, defended) not in defenses]
    tuned = [(rid, s.run_args(rid)["num_epoch"]) for _, rid, defended in defenses if defended]
    lrs = [(rid, s.run_args(rid)["lr_classifier"]) for _, rid, defended in defenses if defended]
    B.append(Block("p", f"The memory-bank models ({', '.join(banked)}) were fine-tuned for {_one(tuned, 'epochs')} "
                        f"more epoch(s) at lr {_one(lrs, 'rates')} with the banks fixed (paper step 3); the plain and "
                        "MinSim models were not, so part "
                        "of any clean-"
                        "accuracy difference can come from that extra training. PGD-10 on a defended model: gradients "
                        "unrolled through the solver, as the paper ran it. Adaptive worst case: per clip, the worst over "
                        f"{_adaptive_attacks(s, defenses)}."
                        + (f" Not run in this study: {', '.join(missing)}." if missing else "")))
    B.extend(surface_blocks(s))
    B.append(Block("h2", "What the numbers say"))
    texts, ledger = readings(s, [(label, rid) for label, rid, defended in defenses if defended])
    B.extend(Block("p", t) for t in texts)
    B.append(Block("p", "Every paired test of the reading (A vs B on the same clips):"))
    B.append(Block("table", table=Table([Column("comparison", "comparison (A vs B)"), Column("n", "clips", numeric=True),
                                         Column("a_right_b_wrong", "A right, B wrong", numeric=True),
                                         Column("a_wrong_b_right", "A wrong, B right", numeric=True),
                                         Column("p_value", "exact McNemar p", numeric=True),
                                         Column("reading", "reading")], ledger.as_rows())))
    B.append(Block("h2", "Figures and examples"))
    for rid, f, cap in (("concat", "acc_vs_eps", "concat: PGD accuracy vs eps"),
                        ("concat", "cosine_hist", "concat: cos(f_audio, f_visual) clean vs PGD on both"),
                        ("minsim", "cosine_hist", "MinSim: cos(f_audio, f_visual) clean vs PGD on both")):
        p = s.eval_path(rid, f)
        if p is not None and p.exists():
            B.append(Block("img", cap, path=rel(p, s.out)))
    for rid in ("concat", "attention"):
        p = s.eval_path(rid, "examples")
        p = p / "index.html" if p is not None else None
        if p is not None and p.exists():
            B.append(Block("link", f"{rid}: adversarial examples from every class, attacks that succeed and fail "
                                   f"(frames, magnified difference, audio players"
                                   f"{', localization maps' if rid == 'attention' else ''})", path=rel(p, s.out)))
    B.append(Block("h2", "All rows"))
    for rid in ("audio", "visual", "concat"):
        B.append(Block("p", f"{rid}: every result row"))
        B.append(Block("table", table=results_table(s.results(rid), [
            "attack", "eps_audio", "eps_visual", "clean_acc", "adv_acc", "success_rate", "max_delta_audio",
            "max_delta_visual", "snr_db_audio", "psnr_db_visual", "n_samples", "seconds"])))
    B.extend(provenance(s))
    B.append(Block("h2", "Commands"))
    B.append(Block("code", "\n".join(s.commands)))
    B.append(Block("h2", "Timings (s)"))
    lines = [f"{k}: {v:.1f}" + ("  (an earlier call; reused in this one)" if k in s.reused else "")
             for k, v in s.recorded.items()]
    if s.recorded:
        lines.append(f"sum of the steps (each in the call that did its work): {sum(s.recorded.values()):.1f}")
    if "total" in s.timings:
        lines.append(f"this call's wall time: {s.timings['total']:.1f}"
                     + (f" ({len(s.reused)} step(s) reused from earlier calls)" if s.reused else ""))
    B.append(Block("code", "\n".join(lines)))
    return B
