"""FGSM: one signed-gradient step of size eps (Goodfellow et al., ICLR 2015)."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Union

import torch
import torch.nn as nn

from attacks.base import ATTACKS, Attack


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """Fast Gradient Sign Method, "Explaining and Harnessing Adversarial Examples" (Goodfellow, Shlens,
    Szegedy, ICLR 2015, arXiv 1412.6572), with per-modality budgets as in Tian & Xu (CVPR 2021).

    Threat model: L-infinity, untargeted cross-entropy (targeted with ``targeted=True``); each modality m
    with eps_m > 0 gets ``x_m + eps_m * sign(grad_m)``, projected onto the eps-ball around the clean input
    and the valid range (audio [-1, 1], visual [0, 1]; the reference code forgot to clip audio).

    Arguments (through ``attacks.create_attack("fgsm", model, ...)``):
        eps (dict): per-modality budget, e.g. ``{"audio": 0.012, "visual": 0}``; 0 or absent = untouched.
        eps_unit (str): "input" (default) or "normalized" (visual eps in ImageNet-normalised units).
        targeted (bool): False (default); if True, ``labels`` are target classes.
        eot_iter (int): 1; N > 1 averages the gradient over N passes of a randomised model (EOT, ``--eot``).
        One deterministic step: no steps, alpha, random_start or restarts (use pgd for those).

    Example::

        >>> attack = create_attack("fgsm", model, eps={"audio": 0.012})
        >>> adv = attack({"audio": a, "visual": v}, labels)   # adv["visual"] is v itself
    """

    name = "fgsm"
    steps = 1  # recorded in the grid's rows
    flag_args = {"eot_iter": "eot"}

    def __init__(self, model: nn.Module, eps: Mapping[str, float], targeted: bool = False,
                 eps_unit: str = "input", norm: Union[str, Mapping[str, str], None] = "Linf",
                 eot_iter: int = 1) -> None:
        # the single step has size eps (docs/paper.md, Attacks: "FGSM: one signed-gradient step of size eps")
        step = dict(eps) if isinstance(eps, Mapping) else None
        super().__init__(model, eps, alpha=step, targeted=targeted, eps_unit=eps_unit, norm=norm,
                         eot_iter=eot_iter)

    def _perturb(self, clean, start, fixed: Dict[str, Optional[torch.Tensor]], labels: torch.Tensor,
                 threats) -> Dict[str, torch.Tensor]:
        grads = self._input_grads(start, fixed, labels)
        return {m: threats[m].clip(threats[m].step(start[m], grads[m]), threats[m].box(clean[m])) for m in start}
