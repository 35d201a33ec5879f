"""Adversarial attacks on audio-visual models: ``create_attack(name, model, eps=..., norm=..., ...)``.

Attacks register themselves by name in ``ATTACKS`` (``@ATTACKS.register`` in their own module); every one
uses the threat models of ``attacks.threats`` (per-modality budgets under Linf, L2 or audio SNR, projection
around the clean input, valid ranges). ``--attack_type all`` is every registered attack whose class has
``in_all = True`` (``default_attacks()``): all but ``autoattack``, an ensemble of attacks already in it.
"""
from __future__ import annotations

import ast
import inspect
from typing import Any, Dict, List, Mapping, Union

import torch.nn as nn

from attacks import (apgd, autoattack, desync, fab, fgsm, mim, mma, pgd, sparse_time, square,  # noqa: F401
                     temporal_invariance, time_shared, universal)  # each module registers its attack
from attacks.base import ATTACKS, EPS_UNITS, MODALITIES, Attack, LinfThreat
from attacks.threats import NORMS, parse_norm

__all__ = ["ATTACKS", "Attack", "EPS_UNITS", "LinfThreat", "MODALITIES", "NORMS", "create_attack",
           "default_attacks", "list_attacks", "parse_attack_args", "parse_norm"]


def list_attacks() -> List[str]:
    """Names accepted by ``create_attack``."""
    return ATTACKS.names()


def default_attacks() -> List[str]:
    """The attacks of ``--attack_type all``: every registered attack except those marked ``in_all = False``."""
    return [n for n in ATTACKS.names() if getattr(ATTACKS.get(n), "in_all", True)]


def attack_options(name: str) -> List[str]:
    """The keyword arguments the attack ``name`` takes besides ``model`` and ``eps``."""
    return ATTACKS.get(name).options()


def parse_attack_args(text: str) -> Dict[str, Dict[str, Any]]:
    """``"pgd:steps=20;square:p_init=0.3,n_queries=100"`` -> ``{"pgd": {"steps": 20}, "square": {...}}``.

    Every key must be an argument of the attack's constructor; a value is converted to the type of the
    argument's default (int, float, bool, str), else read as a Python literal. Errors (``ValueError``) name
    the attack, the key and the attack's accepted arguments.
    """
    out: Dict[str, Dict[str, Any]] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(";"))):
        name, sep, items = part.partition(":")
        name = name.strip()
        if not sep or name not in ATTACKS:
            raise ValueError(f"{part!r} is not attack:key=value,... with a registered attack "
                             f"({', '.join(ATTACKS.names())})")
        params = inspect.signature(ATTACKS.get(name).__init__).parameters
        valid = attack_options(name)
        for item in filter(None, (i.strip() for i in items.split(","))):
            key, eq, raw = (s.strip() for s in item.partition("="))
            if not eq or key not in valid:
                raise ValueError(f"{name} takes no argument {key!r}; its arguments: {', '.join(valid)}")
            out.setdefault(name, {})[key] = _convert(name, key, raw, params[key].default)
    return out


def _convert(name: str, key: str, raw: str, default: Any) -> Any:
    kind = type(default)
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false"):
                raise ValueError("not true/false")
            return raw.lower() == "true"
        if kind in (int, float, str):
            return kind(raw)
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError) as err:
        want = kind.__name__ if kind in (bool, int, float, str) else "a Python literal"
        raise ValueError(f"{name}: {key}={raw!r} is not {want} ({err})") from None


def create_attack(name: str, model: nn.Module, eps: Mapping[str, float],
                  norm: Union[str, Mapping[str, str]] = "Linf", **options: Any) -> Attack:
    """Build the attack ``name`` against ``model`` (any ``nn.Module`` called as ``model(audio=, visual=)``).

    ``eps`` maps modality -> budget (e.g. ``{"audio": 0.006, "visual": 0.006}``; dB for ``snr``); only
    modalities with eps > 0 are attacked. ``norm`` is ``"Linf"``, ``"L2"`` or per modality
    (``{"visual": "L2", "audio": "snr"}``). ``options`` are the attack's own arguments with the paper's
    defaults: pgd/mim take steps=10, alpha=None (eps/8), random_start=False, restarts=1, targeted=False,
    eps_unit="input", seed=0 (docs/paper.md, Attacks), mim also decay=1.0; fgsm takes targeted, eps_unit;
    apgd-ce/apgd-dlr/apgd-t take
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
        takers = [n for n in ATTACKS.names() if ATTACKS.get(n).takes(bad[0])]
        raise TypeError(f"{name} takes no option {', '.join(map(repr, bad))}; its options: {', '.join(valid)}"
                        f" (attacks that take {bad[0]}: {', '.join(takers) or 'none'})")
    return cls(model, eps, norm=norm, **options)
