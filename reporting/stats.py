"""Statistics of the report: Wilson 95% intervals on accuracies and the exact McNemar test on paired clips.

Every accuracy of the study is a proportion of correctly classified test clips, so its uncertainty is
binomial: ``wilson_interval(k, n)`` is the Wilson score interval (Wilson 1927), which keeps its coverage
near 95% for small n and for accuracies near 0 or 1, where the normal interval ``p +- 1.96 SE`` fails.

Two models (or one model under two attacks) evaluated on the *same* clips are compared with the exact
McNemar test: only the discordant clips count (``b``: right under A and wrong under B; ``c``: the reverse);
under the null hypothesis of equal accuracy each discordant clip is a fair coin, so the two-sided p-value is
``min(1, 2 * P[Binomial(b + c, 1/2) <= min(b, c)])``. The test uses the pairing, so it is far more
sensitive than comparing two intervals.

Across training seeds (several runs of one model that differ in initialisation, data order and attack
randomness, evaluated on the same clips) the test is made once per seed and the seeds are counted
(``SeedPaired``): "higher" / "lower" only when every seed's exact McNemar test gives p < ``ALPHA`` in the same
direction; a comparison significant in opposite directions in different seeds is reported as flipping, and one
significant in some seeds only as not consistent. Per-seed tests were chosen over a test stratified by seed
(Cochran-Mantel-Haenszel pools the discordant clips of all seeds): pooling can call a difference that one
seed's training produces and the others do not, while the seed count shows how well a finding repeats.

``Comparisons`` is the ledger of the report: every sentence that says "higher", "lower" or "about the same"
asks it, so the report can state how many tests were made (no correction is applied; the count is given so
that a reader can judge how many "significant" results chance alone would produce at ``ALPHA``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Tuple

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
ALPHA = 0.05  # a comparison is called higher/lower when the exact McNemar p-value is below this
MAX_SEEDS_LISTED = 5  # an accuracy over more seeds shows mean and range only, not every seed's value


def wilson_interval(k: int, n: int, z: float = Z95) -> Tuple[float, float]:
    """The Wilson score interval of a proportion ``k / n`` (default 95%); ``(0, 1)`` when ``n == 0``."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # The interval touches 0 at k = 0 and 1 at k = n exactly; centre -/+ half reaches them only up to
    # rounding (it printed 0.9999999999999999 for 10/10 and 2.8e-17 for 0/7), so the ends are set.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def binomial_se(p: float, n: int) -> float:
    """The standard error ``sqrt(p (1 - p) / n)`` of an accuracy ``p`` measured on ``n`` clips."""
    if n <= 0:
        raise ValueError(f"need n > 0, got {n}")
    return math.sqrt(p * (1 - p) / n)


def binomial_cdf_half(k: int, n: int) -> float:
    """``P[Binomial(n, 1/2) <= k]``, exact (integer binomial coefficients)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` and ``c`` (1.0 when both are 0)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_cdf_half(min(b, c), n))


@dataclass(frozen=True)
class Paired:
    """The paired outcome of A and B on the same clips."""

    n: int  # clips both were evaluated on
    k_a: int  # clips A got right
    k_b: int  # clips B got right
    b: int  # right under A, wrong under B
    c: int  # wrong under A, right under B
    p: float  # exact McNemar two-sided p-value

    @property
    def word(self) -> str:
        """'higher than' / 'lower than' (A vs B, p < ALPHA) or 'about the same as'."""
        if self.p >= ALPHA or self.b == self.c:
            return "about the same as"
        return "higher than" if self.k_a > self.k_b else "lower than"

    def evidence(self) -> str:
        """The test in words: discordant counts and p-value, e.g. 'McNemar 7 vs 2 discordant clips, p = 0.18'."""
        return f"exact McNemar on {self.n} paired clips: {self.b} vs {self.c} discordant, p {_p_words(self.p)}"


def paired(a: Mapping[int, bool], b: Mapping[int, bool]) -> Paired:
    """Pair the per-clip correctness of A and B (dicts keyed by dataset index) on their common clips."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two evaluations share no clip: nothing to pair")
    ka = sum(bool(a[i]) for i in common)
    kb = sum(bool(b[i]) for i in common)
    n_b = sum(bool(a[i]) and not bool(b[i]) for i in common)
    n_c = sum(bool(b[i]) and not bool(a[i]) for i in common)
    return Paired(len(common), ka, kb, n_b, n_c, mcnemar_exact_p(n_b, n_c))


