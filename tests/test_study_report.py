"""The study report from a fake study: intervals on accuracies, McNemar behind the reading, words in headers,
the surface, provenance; built without running a model."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytest

from reporting.per_sample import WORST_CASE, row_key
from reporting.study_findings import build_report
from reporting.study_report import render_html, render_markdown

N = 40
GRID = [(0.0, 0.0), (0.012, 0.0), (0.0, 0.012), (0.006, 0.006)]


class FakeStudy:
    """A StudyView with results and per-clip outcomes drawn from fixed accuracies (seeded), one run of each model per
    seed of ``seeds`` (``seeds_of`` narrows a model to fewer seeds, as a study does for rows other than the
    headline ones)."""

    fusions = ["concat", "sum"]
    clips, seed = 10, 0
    seeds: tuple = (0,)
    seeds_of: Dict[str, tuple] = {}
    surface_eps = [0.0, 0.006, 0.012]
    eps_unit = "input"
    # each run's args.json (the settings it was trained with)
    epochs = {"audio": 16, "visual": 16, "concat": 3, "sum": 3, "minsim": 3, "advtrain": 3, "banks": 1,
              "minsim-banks": 1}
    accuracies = (("audio", 0.5), ("visual", 0.45), ("concat", 0.9), ("sum", 0.8), ("minsim", 0.85),
                  ("advtrain", 0.7), ("banks", 0.8), ("minsim-banks", 0.8))

    def __init__(self, out: Path) -> None:
        self.out, self.commands, self.timings = out, ["python main_attack.py --x"], {"a": 1.0, "total": 2.0}
        self.recorded, self.reused = {"a": 1.0}, set()
        self.settings = {"surface": "FGSM surface", "autoattack": "AutoAttack at demo scale",
                         "dataset_title": "the embedded dataset",
                         "dataset_text": "Embedded synthetic dataset (40 clips per class"}
        rng = np.random.default_rng(0)
        # run -> seed -> rows / per-clip outcomes / surface rows
        self.rows: Dict[str, Dict[int, List[Dict[str, Any]]]] = {}
        self.clip: Dict[str, Dict[int, Dict[Any, Dict[int, bool]]]] = {}
        self.surf: Dict[str, Dict[int, List[Dict[str, Any]]]] = {}
        for run, clean in self.accuracies:
            attacks = ["fgsm", "pgd", "autoattack"] if run in ("audio", "visual", "concat", "minsim", "advtrain") else ["pgd"]
            self.rows[run], self.clip[run], self.surf[run] = {}, {}, {}
            for seed in self.model_seeds(run):
                rows, clip = self.rows[run].setdefault(seed, []), self.clip[run].setdefault(seed, {})
                base = rng.random(N) < clean
                for attack in attacks:
                    for ea, ev in GRID:
                        ok = base if (ea, ev) == (0, 0) else base & (rng.random(N) < 0.3)
                        clip[row_key(attack, ea, ev)] = {i: bool(o) for i, o in enumerate(ok)}
                        rows.append({"attack": attack, "eps_audio": ea, "eps_visual": ev,
                                     "clean_acc": base.mean(), "adv_acc": ok.mean(), "n_samples": N,
                                     "eps_unit": self.eps_unit, "steps": 1 if attack == "fgsm" else 10})
                if run.endswith("banks"):
                    clip[row_key(WORST_CASE, 0.006, 0.006)] = {i: False for i in range(N)}
                self.surf[run][seed] = [{"attack": "fgsm", "eps_audio": a, "eps_visual": v,
                                         "adv_acc": 0.5 + 0.1 * seed, "n_samples": N}
                                        for a in self.surface_eps for v in self.surface_eps]

    def model_seeds(self, run_id: str) -> List[int]:
        return list(self.seeds_of.get(run_id, self.seeds))

    def _seed(self, run_id: str, seed: Optional[int]) -> int:
        return self.model_seeds(run_id)[0] if seed is None else seed

    def results(self, run_id: str, name: str = "results", surface: bool = False,
                seed: Optional[int] = None) -> List[Dict[str, Any]]:
        seed = self._seed(run_id, seed)
        if surface:
            return self.surf[run_id][seed]
        if name == "robustness":
            return [{"eps_audio": 0.006, "eps_visual": 0.006, "robust_acc": 0.0, "n_samples": N, "flags": "none",
                     "attacks": "paper pgd, fgsm, square"}]
        return self.rows[run_id][seed]

    def has_results(self, run_id: str, name: str, surface: bool = False, seed: Optional[int] = None) -> bool:
        return run_id in self.surf if surface else (name != "robustness" or run_id.endswith("banks"))

    def per_sample(self, run_id: str, surface: bool = False, seed: Optional[int] = None):
        return self.clip[run_id][self._seed(run_id, seed)]

    def eval_path(self, run_id: str, key: str, seed: Optional[int] = None) -> Optional[Path]:
        return None

    def run_args(self, run_id: str, seed: Optional[int] = None) -> Dict[str, Any]:
        return {"num_epoch": self.epochs[run_id], "arch_sound": "anet_lite", "arch_frame": "resnet10",
                "imgSize": 32, "audLen": 8192, "audRate": 11025, "lr_classifier": 1e-3}


def test_report_statistics_headers_surface_provenance(tmp_path: Path) -> None:
    blocks = build_report(FakeStudy(tmp_path))
    md, page = render_markdown(blocks), render_html(blocks, "t")
    assert "[95% CI]" in md and "Wilson 95% interval" in md and "standard error of one accuracy is 7.9 points" in md
    # headers in words, never raw keys
    assert "PGD-10 on audio, eps 0.012" in md and "AutoAttack on audio and visual, eps 0.006 each" in md
    assert "adaptive worst case on audio and visual, eps 0.006 each" in md
    # the attacks behind the worst case are the ones robustness.json names, not a fixed list
    assert ("worst over the paper's PGD, FGSM through the other gradient mode (BPDA or unrolled), the black-box "
            "Square attack.") in md and "APGD-CE" not in md
    for raw in ("pgd_audio_acc", "pgd_both_acc", "adaptive_both_acc", "clean_acc |"):
        assert raw not in md
    # every comparison of the reading is a McNemar test, and their number is stated
    reading = md.split("## What the numbers say")[1].split("## Figures")[0]
    n_words = sum(reading.count(w) for w in ("higher than", "lower than", "about the same as"))
    n_tests = reading.count("exact McNemar on")
    assert n_words == n_tests > 5
    assert f"{n_tests} paired comparisons were made" in reading
    # concat at 90% clean against unimodal ~50% on 40 clips: a real difference, called so with its p
    assert "The audio-visual model is higher than the better unimodal model" in reading
    for model in ("audio", "visual", "concat"):
        assert (tmp_path / f"surface_{model}.png").is_file()
    assert "## Provenance" in md and "torch " in md and "CPU:" in md and "seed: 0" in md
    assert "sum of the steps (each in the call that did its work): 1.0" in md
    assert page.count("<table") == md.count("\n|:") or page.count("<table") > 10


def test_reading_fails_loudly_without_per_clip_outcomes(tmp_path: Path) -> None:
    s = FakeStudy(tmp_path)
    s.clip["concat"][0] = {}
    with pytest.raises(KeyError, match="per_sample.json has no row"):
        build_report(s)


def test_a_defence_the_study_did_not_run_is_left_out_and_named(tmp_path: Path) -> None:
    class WithoutBanksOnly(FakeStudy):
        def has_results(self, run_id: str, name: str, surface: bool = False, seed: Optional[int] = None) -> bool:
            return run_id != "banks" and super().has_results(run_id, name, surface, seed)

        def results(self, run_id: str, name: str = "results", surface: bool = False, seed: Optional[int] = None):
            if run_id == "banks":
                raise FileNotFoundError("runs/banks has no finished evaluation")
            return super().results(run_id, name, surface, seed)

    md = render_markdown(build_report(WithoutBanksOnly(tmp_path)))
    assert "| memory banks only" not in md and "| MinSim + banks (paper)" in md
    assert "Not run in this study: memory banks only." in md
    full = render_markdown(build_report(FakeStudy(tmp_path)))
    assert "| memory banks only" in full and "Not run in this study" not in full


def test_settings_in_the_report_are_the_runs_own(tmp_path: Path) -> None:
    """Epochs, sizes and the eps unit come from the runs' args.json and the evaluations' rows, never from the
    study's flags of the current call (a resumed study that reused 1-epoch runs says 1 epoch)."""

    class Recorded(FakeStudy):
        eps_unit = "normalized"
        epochs = {**FakeStudy.epochs, "audio": 1, "visual": 1, "concat": 2, "sum": 2, "minsim-banks": 4}

    md = render_markdown(build_report(Recorded(tmp_path)))
    intro = md.split("## Unimodal")[0]
    assert "unimodal models trained 1 epochs" in intro and "audio-visual models 2 epochs" in intro
    assert "resnet10 at 32x32" in intro and "on 8192 samples (0.74 s at 11025 Hz)" in intro
    assert "ImageNet-normalised units" in intro and "input units" not in intro and "10 steps of eps/8" in intro
    assert "fine-tuned for banks 1, minsim-banks 4 (epochs differ) more epoch(s) at lr 0.001" in md
    mixed = Recorded(tmp_path)
    mixed.rows["audio"][0] = [dict(r, eps_unit="input") for r in mixed.rows["audio"][0]]
    intro = render_markdown(build_report(mixed)).split("## Unimodal")[0]
    assert "input units" in intro and "ImageNet-normalised" in intro and "the evaluations differ in units" in intro


