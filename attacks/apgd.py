"""APGD (Croce & Hein, ICML 2020): step-size-free PGD with momentum and checkpoints, over dicts of modalities.

``apgd-ce`` (cross-entropy), ``apgd-dlr`` (difference of logits ratio) and ``apgd-t`` (targeted DLR over the
top ``min(9, K-1)`` classes). Written from the paper (Algorithm 1, Sec. 3): written here, not ported.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from attacks.base import ATTACKS, Attack, check_int

logger = logging.getLogger(__name__)

_DLR_EPS = 1e-12
# Algorithm 1: momentum alpha = 0.75, rho = 0.75; checkpoints p_0 = 0, p_1 = 0.22,
# p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06).
MOMENTUM = 0.75
RHO = 0.75
# The checkpoint recursion in whole steps, as fra31/auto-attack (autopgd_base.py, init_hyperparam) runs it:
# the first window is int(0.22 n) steps, each next one int(0.03 n) shorter, down to int(0.06 n) (each >= 1).
P_FIRST, P_DECREASE, P_MIN = 0.22, 0.03, 0.06


def checkpoints(steps: int) -> List[int]:
    """The step counts after which APGD may halve its step size (Sec. 3.2), e.g. [22, 41, 57, 70, 80, 87,
    93, 99] for 100 steps.

    Integer windows, as the reference implementation (fra31/auto-attack) computes them: ``ceil(p_j * n)``
    on the floats ``p_j`` gives 58 for ``p_3 = 0.57`` at n = 100 (0.57 * 100 = 57.000000000000007) and, for
    small n, differs from the reference's windows (n = 10: reference 2, 3, ..., 10).
    """
    window = max(int(P_FIRST * steps), 1)
    decrease = max(int(P_DECREASE * steps), 1)
    shortest = max(int(P_MIN * steps), 1)
    out, at = [], window
    while at <= steps:
        out.append(at)
        window = max(window - decrease, shortest)
        at += window
    return out


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample DLR loss (Sec. 4): untargeted ``-(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3)``; targeted
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (pi: logits sorted in decreasing order)."""
    k = logits.shape[1]
    need = 4 if target is not None else 3
    if k < need:
        raise ValueError(f"the {'targeted ' if target is not None else ''}DLR loss needs at least {need} classes, "
                         f"the model has {k}; use apgd-ce")
    z = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    if target is None:
        other = logits.clone()
        other.scatter_(1, labels[:, None], -math.inf)
        return -(z_y - other.amax(dim=1)) / (z[:, 0] - z[:, 2] + _DLR_EPS)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (z[:, 0] - (z[:, 2] + z[:, 3]) / 2 + _DLR_EPS)


