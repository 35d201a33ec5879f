"""MIM / MI-FGSM: momentum iterative FGSM (Dong et al., CVPR 2018)."""
from __future__ import annotations

from typing import Dict

import torch

from attacks.base import ATTACKS, Attack

# Guards the per-sample normalisation against an all-zero gradient (a sample whose loss is flat).
_TINY = 1e-12


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
        random_start/restarts: as for PGD (the paper uses none); targeted, eps_unit, seed: as for PGD.

    Example::

        >>> attack = create_attack("mim", model, eps={"visual": 0.006}, steps=10, decay=1.0)
        >>> adv = attack({"audio": a, "visual": v}, labels)
    """

    name = "mim"
    supports_random_start = True

    def _init_state(self, clean: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {m: torch.zeros_like(x) for m, x in clean.items()}

    def _direction(self, modality: str, grad: torch.Tensor, state: Dict[str, torch.Tensor]) -> torch.Tensor:
        dims = tuple(range(1, grad.dim()))
        scale = grad.abs().mean(dim=dims, keepdim=True).clamp_min(_TINY) if dims else grad.abs().clamp_min(_TINY)
        return state[modality].mul_(self.decay).add_(grad / scale)
