"""MIM / MI-FGSM: momentum iterative FGSM (Dong et al., CVPR 2018)."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Union

import torch
import torch.nn as nn

from attacks.base import ATTACKS, Attack, _check_scalar, check_int

# Guards the per-sample normalisation against an all-zero gradient (a sample whose loss is flat).
_TINY = 1e-12


def l1_normalised(grad: torch.Tensor) -> torch.Tensor:
    """``grad / mean|grad|`` per sample (the direction of the L1-normalised gradient; Dong et al., Alg. 1)."""
    dims = tuple(range(1, grad.dim()))
    scale = grad.abs().mean(dim=dims, keepdim=True).clamp_min(_TINY) if dims else grad.abs().clamp_min(_TINY)
    return grad / scale


@ATTACKS.register("mim")
class MIM(Attack):
    """Momentum Iterative Method, "Boosting Adversarial Attacks with Momentum" (Dong, Liao, Pang, Su, Zhu,
    Hu, Li, CVPR 2018, arXiv 1710.06081), with per-modality budgets as in Tian & Xu (CVPR 2021).

    Threat model: L-infinity, untargeted cross-entropy (targeted with ``targeted=True``). Per modality and
    per SAMPLE the gradient is L1-normalised, ``g <- mu * g + grad / mean|grad|`` (the mean is the L1 norm
    over the sample's elements divided by their count, a per-sample constant, so the direction is that of
    the L1-normalised gradient; the reference code's batch-wide norm made results depend on the batch),
    then ``x <- x + alpha * sign(g)`` is projected onto the eps-ball around the CLEAN input and the range.

    Arguments (through ``attacks.create_attack("mim", model, ...)``):
        eps (dict): per-modality budget; 0/absent = untouched.
        steps (int): 10 (paper); alpha: None = eps/8 (paper); decay (float): mu = 1.0 (paper).
        random_start/restarts: as for PGD (the paper uses none); targeted, eps_unit, seed, eot_iter: as for PGD.

    Example::

        >>> attack = create_attack("mim", model, eps={"visual": 0.006}, steps=10, decay=1.0)
        >>> adv = attack({"audio": a, "visual": v}, labels)
    """

    name = "mim"
    flag_args = {"steps": "attack_steps", "random_start": "random_start", "restarts": "restarts", "eot_iter": "eot"}

    def __init__(self, model: nn.Module, eps: Mapping[str, float], steps: int = 10,
                 alpha: Union[None, float, Mapping[str, float]] = None, decay: float = 1.0,
                 random_start: bool = False, restarts: int = 1, targeted: bool = False, eps_unit: str = "input",
                 seed: int = 0, norm: Union[str, Mapping[str, str], None] = "Linf", eot_iter: int = 1) -> None:
        self.steps = check_int("steps", steps)
        self.decay = _check_scalar("decay", decay)  # mu = 1.0 in the paper (Dong et al., Sec. 3.1)
        super().__init__(model, eps, alpha=alpha, random_start=random_start, restarts=restarts,
                         targeted=targeted, eps_unit=eps_unit, seed=seed, norm=norm, eot_iter=eot_iter)

    def _perturb(self, clean, start, fixed: Dict[str, Optional[torch.Tensor]], labels: torch.Tensor,
                 threats) -> Dict[str, torch.Tensor]:
        adv = dict(start)
        boxes = {m: threats[m].box(clean[m]) for m in adv}  # eps-ball around the CLEAN input, in range
        momentum = {m: torch.zeros_like(x) for m, x in clean.items()}
        for _ in range(self.steps):
            grads = self._input_grads(adv, fixed, labels)
            for m in adv:
                momentum[m].mul_(self.decay).add_(l1_normalised(grads[m]))  # g <- mu g + grad / |grad|_1
                adv[m] = threats[m].clip(threats[m].step(adv[m], momentum[m]), boxes[m])
        return adv
