"""The study's findings as report blocks: every table, figure link and reading computed from the results of
the study's evaluations (see pipeline/study.py, which runs them).

``build_report(s)`` reads through a ``StudyView``: any object with the attributes below. Nothing here
runs a model; every accuracy carries its Wilson 95% interval and every comparison of the reading its exact
McNemar test on the same clips (reporting/study_readings.py). With several seeds (one run of a model per seed)
every accuracy is the mean over the model's seeds with the min-max range and each seed's value, and every
comparison is tested in each seed. The robustness-surface heat maps are drawn into the study folder
(``surface_<model>.png``; the mean over seeds).
"""
from __future__ import annotations

import importlib.metadata
import math
import os
import platform
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Set, Tuple

from reporting.per_sample import PerSample
from reporting.results import results_table
from reporting.stats import ALPHA, MAX_SEEDS_LISTED, Z95, binomial_se, fmt_acc_ci, fmt_acc_seeds
from reporting.study_readings import SeedRows, acc_seeds, by_seed, find_rows, first_row, readings
from reporting.study_report import Block, rel
from reporting.study_results import RESULTS_LONG
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
    seeds: Sequence[int]  # the study's seeds (one run folder per model and seed when there are several)
    fusions: Sequence[str]
    commands: List[str]
    timings: Dict[str, float]  # this call's steps, and "total": its wall time
    recorded: Dict[str, float]  # each step's time in the call that did its work (timings.json)
    reused: Set[str]  # steps this call found done (their time in ``recorded`` is an earlier call's)
    # what the study chose and why (surface attack, AutoAttack budget, ...), and the dataset in words:
    # "dataset_title" (the heading's "the embedded dataset") and "dataset_text" (its first sentence's subject)
    settings: Dict[str, str]
    surface_eps: Sequence[float]

    # ``seed``: which seed's run (None: the model's first); reporting/study_results.StudyRecord implements them
    def model_seeds(self, run_id: str) -> List[int]: ...  # the seeds the study ran this model with

    def results(self, run_id: str, name: str = "results", surface: bool = False,
                seed: Optional[int] = None) -> List[Dict[str, Any]]: ...

    def has_results(self, run_id: str, name: str, surface: bool = False, seed: Optional[int] = None) -> bool: ...

    def per_sample(self, run_id: str, surface: bool = False, seed: Optional[int] = None) -> PerSample: ...

    def eval_path(self, run_id: str, key: str, seed: Optional[int] = None) -> Optional[Path]: ...

    def run_args(self, run_id: str, seed: Optional[int] = None) -> Dict[str, Any]: ...  # its args.json

    # a study section's evaluations (kind = the section's name; pipeline/study_sections.py)
    def kind_dir(self, run_id: str, kind: str, seed: Optional[int] = None) -> Optional[Path]: ...

    def kind_results(self, run_id: str, kind: str, seed: Optional[int] = None,
                     name: str = "results") -> List[Dict[str, Any]]: ...

    def kind_per_sample(self, run_id: str, kind: str, seed: Optional[int] = None) -> PerSample: ...

    def kind_per_clip(self, run_id: str, kind: str, name: str, keys: Sequence[str],
                      seed: Optional[int] = None) -> Any: ...  # a family's per-clip file (missing, corruptions)

    def run_folder(self, run: str, seed: int) -> Any: ...  # utils/rundir.RunDir of a model's run in a seed


# a study section in the report: its heading and the function that gives its blocks from the study view
SectionBlocks = Tuple[str, Callable[[Any], List[Block]]]


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


def _seeds_column(rows_by_model: Dict[str, SeedRows]) -> List[Column]:
    """A 'seeds' column when any model of the table has several seeds (rows may have different counts)."""
    return [Column("seeds", "seeds", numeric=True)] if any(len(r) > 1 for r in rows_by_model.values()) else []


def acc_unit(rows_by_model: Dict[str, SeedRows]) -> str:
    """What a cell holds: '% [95% CI]' (one seed each) or the mean over seeds with range and each seed's value."""
    if all(len(r) <= 1 for r in rows_by_model.values()):
        return "% [95% CI]"
    return "% mean over seeds (range: each seed; one seed: [95% CI])"


def _clean_header(rows_by_model: Dict[str, SeedRows]) -> str:
    """'clean, % [95% CI]' (one seed each) or 'clean, %' (the paragraph above the table says what a cell holds)."""
    return "clean, % [95% CI]" if all(len(r) <= 1 for r in rows_by_model.values()) else "clean, %"


