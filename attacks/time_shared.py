"""Time-shared PGD: one perturbation per clip, repeated over every frame and audio segment."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

from attacks.base import ATTACKS, VALID_RANGE, Attack, check_int
from attacks.segments import batch_segments


def _period(x: torch.Tensor, modality: str, t: int) -> int:
    """Length of the shared audio delta: ``ceil(L / T)`` samples (visual: unused)."""
    return -(-x.shape[-1] // t)


def spread(d: torch.Tensor, x: torch.Tensor, modality: str, t: int) -> torch.Tensor:
    """The clip-shaped perturbation of a shared delta ``d``: frames repeat ``d`` (B, 3, 1, H, W); audio repeats
    ``d`` (B, 1, S) with period S and is cut to L samples."""
    if modality == "visual":
        return d.expand_as(x)
    return d.repeat(*([1] * (x.dim() - 1)), t)[..., :x.shape[-1]]


def gather(g: torch.Tensor, modality: str, t: int, period: int, fill: float = 0.0,
           reduce: str = "sum") -> torch.Tensor:
    """The adjoint of ``spread`` (``reduce="sum"``: the gradient of the shared delta), or the max/min of a
    clip-shaped tensor over the copies of each shared coordinate (``"amax"``/``"amin"``, ``fill`` pads)."""
    if modality == "visual":
        if g.dim() != 5:
            return g
        return getattr(g, reduce)(dim=2, keepdim=True)
    pad = period * t - g.shape[-1]
    padded = torch.nn.functional.pad(g, (0, pad), value=fill)
    return getattr(padded.reshape(*g.shape[:-1], t, period), reduce)(dim=-2)


@ATTACKS.register("time_shared")
class TimeShared(Attack):
    """PGD on one perturbation shared by all ``T`` frames of a clip (and one segment-length perturbation
    tiled over the audio), the universal-in-time baseline of issue 19, item 1: what an attacker gets who
    cannot adapt the perturbation to each instant (a static overlay, a looped noise).

    Visual ``(B, 3, T, H, W)``: ``delta_t = d`` for every frame, ``d`` of shape ``(B, 3, 1, H, W)``. Audio
    ``(B, 1, L)``: ``delta[i] = d[i mod S]`` with period ``S = ceil(L / T)`` (the length of one segment,
    ``attacks/segments.py``; with L divisible by T the T segments carry the same delta). ``T`` is the visual
    frame count unless ``segments`` sets it; with ``T = 1`` this is PGD.

    Steps: the gradient of the summed loss with respect to ``d`` is the sum of the input gradient over the
    copies; ``d <- d + alpha sign(grad_d)`` is projected onto the exact feasible set of the shared delta, the
    L-inf ball intersected with every copy's valid range: ``max(-eps, max_t(lo - x_t)) <= d <= min(eps,
    min_t(hi - x_t))`` (never empty: 0 lies in it). L-inf only: the shared delta's L2 norm would weigh its
    coordinates by their number of copies, a projection not written here (other norms are refused).

    Arguments: eps (dict), steps (int, 10), segments (int, 0 = the visual frame count), alpha (None =
    eps/8), targeted, eps_unit, norm ("Linf").

    Example::

        >>> adv = create_attack("time_shared", model, eps={"audio": 0.006, "visual": 0.006})(inputs, labels)
    """

    name = "time_shared"
    # a PGD variant equal to PGD on one-frame clips (the default --num_frames 1): run by name, not in 'all'
    in_all = False
    flag_args = {"steps": "attack_steps"}

    def __init__(self, model: nn.Module, eps: Mapping[str, float], steps: int = 10, segments: int = 0,
                 alpha: Union[None, float, Mapping[str, float]] = None, targeted: bool = False,
                 eps_unit: str = "input", norm: Union[str, Mapping[str, str], None] = "Linf") -> None:
        self.steps = check_int("steps", steps)
        self.segments = check_int("segments", segments, minimum=0)
        super().__init__(model, eps, alpha=alpha, targeted=targeted, eps_unit=eps_unit, norm=norm)
        bad = [m for m in self.attacked if self.norm[m] != "Linf"]
        if bad:
            raise ValueError(f"time_shared supports the Linf norm only, got norm {self.norm[bad[0]]!r} for {bad[0]}")

    def _bounds(self, x: torch.Tensor, m: str, t: int, eps) -> Tuple[torch.Tensor, torch.Tensor]:
        """Element-wise bounds of the shared delta: the eps box and every copy's valid range."""
        lo, hi = VALID_RANGE[m]
        period = _period(x, m, t)
        low = gather(lo - x, m, t, period, fill=-float("inf"), reduce="amax")
        high = gather(hi - x, m, t, period, fill=float("inf"), reduce="amin")
        return torch.maximum(low, -eps * torch.ones_like(low)), torch.minimum(high, eps * torch.ones_like(high))

    def _perturb(self, clean, start, fixed: Dict[str, Optional[torch.Tensor]], labels: torch.Tensor,
                 threats) -> Dict[str, torch.Tensor]:
        t = batch_segments(clean, fixed, self.segments)
        bounds = {m: self._bounds(clean[m], m, t, threats[m].radius()) for m in clean}
        shared = {m: torch.zeros_like(bounds[m][0]) for m in clean}
        adv = dict(start)
        for _ in range(self.steps):
            grads = self._input_grads(adv, fixed, labels)
            for m in adv:
                g = gather(grads[m], m, t, _period(clean[m], m, t))
                shared[m] = threats[m].step(shared[m], g).clamp_(min=bounds[m][0], max=bounds[m][1])
                lo, hi = VALID_RANGE[m]  # rounding of x + (hi - x) may pass the bound by an ulp
                adv[m] = (clean[m] + spread(shared[m], clean[m], m, t)).clamp_(lo, hi)
        return adv
