"""Perturbation metrics and eps parsing for the attack evaluation.

``parse_eps`` reads budgets like ``"visual=0.006,audio=0.006"``; ``snr_db`` (audio) and ``psnr_db``
(visual, [0, 1] range) are per sample; ``linf`` is the per-sample largest |delta|.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping

import torch

from attacks.base import MODALITIES

EPS_FORM = "'visual=<float>,audio=<float>' (e.g. 'visual=0.006,audio=0.006'; a missing modality means 0)"

# The paper's attack grid (docs/paper.md, section "Attacks", item "Grid"):
# (visual, audio) in {(0,0), (0,0.012), (0.012,0), (0.006,0.006)}.
PAPER_EPS_GRID: List[Dict[str, float]] = [
    {"visual": 0.0, "audio": 0.0},
    {"visual": 0.0, "audio": 0.012},
    {"visual": 0.012, "audio": 0.0},
    {"visual": 0.006, "audio": 0.006},
]


def parse_eps(text: str) -> Dict[str, float]:
    """Parse ``"visual=0.006,audio=0.006"`` into ``{"audio": 0.006, "visual": 0.006}``.

    Both modalities are always present in the result (a modality left out of ``text`` gets 0). Malformed
    text (no ``=``, unknown or repeated modality, a value that is not a finite number >= 0) raises
    ``ValueError`` naming the problem and the valid form.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"eps string is empty; valid form: {EPS_FORM}")
    out: Dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if part.count("=") != 1:
            raise ValueError(f"malformed eps {text!r}: item {part!r} is not modality=value; valid form: {EPS_FORM}")
        key, value = (s.strip() for s in part.split("="))
        if key not in MODALITIES:
            raise ValueError(f"malformed eps {text!r}: unknown modality {key!r} (valid: {', '.join(MODALITIES)}); "
                             f"valid form: {EPS_FORM}")
        if key in out:
            raise ValueError(f"malformed eps {text!r}: {key!r} given twice; valid form: {EPS_FORM}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"malformed eps {text!r}: {value!r} is not a number; valid form: {EPS_FORM}") from None
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"malformed eps {text!r}: {key} must be a finite number >= 0, got {value!r}; "
                             f"valid form: {EPS_FORM}")
        out[key] = number
    return {m: out.get(m, 0.0) for m in MODALITIES}


def format_eps(eps: Mapping[str, float]) -> str:
    """Inverse of ``parse_eps``: ``{"visual": 0.006, "audio": 0}`` -> ``"visual=0.006,audio=0"``."""
    return ",".join(f"{m}={eps.get(m, 0.0):g}" for m in ("visual", "audio"))


def _per_sample(clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    if clean.shape != adv.shape:
        raise ValueError(f"clean and adversarial shapes differ: {tuple(clean.shape)} vs {tuple(adv.shape)}")
    if clean.dim() < 1:
        raise ValueError("expected a batch (B, ...) of samples, got a scalar")
    return (adv.double() - clean.double()).flatten(1)


def linf(clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Per-sample max |adv - clean|, shape (B,), float64."""
    delta = _per_sample(clean, adv)
    if delta.shape[1] == 0:
        return torch.zeros(delta.shape[0], dtype=torch.float64, device=delta.device)
    return delta.abs().amax(dim=1)


def snr_db(clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Per-sample signal-to-noise ratio of an audio perturbation, ``10 log10(sum x^2 / sum delta^2)`` (B,).

    +inf where the sample is unperturbed (also when it is silent), -inf where the clean signal is silent
    and the perturbation is not.
    """
    delta = _per_sample(clean, adv)
    signal = clean.double().flatten(1).pow(2).sum(dim=1)
    noise = delta.pow(2).sum(dim=1)
    snr = 10.0 * torch.log10(signal / noise)
    return torch.where(noise == 0, torch.full_like(snr, math.inf), snr)


def psnr_db(clean: torch.Tensor, adv: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Per-sample peak signal-to-noise ratio for images in [0, ``peak``], ``10 log10(peak^2 / MSE)`` (B,).

    +inf where the sample is unperturbed.
    """
    delta = _per_sample(clean, adv)
    return 10.0 * torch.log10(peak ** 2 / delta.pow(2).mean(dim=1))


def max_delta(clean: Mapping[str, torch.Tensor], adv: Mapping[str, torch.Tensor]) -> Dict[str, float]:
    """Largest |adv - clean| over the batch, per modality present in both dicts (0.0 where untouched)."""
    return {m: float(linf(clean[m], adv[m]).max()) if clean[m].numel() else 0.0
            for m in MODALITIES if clean.get(m) is not None and adv.get(m) is not None}