class ThreeSeeds(FakeStudy):
    """The headline models over 3 seeds, the other rows over 1 (as a study may run them)."""

    seeds = (0, 1, 2)
    seeds_of = {run: (0,) for run in ("sum", "minsim", "advtrain", "banks", "minsim-banks")}


def test_single_seed_reads_as_before(tmp_path: Path) -> None:
    md = render_markdown(build_report(FakeStudy(tmp_path)))
    assert "(range " not in md and "| seeds |" not in md and "per seed" not in md and "seed: 0 (data" in md


def test_seeds_mean_range_and_per_seed_tests(tmp_path: Path) -> None:
    s = ThreeSeeds(tmp_path)
    md = render_markdown(build_report(s))
    table = md.split("## Unimodal")[1].split("## Fusion")[0]
    # the concat row: 3 seeds, clean as mean with range and each seed's value, from the rows themselves
    concat = next(line for line in table.splitlines() if line.startswith("| concat"))
    accs = [100 * s.rows["concat"][k][0]["clean_acc"] for k in (0, 1, 2)]
    want = f"{sum(accs) / 3:.1f}% (range {min(accs):.1f}-{max(accs):.1f}: {', '.join(f'{a:.1f}' for a in accs)})"
    assert concat.startswith("| concat | 3 | " + want)
    # a row with one seed keeps its Wilson interval, and the table says how many seeds each row has
    fusion = md.split("## Fusion heads")[1].split("## Defenses")[0]
    assert "| concat | 3 |" in fusion and "| sum | 1 |" in fusion
    assert "% [" in fusion.split("| sum | 1 |")[1].splitlines()[0]
    reading = md.split("## What the numbers say")[1].split("## Figures")[0]
    assert "of 3 seeds" in reading and "exact McNemar per seed on 40 paired clips: seed 0" in reading
    # advtrain has seed 0 only: its comparison with concat is one test, the one-seed sentence
    assert "the adversarially trained model is " in reading and "the plain model (exact McNemar on 40" in reading
    ledger = reading.split("one row per seed):")[1]
    assert ledger.count("| clean: concat vs better unimodal |") == 3 and "| across seeds |" in ledger
    assert "seeds: 0, 1, 2 (initialisation" in md and "concat, seed 2: every result row" in md
    assert "mean over seeds 0, 1, 2" in md  # the surface: the mean's heat map, cells over seeds
    surface = md.split("## Robustness surface")[1].split("## What")[0]
    assert "60.0% (range 50.0-70.0: 50.0, 60.0, 70.0)" in surface


