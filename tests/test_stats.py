"""reporting/stats.py: Wilson intervals and the exact McNemar test, against scipy and hand-checked cases."""
from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from reporting.stats import (ALPHA, Comparisons, binomial_cdf_half, binomial_se, fmt_acc_ci, fmt_acc_seeds,
                             mcnemar_exact_p, paired, paired_seeds, wilson_interval)


def test_wilson_hand_checked() -> None:
    # 0 of 10: upper bound z^2 / (n + z^2) = 3.8415 / 13.8415 = 0.27753
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.277535, abs=1e-5)
    # 5 of 10: symmetric around 0.5, half-width 0.30008 (textbook value 0.2366 .. 0.7634)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.236593, abs=1e-5), pytest.approx(0.763407, abs=1e-5))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (3, 48), (26, 48), (48, 48), (80, 160), (159, 160)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(ci.low, abs=1e-9) and hi == pytest.approx(ci.high, abs=1e-9)


def test_wilson_ends_are_exactly_0_and_1() -> None:
    # 10/10 used to give 0.9999999999999999 and 0/7 a lower bound of 2.8e-17 (rounding of centre -/+ half)
    for n in range(1, 201):
        assert wilson_interval(n, n)[1] == 1.0 and wilson_interval(0, n)[0] == 0.0, n
        assert 0.0 < wilson_interval(n, n)[0] and wilson_interval(0, n)[1] < 1.0, n


@pytest.mark.parametrize("b,c", [(0, 0), (0, 1), (1, 0), (0, 5), (3, 7), (7, 3), (10, 10), (2, 19), (40, 61)])
def test_mcnemar_matches_scipy_binomtest(b: int, c: int) -> None:
    want = 1.0 if b + c == 0 else sps.binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue
    assert mcnemar_exact_p(b, c) == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_mcnemar_hand_checked() -> None:
    assert mcnemar_exact_p(0, 5) == pytest.approx(2 / 32)  # 2 * (1/2)^5 = 0.0625: not below 0.05
    assert mcnemar_exact_p(0, 6) == pytest.approx(2 / 64)  # 0.03125
    assert mcnemar_exact_p(1, 6) == pytest.approx(2 * (1 + 7) / 128)  # 0.125
    assert mcnemar_exact_p(4, 4) == 1.0
    assert binomial_cdf_half(2, 4) == pytest.approx(11 / 16)
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 2)


def test_paired_counts_and_words() -> None:
    a = {i: True for i in range(20)}
    b = {i: i >= 8 for i in range(20)}  # B wrong on 8 clips A gets right
    res = paired(a, b)
    assert (res.n, res.k_a, res.k_b, res.b, res.c) == (20, 20, 12, 8, 0)
    assert res.p == pytest.approx(2 / 256) and res.word == "higher than"
    assert paired(b, a).word == "lower than"
    # a difference of 2 of 20 is not evidence: about the same
    assert paired(a, {i: i >= 2 for i in range(20)}).word == "about the same as"
    # only common clips are paired
    assert paired({0: True, 1: False}, {1: True, 2: True}).n == 1
    with pytest.raises(ValueError):
        paired({0: True}, {1: True})


def test_ledger_counts_every_comparison() -> None:
    led = Comparisons()
    a = {i: True for i in range(10)}
    led.compare("x", {0: a}, {0: {i: False for i in range(10)}})  # one seed: seed 0
    led.compare("y", {0: a}, {0: a})
    assert len(led.made) == 2 and "2 paired comparisons" in led.summary() and "1 had p < 0.05" in led.summary()
    assert [r["reading"] for r in led.as_rows()] == ["higher", "about the same"]
    assert ALPHA == 0.05


def test_se_and_formatting() -> None:
    assert binomial_se(0.5, 48) == pytest.approx(math.sqrt(0.25 / 48))
    assert fmt_acc_ci(5, 10) == "50.0% [23.7, 76.3]"


def test_per_sample_file_round_trip_and_errors(tmp_path) -> None:
    from reporting.per_sample import read_per_sample, row_key, write_per_sample
    from utils.errors import MalformedFileError

    data = {row_key("pgd", 0, 0): {0: True, 3: False}, row_key("pgd", 0.012, 0): {0: False, 3: False}}
    path = write_per_sample(data, tmp_path / "per_sample.json")
    assert read_per_sample(path) == data
    (tmp_path / "bad.json").write_text('{"rows": []}')
    with pytest.raises(MalformedFileError, match="format"):
        read_per_sample(tmp_path / "bad.json")


