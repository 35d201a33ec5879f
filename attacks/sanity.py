"""Sanity checks that flag an evaluation instead of letting it pass silently (gradient masking and the like).

AutoAttack's own checks (Croce & Hein, ICML 2020, and the auto-attack package's checks), made per modality,
plus multimodal ones:

* ``model_checks``: on a clean batch, the fraction of samples whose input gradient of the CE loss is zero
  per modality (a quantising or otherwise masking model), randomness (two forwards differ) and logits that
  look like probabilities (every row in [0, 1] and summing to 1: CE on them is flat).
* ``grid_flags``: over result rows of one model, robust accuracy rising with eps for one attack, and a
  both-modalities attack weaker than a single-modality attack spending the same budget on that modality.

Every flag is a plain string; rows carry them joined by "; " ("none" when nothing was flagged).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, MutableMapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from attacks.base import forward
from utils.modes import model_mode

# Relative difference between two forwards that counts as randomness.
RANDOM_TOL = 1e-5
# Accuracy differences below this are float noise, not a flag (rows are fractions of samples).
ACC_TOL = 1e-9


def model_checks(model: nn.Module, inputs: Mapping[str, Optional[torch.Tensor]], labels: torch.Tensor,
                 modalities: Sequence[str]) -> Dict[str, Any]:
    """Counts on one clean batch: ``n``, ``zero_grad`` per modality, ``random`` (bool), ``probabilities``."""
    present = {m: x for m, x in inputs.items() if x is not None}
    with model_mode(model, training=False):
        with torch.no_grad():
            a, b = forward(model, present).float(), forward(model, present).float()
        leaves = {m: present[m].detach().requires_grad_(True) for m in modalities if m in present}
        zero: Dict[str, int] = {}
        if leaves:
            with torch.enable_grad():
                loss = F.cross_entropy(forward(model, {**present, **leaves}), labels, reduction="sum")
                grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
            for m, g in zip(leaves, grads):
                zero[m] = labels.numel() if g is None else int((g.flatten(1).abs().amax(1) == 0).sum())
    scale = a.abs().max().clamp_min(1e-12)
    probs = bool(a.numel()) and bool(((a >= 0) & (a <= 1)).all()) and bool(
        torch.allclose(a.sum(1), torch.ones_like(a[:, 0]), atol=1e-3))
    return {"n": labels.numel(), "zero_grad": zero, "random": bool(((a - b).abs().max() / scale) > RANDOM_TOL),
            "probabilities": probs}


def merge_checks(total: MutableMapping[str, Any], new: Mapping[str, Any]) -> None:
    """Add the counts of ``new`` (from ``model_checks``) into ``total``."""
    total["n"] = total.get("n", 0) + new["n"]
    zg = total.setdefault("zero_grad", {})
    for m, z in new["zero_grad"].items():
        zg[m] = zg.get(m, 0) + z
    total["random"] = total.get("random", False) or new["random"]
    total["probabilities"] = total.get("probabilities", False) or new["probabilities"]


def check_flags(checks: Mapping[str, Any]) -> List[str]:
    """The flags of accumulated ``model_checks`` counts."""
    flags = []
    n = checks.get("n", 0)
    for m, z in sorted(checks.get("zero_grad", {}).items()):
        if z:
            flags.append(f"zero input gradient on {m} for {z}/{n} samples: gradient masking likely "
                         "(quantised or non-differentiable input processing?)")
    if checks.get("random"):
        flags.append("randomness: two forwards of the same input differ (use EOT / check eval mode)")
    if checks.get("probabilities"):
        flags.append("the model's outputs look like probabilities, not logits (CE/DLR on them are flat)")
    return flags


def _key(row: Mapping[str, Any]):
    return row.get("model"), row["attack"], row.get("norm_audio"), row.get("norm_visual")


def grid_flags(rows: Sequence[MutableMapping[str, Any]]) -> None:
    """Append grid-level flags to ``rows`` (in place; ``row["flags"]`` is a "; "-joined string)."""
    groups: Dict[Any, List[MutableMapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_key(r), []).append(r)
    for group in groups.values():
        for r in group:
            extra: List[str] = []
            for o in group:
                if o is r:
                    continue
                ea, ev = r["eps_audio"], r["eps_visual"]
                oa, ov = o["eps_audio"], o["eps_visual"]
                if ea >= oa and ev >= ov and (ea, ev) != (oa, ov) and r["adv_acc"] > o["adv_acc"] + ACC_TOL:
                    if ea > 0 and ev > 0 and (oa == 0 or ov == 0) and (oa == ea or ov == ev):
                        extra.append(f"both-modalities attack weaker than single-modality audio={oa:g},visual={ov:g} "
                                     "at the same budget on that modality")
                    else:
                        extra.append(f"robust accuracy rises with eps (above audio={oa:g},visual={ov:g})")
            if extra:
                old = [f for f in str(r.get("flags") or "none").split("; ") if f and f != "none"]
                r["flags"] = "; ".join(old + extra)
