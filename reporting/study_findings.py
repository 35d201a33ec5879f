"""The study's findings as report blocks: every table, figure link and reading computed from the results of
the study's evaluations (see pipeline/study.py, which runs them).

``build_report(s)`` reads through a ``StudyView``: any object with the attributes below. Nothing here
runs a model; every sentence of the reading is computed from the numbers, with its comparison stated.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Sequence

from reporting.results import comparison_table, results_table
from reporting.study_report import Block, compare, pct, rel


class StudyView(Protocol):
    """What the report needs from a study."""

    out: Path
    clips: int
    epochs: int
    epochs_uni: int
    tune_epochs: int
    fusions: Sequence[str]
    commands: List[str]
    timings: Dict[str, float]

    def results(self, run_id: str, name: str = "results") -> List[Dict[str, Any]]: ...

    def has_results(self, run_id: str, name: str) -> bool: ...

    def eval_path(self, run_id: str, key: str) -> Optional[Path]: ...


def _row(rows, attack: str, audio: bool, visual: bool) -> Optional[Dict[str, Any]]:
    for r in rows:
        if r["attack"] == attack and (r["eps_audio"] > 0) == audio and (r["eps_visual"] > 0) == visual:
            return r
    return None


def build_report(s: StudyView) -> List[Block]:
    """Blocks of the report: tables from the runs' results.json, plots, readings, commands."""
    B: List[Block] = [Block("h1", "Audio-visual robustness on the embedded dataset")]
    n_test = s.results("concat")[0]["n_samples"]
    B.append(Block("p", f"Embedded synthetic dataset ({s.clips} clips per class; {n_test} test clips), "
                        f"unimodal models trained {s.epochs_uni} epochs from scratch, audio-visual models {s.epochs} epochs "
                        "starting from the unimodal nets; visual net resnet10 at 64x64, audio net anet on 8192 samples "
                        "(0.74 s at 11025 Hz). Budgets are L-inf in input units (visual pixels in [0,1], audio "
                        "waveform in [-1,1]); the paper grid (v, a) = (0,0), (0,0.012), (0.012,0), (0.006,0.006); "
                        "10 steps of eps/8 for PGD and MIM (paper settings). With this many test clips one "
                        f"accuracy has a standard error of about {100 * (0.25 / max(n_test, 1)) ** 0.5:.0f} points "
                        "at 50%."))
    # main table
    B.append(Block("h2", "Unimodal vs audio-visual (concat) under FGSM, PGD and MIM"))
    attacks = sorted({r["attack"] for r in s.results("concat")})
    for attack in attacks:
        B.append(Block("p", f"{attack.upper()}: accuracy (clean / audio attacked / visual attacked / both attacked)"))
        B.append(Block("table", table=comparison_table({m: s.results(m) for m in ("audio", "visual", "concat")}, attack)))
    B.append(Block("p", "A unimodal model attacked on the modality it does not read keeps its clean accuracy: that "
                        "budget cannot change its output (the row's 'attacked' field says 'none')."))
    # fusion table
    B.append(Block("h2", "Fusion heads under PGD"))
    heads = {h: s.results(h) for h in s.fusions}
    B.append(Block("table", table=comparison_table(heads, "pgd")))
    # defense table
    B.append(Block("h2", "Defenses under PGD"))
    rows = []
    for label, rid, kind in (("plain (concat)", "concat", "plain"), ("MinSim only", "minsim", "plain"),
                             ("PGD adversarial training", "advtrain", "plain"),
                             ("memory banks only", "banks", "defended"), ("MinSim + banks (paper)", "minsim-banks", "defended")):
        res = s.results(rid)
        row = {"model": label, "clean_acc": res[0]["clean_acc"]}
        for key, a, v in (("audio", True, False), ("visual", False, True), ("both", True, True)):
            r = _row(res, "pgd", a, v)
            row[f"pgd_{key}_acc"] = r["adv_acc"] if r else None
        if kind == "defended" and s.has_results(rid, "robustness"):
            rob = s.results(rid, "robustness")
            for key, a, v in (("audio", True, False), ("visual", False, True), ("both", True, True)):
                r = next((x for x in rob if (x["eps_audio"] > 0) == a and (x["eps_visual"] > 0) == v), None)
                row[f"adaptive_{key}_acc"] = r["robust_acc"] if r else None
            row["flags"] = "; ".join(sorted({x["flags"] for x in rob if x["flags"] != "none"})) or "none"
        rows.append(row)
    B.append(Block("table", table=results_table(rows, ["model", "clean_acc", "pgd_audio_acc", "pgd_visual_acc",
                                                       "pgd_both_acc", "adaptive_both_acc", "flags"])))
    B.append(Block("p", f"The two memory-bank models were fine-tuned for {s.tune_epochs} more epoch(s) at lr 1e-3 with "
                        "the banks fixed (paper step 3); the plain and MinSim models were not, so part of any clean-"
                        "accuracy difference can come from that extra training."))
    B.append(Block("p", "pgd_*: PGD-10 through the model as the paper ran it (for defended models: gradients "
                        "unrolled through the solver). adaptive_*: per-sample worst case over FGSM, PGD with BPDA, "
                        "PGD unrolled, and PGD with random restarts (the robustness table of the run's evaluation)."))
    # reading
    B.append(Block("h2", "What the numbers say"))
    B.extend(Block("p", t) for t in readings(s, rows))
    # figures
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
            B.append(Block("link", f"{rid}: adversarial examples (frames, audio players"
                                   f"{', localization maps' if rid == 'attention' else ''})", path=rel(p, s.out)))
    # full tables, commands, config
    B.append(Block("h2", "All rows"))
    for rid in ("audio", "visual", "concat"):
        B.append(Block("p", f"{rid}: every result row"))
        B.append(Block("table", table=results_table(s.results(rid), [
            "attack", "eps_audio", "eps_visual", "clean_acc", "adv_acc", "success_rate", "max_delta_audio",
            "max_delta_visual", "snr_db_audio", "psnr_db_visual", "seconds"])))
    B.append(Block("h2", "Commands"))
    B.append(Block("code", "\n".join(s.commands)))
    B.append(Block("h2", "Timings (s)"))
    B.append(Block("code", "\n".join(f"{k}: {v:.1f}" for k, v in s.timings.items())))
    return B


