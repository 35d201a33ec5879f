"""Certified robustness by Monte-Carlo smoothing: the statistics, the certifier base and Gaussian randomized
smoothing per modality (Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized Smoothing",
ICML 2019). MMCert's sub-sampling certifier (models/mmcert.py) shares the base.

Smoothed classifier (Cohen et al., Section 3, eq. 1): ``g(x) = argmax_c P(f(x + e) = c)`` with ``e ~ N(0, s^2 I)``.
Here the noise is per modality: ``e_audio ~ N(0, sigma_audio^2 I)`` on the waveform, ``e_visual ~ N(0,
sigma_visual^2 I)`` on the frames in [0, 1] pixel units (the model normalises inside, as Cohen et al.'s code adds the
noise before its normalisation layer); a modality without a sigma gets no noise. Inputs are not clipped to the valid
range after the noise (as in Cohen et al.); clipping would also be sound (it is part of the base classifier).

The certificate (derived from Cohen et al., Theorem 1). Write ``z = (a / sigma_a, v / sigma_v)`` for the inputs
scaled by their sigmas. In ``z`` the noise is ``N(0, I)``, and ``g`` is the smoothing of the base classifier
``h(z) = f(sigma_a z_a, sigma_v z_v)`` with sigma 1. Theorem 1 with ``p_B_upper = 1 - p_A_lower`` (Cohen et al.,
Section 3.2.2, the CERTIFY of Algorithm 1 / Pseudocode) then gives: ``g`` returns the same class for every
perturbation with

    sqrt(||d_audio||^2 / sigma_a^2 + ||d_visual||^2 / sigma_v^2) < R,    R = Phi^-1(p_A_lower)

(a joint L2 radius ``R`` in the sigma-normalised concatenated space, an ellipsoid in the inputs). Special cases:
the audio alone with the visual fixed: ``||d_audio|| < sigma_a R``; the visual alone: ``||d_visual|| < sigma_v R``;
a pair of budgets ``(e_a, e_v)`` is covered when ``(e_a / sigma_a)^2 + (e_v / sigma_v)^2 < R^2``. With noise on one
modality only, the certificate is ``sigma_m R`` for that modality and nothing for the other (it must stay
untouched). The certificate holds with probability >= 1 - alpha over the Monte-Carlo draws (Cohen et al.,
Proposition 2); PREDICT's answer is wrong with probability <= alpha (Proposition 1).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Dict, Mapping, Optional

import torch
import torch.nn as nn
from torch import Tensor

from utils.errors import UsageError
from utils.modes import model_mode
from utils.registry import Registry

log = logging.getLogger(__name__)

ABSTAIN = -1  # the class a smoothed prediction returns when it abstains (Cohen et al., Algorithm 1)
MODALITIES = ("audio", "visual")
# Certifiers picked by name (--cert_method): "smoothing" here, "mmcert" in models/mmcert.py.
CERTIFIERS: Registry = Registry("certification method")


# ---------------------------------------------------------------- statistics
def _log_binom_pmf(ks: Tensor, n: int, p: float) -> Tensor:
    logc = math.lgamma(n + 1) - torch.lgamma(ks + 1.0) - torch.lgamma(n - ks + 1.0)
    return logc + ks * math.log(p) + (n - ks) * math.log1p(-p)


def binom_upper_tail(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``, summed in log space in float64."""
    if k <= 0 or p >= 1.0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    logs = _log_binom_pmf(torch.arange(k, n + 1, dtype=torch.float64), n, p)
    return float(torch.logsumexp(logs, dim=0).exp().clamp(max=1.0))


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` Clopper-Pearson lower bound on a binomial proportion from ``k`` successes in ``n``
    (Cohen et al., Algorithm 1, LowerConfBound; their code calls statsmodels' ``proportion_confint(k, n,
    alpha=2*alpha, method="beta")[0]``, i.e. ``Beta.ppf(alpha; k, n - k + 1)``). Computed as the ``p`` with
    ``P(Binomial(n, p) >= k) = alpha`` by bisection (the tail grows with p), rounded down."""
    _check_counts(k, n, alpha)
    if k == 0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(200):  # bisection to the float resolution of [0, 1]
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if binom_upper_tail(k, n, mid) > alpha:
            hi = mid
        else:
            lo = mid
    return lo  # the tail at lo is <= alpha: lo is at or below the exact bound (conservative)


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` Clopper-Pearson upper bound: ``1 - lower(n - k, n)``."""
    _check_counts(k, n, alpha)
    return 1.0 - clopper_pearson_lower(n - k, n, alpha)


def binom_test_half(n_a: int, n_b: int) -> float:
    """Two-sided p-value of ``n_a`` successes in ``n_a + n_b`` trials against ``p = 1/2`` (Cohen et al.,
    Algorithm 1, PREDICT's BinomPValue; scipy's ``binomtest(n_a, n_a + n_b, 0.5).pvalue``)."""
    n = n_a + n_b
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binom_upper_tail(max(n_a, n_b), n, 0.5))


def _check_counts(k: int, n: int, alpha: float) -> None:
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def min_certify_samples(alpha: float) -> int:
    """The smallest ``n`` for which CERTIFY can certify at all: even ``n`` of ``n`` draws give the lower bound
    ``alpha^(1/n)`` (Clopper-Pearson at k = n), which must exceed 1/2: ``n > log2(1/alpha)``."""
    return math.floor(math.log2(1.0 / alpha)) + 1


def min_predict_samples(alpha: float) -> int:
    """The smallest ``n`` for which PREDICT can answer: all ``n`` draws one class gives the p-value
    ``2 * 2^-n``, which must be ``<= alpha``."""
    return max(1, math.ceil(math.log2(2.0 / alpha)))


def gaussian_radius(p_lower: float) -> float:
    """``Phi^-1(p_A_lower)`` (Cohen et al., Theorem 1 with sigma 1 and p_B = 1 - p_A); 0 at or below 1/2."""
    if p_lower <= 0.5:
        return 0.0
    if p_lower >= 1.0:
        return math.inf
    return NormalDist().inv_cdf(p_lower)


# ---------------------------------------------------------------- certifier base
@dataclass
class Certificate:
    """One clip's certificate. ``prediction``: the certified class or ``ABSTAIN``; ``p_lower``: the
    Clopper-Pearson lower bound on its probability; ``radius``: the method's joint certificate (smoothing: R in the
    sigma-normalised space; MMCert: elements modified in every sub-sampled modality at once); ``radii``: per
    modality, holding the others fixed (smoothing: L2 in input units; MMCert: modified frames / segments)."""

    prediction: int
    p_lower: float
    radius: float
    radii: Dict[str, float] = field(default_factory=dict)
    count: int = 0
    n: int = 0
    guess: int = ABSTAIN


class Certifier:
    """A smoothed classifier around ``model`` (called as ``model(audio=..., visual=...)``, logits out): Cohen et
    al.'s PREDICT and CERTIFY (Algorithm 1) over the draws a subclass makes (``_draw``). ``batch``: draws per
    forward pass. The model runs in eval mode (restored afterwards)."""

    name = ""

    def __init__(self, model: nn.Module, num_classes: int, batch: int = 1000) -> None:
        if batch < 1:
            raise UsageError("batch", f"must be >= 1, got {batch}")
        self.model, self.num_classes, self.batch = model, num_classes, batch

    @property
    def modalities(self) -> tuple:
        """The modalities this certifier randomises (the ones it certifies)."""
        raise NotImplementedError

    def _draw(self, inputs: Mapping[str, Tensor], num: int, gen: torch.Generator) -> Dict[str, Tensor]:
        """``num`` randomised copies of one clip's ``inputs`` (each (1, ...)) as a batch."""
        raise NotImplementedError

    def _radii(self, p_lower: float, inputs: Mapping[str, Tensor]) -> Optional[tuple]:
        """(joint radius, per-modality radii) that ``p_lower`` certifies around ``inputs``, or None to abstain."""
        raise NotImplementedError

    @torch.no_grad()
    def counts(self, inputs: Mapping[str, Tensor], num: int, gen: torch.Generator) -> Tensor:
        """How often the base model predicts each class over ``num`` draws around one clip: (K,) int64."""
        out = torch.zeros(self.num_classes, dtype=torch.long)
        with model_mode(self.model, training=False):
            left = num
            while left > 0:
                b = min(self.batch, left)
                pred = self.model(**self._draw(inputs, b, gen)).argmax(dim=1)
                out += torch.bincount(pred.cpu(), minlength=self.num_classes)
                left -= b
        return out

    def predict(self, inputs: Mapping[str, Tensor], n: int, alpha: float, gen: torch.Generator) -> int:
        """PREDICT (Cohen et al., Algorithm 1): the top class if a two-sided binomial test says it beats the
        runner-up at level alpha, else ``ABSTAIN``."""
        c = self.counts(inputs, n, gen)
        vals, idx = torch.sort(c, descending=True, stable=True)
        n_a, n_b = int(vals[0]), (int(vals[1]) if len(vals) > 1 else 0)
        return int(idx[0]) if binom_test_half(n_a, n_b) <= alpha else ABSTAIN

    def certify(self, inputs: Mapping[str, Tensor], n0: int, n: int, alpha: float,
                gen: torch.Generator) -> Certificate:
        """CERTIFY (Cohen et al., Algorithm 1): guess the class from ``n0`` draws, bound its probability from
        ``n`` fresh draws (Clopper-Pearson, 1 - alpha), certify when the bound allows it, else abstain."""
        guess = int(self.counts(inputs, n0, gen).argmax())
        count = int(self.counts(inputs, n, gen)[guess])
        p_lower = clopper_pearson_lower(count, n, alpha)
        radii = self._radii(p_lower, inputs)
        if radii is None:
            return Certificate(ABSTAIN, p_lower, 0.0, {}, count, n, guess)
        return Certificate(guess, p_lower, radii[0], radii[1], count, n, guess)


