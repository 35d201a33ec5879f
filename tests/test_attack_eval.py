"""Tests of attacks/metrics.py and attacks/evaluate.py (the attack-grid evaluation)."""
from __future__ import annotations

import copy
import logging
import math
import threading
from typing import Dict, List

import pytest
import torch

from attacks import create_attack
from attacks.evaluate import evaluate_attack_grid
from reporting.results import markdown_table
from attacks.metrics import PAPER_EPS_GRID, format_eps, linf, max_delta, parse_eps, psnr_db, snr_db
from tests.conftest import ToyAV
from tests.test_attacks import make_batch

ROW_KEYS = {"attack", "eps_audio", "eps_visual", "eps_unit", "steps", "random_start", "restarts", "attacked",
            "clean_acc", "adv_acc", "success_rate", "max_delta_audio", "max_delta_visual", "snr_db_audio",
            "psnr_db_visual", "n_samples", "seconds", "norm_audio", "norm_visual", "queries", "flags"}


def loader(n_batches: int = 3, b: int = 5, seed: int = 0) -> List[Dict[str, torch.Tensor]]:
    return [make_batch(b=b, length=48, frames=1, size=8, seed=seed + i) for i in range(n_batches)]


# --- metrics --------------------------------------------------------------------------------------------

def test_parse_eps_reads_both_orders_and_fills_missing_with_zero():
    assert parse_eps("visual=0.006,audio=0.012") == {"audio": 0.012, "visual": 0.006}
    assert parse_eps(" audio = 1e-3 ") == {"audio": 0.001, "visual": 0.0}
    assert parse_eps(format_eps({"visual": 0.006, "audio": 0.0})) == {"audio": 0.0, "visual": 0.006}