def test_a_finding_that_flips_between_seeds_is_reported_as_such(tmp_path: Path) -> None:
    s = ThreeSeeds(tmp_path)
    for seed, concat_right in ((0, range(40)), (1, range(40)), (2, range(20))):
        # concat right on every clip in seeds 0 and 1 (20 vs 0 discordant against the unimodal models, right on
        # clips 0-19 only), on 0-19 only in seed 2, where the unimodal models are right on every clip (0 vs 20)
        uni_right = range(40) if seed == 2 else range(20)
        s.clip["concat"][seed][row_key("fgsm", 0, 0)] = {i: i in concat_right for i in range(N)}
        for run in ("audio", "visual"):
            s.clip[run][seed][row_key("fgsm", 0, 0)] = {i: i in uni_right for i in range(N)}
    reading = render_markdown(build_report(s)).split("## What the numbers say")[1]
    assert ("The audio-visual model against the better unimodal model (audio) flips between seeds: higher in 2 of 3 "
            "seeds, lower in 1" in reading or "The audio-visual model against the better unimodal model (visual) "
            "flips between seeds: higher in 2 of 3 seeds, lower in 1" in reading)
    assert "| clean: concat vs better unimodal | 2 |" in reading and "higher in 2 of 3 seeds, lower in 1 |" in reading


def _fake_eval(folder: Path, rows: List[Dict[str, Any]]) -> None:
    from reporting.results import write_results

    folder.mkdir(parents=True)
    write_results(rows, folder, name="results")