def accuracy_table(rows_by_model: Dict[str, SeedRows], attack: str) -> Table:
    """One row per model: clean and attacked accuracies (one seed: Wilson 95% interval; several: mean over
    seeds, range and each seed's value); budgets in the headers."""
    sample = {p: next((r for rows in rows_by_model.values() for r in find_rows(rows, attack, p).values()), None)
              for p in ("audio", "visual", "both")}
    pats = [p for p, row in sample.items() if row is not None] or ["both"]  # the budgets some model was run at
    name = ATTACK_NAMES.get(attack, attack)
    cols = [Column("model", "model"), *_seeds_column(rows_by_model),
            Column("clean", _clean_header(rows_by_model), numeric=True)]
    cols += [Column(p, f"{name} on {'audio and visual' if p == 'both' else p}, {_eps_words(sample[p])}",
                    numeric=True) for p in pats]
    body = []
    for model, rows in rows_by_model.items():
        line = {"model": model, "seeds": len(rows), "clean": acc_seeds(first_row(rows), "clean_acc")}
        line.update({p: acc_seeds(find_rows(rows, attack, p)) for p in pats})
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


def _robust_row(s: StudyView, rid: str, seed: int) -> Optional[Dict[str, Any]]:
    """The adaptive evaluation's row on both inputs in ``seed`` (robustness.json), or None."""
    if not s.has_results(rid, "robustness", seed=seed):
        return None
    return next((r for r in s.results(rid, "robustness", seed=seed) if r["eps_audio"] > 0 and r["eps_visual"] > 0),
                None)


def defense_table(s: StudyView, defenses: Sequence[Tuple[str, str, bool]]) -> Table:
    """The defence table (rows: ``defenses``, see :func:`present_defenses`) with headers in words (attack,
    modalities, budget), 95% intervals (one seed) or mean, range and each seed's value (several)."""
    res = {rid: by_seed(s, rid) for _, rid, _ in defenses}
    rob = {rid: {k: r for k in res[rid] for r in [_robust_row(s, rid, k)] if r is not None}
           for _, rid, defended in defenses if defended}
    rob_row = next((r for rows in rob.values() for r in rows.values()), None)
    specs = [(f"pgd_{p}", "pgd", p) for p in ("audio", "visual", "both")] + [("aa_both", "autoattack", "both")]
    cols = [Column("model", "model"), *_seeds_column(res), Column("clean", _clean_header(res), numeric=True)]
    for key, attack, p in specs:
        row = next((r for rows in res.values() for r in find_rows(rows, attack, p).values()), None)
        where = "audio and visual" if p == "both" else p
        cols.append(Column(key, f"{ATTACK_NAMES[attack]} on {where}, {_eps_words(row)}", numeric=True))
    if rob_row is not None:  # the defence's adaptive evaluation ran (the demo leaves it to the full preset)
        cols += [Column("adaptive", f"adaptive worst case on audio and visual, {_eps_words(rob_row)}", numeric=True),
                 Column("flags", "gradient-masking flags")]
    body = []
    for label, rid, defended in defenses:
        rows = res[rid]
        line: Dict[str, Any] = {"model": label, "seeds": len(rows), "clean": acc_seeds(first_row(rows), "clean_acc")}
        for key, attack, p in specs:
            line[key] = acc_seeds(find_rows(rows, attack, p))
        if rob.get(rid):
            line["adaptive"] = acc_seeds(rob[rid], "robust_acc")
            line["flags"] = "; ".join(sorted({x["flags"] for k in rob[rid] for x in s.results(rid, "robustness", seed=k)
                                              if x["flags"] != "none"})) or "none"
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
             f"CPU: {cpu}; {os.cpu_count()} logical cores visible"]
    if len(s.seeds) > 1:
        lines.append(f"seeds: {', '.join(map(str, s.seeds))} (initialisation, data order, attacks and examples of each "
                     f"run; one run folder per model and seed, <model>/seed<k>/); data and split: seed {s.seed}")
    else:
        lines.append(f"seed: {s.seed} (data, training, attacks, examples)")
    lines += [f"{k}: {v}" for k, v in s.settings.items()]
    return [Block("h2", "Provenance"), Block("code", "\n".join(lines))]


def _surface_seed_table(accs: Sequence[Any], eps: Sequence[float]) -> Table:
    """The surface over several seeds: each cell the mean over seeds with the range and each seed's value."""
    def cell(i: int, j: int) -> Optional[str]:
        vals = {k: (int(round(acc[i, j] * n[i, j])), int(n[i, j])) for k, (acc, n) in enumerate(accs)
                if not math.isnan(acc[i, j])}
        return fmt_acc_seeds(vals) if vals else None

    return surface_table(*accs[0], eps, eps, cell=cell)


