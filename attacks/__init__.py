"""Adversarial attacks on audio-visual models: ``create_attack(name, model, eps=..., ...)``.

Attacks register themselves by name in ``ATTACKS`` (``@ATTACKS.register`` in their own module); every one shares the L-infinity threat
model of ``attacks.base`` (per-modality budgets, projection around the clean input, valid ranges).
"""
from __future__ import annotations

from typing import List, Mapping, Union

import torch.nn as nn

from attacks import fgsm, mim, pgd  # noqa: F401  (each module registers its attack in ATTACKS)
from attacks.base import ATTACKS, EPS_UNITS, MODALITIES, Attack, LinfThreat

__all__ = ["ATTACKS", "Attack", "EPS_UNITS", "LinfThreat", "MODALITIES", "create_attack", "list_attacks"]


def list_attacks() -> List[str]:
    """Names accepted by ``create_attack``."""
    return ATTACKS.names()


def create_attack(
    name: str,
    model: nn.Module,
    eps: Mapping[str, float],
    steps: int = 10,
    alpha: Union[None, float, Mapping[str, float]] = None,
    decay: float = 1.0,
    random_start: bool = False,
    restarts: int = 1,
    targeted: bool = False,
    eps_unit: str = "input",
    seed: int = 0,
) -> Attack:
    """Build the attack ``name`` (fgsm, pgd, mim) against ``model``.

    ``eps`` maps modality -> L-infinity budget (e.g. ``{"audio": 0.006, "visual": 0.006}``); only
    modalities with eps > 0 are attacked. ``steps`` = 10 and ``alpha`` = eps/8 and ``decay`` = 1.0 are the
    paper's settings (docs/paper.md, Attacks). ``eps_unit="normalized"`` reads the visual eps (and alpha) in
    ImageNet-normalised units like the reference code. Unknown names raise ``KeyError`` listing the
    valid ones. The returned object is called as ``attack({"audio": a, "visual": v}, labels)``.

    Example::

        >>> attack = create_attack("pgd", model, eps={"audio": 0.006, "visual": 0.006})
        >>> adv = attack({"audio": a, "visual": v}, labels)
    """
    cls = ATTACKS.get(name)
    return cls(model, eps, steps=steps, alpha=alpha, decay=decay, random_start=random_start,
               restarts=restarts, targeted=targeted, eps_unit=eps_unit, seed=seed)
