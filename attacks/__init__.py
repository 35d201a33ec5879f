"""Adversarial attacks on audio-visual models: ``create_attack(name, model, eps=..., norm=..., ...)``.

Attacks register themselves by name in ``ATTACKS`` (``@ATTACKS.register`` in their own module); every one
uses the threat models of ``attacks.threats`` (per-modality budgets under Linf, L2 or audio SNR, projection
around the clean input, valid ranges). ``--attack_type all`` is every registered attack whose class has
``in_all = True`` (``default_attacks()``): all but ``autoattack``, an ensemble of attacks already in it.
"""
from __future__ import annotations

import inspect
from typing import Any, List, Mapping, Union

import torch.nn as nn

from attacks import apgd, autoattack, fgsm, mim, pgd, square  # noqa: F401  (each module registers its attack)
from attacks.base import ATTACKS, EPS_UNITS, MODALITIES, Attack, LinfThreat
from attacks.threats import NORMS, parse_norm

__all__ = ["ATTACKS", "Attack", "EPS_UNITS", "LinfThreat", "MODALITIES", "NORMS", "create_attack",
           "default_attacks", "list_attacks", "parse_norm"]


def list_attacks() -> List[str]:
    """Names accepted by ``create_attack``."""
    return ATTACKS.names()


def default_attacks() -> List[str]:
    """The attacks of ``--attack_type all``: every registered attack except those marked ``in_all = False``."""
    return [n for n in ATTACKS.names() if getattr(ATTACKS.get(n), "in_all", True)]


def attack_options(name: str) -> List[str]:
    """The keyword arguments the attack ``name`` takes besides ``model`` and ``eps``."""
    params = inspect.signature(ATTACKS.get(name).__init__).parameters
    return [p for p in params if p not in ("self", "model", "eps")]


def create_attack(name: str, model: nn.Module, eps: Mapping[str, float],
                  norm: Union[str, Mapping[str, str]] = "Linf", **options: Any) -> Attack:
    """Build the attack ``name`` against ``model`` (any ``nn.Module`` called as ``model(audio=, visual=)``).

    ``eps`` maps modality -> budget (e.g. ``{"audio": 0.006, "visual": 0.006}``; dB for ``snr``); only
    modalities with eps > 0 are attacked. ``norm`` is ``"Linf"``, ``"L2"`` or per modality
    (``{"visual": "L2", "audio": "snr"}``). ``options`` are the attack's own arguments with the paper's
    defaults: fgsm/pgd/mim take steps=10, alpha=None (eps/8), decay=1.0, random_start=False, restarts=1,
    targeted=False, eps_unit="input", seed=0 (docs/paper.md, Attacks); apgd-ce/apgd-dlr/apgd-t take
    steps=100, restarts=1, random_start=True, n_target_classes=9, seed, eps_unit; square takes
    n_queries=5000, p_init=0.8, restarts, seed, eps_unit; autoattack takes version, steps, n_queries,
    p_init, n_target_classes, restarts, seed, eps_unit. Unknown names raise ``KeyError`` listing the valid
    ones; unknown options ``TypeError`` listing the attack's options.

    Example::

        >>> attack = create_attack("pgd", model, eps={"audio": 0.006, "visual": 0.006})
        >>> aa = create_attack("autoattack", model, eps={"visual": 0.5, "audio": 30.0},
        ...                    norm={"visual": "L2", "audio": "snr"}, n_queries=1000)
        >>> adv = aa({"audio": a, "visual": v}, labels)
    """
    cls = ATTACKS.get(name)
    valid = attack_options(name)
    bad = [k for k in options if k not in valid]
    if bad:
        raise TypeError(f"{name} takes no option {', '.join(map(repr, bad))}; its options: {', '.join(valid)}")
    return cls(model, eps, norm=norm, **options)
