"""PGD: projected gradient descent on the L-infinity ball (Madry et al., ICLR 2018)."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Union

import torch
import torch.nn as nn

from attacks.base import ATTACKS, Attack, check_int


@ATTACKS.register("pgd")
class PGD(Attack):
    """Projected Gradient Descent, "Towards Deep Learning Models Resistant to Adversarial Attacks"
    (Madry, Makelov, Schmidt, Tsipras, Vladu, ICLR 2018, arXiv 1706.06083), with per-modality budgets as
    in Tian & Xu (CVPR 2021).

    Threat model: L-infinity, untargeted cross-entropy (targeted with ``targeted=True``). Each step
    ``x_m <- x_m + alpha_m * sign(grad_m)`` is followed by projection onto the eps-ball around the CLEAN
    input (never the current iterate) and onto the valid range (audio [-1, 1], visual [0, 1]).

    Arguments (through ``attacks.create_attack("pgd", model, ...)``):
        eps (dict): per-modality budget, e.g. ``{"audio": 0.006, "visual": 0.006}``; 0/absent = untouched.
        steps (int): 10 (paper).
        alpha (None | float | dict): step size; None (default) = eps/8 per modality (paper).
        random_start (bool): False (paper: no random start); True = uniform start in the eps-ball.
        restarts (int): 1; with random_start, per sample the first successful (else highest-loss)
            restart is kept, and only still-robust samples are attacked again.
        targeted (bool): False; eps_unit (str): "input" or "normalized"; seed (int): 0 (random starts).
        eot_iter (int): 1; N > 1 averages every gradient over N passes of a randomised model (EOT, ``--eot``).

    Example::

        >>> attack = create_attack("pgd", model, eps={"audio": 0.006, "visual": 0.006}, steps=10)
        >>> adv = attack({"audio": a, "visual": v}, labels)
    """

    name = "pgd"
    flag_args = {"steps": "attack_steps", "random_start": "random_start", "restarts": "restarts", "eot_iter": "eot"}

    def __init__(self, model: nn.Module, eps: Mapping[str, float], steps: int = 10,
                 alpha: Union[None, float, Mapping[str, float]] = None, random_start: bool = False,
                 restarts: int = 1, targeted: bool = False, eps_unit: str = "input", seed: int = 0,
                 norm: Union[str, Mapping[str, str], None] = "Linf", eot_iter: int = 1) -> None:
        self.steps = check_int("steps", steps)
        super().__init__(model, eps, alpha=alpha, random_start=random_start, restarts=restarts,
                         targeted=targeted, eps_unit=eps_unit, seed=seed, norm=norm, eot_iter=eot_iter)

    def _perturb(self, clean, start, fixed: Dict[str, Optional[torch.Tensor]], labels: torch.Tensor,
                 threats) -> Dict[str, torch.Tensor]:
        adv = dict(start)
        boxes = {m: threats[m].box(clean[m]) for m in adv}  # eps-ball around the CLEAN input, in range
        for _ in range(self.steps):
            grads = self._input_grads(adv, fixed, labels)  # of the summed (targeted: negated) CE
            for m in adv:
                adv[m] = threats[m].clip(threats[m].step(adv[m], grads[m]), boxes[m])
        return adv
