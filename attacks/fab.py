"""FAB: the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), minimum-norm, over dicts of modalities.

``fab-t`` (targeted: AutoAttack's standard ensemble) and ``fab`` (untargeted: AutoAttack's "plus" version).
Written from the paper (arXiv 1907.02044, Sec. 3: linearise, project onto the approximated decision
hyperplane intersected with the box, biased step towards the clean input, backward step) and AutoAttack's
description of its targeted version (arXiv 2003.01690, Sec. 5, "FAB-T"); fra31/auto-attack was read for
its settings only. The projection is this file's own (``project_hyperplane_box``).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

from attacks.base import ATTACKS, Attack, _check_scalar, check_int

logger = logging.getLogger(__name__)

# FAB's constants, Croce & Hein, ICML 2020 (arXiv 1907.02044), Sec. 3.2 and the values of their experiments,
# which fra31/auto-attack (fab_base.py, FABAttack.__init__) keeps as defaults and AutoAttack never changes:
ALPHA_MAX = 0.1  # largest weight of the step from the clean input (bias towards the original point)
ETA = 1.05  # overshoot of the projection onto the linearised boundary (lands just past it)
BETA = 0.9  # backward step after a success: x <- x_orig + beta (x - x_orig)
_TINY = 1e-12


def project_hyperplane_box(w: torch.Tensor, c: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                           norm: str) -> torch.Tensor:
    """Per row, the smallest ``d`` (L-inf or L2 norm) with ``w . d = c`` and ``lo <= d <= hi`` (lo <= 0 <= hi).

    The projection of FAB (Sec. 3.1) of a point onto the hyperplane of the linearised boundary intersected
    with the valid box, written as a 1-D search. Flip the signs so that ``c >= 0``; coordinate i can then move
    by at most ``r_i`` (its room towards the side ``w_i`` points to). For a radius t:

    * L-inf: ``d_i = sign(w_i) min(t, r_i)``, reaching ``w . d = sum_i |w_i| min(t, r_i)``;
    * L2 (KKT: ``d = clamp(t w)``): ``d_i = sign(w_i) |w_i| min(t, r_i / |w_i|)``, reaching
      ``sum_i w_i^2 min(t, r_i / |w_i|)``.

    Both are ``G(t) = sum_i a_i min(t, b_i)``, piecewise linear and non-decreasing; the smallest t with
    ``G(t) = c`` is exact from the sorted breakpoints b (one sort, cumulative sums, a search per row). A row
    whose hyperplane the box cannot reach gets the box corner closest to it (t = infinity). Computed in
    float64; returns ``d`` in ``w``'s dtype. ``w, lo, hi``: (B, n); ``c``: (B,).
    """
    dtype = w.dtype
    w, c, lo, hi = w.double(), c.double(), lo.double(), hi.double()
    flip = c < 0
    w = torch.where(flip[:, None], -w, w)
    c = c.abs()
    aw = w.abs()
    room = torch.where(w > 0, hi, -lo).clamp_min(0.0)
    k = torch.ones_like(aw) if norm == "Linf" else aw  # d_i = sign(w_i) k_i min(t, b_i)
    active = aw > 0
    a = torch.where(active, aw * k, torch.zeros_like(aw))
    b = torch.where(active, room / k.clamp_min(_TINY), torch.zeros_like(aw))
    b_sorted, order = b.sort(dim=1)
    a_sorted = a.gather(1, order)
    cum_ab = (a_sorted * b_sorted).cumsum(dim=1)
    cum_a = a_sorted.cumsum(dim=1)
    total_a = cum_a[:, -1:]
    reach = cum_ab + b_sorted * (total_a - cum_a)  # G at each breakpoint, non-decreasing
    reach = reach.cummax(dim=1).values  # guard the search against rounding
    j = torch.searchsorted(reach, c[:, None].contiguous()).clamp_max(b.shape[1])  # first breakpoint with G >= c
    prev = (j - 1).clamp_min(0)
    prev_ab = torch.where(j > 0, cum_ab.gather(1, prev), torch.zeros_like(c[:, None]))
    prev_a = torch.where(j > 0, cum_a.gather(1, prev), torch.zeros_like(c[:, None]))
    t = (c[:, None] - prev_ab) / (total_a - prev_a).clamp_min(_TINY)
    t = torch.where(j >= b.shape[1], torch.full_like(t, float("inf")), t)
    d = w.sign() * k * torch.minimum(t, b)
    return d.to(dtype)


class FAB(Attack):
    """FAB, "Minimally distorted adversarial examples with a fast adaptive boundary attack" (Croce & Hein,
    ICML 2020, arXiv 1907.02044), per sample and over a dict of modalities; ``fab-t`` is the targeted
    version of AutoAttack's standard ensemble (Croce & Hein, ICML 2020, arXiv 2003.01690, Sec. 5).

    The loop (Sec. 3): at the iterate x, linearise the boundary between the label y and the class t (fab-t:
    each target in turn; fab: the class whose linearised boundary is closest), ``f = z_t - z_y``, and
    project both x and the clean input onto the hyperplane ``f + grad f . (v - x) = 0`` intersected with the
    valid box (``project_hyperplane_box``): displacements ``d`` and ``d_0``. Step
    ``x <- clip((1 - a)(x + eta d) + a (x_orig + eta d_0))`` with ``a = min(|d| / (|d| + |d_0|), alpha_max)``
    (biased towards the clean input); a step that misclassifies is recorded when it is the closest found and
    followed by the backward step ``x <- x_orig + beta (x - x_orig)``. A sample whose closest adversarial
    point lies inside the budget is returned at that point, every other sample as its clean input (FAB is
    a minimum-norm attack: "robust" means no adversarial point within eps was found).

    Two modalities, one minimum-norm problem: every coordinate is measured in units of its modality's budget,
    ``u = delta / s`` with ``s`` the modality's radius (eps; eps x std_c per channel for normalised visual
    budgets; the per-clip radius of an snr budget), and the attacked modalities' scaled perturbations are
    concatenated into one vector per sample, whose box is the valid ranges in these units. The threat model's
    distance of a point is ``max_m ||u_m||_{p_m}`` (<= 1 means inside every modality's budget), and it is what
    decides which adversarial point is closest and whether it is inside the budget. FAB's projection works
    in one norm on the concatenation:

    * every attacked modality L-inf: the L-inf norm of the concatenation is exactly that distance (the
      product of per-modality boxes is the unit L-inf ball in budget units), so the attack is FAB exactly;
    * otherwise (L2, snr, or norms that differ): L2 on the concatenation. The unit L2 ball in budget units
      lies inside the product of the per-modality balls (it is the product's inscribed ball, which it touches
      where one modality carries the whole perturbation), so the steps minimise a conservative surrogate; the
      acceptance uses each modality's own norm and budget. Choice made here: the paper handles one input.

    Settings (AutoAttack's standard version, fra31/auto-attack autoattack.py ``__init__``/``set_version``:
    ``FABAttack_PT(n_restarts=5, n_iter=100)``, then for "standard" ``n_restarts = 1``, ``n_target_classes =
    9``): steps 100, 1 restart, targets the 9 most likely other classes of the clean logits (min(9, K-1)), the
    first run of each target from the clean input. Restarts after the first start at a random point at
    distance ``min(best, 1) / 2`` in budget units (fab in the "plus" version: 5 restarts).

    Arguments (``attacks.create_attack("fab-t", model, eps=..., ...)``):
        eps (dict): per-modality budget (dB for snr); norm (str | dict): "Linf" (default), "L2", per modality.
        steps (int): 100. restarts (int): 1. n_target_classes (int): fab-t only, 9.
        alpha_max (float): 0.1; eta (float): 1.05; beta (float): 0.9 (the paper's values, see above).
        seed (int): 0 (random starts of restarts > 1); eps_unit (str): "input" or "normalized".
        eot_iter (int): 1; N > 1 averages the boundary's value and gradient over N passes (EOT, ``--eot``).

    Cost per step: one forward/backward pass (fab-t; fab: one per class) and one forward pass, per target.
    Batch independence: every operation is per sample; the random starts of restarts > 1 are drawn for the
    batch from one generator.

    Example::

        >>> attack = create_attack("fab-t", model, eps={"visual": 8 / 255, "audio": 0.006}, steps=100)
        >>> adv = attack({"audio": a, "visual": v}, labels)
    """

    flag_args = {"steps": "apgd_steps", "eot_iter": "eot"}
    n_targets = 0
    min_classes = 2

    def __init__(self, model: nn.Module, eps: Mapping[str, float], steps: int = 100, restarts: int = 1,
                 n_target_classes: int = 9, alpha_max: float = ALPHA_MAX, eta: float = ETA, beta: float = BETA,
                 seed: int = 0, eps_unit: str = "input", norm: Union[str, Mapping[str, str], None] = "Linf",
                 eot_iter: int = 1) -> None:
        self.steps = check_int("steps", steps)
        super().__init__(model, eps, random_start=restarts > 1, restarts=restarts, seed=seed,
                         eps_unit=eps_unit, norm=norm, eot_iter=eot_iter)
        self.n_target_classes = check_int("n_target_classes", n_target_classes)
        self.alpha_max = _check_scalar("alpha_max", alpha_max)
        if self.alpha_max > 1:
            raise ValueError(f"alpha_max must be in [0, 1], got {alpha_max!r}")
        self.eta = _check_scalar("eta", eta, allow_zero=False)
        self.beta = _check_scalar("beta", beta, allow_zero=False)
        if self.beta >= 1:
            raise ValueError(f"beta must be in (0, 1), got {beta!r}")
        # the projection's norm on the concatenated scaled input (see the class docstring)
        self.proj_norm = "Linf" if all(self.norm[m] == "Linf" for m in self.attacked) else "L2"

    # -- budget units ----------------------------------------------------------------------------------
    def _scales(self, clean: Dict[str, torch.Tensor], threats) -> Dict[str, torch.Tensor]:
        """Per modality, the radius of every coordinate (B, n_m): delta / scale is in budget units."""
        return {m: torch.as_tensor(threats[m].radius(), dtype=x.dtype, device=x.device).expand_as(x)
                .reshape(x.shape[0], -1) for m, x in clean.items()}

    def _distance(self, u: torch.Tensor, sizes: List[int]) -> torch.Tensor:
        """The threat model's distance in budget units: max over modalities of ``||u_m||_{p_m}``."""
        parts = u.split(sizes, dim=1)
        dist = [p.abs().amax(dim=1) if self.norm[m] == "Linf" else p.norm(dim=1)
                for m, p in zip(self.attacked, parts)]
        return torch.stack(dist).amax(dim=0)

    def _proj_norm(self, d: torch.Tensor) -> torch.Tensor:
        return d.abs().amax(dim=1) if self.proj_norm == "Linf" else d.norm(dim=1)

    # -- the model in budget units ---------------------------------------------------------------------
    def _inputs(self, u: torch.Tensor, x0: Dict[str, torch.Tensor], scale: Dict[str, torch.Tensor],
                sizes: List[int]) -> Dict[str, torch.Tensor]:
        return {m: (x0[m].flatten(1) + scale[m] * p).view_as(x0[m])
                for m, p in zip(self.attacked, u.split(sizes, dim=1))}

    def _boundary(self, u, x0, scale, sizes, fixed, labels, target) -> Tuple[torch.Tensor, torch.Tensor]:
        """The linearised boundary at u: per sample the value ``f`` (< 0 while the label wins) and its
        gradient with respect to u (EOT-averaged, ``_eot_grads``); fab: of the closest boundary."""
        adv = self._inputs(u, x0, scale, sizes)
        rows = torch.arange(labels.shape[0], device=labels.device)

        def grad_of(t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
            value, _, grads = self._eot_grads(adv, fixed, lambda z: z[rows, t] - z[rows, labels])
            g = torch.cat([grads[m].flatten(1) * scale[m] for m in self.attacked], dim=1)  # chain rule: dx = s du
            return value, g

        if target is not None:
            return grad_of(target)
        with torch.no_grad():
            k = self._forward({**fixed, **adv}).shape[1]
        best_f = best_g = best_dist = None
        for cls in range(k):  # the closest linearised boundary among the other classes (Sec. 3, untargeted)
            t = torch.full_like(labels, cls)
            f, g = grad_of(t)
            dual = g.abs().sum(1) if self.proj_norm == "Linf" else g.norm(dim=1)  # the dual norm
            dist = torch.where(labels == cls, torch.full_like(f, float("inf")), f.abs() / (dual + _TINY))
            if best_dist is None:
                best_f, best_g, best_dist = f, g, dist
            else:
                closer = dist < best_dist
                best_f = torch.where(closer, f, best_f)
                best_g = torch.where(closer[:, None], g, best_g)
                best_dist = torch.where(closer, dist, best_dist)
        return best_f, best_g

    # -- one run (Sec. 3) ------------------------------------------------------------------------------
    @torch.no_grad()
    def _fab(self, x0, fixed, labels, threats, target: Optional[torch.Tensor], start: Optional[torch.Tensor],
             ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns per sample the closest adversarial point found (in budget units) and its distance (inf:
        none)."""
        scale = self._scales(x0, threats)
        sizes = [scale[m].shape[1] for m in self.attacked]
        s = torch.cat([scale[m] for m in self.attacked], dim=1)
        x0f = torch.cat([x0[m].flatten(1) for m in self.attacked], dim=1)
        lo = torch.cat([torch.full_like(scale[m], threats[m].lo) for m in self.attacked], dim=1)
        hi = torch.cat([torch.full_like(scale[m], threats[m].hi) for m in self.attacked], dim=1)
        frozen = s <= 0  # a zero budget (a silent clip under snr): the coordinate cannot move
        lo_u = torch.where(frozen, torch.zeros_like(s), (lo - x0f) / s.clamp_min(_TINY))
        hi_u = torch.where(frozen, torch.zeros_like(s), (hi - x0f) / s.clamp_min(_TINY))
        n = labels.shape[0]
        u = torch.zeros_like(x0f) if start is None else start
        best = torch.zeros_like(x0f)
        best_dist = torch.full((n,), float("inf"), dtype=torch.float64, device=labels.device)
        for _ in range(self.steps):
            f, g = self._boundary(u, x0, scale, sizes, fixed, labels, target)
            g = torch.where(frozen, torch.zeros_like(g), g)
            d1 = project_hyperplane_box(g, -f, lo_u - u, hi_u - u, self.proj_norm)  # from the iterate
            d0 = project_hyperplane_box(g, (g * u).sum(1) - f, lo_u, hi_u, self.proj_norm)  # from the clean input
            n1, n0 = self._proj_norm(d1), self._proj_norm(d0)
            alpha = (n1 / (n1 + n0).clamp_min(_TINY)).clamp(0.0, self.alpha_max)[:, None]
            u = torch.minimum(torch.maximum((1 - alpha) * (u + self.eta * d1) + alpha * self.eta * d0, lo_u), hi_u)
            pred = self._forward({**fixed, **self._inputs(u, x0, scale, sizes)}).argmax(dim=1)
            fooled = pred != labels
            dist = self._distance(u, sizes).double()
            closer = fooled & (dist < best_dist)
            best = torch.where(closer[:, None], u, best)
            best_dist = torch.where(closer, dist, best_dist)
            u = torch.where(fooled[:, None], self.beta * u, u)  # backward step towards the clean input
        return best, best_dist

    def _random_start(self, shape: torch.Size, radius: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A point at distance ``radius`` (per sample, budget units) in a random direction (restarts > 1)."""
        z = torch.empty(shape, dtype=like.dtype, device=like.device)
        if self.proj_norm == "Linf":
            z.uniform_(-1.0, 1.0, generator=self._generator(like.device))
        else:
            z.normal_(generator=self._generator(like.device))
        return z / self._proj_norm(z).clamp_min(_TINY)[:, None] * radius.to(like.dtype)[:, None]

    def _targets(self, clean, fixed, labels) -> List[Optional[torch.Tensor]]:
        """fab-t: the t-th most likely class of the clean logits other than the label, t = 1..min(n, K-1)."""
        if not self.n_targets:
            return [None]
        with torch.no_grad():
            logits = self._forward({**fixed, **clean})
        order = logits.sort(dim=1, descending=True).indices
        n = min(self.n_target_classes, logits.shape[1] - 1)
        others = order[order != labels[:, None]].view(labels.shape[0], -1) if labels.numel() else order[:, 1:]
        return [others[:, t] for t in range(n)]

    def _run_restarts(self, clean, fixed, labels, threats) -> Dict[str, torch.Tensor]:
        best = {m: v.clone() for m, v in clean.items()}
        with torch.no_grad():
            robust = self._forward({**fixed, **clean}).argmax(dim=1) == labels
        dist_so_far = torch.full(labels.shape, float("inf"), dtype=torch.float64, device=labels.device)
        for target in self._targets(clean, fixed, labels):
            for r in range(self.restarts):
                todo = robust.nonzero().flatten()
                if todo.numel() == 0:
                    return best
                sub = lambda d: {m: (v[todo] if v is not None else None) for m, v in d.items()}  # noqa: E731
                x0 = sub(clean)
                sel = {m: t.select(todo) for m, t in threats.items()}
                start = None
                if r > 0:  # fra31: the first run from the clean input, later ones from random points
                    size = sum(x0[m][0].numel() for m in self.attacked)
                    start = self._random_start(torch.Size((todo.numel(), size)),
                                               dist_so_far[todo].clamp(max=1.0) / 2, x0[self.attacked[0]])
                u, dist = self._fab(x0, sub(fixed), labels[todo], sel, None if target is None else target[todo],
                                    start)
                dist_so_far[todo] = torch.minimum(dist_so_far[todo], dist)
                inside = dist <= 1.0
                if inside.any():
                    scale = self._scales(x0, sel)
                    sizes = [scale[m].shape[1] for m in self.attacked]
                    adv = self._inputs(u, x0, scale, sizes)
                    for m in self.attacked:  # rounding of x0 + s u: project onto the feasible set (ulps)
                        adv[m] = sel[m].clip(adv[m], sel[m].box(x0[m]))
                        best[m][todo[inside]] = adv[m][inside]
                    robust[todo[inside]] = False
                logger.debug("%s target %s restart %d: %d/%d inside the budget", self.name, target is not None, r,
                             int(inside.sum()), todo.numel())
        return best


@ATTACKS.register("fab-t")
class FABT(FAB):
    __doc__ = FAB.__doc__
    name = "fab-t"
    flag_args = {"steps": "apgd_steps", "n_target_classes": "apgd_targets", "eot_iter": "eot"}
    n_targets = 1


@ATTACKS.register("fab")
class FABUntargeted(FAB):
    __doc__ = FAB.__doc__
    name = "fab"
