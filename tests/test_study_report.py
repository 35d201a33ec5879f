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
    """A StudyView with results and per-clip outcomes drawn from fixed accuracies (seeded)."""

    fusions = ["concat", "sum"]
    clips, seed = 10, 0
    surface_eps = [0.0, 0.006, 0.012]
    eps_unit = "input"
    # each run's args.json (the settings it was trained with)
    epochs = {"audio": 16, "visual": 16, "concat": 3, "sum": 3, "minsim": 3, "advtrain": 3, "banks": 1,
              "minsim-banks": 1}

    def __init__(self, out: Path) -> None:
        self.out, self.commands, self.timings = out, ["python main_attack.py --x"], {"a": 1.0, "total": 2.0}
        self.recorded, self.reused = {"a": 1.0}, set()
        self.settings = {"surface": "FGSM surface", "autoattack": "AutoAttack at demo scale"}
        rng = np.random.default_rng(0)
        self.rows: Dict[str, List[Dict[str, Any]]] = {}
        self.clip: Dict[str, Dict[Any, Dict[int, bool]]] = {}
        self.surf: Dict[str, List[Dict[str, Any]]] = {}
        for run, clean in (("audio", 0.5), ("visual", 0.45), ("concat", 0.9), ("sum", 0.8), ("minsim", 0.85),
                           ("advtrain", 0.7), ("banks", 0.8), ("minsim-banks", 0.8)):
            attacks = ["fgsm", "pgd", "autoattack"] if run in ("audio", "visual", "concat", "minsim", "advtrain") else ["pgd"]
            self.rows[run], self.clip[run] = [], {}
            base = rng.random(N) < clean
            for attack in attacks:
                for ea, ev in GRID:
                    ok = base if (ea, ev) == (0, 0) else base & (rng.random(N) < 0.3)
                    self.clip[run][row_key(attack, ea, ev)] = {i: bool(o) for i, o in enumerate(ok)}
                    self.rows[run].append({"attack": attack, "eps_audio": ea, "eps_visual": ev,
                                           "clean_acc": base.mean(), "adv_acc": ok.mean(), "n_samples": N,
                                           "eps_unit": self.eps_unit,
                                           "steps": 1 if attack == "fgsm" else 10})
            if run.endswith("banks"):
                self.clip[run][row_key(WORST_CASE, 0.006, 0.006)] = {i: False for i in range(N)}
            self.surf[run] = [{"attack": "fgsm", "eps_audio": a, "eps_visual": v, "adv_acc": 0.5, "n_samples": N}
                              for a in self.surface_eps for v in self.surface_eps]

    def results(self, run_id: str, name: str = "results", surface: bool = False) -> List[Dict[str, Any]]:
        if surface:
            return self.surf[run_id]
        if name == "robustness":
            return [{"eps_audio": 0.006, "eps_visual": 0.006, "robust_acc": 0.0, "n_samples": N, "flags": "none",
                     "attacks": "paper pgd, fgsm, square"}]
        return self.rows[run_id]

    def has_results(self, run_id: str, name: str, surface: bool = False) -> bool:
        return run_id in self.surf if surface else (name != "robustness" or run_id.endswith("banks"))

    def per_sample(self, run_id: str, surface: bool = False):
        return self.clip[run_id]

    def eval_path(self, run_id: str, key: str) -> Optional[Path]:
        return None

    def run_args(self, run_id: str) -> Dict[str, Any]:
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
    s.clip["concat"] = {}
    with pytest.raises(KeyError, match="per_sample.json has no row"):
        build_report(s)


def test_a_defence_the_study_did_not_run_is_left_out_and_named(tmp_path: Path) -> None:
    class WithoutBanksOnly(FakeStudy):
        def has_results(self, run_id: str, name: str, surface: bool = False) -> bool:
            return run_id != "banks" and super().has_results(run_id, name, surface)

        def results(self, run_id: str, name: str = "results", surface: bool = False):
            if run_id == "banks":
                raise FileNotFoundError("runs/banks has no finished evaluation")
            return super().results(run_id, name, surface)

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
    mixed.rows["audio"] = [dict(r, eps_unit="input") for r in mixed.rows["audio"]]
    intro = render_markdown(build_report(mixed)).split("## Unimodal")[0]
    assert "input units" in intro and "ImageNet-normalised" in intro and "the evaluations differ in units" in intro