@pytest.mark.parametrize("text, pattern", [
    ("", "empty"), ("0.006", "not modality=value"), ("visual=0.1,sound=0.1", "unknown modality 'sound'"),
    ("visual=abc", "not a number"), ("visual=-1", ">= 0"), ("visual=1,visual=2", "given twice"),
    ("visual=inf", ">= 0"), ("visual=0.1;audio=0.1", "not modality=value"),
])
def test_parse_eps_rejects_malformed_strings_naming_the_valid_form(text, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        parse_eps(text)
    assert "visual=<float>,audio=<float>" in str(info.value)


def test_snr_psnr_and_linf_per_sample():
    clean = torch.full((2, 3, 4, 4), 0.5)
    adv = clean.clone()
    adv[0] += 0.01
    adv[1, 0, 0, 0] += 0.1
    assert psnr_db(clean, adv)[0].item() == pytest.approx(40.0, abs=1e-3)  # float32 inputs
    torch.testing.assert_close(linf(clean, adv), torch.tensor([0.01, 0.1], dtype=torch.float64), atol=1e-7, rtol=0)
    audio = torch.ones(2, 1, 10) * 0.5
    noisy = audio.clone()
    noisy[0] += 0.05  # SNR = 20 log10(0.5 / 0.05) = 20 dB
    snr = snr_db(audio, noisy)
    assert snr[0].item() == pytest.approx(20.0, abs=1e-4) and math.isinf(snr[1].item())
    assert max_delta({"audio": audio, "visual": clean}, {"audio": noisy, "visual": adv}) == pytest.approx(
        {"audio": 0.05, "visual": 0.1}, abs=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        snr_db(audio, noisy[:1])


# --- the grid -------------------------------------------------------------------------------------------

def test_grid_rows_have_the_documented_keys_and_the_clean_row_matches():
    model = ToyAV(seed=1)
    rows = evaluate_attack_grid(model, loader(), ["fgsm", "pgd"], None, "cpu", steps=3, progress=False)
    assert len(rows) == 2 * len(PAPER_EPS_GRID)
    for row in rows:
        assert set(row) == ROW_KEYS
        assert row["n_samples"] == 15
        for m in ("audio", "visual"):
            assert row[f"max_delta_{m}"] <= row[f"eps_{m}"] + 1e-6
    clean_rows = [r for r in rows if r["eps_audio"] == 0 and r["eps_visual"] == 0]
    assert len(clean_rows) == 2
    for r in clean_rows:
        assert r["adv_acc"] == r["clean_acc"] and r["attacked"] == "none" and r["success_rate"] in (0.0, None)
        assert r["snr_db_audio"] is None and r["psnr_db_visual"] is None
    both = [r for r in rows if r["attack"] == "pgd" and r["eps_audio"] == 0.006 and r["eps_visual"] == 0.006][0]
    assert both["attacked"] == "audio+visual" and both["steps"] == 3
    assert both["max_delta_audio"] == pytest.approx(3 * 0.006 / 8, abs=1e-6)  # 3 steps of eps/8
    assert both["psnr_db_visual"] > 30
    assert [r["steps"] for r in rows if r["attack"] == "fgsm"] == [1] * 4
    table = markdown_table(rows)
    assert table.count("\n") == len(rows) + 2 and "| pgd | 0.006 | 0.006 | input | 3 |" in table
    assert table.rstrip().endswith("|") and "audio+visual" in table


def test_grid_accuracies_match_a_direct_computation():
    model = ToyAV(seed=2, num_classes=3)
    data = [make_batch(b=6, length=48, frames=None, size=8, seed=10 + i, classes=3) for i in range(2)]
    eps = {"audio": 0.1, "visual": 0.1}
    rows = evaluate_attack_grid(model, data, ["pgd"], [eps], "cpu", steps=4, progress=False)
    attack = create_attack("pgd", model, eps=eps, steps=4)
    clean_ok, adv_ok = [], []
    model.eval()
    for batch in data:
        inputs = {"audio": batch["audio"], "visual": batch["visual"]}
        adv = attack(inputs, batch["label"])
        with torch.no_grad():
            clean_ok.append(model(**inputs).argmax(1) == batch["label"])
            adv_ok.append(model(**adv).argmax(1) == batch["label"])
    clean_ok, adv_ok = torch.cat(clean_ok), torch.cat(adv_ok)
    row = rows[0]
    assert row["clean_acc"] == clean_ok.sum().item() / clean_ok.numel()
    assert row["adv_acc"] == adv_ok.sum().item() / adv_ok.numel()
    assert row["success_rate"] == (clean_ok & ~adv_ok).sum().item() / clean_ok.sum().item()
    assert row["adv_acc"] < row["clean_acc"]  # the attack works on this toy


def test_clean_predictions_are_computed_once_per_batch():
    class Counting(ToyAV):
        calls = 0

        def forward(self, audio=None, visual=None):
            type(self).calls += 1
            return super().forward(audio, visual)

    model = Counting(seed=3)
    Counting.calls = 0  # the constructor's calibration forward does not count
    grid = ["visual=0,audio=0", "visual=0.01,audio=0", "visual=0,audio=0.01"]
    evaluate_attack_grid(model, loader(n_batches=2), ["fgsm", "pgd"], grid, "cpu", steps=2, progress=False)
    # per batch: 1 clean forward; fgsm rows 1 + 1 (adv) each; pgd rows 2 + 1 each; zero rows nothing;
    # on every batch 3 more: the sanity checks (two forwards for randomness, one with gradients)
    assert Counting.calls == 2 * (1 + 2 * 2 + 2 * 3 + 3)


def test_unimodal_model_keeps_every_grid_row_and_marks_what_was_attacked(caplog):
    model = ToyAV(modalities=("visual",), seed=4)
    with caplog.at_level(logging.WARNING, logger="attacks.evaluate"):
        rows = evaluate_attack_grid(model, loader(), ["pgd"], None, "cpu", steps=2, progress=False)
    assert [(r["eps_visual"], r["eps_audio"]) for r in rows] == [(g["visual"], g["audio"]) for g in PAPER_EPS_GRID]
    audio_only = rows[1]
    assert audio_only["attacked"] == "none" and audio_only["adv_acc"] == audio_only["clean_acc"]
    assert audio_only["max_delta_audio"] == 0.0 and audio_only["snr_db_audio"] is None
    assert "only visual" in caplog.text and "audio budget" in caplog.text
    both = rows[3]
    assert both["attacked"] == "visual" and both["max_delta_audio"] == 0.0 and both["max_delta_visual"] > 0


def test_on_batch_sees_every_row_and_batch():
    seen = []
    evaluate_attack_grid(ToyAV(seed=5), loader(n_batches=2), ["fgsm"], ["visual=0.01"], "cpu", progress=False,
                         on_batch=lambda info: seen.append((info["attack"], info["batch_index"],
                                                            info["adv"]["visual"].shape[0])))
    assert seen == [("fgsm", 0, 5), ("fgsm", 1, 5)]


def test_bad_arguments_raise():
    model = ToyAV()
    with pytest.raises(KeyError, match="fgsm, .*mim, .*pgd"):
        evaluate_attack_grid(model, loader(1), ["bim"], None, "cpu", progress=False)
    with pytest.raises(ValueError, match="reduce_max"):
        evaluate_attack_grid(model, loader(1), ["pgd"], None, "cpu", progress=False, reduce=lambda t: t)
    with pytest.raises(ValueError, match="valid form"):
        evaluate_attack_grid(model, loader(1), ["pgd"], ["visual:0.1"], "cpu", progress=False)
    with pytest.raises(ValueError, match="valid eps_unit values"):
        evaluate_attack_grid(model, loader(1), ["pgd"], None, "cpu", eps_unit="pixel", progress=False)
    with pytest.raises(KeyError, match="label"):
        evaluate_attack_grid(model, [{"audio": torch.zeros(1, 1, 48), "visual": torch.zeros(1, 3, 8, 8)}],
                             ["pgd"], None, "cpu", progress=False)


class _ThreadGroup:
    """Two threads standing in for two DDP processes: sum and max all-reduces through a barrier."""

    def __init__(self, world: int) -> None:
        self.world = world
        self.barrier = threading.Barrier(world)
        self.slots: Dict[tuple, torch.Tensor] = {}

    def reducer(self, rank: int, op: str):
        def reduce(t: torch.Tensor) -> torch.Tensor:
            self.slots[(op, rank)] = t.clone()
            self.barrier.wait()
            parts = torch.stack([self.slots[(op, r)] for r in range(self.world)])
            out = parts.sum(0) if op == "sum" else parts.amax(0)
            self.barrier.wait()
            return out
        return reduce


def test_two_processes_equal_one_process():
    model = ToyAV(seed=6)
    data = loader(n_batches=4, b=3, seed=20)
    kw = dict(attack_names=["fgsm", "mim"], eps_grid=None, device="cpu", steps=2, progress=False)
    single = evaluate_attack_grid(model, data, **kw)
    group, results = _ThreadGroup(2), {}
    replicas = [copy.deepcopy(model) for _ in range(2)]  # one model per "process", as under DDP

    def worker(rank: int) -> None:
        results[rank] = evaluate_attack_grid(replicas[rank], data[rank::2], reduce=group.reducer(rank, "sum"),
                                             reduce_max=group.reducer(rank, "max"), **kw)

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert set(results) == {0, 1}
    for a, b, c in zip(single, results[0], results[1]):
        assert b == c
        for key in ROW_KEYS - {"seconds", "snr_db_audio", "psnr_db_visual"}:
            assert a[key] == b[key], key
        for key in ("snr_db_audio", "psnr_db_visual"):
            assert (a[key] is None and b[key] is None) or a[key] == pytest.approx(b[key], rel=1e-12)


def test_example_selection_covers_every_class_and_both_outcomes() -> None:
    """The examples page's clips: seeded rank per (class, outcome) bucket, independent of batch order."""
    import torch.nn as nn

    from pipeline.attack_eval import ExampleCollector, example_rank

    class Audio(nn.Module):
        modalities = ("audio",)

    cats = ["a", "b", "c", "d"]
    ids = [f"{cats[i % 4]}/clip{i:02d}" for i in range(32)]
    labels = torch.tensor([i % 4 for i in range(32)])
    clean_pred = labels.clone()
    clean_pred[28:] = (labels[28:] + 1) % 4  # 4 clips wrong on clean
    adv_pred = clean_pred.clone()
    adv_pred[:14] = (labels[:14] + 1) % 4  # fooled: clips 0..13, resisted: 14..27

    def feed(col: ExampleCollector, order: List[int]) -> None:
        for start in range(0, 32, 8):
            idx = order[start:start + 8]
            audio = torch.rand(len(idx), 1, 16) * 2 - 1
            col({"attack": "pgd", "attacked": ("audio",), "inputs": {"audio": audio}, "adv": {"audio": audio},
                 "labels": labels[idx], "clean_pred": clean_pred[idx], "adv_pred": adv_pred[idx],
                 "batch": {"id": [ids[i] for i in idx]}})

    def chosen(order: List[int], n: int, seed: int = 0) -> List[tuple]:
        col = ExampleCollector(Audio(), cats, n, "pgd", ("audio",), 8000, seed=seed)
        feed(col, order)
        return [(e["id"], e["metrics"]["attack outcome"]) for e in col.examples]

    forward = list(range(32))
    full = chosen(forward, 8)
    assert len(full) == 8 and {i.split("/")[0] for i, _ in full} == set(cats)
    assert {o for _, o in full} == {"fooled", "resisted"}
    assert {o for _, o in chosen(forward, 4)} == {"fooled", "resisted"}  # one per class, both outcomes
    assert chosen(forward[::-1], 8) == full  # batch order does not matter
    # within a bucket the lowest seeded hash wins
    fooled_a = [ids[i] for i in range(14) if i % 4 == 0]
    assert (min(fooled_a, key=lambda c: example_rank(0, c)), "fooled") in full
    assert chosen(forward, 8, seed=1) != full or len(fooled_a) == 1  # the seed changes the choice


def test_snr_and_psnr_average_only_the_clips_the_attack_changed():
    """APGD leaves clips it does not attack untouched (SNR inf): the row's mean is over the changed ones."""
    from attacks.base import ATTACKS
    from attacks.fgsm import FGSM

    @ATTACKS.register("zz_first_only")
    class _FirstOnly(FGSM):  # FGSM on the first clip of each batch, the others returned as they were
        def __call__(self, inputs, labels):
            adv = super().__call__(inputs, labels)
            return {m: torch.cat([adv[m][:1], inputs[m][1:]]) for m in adv}

    try:
        model = ToyAV(seed=5)
        grid = ["visual=0.01,audio=0.01"]
        (first,) = evaluate_attack_grid(model, loader(), ["zz_first_only"], grid, "cpu", progress=False)
        (every,) = evaluate_attack_grid(model, loader(), ["fgsm"], grid, "cpu", progress=False)
    finally:
        ATTACKS._items.pop("zz_first_only")
    for key in ("snr_db_audio", "psnr_db_visual"):
        assert math.isfinite(first[key]) and math.isfinite(every[key])
        # FGSM moves every sample by eps: the per-clip values are alike, so both means are close
        assert first[key] == pytest.approx(every[key], rel=0.2)


def test_attack_options_come_from_flag_args_and_grid_overrides_still_apply():
    """pipeline.attack_eval builds each attack's options from its flag_args and --attack_args; the grid's
    own steps/random_start/restarts (which pipeline/adaptive.py overrides for pgd_restarts) still reach pgd."""
    from types import SimpleNamespace

    from pipeline.attack_eval import common_attack_options

    cfg = SimpleNamespace(apgd_steps=3, apgd_targets=2, square_queries=7, attack_steps=2, random_start=False,
                          restarts=1, attack_args="square:p_init=0.4", eps_unit="input", seed=0, norm="Linf",
                          no_progress=True, max_shift_s=0.0, shift_step_s=0.05, audRate=11025, eot=1)
    common = common_attack_options(cfg)
    assert common["attack_options"]["square"] == {"n_queries": 7, "p_init": 0.4}
    assert common["attack_options"]["apgd-t"] == {"steps": 3, "n_target_classes": 2, "eot_iter": 1}
    common.update(random_start=True, restarts=2)  # pipeline/adaptive.py's pgd_restarts
    rows = evaluate_attack_grid(ToyAV(), loader(n_batches=1), ["pgd", "apgd-ce"], [{"visual": 0.01}], "cpu", **common)
    assert [(r["steps"], r["random_start"], r["restarts"]) for r in rows] == [(2, True, 2), (3, True, 1)]