def surface_blocks(s: StudyView) -> List[Block]:
    """Heat map and table of accuracy over (eps_audio x eps_visual) per model (over seeds: the mean's heat map,
    and a table of mean, range and each seed's value)."""
    out = [Block("h2", "Robustness surface: accuracy over (eps audio x eps visual)"),
           Block("p", s.settings.get("surface", ""))]
    eps = list(s.surface_eps)
    ran = {model: [k for k in s.model_seeds(model) if s.has_results(model, "results", surface=True, seed=k)]
           for model in SURFACE_MODELS}
    if not any(ran.values()):  # the demo: the surfaces are the full preset's
        return [out[0], Block("p", "This study ran no robustness surface; the full and paper presets run them "
                                   "(scripts/run_study.py --preset full).")]
    for model, reads in SURFACE_MODELS.items():
        seeds = ran[model]
        if not seeds:
            continue
        per_seed = [surface_matrix(s.results(model, surface=True, seed=k), eps, eps, reads) for k in seeds]
        mean = sum(acc for acc, _ in per_seed) / len(per_seed)
        over = f" (mean over seeds {', '.join(map(str, seeds))})" if len(seeds) > 1 else ""
        png = plot_surface(mean, eps, eps, s.out / f"surface_{model}.png",
                           f"{model}: accuracy (%) over the budget grid{over}")
        out.append(Block("img", f"{model}: robustness surface{over}", path=rel(png, s.out)))
        what = "% [95% CI]" if len(seeds) == 1 else "% mean over seeds (range: each seed)"
        out.append(Block("p", f"{model}: accuracy, {what}, rows eps audio, columns eps visual"
                              + ("" if len(reads) == 2 else f" (reads only {reads[0]}: constant along the other axis)")))
        table = surface_table(*per_seed[0], eps, eps) if len(seeds) == 1 else _surface_seed_table(per_seed, eps)
        out.append(Block("table", table=table))
    return out


ADV_CI = "adv acc, % [95% CI]"  # the column of "All rows" with each row's Wilson interval


