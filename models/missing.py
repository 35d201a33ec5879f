"""A missing input: what an audio-visual model gets in place of a modality that is absent.

"Absent" is defined at the feature level, the point where a fusion head combines the modalities: the absent
modality's feature ``(B, D_m)`` is replaced by a fill vector ``(D_m,)``, and the absent input is never read
(nor encoded). Fills, by name (``MISSING_FILLS``):

* ``zeros``: the zero feature. For the heads here (linear maps of the features, FiLM/gated conditioning,
  the late head's per-modality logits) it removes the modality's contribution, leaving the head's biases:
  the reading of MultiBench's (Liang et al., NeurIPS 2021) zero-imputation baseline at the feature level.
  Zeros at the input (silence, black frames) were not chosen: a silent waveform or a black frame is itself
  a signal the nets map to some feature (BatchNorm shifts it), not an absent one.
* ``mean``: the mean feature of the training set (the clean eval-mode features that ``--save_features``
  writes, ``features_train.pt``): the model's expected feature of that modality, so the head sees a typical
  value instead of an out-of-distribution zero (mean imputation). In training with ``--modality_dropout``
  the training mean is not known yet; the fill is then the batch's mean feature (detached), an unbiased
  estimate of it.

A head declares the fills it supports (``FusionHead.missing_fills``); none of the heads here has a learned
placeholder, so none offers one. Nothing outside the head tests its name.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

from utils.registry import Registry

# The --missing_modality values: a modality, or "none" (the row with both inputs, for reference).
MISSING_CHOICES: Tuple[str, ...] = ("audio", "visual", "none")
MISSING_FILLS: "Registry[Callable[..., Tensor]]" = Registry("missing fill")


@MISSING_FILLS.register("zeros")
def zeros_fill(feats: Tensor, train_mean: Optional[Tensor] = None) -> Tensor:
    """The zero feature ``(D,)`` (``feats``: the batch's features ``(B, D)``, for shape and dtype)."""
    return torch.zeros(feats.shape[1:], dtype=feats.dtype, device=feats.device)


@MISSING_FILLS.register("mean")
def mean_fill(feats: Tensor, train_mean: Optional[Tensor] = None) -> Tensor:
    """The training set's mean feature when given, else the batch's (detached) mean feature."""
    if train_mean is not None:
        if train_mean.shape != feats.shape[1:]:
            raise ValueError(f"the training mean feature has shape {tuple(train_mean.shape)}, the model's "
                             f"feature {tuple(feats.shape[1:])}")
        return train_mean.to(dtype=feats.dtype, device=feats.device)
    return feats.detach().mean(dim=0)


def training_means(features: Mapping[str, object], modalities: Tuple[str, ...]) -> Dict[str, Tensor]:
    """The mean feature of every modality of a ``features_train.pt`` dict (``--save_features``)."""
    out = {}
    for m in modalities:
        x = features.get(m)
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[0] == 0:
            raise ValueError(f"the training features have no (N, D) {m} matrix")
        out[m] = x.double().mean(dim=0).float()
    return out


def dropout_mask(batch: int, modalities: Tuple[str, ...], p: float, generator: torch.Generator
                 ) -> Dict[str, Tensor]:
    """Modality dropout: with probability ``p`` per sample one modality, chosen uniformly among
    ``modalities``, is absent; never more than one. ``{m: (B,) bool}`` on the CPU, drawn from ``generator``
    (two draws per sample: whether, and which). A model with one modality drops nothing."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"modality dropout p must be in [0, 1), got {p}")
    if len(modalities) < 2:
        return {}
    drop = torch.rand(batch, generator=generator) < p
    which = torch.randint(len(modalities), (batch,), generator=generator)
    return {m: drop & (which == i) for i, m in enumerate(modalities)}