def fmt_p(p: float) -> str:
    """A p-value with 2 significant digits ('< 0.001' below that)."""
    return "< 0.001" if p < 1e-3 else f"{p:.2g}"


def fmt_acc_ci(k: int, n: int) -> str:
    """'54.2% [40.3, 67.4]': the accuracy and its Wilson 95% interval, in percent."""
    lo, hi = wilson_interval(k, n)
    return f"{100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]" if n else "—"


def fmt_acc_seeds(counts: Mapping[int, Tuple[int, int]]) -> str:
    """An accuracy over seeds from ``{seed: (k, n)}``: one seed as :func:`fmt_acc_ci` (Wilson 95% interval);
    several as the mean over seeds with the min-max range and, up to ``MAX_SEEDS_LISTED`` seeds, every seed's
    value in seed order: '62.5% (range 58.1-66.9: 58.1, 62.5, 66.9)'."""
    if not counts:
        return "—"
    if len(counts) == 1:
        (k, n), = counts.values()
        return fmt_acc_ci(k, n)
    accs = [100 * k / n for _, (k, n) in sorted(counts.items())]
    each = f": {', '.join(f'{a:.1f}' for a in accs)}" if len(accs) <= MAX_SEEDS_LISTED else ""
    return f"{sum(accs) / len(accs):.1f}% (range {min(accs):.1f}-{max(accs):.1f}{each})"


@dataclass(frozen=True)
class SeedPaired:
    """The paired outcome of A and B in every seed both were run with (``per_seed``: (seed, Paired) in seed
    order). ``verdict``: higher / lower (every seed p < ALPHA, one direction), flips (p < ALPHA in opposite
    directions in different seeds), partial (p < ALPHA in one direction in some seeds only) or same (no seed)."""

    per_seed: Tuple[Tuple[int, Paired], ...]

    @property
    def higher(self) -> int:
        return sum(r.word == "higher than" for _, r in self.per_seed)

    @property
    def lower(self) -> int:
        return sum(r.word == "lower than" for _, r in self.per_seed)

    @property
    def verdict(self) -> str:
        n, h, lo = len(self.per_seed), self.higher, self.lower
        if h == n or lo == n:
            return "higher" if h == n else "lower"
        if h and lo:
            return "flips"
        return "partial" if h or lo else "same"

    @property
    def word(self) -> str:
        """'higher than' / 'lower than' (the difference holds in every seed) or 'about the same as'."""
        v = self.verdict
        return f"{v} than" if v in ("higher", "lower") else "about the same as"

    def counts_text(self) -> str:
        """'higher in 2 of 3 seeds, lower in 1' (the seeds with p < ALPHA in each direction)."""
        n = len(self.per_seed)
        parts = [f"{w} in {c}" for w, c in (("higher", self.higher), ("lower", self.lower)) if c]
        rest = n - self.higher - self.lower
        if rest:
            parts.append(f"no difference at p < {ALPHA} in {rest}")
        return ", ".join([f"{parts[0]} of {n} seeds", *parts[1:]])

    def evidence(self) -> str:
        """Every seed's test: 'exact McNemar per seed on 40 paired clips: seed 0 7 vs 2 discordant, p = 0.18; ...'."""
        ns = sorted({r.n for _, r in self.per_seed})
        clips = f"{ns[0]}" if len(ns) == 1 else "/".join(str(r.n) for _, r in self.per_seed)
        each = "; ".join(f"seed {k} {r.b} vs {r.c} discordant, p {_p_words(r.p)}" for k, r in self.per_seed)
        return f"exact McNemar per seed on {clips} paired clips: {each}"


def _p_words(p: float) -> str:
    """'= 0.18' or '< 0.001'."""
    text = fmt_p(p)
    return text if text.startswith("<") else "= " + text