def _with_ci(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The rows with their attacked accuracy's Wilson 95% interval (one seed's, as text)."""
    return [{**r, ADV_CI: fmt_acc_ci(int(round(float(r["adv_acc"]) * int(r["n_samples"]))), int(r["n_samples"]))}
            for r in rows]


def section_blocks(s: StudyView, sections: Sequence[SectionBlocks],
                   not_run: Sequence[Tuple[str, str, str]]) -> List[Block]:
    """The study sections' blocks (pipeline/study_sections.py), each under its heading, then one paragraph naming
    the sections this study did not run (``not_run``: title, what it runs, its --sections name)."""
    out: List[Block] = []
    for title, blocks in sections:
        out.append(Block("h2", title))
        out.extend(blocks(s))
    if not_run:
        out.append(Block("p", "Not run in this study (scripts/run_study.py --sections NAME adds one; --sections all "
                              "runs every one): " + "; ".join(f"{t} ({what}; --sections {n})" for t, what, n in not_run)
                              + "."))
    return out


def build_report(s: StudyView, sections: Sequence[SectionBlocks] = (),
                 not_run: Sequence[Tuple[str, str, str]] = ()) -> List[Block]:
    """Blocks of the report: tables from the runs' results.json, plots, the study sections' blocks
    (``sections``, ``not_run``: see ``section_blocks``), readings, commands."""
    B: List[Block] = [Block("h1", f"Audio-visual robustness on {s.settings['dataset_title']}")]
    concat = by_seed(s, "concat")
    first = concat[min(concat)][0]
    n_test, cav = int(first["n_samples"]), float(first["clean_acc"])
    several = len(s.seeds) > 1
    B.append(Block("p", f"{s.settings['dataset_text']}; {n_test} test clips), " + setup_text(s)))
    seeds_text = (f" The study trained and evaluated each model once per seed ({len(s.seeds)} seeds: "
                  f"{', '.join(map(str, s.seeds))}; a table's 'seeds' column says how many a row has). With several "
                  "seeds an accuracy is the mean over seeds, then in brackets the min-max range and, up to "
                  f"{MAX_SEEDS_LISTED} seeds, each seed's value in seed order; the interval of one accuracy covers "
                  "only the sampling of the test clips, the range also the training's variation. Each seed's Wilson "
                  "interval is in 'All rows'. Comparisons across seeds: the exact McNemar test is made in every seed "
                  f"both models were run with; the reading says 'higher' or 'lower' only when every seed's p < {ALPHA} "
                  "in the same direction ('higher in 3 of 3 seeds, each p < 0.05'), says a comparison flips when seeds "
                  "disagree in direction ('higher in 2 of 3 seeds, lower in 1') and 'not consistently different' when "
                  "only some seeds show it. Per-seed tests were chosen over a test stratified by seed "
                  "(Cochran-Mantel-Haenszel), which pools the seeds and can call a difference that one training "
                  "produced.") if several else ""
    B.append(Block("p", f"Statistics: every accuracy of one run is shown with its Wilson 95% interval in brackets. "
                        f"On {n_test} "
                        f"test clips the standard error of one accuracy is {100 * binomial_se(0.5, n_test):.1f} points at "
                        f"50% (sqrt(p(1-p)/n); {100 * binomial_se(cav, n_test):.1f} points at the concat model's "
                        f"clean {100 * cav:.1f}%), so a 95% interval spans about +-{100 * Z95 * binomial_se(0.5, n_test):.0f} "
                        "points. Comparisons are paired (all models see the same clips): the reading says 'higher' or "
                        f"'lower' only when the exact two-sided McNemar test gives p < {ALPHA}, and shows the discordant "
                        "counts and p." + seeds_text))
    uni_av = {m: by_seed(s, m) for m in ("audio", "visual", "concat")}
    attacks = [a for a in ATTACK_NAMES if any(r["attack"] == a for rows in uni_av["concat"].values() for r in rows)]
    names = [ATTACK_NAMES[a].split("-")[0] for a in attacks]
    B.append(Block("h2", "Unimodal vs audio-visual (concat) under "
                         + (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names))))
    for attack in attacks:
        B.append(Block("p", f"{ATTACK_NAMES[attack]}: accuracy, {acc_unit(uni_av)}"))
        B.append(Block("table", table=accuracy_table(uni_av, attack)))
    if "autoattack" in s.settings:
        B.append(Block("p", s.settings["autoattack"]))
    if "demo_leaves_out" in s.settings:
        B.append(Block("p", s.settings["demo_leaves_out"]))
    B.append(Block("p", "A unimodal model attacked on the modality it does not read keeps its clean accuracy: that "
                        "budget cannot change its output."))
    B.append(Block("h2", "Fusion heads under PGD-10"))
    heads = {h: by_seed(s, h) for h in s.fusions}
    if len(heads) < 2:  # the demo: concat only (the table above has it)
        B.append(Block("p", f"This study trained one fusion head ({', '.join(heads) or 'none'}): the comparison of "
                            "fusion heads runs in the full and paper presets (scripts/run_study.py --preset full)."))
    else:
        if several:
            B.append(Block("p", f"Accuracy, {acc_unit(heads)}"))
        B.append(Block("table", table=accuracy_table(heads, "pgd")))
    B.append(Block("h2", "Defenses"))
    defenses = present_defenses(s)
    if several:
        B.append(Block("p", f"Accuracy, {acc_unit({rid: by_seed(s, rid) for _, rid, _ in defenses})}"))
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
                        "unrolled through the solver, as the paper ran it. "
                        + (f"Adaptive worst case: per clip, the worst over {_adaptive_attacks(s, defenses)}."
                           if any(s.has_results(rid, "robustness") for _, rid, d in defenses if d) else
                           "The adaptive attacks on the defended model were not run in this study (the demo leaves "
                           "them to the full preset): its PGD row is the paper's own evaluation, not a robustness "
                           "claim.")
                        + (f" Not run in this study: {', '.join(missing)}." if missing else "")))
    B.extend(surface_blocks(s))
    B.extend(section_blocks(s, sections, not_run))
    B.append(Block("h2", "What the numbers say"))
    texts, ledger = readings(s, [(label, rid) for label, rid, defended in defenses if defended])
    B.extend(Block("p", t) for t in texts)
    per_seed = ledger.several_seeds
    B.append(Block("p", "Every paired test of the reading (A vs B on the same clips"
                        + (", one row per seed):" if per_seed else "):")))
    B.append(Block("table", table=Table([Column("comparison", "comparison (A vs B)"),
                                         *([Column("seed", "seed", numeric=True)] if per_seed else []),
                                         Column("n", "clips", numeric=True),
                                         Column("a_right_b_wrong", "A right, B wrong", numeric=True),
                                         Column("a_wrong_b_right", "A wrong, B right", numeric=True),
                                         Column("p_value", "exact McNemar p", numeric=True),
                                         Column("reading", "reading" + (" in this seed" if per_seed else "")),
                                         *([Column("across", "across seeds")] if per_seed else [])],
                                        ledger.as_rows())))
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
    if (s.out / RESULTS_LONG).is_file():
        B.append(Block("link", f"{RESULTS_LONG}: every result row of every evaluation of the study, one row per model, "
                               "seed, evaluation, attack, norm and budget (for your own plots)",
                               path=RESULTS_LONG))
    for rid in ("audio", "visual", "concat"):
        for seed, rows in uni_av[rid].items():
            B.append(Block("p", f"{rid}{f', seed {seed}' if several else ''}: every result row"))
            B.append(Block("table", table=results_table(_with_ci(rows), [
                "attack", "eps_audio", "eps_visual", "clean_acc", "adv_acc", ADV_CI, "success_rate",
                "max_delta_audio", "max_delta_visual", "snr_db_audio", "psnr_db_visual", "n_samples", "seconds"])))
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
