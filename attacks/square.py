"""Square Attack (Andriushchenko et al., ECCV 2020): score-based black box, per-modality budgets.

Written from the paper (Algorithms 1-3, Sec. 3): random squares on frames, contiguous segments on the
waveform; no gradients are used.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

from attacks.base import ATTACKS, Attack

logger = logging.getLogger(__name__)

# Sec. 3 (and AutoAttack's setting): the fraction p of the input changed per query starts at p_init and is
# halved after these fractions of 10 000 iterations (rescaled to n_queries).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init: float, it: int, n_queries: int) -> float:
    """The paper's piecewise-constant schedule of the window fraction ``p`` at iteration ``it``."""
    it = int(it / n_queries * 10000)
    return p_init / 2 ** sum(it > h for h in _HALVINGS)


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample margin ``z_y - max_{k != y} z_k`` (minimised; < 0 means misclassified)."""
    other = logits.clone()
    other.scatter_(1, labels[:, None], -math.inf)
    return logits.gather(1, labels[:, None]).squeeze(1) - other.amax(dim=1)


def _meta_pattern(shape: Tuple[int, ...], device, dtype) -> torch.Tensor:
    """Alg. 3's pattern on a window: concentric squares (segments in 1-D) weighted 1/(k+1)^2, one half
    positive and the other negative."""
    coords = torch.meshgrid(*[torch.arange(n, device=device, dtype=dtype) for n in shape], indexing="ij")
    half = tuple(max(n // 2, 1) for n in shape)
    out = torch.zeros(shape, device=device, dtype=dtype)
    split = shape[-1] // 2 or 1
    for sign, lo, hi in ((1.0, 0, split), (-1.0, split, shape[-1])):
        if hi <= lo:
            continue
        width = hi - lo
        centre = [(n - 1) / 2 for n in shape[:-1]] + [lo + (width - 1) / 2]
        dist = torch.stack([(c - ctr).abs() for c, ctr in zip(coords, centre)]).amax(dim=0).floor()
        levels = int(max(half)) + 1
        weight = torch.zeros_like(dist)
        for k in range(levels):
            weight += (dist <= k).to(dtype) / (k + 1) ** 2
        inside = (coords[-1] >= lo) & (coords[-1] < hi)
        out = torch.where(inside, sign * weight, out)
    return out


class _Windows:
    """Where Square may write in one modality: (B, C, T, H, W) or (B, C, H, W) frames get an s x s square
    on one frame; (B, C, L) waveforms get a segment of length round(p L)."""

    def __init__(self, x: torch.Tensor, modality: str) -> None:
        self.spatial = modality == "visual" and x.dim() in (4, 5)
        if not self.spatial and x.dim() != 3:
            raise ValueError(f"square expects {modality} shaped (B, C, L) for audio or (B, C[, T], H, W) for "
                             f"visual, got {tuple(x.shape)}")
        self.shape = tuple(x.shape)

    def size(self, p: float) -> int:
        if self.spatial:
            h, w = self.shape[-2:]
            return int(min(max(round(math.sqrt(p * h * w)), 1), h, w))
        return int(min(max(round(p * self.shape[-1]), 1), self.shape[-1]))

    def draw(self, s: int, gen: torch.Generator) -> Tuple[slice, ...]:
        def r(n: int) -> int:
            return int(torch.randint(0, n, (1,), generator=gen))
        if self.spatial:
            h, w = self.shape[-2:]
            lead = (slice(None), slice(None)) + ((r(self.shape[2]),) if len(self.shape) == 5 else ())
            i, j = r(h - s + 1), r(w - s + 1)
            return lead + (slice(i, i + s), slice(j, j + s))
        a = r(self.shape[-1] - s + 1)
        return (slice(None), slice(None), slice(a, a + s))

    def stripes(self, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
        """Random +-1 vertical stripes (per column on frames, per sample of the waveform)."""
        shape = list(like.shape)
        if self.spatial:
            shape[2:-1] = [1] * (len(shape) - 3)
        return torch.randint(0, 2, shape, generator=gen, device=like.device).to(like.dtype) * 2 - 1


@ATTACKS.register("square")
class Square(Attack):
    """Square Attack, "Square Attack: a query-efficient black-box adversarial attack via random search"
    (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020, arXiv 1912.00049), over dicts of modalities.

    Threat model: per modality ``Linf``, ``L2`` or (audio) ``snr``; budgets and valid ranges as for every
    attack (``attacks.threats``). Only the model's logits are read (no gradients). The margin loss
    ``z_y - max_{k!=y} z_k`` is minimised by random search: per query, each attacked modality gets a new
    window (an s x s square on one frame, s = round(sqrt(p H W)); on the waveform a segment of length
    round(p L)) and the proposal is kept per sample if the margin decreases. Linf (Alg. 2): the window is
    set to +-eps per channel, starting from vertical stripes. L2 (Alg. 3): the mass of a second window and
    the unused budget move into the first window along the concentric-squares pattern. Samples already
    misclassified are no longer queried; ``last_queries`` holds the queries per sample of the last call and
    ``query_stats`` (sum, count) accumulates over calls.

    Arguments (``attacks.create_attack("square", model, eps=..., ...)``):
        eps (dict), norm (str | dict): as for every attack ("Linf" default).
        n_queries (int): 5000 (AutoAttack); p_init (float): 0.8 (AutoAttack's setting for Square);
        restarts (int): 1; seed (int): 0; eps_unit (str): "input" or "normalized".

    Batch independence: does not hold; window positions are drawn once per query for the whole batch.

    Example::

        >>> attack = create_attack("square", model, eps={"visual": 8 / 255}, n_queries=1000)
        >>> adv = attack({"audio": a, "visual": v}, labels)
    """

    name = "square"
    grid_options = False
    gradient_loss = None  # reads logits only
    supports_random_start = True

    def __init__(self, model: nn.Module, eps: Mapping[str, float], n_queries: int = 5000, p_init: float = 0.8,
                 restarts: int = 1, seed: int = 0, eps_unit: str = "input",
                 norm: Union[str, Mapping[str, str], None] = "Linf") -> None:
        super().__init__(model, eps, steps=1, random_start=restarts > 1, restarts=restarts, seed=seed,
                         eps_unit=eps_unit, norm=norm)
        if isinstance(n_queries, bool) or not isinstance(n_queries, int) or n_queries < 1:
            raise ValueError(f"n_queries must be an int >= 1, got {n_queries!r}")
        if not 0 < p_init <= 1:
            raise ValueError(f"p_init must be in (0, 1], got {p_init!r}")
        self.n_queries, self.p_init = n_queries, float(p_init)
        self.last_queries: Optional[torch.Tensor] = None
        self.query_stats = [0.0, 0]

    @torch.no_grad()
    def _margin(self, adv, fixed, labels) -> torch.Tensor:
        return margin(self._forward({**fixed, **adv}).float(), labels)

    def _propose(self, threat, x_clean, x_best, box, win, s, gen) -> torch.Tensor:
        """One proposal for the samples of ``x_clean`` (Alg. 2 for Linf, Alg. 3 for L2/snr)."""
        new = x_best.clone()
        idx = win.draw(s, gen)
        window = new[idx]
        lead = window.shape[:2] + (1,) * (window.dim() - 2)
        sign = torch.randint(0, 2, lead, generator=gen, device=x_clean.device).to(x_clean.dtype) * 2 - 1
        if threat.norm == "Linf":
            eps = threat.eps
            if isinstance(eps, torch.Tensor):  # a per-channel budget (eps_unit="normalized")
                eps = eps.reshape((1, -1) + (1,) * (window.dim() - 2))
            new[idx] = x_clean[idx] + eps * sign
            return threat.clip(new, box)
        delta = new - x_clean
        eps = threat.eps
        r2 = eps.flatten(1)[:, 0] ** 2 if isinstance(eps, torch.Tensor) else torch.full(
            (x_clean.shape[0],), float(eps) ** 2, dtype=x_clean.dtype, device=x_clean.device)
        spare = (r2 - delta.flatten(1).pow(2).sum(1)).clamp_min(0)
        idx2 = win.draw(s, gen)
        o2 = delta[idx2].flatten(1).pow(2).sum(1)
        delta[idx2] = 0
        o1 = delta[idx].clone()
        pattern = _meta_pattern(tuple(o1.shape[2:]), x_clean.device, x_clean.dtype)
        if pattern.dim() == 2 and bool(torch.randint(0, 2, (1,), generator=gen)):
            pattern = pattern.t()
        eta = (sign * pattern).expand_as(o1)
        a = eta.flatten(1).pow(2).sum(1).clamp_min(1e-12)
        b = (o1 * eta).flatten(1).sum(1)
        cc = -(o2 + spare)  # ||o1 + c eta||^2 = ||o1||^2 + ||o2||^2 + spare
        c = (-b + (b * b - a * cc).clamp_min(0).sqrt()) / a
        delta[idx] = o1 + c.view((-1,) + (1,) * (o1.dim() - 1)) * eta
        return threat.clip(x_clean + delta, box)

    def _perturb(self, clean, start, fixed, labels, threats) -> Dict[str, torch.Tensor]:
        gen = self._generator(labels.device)
        wins = {m: _Windows(clean[m], m) for m in clean}
        boxes = {m: threats[m].box(clean[m]) for m in clean}
        best = {}
        for m, x in clean.items():
            init = wins[m].stripes(gen, x)
            step = threats[m].eps * init if threats[m].norm == "Linf" else threats[m].eps * threats[m].unit(init)
            best[m] = threats[m].clip(x + step, boxes[m])
        loss = self._margin(best, fixed, labels)
        queries = torch.ones_like(labels)
        for it in range(1, self.n_queries):
            active = (loss > 0).nonzero().flatten()
            if active.numel() == 0:
                break
            p = p_schedule(self.p_init, it, self.n_queries)
            sub = lambda d: {k: (v[active] if v is not None else None) for k, v in d.items()}  # noqa: E731
            prop = {}
            for m in clean:
                t = threats[m].select(active)
                box = t.box(clean[m][active])
                prop[m] = self._propose(t, clean[m][active], best[m][active], box, wins[m],
                                        wins[m].size(p), gen)
            new_loss = self._margin(prop, sub(fixed), labels[active])
            queries[active] += 1
            better = new_loss < loss[active]
            keep = active[better]
            for m in clean:
                best[m][keep] = prop[m][better]
            loss[keep] = new_loss[better]
        self.last_queries = queries
        self.query_stats[0] += float(queries.sum())
        self.query_stats[1] += int(queries.numel())
        logger.debug("square: %d/%d fooled, mean queries %.1f", int((loss <= 0).sum()), labels.numel(),
                     float(queries.float().mean()) if queries.numel() else 0.0)
        return best
