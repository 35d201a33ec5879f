"""Statistics of the report: Wilson 95% intervals on accuracies and the exact McNemar test on paired clips.

Every accuracy of the study is a proportion of correctly classified test clips, so its uncertainty is
binomial: ``wilson_interval(k, n)`` is the Wilson score interval (Wilson 1927), which keeps its coverage
near 95% for small n and for accuracies near 0 or 1, where the normal interval ``p +- 1.96 SE`` fails.

Two models (or one model under two attacks) evaluated on the *same* clips are compared with the exact
McNemar test: only the discordant clips count (``b``: right under A and wrong under B; ``c``: the reverse);
under the null hypothesis of equal accuracy each discordant clip is a fair coin, so the two-sided p-value is
``min(1, 2 * P[Binomial(b + c, 1/2) <= min(b, c)])``. The test uses the pairing, so it is far more
sensitive than comparing two intervals.

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
        p = fmt_p(self.p)
        return (f"exact McNemar on {self.n} paired clips: {self.b} vs {self.c} discordant, "
                f"p {p if p.startswith('<') else '= ' + p}")


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


@dataclass
class Comparisons:
    """The ledger of every paired test the report's reading makes."""

    made: List[Tuple[str, Paired]] = field(default_factory=list)

    def compare(self, what: str, a: Mapping[int, bool], b: Mapping[int, bool]) -> Paired:
        """Test A against B on their common clips and record it under ``what``."""
        res = paired(a, b)
        self.made.append((what, res))
        return res

    def sentence(self, res: Paired, a_name: str, b_name: str) -> str:
        """'A is higher than B (exact McNemar ...)'."""
        return f"{a_name} is {res.word} {b_name} ({res.evidence()})"

    def summary(self) -> str:
        """How many tests were made and how many came out below ALPHA (no multiple-comparison correction)."""
        m = len(self.made)
        sig = sum(1 for _, r in self.made if r.p < ALPHA)
        return (f"{m} paired comparisons were made in this reading (exact two-sided McNemar tests on the same "
                f"clips); {sig} had p < {ALPHA}. No correction for multiple comparisons is applied: with {m} tests, "
                f"about {ALPHA * m:.1f} would fall below {ALPHA} by chance alone if no difference were real.")

    def as_rows(self) -> List[Dict[str, object]]:
        """One row per comparison for the report's table."""
        return [{"comparison": w, "n": r.n, "a_right_b_wrong": r.b, "a_wrong_b_right": r.c, "p_value": r.p,
                 "reading": r.word.replace(" than", "").replace(" as", "")} for w, r in self.made]


__all__ = ["Z95", "ALPHA", "wilson_interval", "binomial_se", "binomial_cdf_half", "mcnemar_exact_p", "Paired",
           "paired", "fmt_p", "fmt_acc_ci", "Comparisons"]