def _noise_like(x: Tensor, num: int, sigma: float, gen: torch.Generator) -> Tensor:
    rep = x.expand(num, *x.shape[1:])
    noise = torch.randn(rep.shape, generator=gen, device=gen.device, dtype=x.dtype).to(x.device)
    return rep + sigma * noise


@CERTIFIERS.register("smoothing")
class GaussianSmoothing(Certifier):
    """Gaussian randomized smoothing per modality (Cohen et al. 2019; see the module docstring for the joint and
    per-modality certificates). ``sigmas``: ``{"audio": s_a, "visual": s_v}``, a missing or 0 entry leaves that
    input untouched (and uncertified).

    >>> cert = GaussianSmoothing(model, {"audio": 0.25}, num_classes=8).certify(
    ...     {"audio": a[:1], "visual": v[:1]}, n0=100, n=100_000, alpha=0.001, gen=torch.Generator())
    """

    name = "smoothing"

    def __init__(self, model: nn.Module, sigmas: Mapping[str, float], num_classes: int, batch: int = 1000) -> None:
        super().__init__(model, num_classes, batch)
        self.sigmas = {m: float(s) for m, s in sigmas.items() if s}
        bad = [m for m in self.sigmas if m not in MODALITIES or not (math.isfinite(self.sigmas[m])
                                                                     and self.sigmas[m] > 0)]
        if bad or not self.sigmas:
            raise UsageError(f"--sigma_{bad[0]}" if bad else "--sigma_audio",
                             f"needs a finite sigma > 0 on audio and/or visual, got {dict(sigmas)}")

    @property
    def modalities(self) -> tuple:
        return tuple(m for m in MODALITIES if m in self.sigmas)

    def _draw(self, inputs: Mapping[str, Tensor], num: int, gen: torch.Generator) -> Dict[str, Tensor]:
        out = {}
        for m, x in inputs.items():
            out[m] = _noise_like(x, num, self.sigmas[m], gen) if m in self.sigmas else x.expand(num, *x.shape[1:])
        return out

    def _radii(self, p_lower: float, inputs: Mapping[str, Tensor]) -> Optional[tuple]:
        if p_lower <= 0.5:
            return None
        r = gaussian_radius(p_lower)
        return r, {m: s * r for m, s in self.sigmas.items()}
