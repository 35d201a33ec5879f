"""Fusion heads (classifiers on modality features), registered by name in ``FUSIONS``.

Every head is built as ``FUSIONS.get(name)(num_classes=K, dim_audio=Da, dim_visual=Dv)`` and maps a dict
``{"audio": (B, Da), "visual": (B, Dv)}`` (only the keys in ``head.modalities``) to logits ``(B, K)``.

Direction convention for FiLM and Gated heads: the *first*-named modality conditions the second.
``film_av``/``gated_av``: audio produces gamma/beta (or the gate) that act on the visual feature;
``film_va``/``gated_va``: visual acts on audio.

The ``attention`` head also consumes the visual *map*: ``attend(f_audio, map)`` returns the audio-attended
visual feature and the attention over the T*h*w locations (the localization map).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple, Type

import torch
from torch import Tensor, nn

from utils.registry import Registry

FUSIONS: Registry[Type["FusionHead"]] = Registry("fusion")

HIDDEN_DIM = 512  # common projection width of the bimodal heads (our choice; matches the 512-d features)


class FusionHead(nn.Module):
    """Base class: declares ``modalities`` and checks the feature dict given to ``forward``."""

    name: str = ""
    modalities: Tuple[str, ...] = ()
    uses_visual_map: bool = False

    def __init__(self, num_classes: int, dim_audio: Optional[int], dim_visual: Optional[int]) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"fusion {self.name!r}: num_classes must be >= 1, got {num_classes}")
        for mod, dim in (("audio", dim_audio), ("visual", dim_visual)):
            if mod in self.modalities and (dim is None or dim < 1):
                raise ValueError(f"fusion {self.name!r} uses {mod} and needs dim_{mod} >= 1, got {dim}")
        self.num_classes = num_classes
        self.dims = {"audio": dim_audio, "visual": dim_visual}

    def _get(self, feats: Dict[str, Tensor], mod: str) -> Tensor:
        """Feature ``mod`` from ``feats``, checked to be ``(B, dim)``."""
        if mod not in feats or feats[mod] is None:
            raise KeyError(f"fusion {self.name!r} needs feature {mod!r}; got keys {sorted(feats)}")
        f = feats[mod]
        if f.dim() != 2 or f.shape[1] != self.dims[mod]:
            raise ValueError(f"fusion {self.name!r}: feature {mod!r} must be (B, {self.dims[mod]}), got {tuple(f.shape)}")
        return f

    def forward(self, feats: Dict[str, Tensor]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _register(name: str):
    def deco(cls: Type[FusionHead]) -> Type[FusionHead]:
        cls.name = name
        return FUSIONS.register(name)(cls)
    return deco


@_register("audio")
class AudioOnly(FusionHead):
    """Unimodal audio: linear classifier on the audio feature."""

    modalities = ("audio",)

    def __init__(self, num_classes: int, dim_audio: Optional[int] = None, dim_visual: Optional[int] = None) -> None:
        super().__init__(num_classes, dim_audio, dim_visual)
        self.fc = nn.Linear(dim_audio, num_classes)

    def forward(self, feats: Dict[str, Tensor]) -> Tensor:
        """Logits from ``feats["audio"]``."""
        return self.fc(self._get(feats, "audio"))


@_register("visual")
class VisualOnly(FusionHead):
    """Unimodal visual: linear classifier on the pooled visual feature."""

    modalities = ("visual",)

    def __init__(self, num_classes: int, dim_audio: Optional[int] = None, dim_visual: Optional[int] = None) -> None:
        super().__init__(num_classes, dim_audio, dim_visual)
        self.fc = nn.Linear(dim_visual, num_classes)

    def forward(self, feats: Dict[str, Tensor]) -> Tensor:
        """Logits from ``feats["visual"]``."""
        return self.fc(self._get(feats, "visual"))


class _Bimodal(FusionHead):
    modalities = ("audio", "visual")


@_register("sum")
class SumFusion(_Bimodal):
    """Sum: project both features to ``HIDDEN_DIM``, add, then a linear classifier."""

    def __init__(self, num_classes: int, dim_audio: int, dim_visual: int, hidden: int = HIDDEN_DIM) -> None:
        super().__init__(num_classes, dim_audio, dim_visual)
        self.proj_audio = nn.Linear(dim_audio, hidden)
        self.proj_visual = nn.Linear(dim_visual, hidden)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, feats: Dict[str, Tensor]) -> Tensor:
        """``fc(P_a f_a + P_v f_v)``."""
        return self.fc(self.proj_audio(self._get(feats, "audio")) + self.proj_visual(self._get(feats, "visual")))


@_register("concat")
class ConcatFusion(_Bimodal):
    """Concat: a linear classifier on ``[f_visual; f_audio]`` (docs/paper.md, Model: fusion heads)."""

    def __init__(self, num_classes: int, dim_audio: int, dim_visual: int) -> None:
        super().__init__(num_classes, dim_audio, dim_visual)
        self.fc = nn.Linear(dim_visual + dim_audio, num_classes)

    def forward(self, feats: Dict[str, Tensor]) -> Tensor:
        """``fc([f_v; f_a])``."""
        return self.fc(torch.cat([self._get(feats, "visual"), self._get(feats, "audio")], dim=1))


class _Conditioned(_Bimodal):
    """Shared shape of FiLM/Gated heads: ``source`` conditions ``target`` (set by the subclass)."""

    source: str = ""
    target: str = ""


class _FiLM(_Conditioned):
    """FiLM: ``h = (1 + dgamma(f_src)) * P f_tgt + beta(f_src)``, then a linear classifier.

    gamma is parameterised around 1 (``1 + dgamma``) so the head starts close to an unmodulated projection.
    """

    def __init__(self, num_classes: int, dim_audio: int, dim_visual: int, hidden: int = HIDDEN_DIM) -> None:
        super().__init__(num_classes, dim_audio, dim_visual)
        self.film = nn.Linear(self.dims[self.source], 2 * hidden)
        self.proj = nn.Linear(self.dims[self.target], hidden)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, feats: Dict[str, Tensor]) -> Tensor:
        """Logits of the FiLM-modulated target feature."""
        dgamma, beta = self.film(self._get(feats, self.source)).chunk(2, dim=1)
        return self.fc((1.0 + dgamma) * self.proj(self._get(feats, self.target)) + beta)


@_register("film_av")
class FiLMAudioVisual(_FiLM):
    """FiLM, audio produces gamma/beta that modulate the visual feature."""

    source, target = "audio", "visual"


@_register("film_va")
class FiLMVisualAudio(_FiLM):
    """FiLM, visual produces gamma/beta that modulate the audio feature."""

    source, target = "visual", "audio"


class _Gated(_Conditioned):
    """Gated: ``h = sigmoid(G f_src) * P f_tgt``, then a linear classifier."""

    def __init__(self, num_classes: int, dim_audio: int, dim_visual: int, hidden: int = HIDDEN_DIM) -> None:
        super().__init__(num_classes, dim_audio, dim_visual)
        self.gate = nn.Linear(self.dims[self.source], hidden)
        self.proj = nn.Linear(self.dims[self.target], hidden)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, feats: Dict[str, Tensor]) -> Tensor:
        """Logits of the gated target feature."""
        g = torch.sigmoid(self.gate(self._get(feats, self.source)))
        return self.fc(g * self.proj(self._get(feats, self.target)))


@_register("gated_av")
class GatedAudioVisual(_Gated):
    """Gated, audio produces a sigmoid gate on the visual feature."""

    source, target = "audio", "visual"


@_register("gated_va")
class GatedVisualAudio(_Gated):
    """Gated, visual produces a sigmoid gate on the audio feature."""

    source, target = "visual", "audio"


@_register("attention")
class AttentionFusion(_Bimodal):
    """Audio-guided attention over the visual map, then a linear classifier on ``[f_att; f_a]``.

    ``attend``: query ``q = Q f_a``, keys ``k_n = K v_n`` for each of the N = T*h*w map locations,
    ``alpha = softmax_n(q . k_n / sqrt(hidden))`` and ``f_att = sum_n alpha_n v_n`` (a ``Dv`` vector).
    ``alpha`` is the sound-source localization map.
    """

    uses_visual_map = True

    def __init__(self, num_classes: int, dim_audio: int, dim_visual: int, hidden: int = HIDDEN_DIM) -> None:
        super().__init__(num_classes, dim_audio, dim_visual)
        self.hidden = hidden
        self.query = nn.Linear(dim_audio, hidden)
        self.key = nn.Linear(dim_visual, hidden)
        self.fc = nn.Linear(dim_visual + dim_audio, num_classes)

    def attend(self, f_audio: Tensor, vmap: Tensor) -> Tuple[Tensor, Tensor]:
        """``f_audio (B, Da)``, ``vmap (B, Dv, T, h, w)`` -> attended ``(B, Dv)`` and ``alpha (B, T, h, w)``."""
        f_audio = self._get({"audio": f_audio}, "audio")
        if vmap.dim() != 5 or vmap.shape[1] != self.dims["visual"]:
            raise ValueError(f"fusion 'attention': visual map must be (B, {self.dims['visual']}, T, h, w), "
                             f"got {tuple(vmap.shape)}")
        b, c, t, h, w = vmap.shape
        locs = vmap.flatten(2).transpose(1, 2)  # (B, N, Dv)
        scores = torch.einsum("bnd,bd->bn", self.key(locs), self.query(f_audio)) / math.sqrt(self.hidden)
        alpha = scores.softmax(dim=1)
        attended = torch.einsum("bn,bnd->bd", alpha, locs)
        return attended, alpha.view(b, t, h, w)

    def forward(self, feats: Dict[str, Tensor]) -> Tensor:
        """``fc([f_att; f_a])`` where ``feats["visual"]`` is the attended visual feature."""
        return self.fc(torch.cat([self._get(feats, "visual"), self._get(feats, "audio")], dim=1))


@_register("late")
class LateFusion(_Bimodal):
    """Late fusion: the average of two per-modality linear heads' logits."""

    def __init__(self, num_classes: int, dim_audio: int, dim_visual: int) -> None:
        super().__init__(num_classes, dim_audio, dim_visual)
        self.fc_audio = nn.Linear(dim_audio, num_classes)
        self.fc_visual = nn.Linear(dim_visual, num_classes)

    def forward(self, feats: Dict[str, Tensor]) -> Tensor:
        """``(fc_a(f_a) + fc_v(f_v)) / 2``."""
        return 0.5 * (self.fc_audio(self._get(feats, "audio")) + self.fc_visual(self._get(feats, "visual")))


def create_fusion(name: str, num_classes: int, dim_audio: Optional[int], dim_visual: Optional[int]) -> FusionHead:
    """Build the fusion head registered as ``name``; unknown names raise ``KeyError`` listing valid ones."""
    return FUSIONS.get(name)(num_classes=num_classes, dim_audio=dim_audio, dim_visual=dim_visual)