def readings(s: StudyView, defense_rows: List[Dict[str, Any]]) -> List[str]:
    """Plain-language statements computed from the results (comparisons within 2 standard errors are
    called 'about the same')."""
    out = []
    A, V, AV = s.results("audio"), s.results("visual"), s.results("concat")
    n = AV[0]["n_samples"]
    ca, cv, cav = A[0]["clean_acc"], V[0]["clean_acc"], AV[0]["clean_acc"]
    best_uni = max(ca, cv)
    out.append(f"Clean accuracy: audio {pct(ca)}, visual {pct(cv)}, audio-visual (concat) {pct(cav)}: integration is "
               f"{compare(cav, best_uni, n)} the better unimodal model on clean data.")
    for attack in sorted({r['attack'] for r in AV}):
        ra, rv = _row(A, attack, True, False), _row(V, attack, False, True)
        av_a, av_v, av_b = _row(AV, attack, True, False), _row(AV, attack, False, True), _row(AV, attack, True, True)
        if not all((ra, rv, av_a, av_v, av_b)):
            continue
        out.append(f"{attack.upper()}: attacking only the audio leaves the audio model at {pct(ra['adv_acc'])} and the "
                   f"audio-visual model at {pct(av_a['adv_acc'])} ({compare(av_a['adv_acc'], ra['adv_acc'], n)} the "
                   f"audio model); attacking only the visual input leaves the visual model at {pct(rv['adv_acc'])} and "
                   f"the audio-visual model at {pct(av_v['adv_acc'])} ({compare(av_v['adv_acc'], rv['adv_acc'], n)} the "
                   "visual model); attacking "
                   f"both (half the budget each) leaves the audio-visual model at {pct(av_b['adv_acc'])}, which is "
                   f"{compare(av_b['adv_acc'], max(ra['adv_acc'], rv['adv_acc']), n)} the better unimodal model "
                   "under its single-modality attack.")
    heads = {}
    for h in s.fusions:
        r = _row(s.results(h), "pgd", True, True)
        if r:
            heads[h] = r["adv_acc"]
    if heads:
        best = max(heads, key=heads.get)
        worst = min(heads, key=heads.get)
        out.append(f"Fusion heads under PGD on both inputs: {', '.join(f'{h} {pct(a)}' for h, a in heads.items())}. "
                   f"The most robust is {best}, {compare(heads[best], heads[worst], n)} the least robust ({worst}).")
    for r in defense_rows:
        if "adaptive_both_acc" in r and r.get("pgd_both_acc") is not None and r.get("adaptive_both_acc") is not None:
            out.append(f"{r['model']}: PGD as the paper ran it leaves {pct(r['pgd_both_acc'])} on both inputs; the "
                       f"strongest adaptive attacks leave {pct(r['adaptive_both_acc'])} "
                       f"({'the defense does not survive adaptive attacks' if r['adaptive_both_acc'] + 1e-9 < r['pgd_both_acc'] else 'adaptive attacks do no better than the paper attack'}); "
                       f"gradient-masking flags: {r['flags']}.")
    adv = next((r for r in defense_rows if r["model"].startswith("PGD adversarial")), None)
    if adv and adv.get("pgd_both_acc") is not None:
        out.append(f"PGD adversarial training keeps {pct(adv['pgd_both_acc'])} under PGD on both inputs at a clean "
                   f"accuracy of {pct(adv['clean_acc'])}.")
    return out
