"""Sanity checks that flag an evaluation instead of letting it pass silently (gradient masking and the like).

AutoAttack's own checks (Croce & Hein, ICML 2020, and the auto-attack package's checks), made per modality,
plus multimodal ones:

* ``model_checks``: on a clean batch, the number of samples whose input gradient of the CE loss vanishes
  (``vanishing_gradient``) per modality (a quantising, saturating or otherwise masking model), randomness
  (``is_stochastic``: two forwards of the same input in eval mode differ) and logits that look like
  probabilities (every row in [0, 1] and summing to 1: CE on them is flat). The grid runs them on every
  batch and adds the counts (``merge_checks``).
* ``check_eot``: randomness asks for EOT (expectation over transformation, Athalye, Carlini & Wagner, ICML
  2018, Sec. 4): gradient attacks on a stochastic model without ``--eot N`` (``eot_iter``) are refused, as is
  ``--eot`` on a deterministic model (it would only multiply the cost), both with ``UsageError`` naming
  ``--eot``. AutoAttack's "rand" version turns EOT on by itself (20 passes).
* ``check_flags``: the flags of those counts for one attack: the vanishing-gradient flag only for attacks
  that follow the CE gradient (a saturated softmax makes CE gradients vanish, while DLR is invariant to the
  logits' scale and Square reads no gradient), the probabilities flag only for gradient attacks.
* ``grid_flags``: over result rows of one model, robust accuracy rising with eps for one attack, and a
  both-modalities attack weaker than a single-modality attack spending the same budget on that modality,
  each beyond what sampling noise explains (``rise_tolerance``).

Every flag is a plain string; rows carry them joined by "; " ("none" when nothing was flagged).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, MutableMapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from attacks.base import forward
from utils.errors import UsageError
from utils.modes import model_mode

# Relative difference between two forwards that counts as randomness.
RANDOM_TOL = 1e-5
# A sample's input gradient vanishes when its L1 norm is below this. The L1 norm is the first-order change
# of the loss when every coordinate moves by 1, about the width of the valid ranges ([0, 1] pixels, [-1, 1]
# waveform): the most any budget inside the range can gain to first order. 1.2e-7 is float32's resolution
# (2^-23) of a loss of order 1, so below it no attack sees the loss move. Absolute, not relative to the
# loss: a loss driven to ~0 by a saturated softmax is the masking to detect, and the ranges are fixed.
# Shared by this module's flag and pipeline/adaptive.py's gradient check.
ZERO_GRAD_TOL = 2.0 ** -23
# "Robust accuracy rises with eps" (and the joint-attack comparison) is flagged only beyond
# max(RISE_MIN_CLIPS clips, RISE_SE binomial standard errors) of the larger accuracy: with random starts
# two evaluations of a healthy model differ by a clip or two, and the accuracy of n clips scatters by
# sqrt(p (1 - p) / n); a smaller rise is what noise produces, not a broken attack.
RISE_MIN_CLIPS = 2
RISE_SE = 2.0


def vanishing_gradient(grad: torch.Tensor) -> torch.Tensor:
    """Per sample (B,) bool: the input gradient's L1 norm is below ``ZERO_GRAD_TOL``."""
    return grad.flatten(1).abs().sum(1, dtype=torch.float64) < ZERO_GRAD_TOL


def rise_tolerance(acc: float, n: int) -> float:
    """The accuracy rise that sampling noise explains on ``n`` clips at accuracy ``acc`` (see RISE_SE)."""
    if n <= 0:
        raise ValueError(f"need n_samples > 0, got {n}")
    return max(RISE_MIN_CLIPS / n, RISE_SE * math.sqrt(acc * (1.0 - acc) / n))


# EOT passes suggested when a stochastic model is found: AutoAttack's "rand" version (fra31/auto-attack,
# autoattack.py set_version('rand'): apgd.eot_iter = 20).
EOT_SUGGESTED = 20


def is_stochastic(model: nn.Module, inputs: Mapping[str, Optional[torch.Tensor]]) -> bool:
    """Whether two forward passes of ``model`` in eval mode on the same inputs differ (relative RANDOM_TOL)."""
    present = {m: x for m, x in inputs.items() if x is not None}
    with model_mode(model, training=False), torch.no_grad():
        a, b = forward(model, present).float(), forward(model, present).float()
    return _differ(a, b)


def _differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    if not a.numel():
        return False
    return bool(((a - b).abs().max() / a.abs().max().clamp_min(1e-12)) > RANDOM_TOL)