def test_surface_matrix_table_and_plot(tmp_path) -> None:
    import numpy as np

    from reporting.surface import plot_surface, surface_matrix, surface_table

    eps = [0.0, 0.006, 0.012]
    audio_rows = [{"eps_audio": e, "eps_visual": 0.0, "adv_acc": a, "n_samples": 10}
                  for e, a in zip(eps, [0.8, 0.5, 0.2])]
    acc, n = surface_matrix(audio_rows, eps, eps, ("audio",))
    assert np.allclose(acc, [[0.8] * 3, [0.5] * 3, [0.2] * 3])  # an audio model ignores the visual budget
    av_rows = audio_rows[:2]
    acc, n = surface_matrix(av_rows, eps, eps, ("audio", "visual"))
    assert acc[0, 0] == 0.8 and np.isnan(acc[2, 2]) and n[1, 0] == 10  # no row: NaN, never guessed
    cells = surface_table(acc, n, eps, eps).cells()
    assert cells[0][1] == "80.0 [49, 94]" and cells[2][3] == "—"
    png = plot_surface(acc, eps, eps, tmp_path / "surface_x.png", "t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _clips(b: int, c: int, same: int = 10) -> tuple:
    """Per-clip outcomes of A and B with ``b`` clips only A gets right, ``c`` only B, ``same`` both right."""
    n = b + c + same
    return ({i: i < b or i >= b + c for i in range(n)}, {i: i >= b for i in range(n)})


def _seeds(*bc: tuple) -> tuple:
    pairs = [_clips(b, c) for b, c in bc]
    return {k: p[0] for k, p in enumerate(pairs)}, {k: p[1] for k, p in enumerate(pairs)}


def test_across_seeds_hand_checked() -> None:
    """Per-seed exact McNemar, counted over seeds. By hand (two-sided, p = 2 P[Bin(b + c, 1/2) <= min(b, c)]):
    (b, c) = (6, 0): 2 / 2^6 = 0.03125; (7, 0): 2 / 2^7 = 0.015625; (8, 0): 2 / 2^8 = 0.0078125;
    (0, 6): 0.03125 in the other direction; (6, 1): 2 (1 + 7) / 2^7 = 0.125, not below 0.05."""
    hand = {(6, 0): 1 / 32, (7, 0): 1 / 64, (8, 0): 1 / 128, (0, 6): 1 / 32, (6, 1): 1 / 8}
    for (b, c), want in hand.items():
        assert mcnemar_exact_p(b, c) == pytest.approx(want)
        assert sps.binomtest(min(b, c), b + c, 0.5).pvalue == pytest.approx(want)  # the peer agrees
    led = Comparisons()
    held = led.compare("all", *_seeds((6, 0), (7, 0), (8, 0)))
    assert (held.verdict, held.word, held.higher, held.lower) == ("higher", "higher than", 3, 0)
    text = led.sentence(held, "A", "B")
    assert text.startswith("A is higher than B (higher in 3 of 3 seeds, each p < 0.05; exact McNemar per seed on 16")
    assert "seed 0 6 vs 0 discordant, p = 0.031; seed 1 7 vs 0 discordant, p = 0.016" in text
    flips = led.compare("flip", *_seeds((6, 0), (7, 0), (0, 6)))
    assert flips.verdict == "flips" and flips.word == "about the same as"
    assert "A against B flips between seeds: higher in 2 of 3 seeds, lower in 1 (" in led.sentence(flips, "A", "B")
    partial = led.compare("partial", *_seeds((6, 0), (7, 0), (6, 1)))
    assert partial.verdict == "partial" and partial.word == "about the same as"
    assert ("A is not consistently different from B: higher in 2 of 3 seeds, no difference at p < 0.05 in 1"
            in led.sentence(partial, "A", "B"))
    lower = led.compare("lower", *_seeds((0, 6), (0, 7)))
    assert lower.verdict == "lower" and "lower in 2 of 2 seeds, each p < 0.05" in led.sentence(lower, "A", "B")
    same = led.compare("same", *_seeds((6, 1), (1, 1)))
    assert same.verdict == "same" and "about the same as B (no seed's test gives p < 0.05" in led.sentence(same, "A", "B")
    # the ledger: one row per comparison and seed, the verdict across seeds beside each
    rows = led.as_rows()
    assert len(rows) == 3 + 3 + 3 + 2 + 2 and led.several_seeds
    assert [r["reading"] for r in rows[6:9]] == ["higher", "higher", "about the same"]
    assert {r["across"] for r in rows[3:6]} == {"higher in 2 of 3 seeds, lower in 1"}
    assert "13 tests" in led.summary() and "2 comparison(s) held in every seed" in led.summary()


def test_across_seeds_pairs_common_seeds_only() -> None:
    a, b = _seeds((6, 0), (7, 0), (8, 0))
    res = paired_seeds(a, {1: b[1]})  # B was run with seed 1 only: one test, the one-seed sentence
    assert [k for k, _ in res.per_seed] == [1]
    assert Comparisons().sentence(res, "A", "B").startswith("A is higher than B (exact McNemar on 17 paired clips")
    with pytest.raises(ValueError, match="share no seed"):
        paired_seeds({0: a[0]}, {1: b[1]})


def test_accuracy_over_seeds_text() -> None:
    assert fmt_acc_seeds({3: (5, 10)}) == fmt_acc_ci(5, 10) == "50.0% [23.7, 76.3]"  # one seed: Wilson
    # 29/40, 25/40, 27/40 = 72.5, 62.5, 67.5: mean 67.5, each seed's value in seed order
    assert fmt_acc_seeds({2: (27, 40), 0: (29, 40), 1: (25, 40)}) == "67.5% (range 62.5-72.5: 72.5, 62.5, 67.5)"
    six = {k: (20 + k, 40) for k in range(6)}  # more than 5 seeds: mean and range only
    assert fmt_acc_seeds(six) == "56.2% (range 50.0-62.5)"
    assert fmt_acc_seeds({}) == "—"