def _row(attack: str, ea: float, ev: float, adv: float, norm: str = "Linf") -> Dict[str, Any]:
    return {"attack": attack, "eps_audio": ea, "eps_visual": ev, "clean_acc": 0.9, "adv_acc": adv, "n_samples": N,
            "norm_audio": "snr" if norm == "mixed" else norm, "norm_visual": "L2" if norm == "mixed" else norm}


def test_results_long_from_the_study_record(tmp_path: Path) -> None:
    """results_long.csv is rebuilt from the evaluation folders study.json names, per model and seed; an eval folder
    no step names (a newer one) is not read; a single-seed study keeps <out>/<model>/."""
    import csv
    import json

    from reporting.study_results import RESULTS_LONG, StudyRecord, main, write_results_long
    from utils.errors import run_cli

    out = tmp_path / "study"
    for seed in (0, 1):
        _fake_eval(out / "concat" / f"seed{seed}" / "evals" / "m1", [_row("pgd", 0, 0, 0.9), _row("pgd", 0.006, 0.006, 0.1 * seed)])
        _fake_eval(out / "concat" / f"seed{seed}" / "evals" / "a1", [_row("autoattack", 0.006, 0.006, 0.05, "mixed")])
    _fake_eval(out / "concat" / "seed0" / "evals" / "zz-newer", [_row("fgsm", 0, 0, 0.5)])
    steps = {f"attack concat {k}": {"run": "concat", "seed": k, "kind": "main", "eval_id": "m1"} for k in (0, 1)}
    steps.update({f"aa concat {k}": {"run": "concat", "seed": k, "kind": "aa", "eval_id": "a1"} for k in (0, 1)})
    steps["train concat 0"] = {"run": "concat", "seed": 0}
    (out / "study.json").write_text(json.dumps({"settings": {"seed": 0}, "seeds": [0, 1], "steps": steps}))
    path = write_results_long(out)
    assert path == out / RESULTS_LONG
    rows = list(csv.DictReader(path.open()))
    assert [r["seed"] for r in rows] == ["0", "0", "1", "1", "0", "1"] and {r["model"] for r in rows} == {"concat"}
    assert list(rows[0]) == ["model", "seed", "evaluation", "attack", "norm", "eps_audio", "eps_visual", "clean_acc",
                             "adv_acc", "n", "eval_folder"]
    assert rows[3]["eval_folder"] == "concat/seed1/evals/m1" and float(rows[3]["adv_acc"]) == pytest.approx(0.1)
    assert rows[4]["norm"] == "audio=snr,visual=L2" and rows[0]["norm"] == "Linf" and rows[0]["n"] == str(N)
    assert "fgsm" not in {r["attack"] for r in rows}  # zz-newer: no step names it
    rec = StudyRecord(out)
    assert rec.model_seeds("concat") == [0, 1] and len(rec.results("concat", seed=1)) == 3
    # a single-seed study (no "seeds", steps without a seed): <out>/<model>/ as before
    one = tmp_path / "one"
    _fake_eval(one / "audio" / "evals" / "e", [_row("fgsm", 0.012, 0, 0.3)])
    (one / "study.json").write_text(json.dumps({"settings": {"seed": 4}, "steps": {
        "attack audio": {"run": "audio", "kind": "main", "eval_id": "e"}}}))
    rows = list(csv.DictReader(write_results_long(one).open()))
    assert [(r["model"], r["seed"], r["eval_folder"]) for r in rows] == [("audio", "4", "audio/evals/e")]
    # callable alone; a folder without a study record: one line, exit 2, nothing written
    assert run_cli(main, [str(one)]) == 0
    assert run_cli(main, [str(tmp_path / "none")]) == 2 and not (tmp_path / "none").exists()


def test_report_commands_are_relative_and_list_each_flag_once(tmp_path: Path) -> None:
    from reporting.study_report import command_text

    repo = tmp_path / "repo"
    argv = ["main_attack.py", "--list_train", str(repo / "data" / "synthetic" / "train.csv"), "--batch_size_per_gpu",
            "16", "--eps", "audio=0,visual=0", "audio=0.006,visual=0", "--no_progress", "--batch_size_per_gpu", "48",
            "--ckpt", str(repo / "runs" / "demo"), "--lr", "-1"]
    text = command_text(argv, repo)
    assert text == ("python main_attack.py --list_train data/synthetic/train.csv --eps audio=0,visual=0 "
                    "audio=0.006,visual=0 --no_progress --batch_size_per_gpu 48 --ckpt runs/demo --lr -1")
    assert str(tmp_path) not in text