def paired_seeds(a: Mapping[int, Mapping[int, bool]], b: Mapping[int, Mapping[int, bool]]) -> SeedPaired:
    """Pair A and B seed by seed (``{seed: {dataset index: correct}}``) on the seeds both have."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError(f"the two models share no seed (A: {sorted(a)}, B: {sorted(b)}): nothing to pair")
    return SeedPaired(tuple((k, paired(a[k], b[k])) for k in common))


@dataclass
class Comparisons:
    """The ledger of every paired test the report's reading makes."""

    made: List[Tuple[str, SeedPaired]] = field(default_factory=list)

    def compare(self, what: str, a: Mapping[int, Mapping[int, bool]], b: Mapping[int, Mapping[int, bool]]
                ) -> SeedPaired:
        """Test A against B (``{seed: {dataset index: correct}}``) in every common seed; record it under ``what``."""
        res = paired_seeds(a, b)
        self.made.append((what, res))
        return res

    def sentence(self, res: SeedPaired, a_name: str, b_name: str) -> str:
        """'A is higher than B (exact McNemar ...)'; over several seeds with the count of seeds that agree, or
        'A against B flips between seeds: higher in 2 of 3 seeds, lower in 1 (...)'."""
        if len(res.per_seed) == 1:
            return f"{a_name} is {res.per_seed[0][1].word} {b_name} ({res.per_seed[0][1].evidence()})"
        v, counts, ev = res.verdict, res.counts_text(), res.evidence()
        if v in ("higher", "lower"):
            return f"{a_name} is {v} than {b_name} ({counts}, each p < {ALPHA}; {ev})"
        if v == "flips":
            return f"{a_name} against {b_name} flips between seeds: {counts} ({ev})"
        if v == "partial":
            return f"{a_name} is not consistently different from {b_name}: {counts} ({ev})"
        return f"{a_name} is about the same as {b_name} (no seed's test gives p < {ALPHA}; {ev})"

    def summary(self) -> str:
        """How many tests were made and how many came out below ALPHA (no multiple-comparison correction)."""
        m = len(self.made)
        tests = [r for _, sp in self.made for _, r in sp.per_seed]
        sig = sum(1 for r in tests if r.p < ALPHA)
        if len(tests) == m:
            return (f"{m} paired comparisons were made in this reading (exact two-sided McNemar tests on the same "
                    f"clips); {sig} had p < {ALPHA}. No correction for multiple comparisons is applied: with {m} "
                    f"tests, about {ALPHA * m:.1f} would fall below {ALPHA} by chance alone if no difference were real.")
        held = sum(1 for _, sp in self.made if sp.verdict in ("higher", "lower"))
        return (f"{m} paired comparisons were made in this reading, each an exact two-sided McNemar test on the same "
                f"clips in every seed both models were run with ({len(tests)} tests); {sig} tests had p < {ALPHA}, and "
                f"{held} comparison(s) held in every seed. No correction for multiple comparisons is applied: with "
                f"{len(tests)} tests, about {ALPHA * len(tests):.1f} would fall below {ALPHA} by chance alone if no "
                "difference were real (a difference that holds in every seed is far less likely by chance).")

    def as_rows(self) -> List[Dict[str, object]]:
        """One row per comparison and seed for the report's table (``seed`` and ``across`` (the verdict over
        seeds) only matter when a comparison has several seeds)."""
        out: List[Dict[str, object]] = []
        for w, sp in self.made:
            across = {"higher": "higher", "lower": "lower", "same": "about the same"}.get(sp.verdict, sp.counts_text())
            for seed, r in sp.per_seed:
                out.append({"comparison": w, "seed": seed, "n": r.n, "a_right_b_wrong": r.b, "a_wrong_b_right": r.c,
                            "p_value": r.p, "reading": r.word.replace(" than", "").replace(" as", ""),
                            "across": across})
        return out

    @property
    def several_seeds(self) -> bool:
        """Whether any comparison was made over more than one seed."""
        return any(len(sp.per_seed) > 1 for _, sp in self.made)


__all__ = ["Z95", "ALPHA", "MAX_SEEDS_LISTED", "wilson_interval", "binomial_se", "binomial_cdf_half",
           "mcnemar_exact_p", "Paired", "paired", "fmt_p", "fmt_acc_ci", "fmt_acc_seeds", "SeedPaired", "paired_seeds",
           "Comparisons"]