class APGD(Attack):
    """Auto-PGD, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
    attacks" (Croce & Hein, ICML 2020, arXiv 2003.01690), per modality with one shared iteration counter.

    Threat model: per modality ``Linf``, ``L2`` or (audio) ``snr`` (``attacks.threats``); the budget is the
    product of the per-modality balls intersected with the valid ranges. Every sample carries a step-size
    factor (initially 2, i.e. eta = 2 eps per modality); ``z = P(x_k + eta * dir(grad))``,
    ``x_{k+1} = P(x_k + 0.75 (z - x_k) + 0.25 (x_k - x_{k-1}))``; at each checkpoint the factor is halved
    and the iterate reset to the best point when fewer than 75 % of the steps since the last checkpoint
    increased the loss, or when the step and the best loss did not change. A sample is returned at its
    first misclassified iterate, else at its highest-loss iterate.

    Arguments (``attacks.create_attack("apgd-ce", model, eps=..., ...)``):
        eps (dict): per-modality budget (dB for snr); norm (str | dict): "Linf" (default), "L2", per modality.
        steps (int): 100 (paper). restarts (int): 1 (5 for the "plus" version); only still-robust samples
            are attacked again. random_start (bool): True (paper: uniform start in the ball).
        n_target_classes (int): apgd-t only, 9 (top min(9, K-1) classes of the clean logits, each its run).
        seed (int): 0 (random starts); eps_unit (str): "input" or "normalized" (visual, Linf only).
        eot_iter (int): 1; > 1 averages the gradient over that many forward/backward passes (expectation over
            transformation, for randomised models; AutoAttack's "rand" version uses 20): the base class's
            ``_eot_grads``, shared by every gradient attack. The loss that drives the step-size schedule is
            averaged over the passes too (fra31's APGD keeps the last pass's: an average is the less noisy
            estimate of the same expectation); the logits are the last pass's.

    Batch independence: the loss is summed and every schedule decision is per sample, so with
    ``random_start=False`` a sample's result does not depend on its batch; with random starts (the
    default) the start noise is drawn for the whole batch from one generator, so it does.

    Example::

        >>> attack = create_attack("apgd-ce", model, eps={"visual": 8 / 255, "audio": 0.006}, steps=100)
        >>> adv = attack({"audio": a, "visual": v}, labels)
    """

    flag_args = {"steps": "apgd_steps", "eot_iter": "eot"}
    n_targets = 0

    def __init__(self, model: nn.Module, eps: Mapping[str, float], steps: int = 100, restarts: int = 1,
                 random_start: bool = True, n_target_classes: int = 9, seed: int = 0, eps_unit: str = "input",
                 norm: Union[str, Mapping[str, str], None] = "Linf", eot_iter: int = 1) -> None:
        self.steps = check_int("steps", steps)
        super().__init__(model, eps, random_start=random_start, restarts=restarts, seed=seed,
                         eps_unit=eps_unit, norm=norm, eot_iter=eot_iter)
        if isinstance(n_target_classes, bool) or not isinstance(n_target_classes, int) or n_target_classes < 1:
            raise ValueError(f"n_target_classes must be an int >= 1, got {n_target_classes!r}")
        self.n_target_classes = n_target_classes
        self.checkpoints = checkpoints(steps)

    # -- loss ------------------------------------------------------------------------------------------
    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
        if self.gradient_loss == "ce":
            return F.cross_entropy(logits, labels, reduction="none")
        return dlr_loss(logits, labels, target)

    def _loss_grad(self, adv: Dict[str, torch.Tensor], fixed, labels: torch.Tensor,
                   target: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """Per-sample loss, logits and input gradients, EOT-averaged over ``eot_iter`` passes (base class)."""
        return self._eot_grads(adv, fixed, lambda z: self._loss(z, labels, target))

    # -- one run (Algorithm 1) -------------------------------------------------------------------------
    @torch.no_grad()
    def _apgd(self, clean, fixed, labels, threats, target: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        boxes = {m: threats[m].box(clean[m]) for m in clean}
        if self.random_start:
            x = {m: threats[m].random_perturb(clean[m], self._generator(clean[m].device)) for m in clean}
        else:
            x = {m: v.clone() for m, v in clean.items()}
        loss, logits, grad = self._loss_grad(x, fixed, labels, target)
        n = labels.shape[0]
        out = {m: v.clone() for m, v in x.items()}
        found = logits.argmax(dim=1) != labels
        x_best = {m: v.clone() for m, v in x.items()}
        grad_best = {m: g.clone() for m, g in grad.items()}
        best = loss.clone()
        best_at_ckpt = best.clone()
        scale = torch.full((n,), 2.0, dtype=torch.float64, device=labels.device)
        reduced_last = torch.zeros(n, dtype=torch.bool, device=labels.device)
        increases = torch.zeros(n, device=labels.device)
        x_prev = x
        last = 0
        for k in range(self.steps):
            new = {}
            for m in x:
                z = threats[m].clip(threats[m].scaled_step(x[m], grad[m], scale), boxes[m])
                if k > 0:
                    z = threats[m].clip(x[m] + MOMENTUM * (z - x[m]) + (1 - MOMENTUM) * (x[m] - x_prev[m]), boxes[m])
                new[m] = z
            x_prev, x = x, new
            loss_new, logits, grad = self._loss_grad(x, fixed, labels, target)
            newly = (logits.argmax(dim=1) != labels) & ~found
            for m in x:
                out[m][newly] = x[m][newly]
            found |= newly
            increases += (loss_new > loss).float()
            loss = loss_new
            better = loss > best
            best = torch.where(better, loss, best)
            for m in x:
                x_best[m][better] = x[m][better]
                grad_best[m][better] = grad[m][better]
            if k + 1 in self.checkpoints:
                window = k + 1 - last
                halve = (increases < RHO * window) | (~reduced_last & (best <= best_at_ckpt))
                scale = torch.where(halve, scale / 2, scale)
                for m in x:
                    x[m][halve] = x_best[m][halve]
                    x_prev[m][halve] = x_best[m][halve]
                    grad[m][halve] = grad_best[m][halve]
                reduced_last, best_at_ckpt, last = halve, best.clone(), k + 1
                increases.zero_()
        for m in out:
            out[m][~found] = x_best[m][~found]
        return out

    def _targets(self, clean, fixed, labels) -> List[Optional[torch.Tensor]]:
        if not self.n_targets:
            return [None]
        with torch.no_grad():
            logits = self._forward({**fixed, **clean})
        k = logits.shape[1]
        if k < self.min_classes:
            raise ValueError(f"apgd-t (targeted DLR) needs at least {self.min_classes} classes, the model has {k}; "
                             "use apgd-ce")
        order = logits.sort(dim=1, descending=True).indices
        n = min(self.n_target_classes, k - 1)
        # the t-th most likely class other than the label (the label itself is skipped)
        others = [order[i][order[i] != labels[i]] for i in range(labels.shape[0])]
        stacked = torch.stack(others) if others else order[:, 1:]
        return [stacked[:, t] for t in range(n)]

    def _run_restarts(self, clean, fixed, labels, threats) -> Dict[str, torch.Tensor]:
        best = {m: v.clone() for m, v in clean.items()}
        with torch.no_grad():
            robust = self._forward({**fixed, **clean}).argmax(dim=1) == labels
        targets = self._targets(clean, fixed, labels)
        first = True
        for target in targets:
            for r in range(self.restarts):
                todo = robust.nonzero().flatten()
                if todo.numel() == 0:
                    return best
                sub = lambda d: {m: (v[todo] if v is not None else None) for m, v in d.items()}  # noqa: E731
                adv = self._apgd(sub(clean), sub(fixed), labels[todo], {m: t.select(todo) for m, t in threats.items()},
                                 None if target is None else target[todo])
                with torch.no_grad():
                    fooled = self._forward({**sub(fixed), **adv}).argmax(dim=1) != labels[todo]
                for m in best:  # the first run's points are kept; later runs replace them where they fool
                    best[m][todo] = adv[m] if first else torch.where(
                        fooled.view((-1,) + (1,) * (adv[m].dim() - 1)), adv[m], best[m][todo])
                first = False
                robust[todo[fooled]] = False
                logger.debug("%s target %s restart %d: %d/%d fooled", self.name, target is not None, r,
                             int(fooled.sum()), todo.numel())
        return best


@ATTACKS.register("apgd-ce")
class APGDCE(APGD):
    __doc__ = APGD.__doc__
    name = "apgd-ce"


@ATTACKS.register("apgd-dlr")
class APGDDLR(APGD):
    __doc__ = APGD.__doc__
    name = "apgd-dlr"
    gradient_loss = "dlr"
    min_classes = 3  # the DLR loss divides by z_pi1 - z_pi3: it reads the 3 largest logits


@ATTACKS.register("apgd-t")
class APGDT(APGD):
    __doc__ = APGD.__doc__
    name = "apgd-t"
    gradient_loss = "dlr"
    flag_args = {"steps": "apgd_steps", "n_target_classes": "apgd_targets", "eot_iter": "eot"}
    n_targets = 1
    min_classes = 4  # the targeted DLR loss reads the 3 largest other logits