def require_eot(where: str) -> None:
    """Raise the error of a gradient attack run on a stochastic model without EOT."""
    raise UsageError("--eot", f"{where}: the model is stochastic (two forward passes of the same input in eval "
                     "mode differ), so one gradient is one random draw and the attack would overstate robustness; "
                     f"average gradients over N passes with --eot N (eot_iter=N; AutoAttack's rand version uses "
                     f"{EOT_SUGGESTED})")


def check_eot(model: nn.Module, inputs: Mapping[str, Optional[torch.Tensor]], eot_iter: int,
              gradient_attacks: bool = True, stochastic: Optional[bool] = None) -> bool:
    """EOT exactly when the model is stochastic: raises ``UsageError`` (``--eot``) for a gradient attack on a
    stochastic model with ``eot_iter == 1`` and for ``eot_iter > 1`` on a deterministic one (decided by
    ``is_stochastic`` on ``inputs`` unless ``stochastic`` is given). Returns whether the model is stochastic."""
    random = is_stochastic(model, inputs) if stochastic is None else stochastic
    if random and eot_iter == 1 and gradient_attacks:
        require_eot("gradient attack")
    if not random and eot_iter > 1:
        raise UsageError("--eot", f"{eot_iter} passes asked for, but the model is deterministic (two forward passes "
                         "of the same batch in eval mode agree): EOT averages over a model's randomness and here "
                         "would only multiply the cost; leave --eot out")
    return random


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
                zero[m] = labels.numel() if g is None else int(vanishing_gradient(g).sum())
    probs = bool(a.numel()) and bool(((a >= 0) & (a <= 1)).all()) and bool(
        torch.allclose(a.sum(1), torch.ones_like(a[:, 0]), atol=1e-3))
    return {"n": labels.numel(), "zero_grad": zero, "random": _differ(a, b),
            "probabilities": probs}


def merge_checks(total: MutableMapping[str, Any], new: Mapping[str, Any]) -> None:
    """Add the counts of ``new`` (from ``model_checks``) into ``total``."""
    total["n"] = total.get("n", 0) + new["n"]
    zg = total.setdefault("zero_grad", {})
    for m, z in new["zero_grad"].items():
        zg[m] = zg.get(m, 0) + z
    total["random"] = total.get("random", False) or new["random"]
    total["probabilities"] = total.get("probabilities", False) or new["probabilities"]


def check_flags(checks: Mapping[str, Any], gradient_loss: Optional[str] = "ce") -> List[str]:
    """The flags of accumulated ``model_checks`` counts for an attack following the gradient of
    ``gradient_loss`` (``Attack.gradient_loss``: "ce", "dlr", or None for a gradient-free attack)."""
    flags = []
    n = checks.get("n", 0)
    for m, z in sorted(checks.get("zero_grad", {}).items()):
        if z and gradient_loss == "ce":
            flags.append(f"zero input gradient on {m} for {z}/{n} samples: gradient masking likely "
                         "(quantised, saturating or non-differentiable input processing?)")
    if checks.get("random"):
        flags.append("randomness: two forwards of the same input differ (gradient attacks need --eot N; "
                     "check eval mode)")
    if checks.get("probabilities") and gradient_loss is not None:
        flags.append("the model's outputs look like probabilities, not logits (CE/DLR on them are flat)")
    return flags


def _key(row: Mapping[str, Any]):
    return row.get("model"), row["attack"], row.get("norm_audio"), row.get("norm_visual")


def grid_flags(rows: Sequence[MutableMapping[str, Any]]) -> None:
    """Append grid-level flags to ``rows`` (in place; ``row["flags"]`` is a "; "-joined string); every row
    needs ``adv_acc`` and ``n_samples`` (the rise must exceed ``rise_tolerance``)."""
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
                tol = rise_tolerance(r["adv_acc"], int(r["n_samples"]))
                if ea >= oa and ev >= ov and (ea, ev) != (oa, ov) and r["adv_acc"] > o["adv_acc"] + tol:
                    if ea > 0 and ev > 0 and (oa == 0 or ov == 0) and (oa == ea or ov == ev):
                        extra.append(f"both-modalities attack weaker than single-modality audio={oa:g},visual={ov:g} "
                                     "at the same budget on that modality")
                    else:
                        extra.append(f"robust accuracy rises with eps (above audio={oa:g},visual={ov:g})")
            if extra:
                old = [f for f in str(r.get("flags") or "none").split("; ") if f and f != "none"]
                r["flags"] = "; ".join(old + extra)
