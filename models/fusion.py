"""Fusion heads (classifiers on modality features), registered by name in ``FUSIONS``.

A head maps a dict ``{"audio": (B, Da), "visual": (B, Dv)}`` (only the keys in ``head.modalities``) to
logits ``(B, K)``. ``create_fusion`` passes each head only what its constructor takes: ``num_classes``,
``dim_audio``/``dim_visual`` and its own hyperparameters (``fusion_args``, every one with a typed default,
checked against the signature by ``head_args``). A new head is one class decorated with
``@register_fusion("name")``, in this file or in a ``--plugins`` file (README, "Extending").

Direction convention for FiLM and Gated heads: the *first*-named modality conditions the second.
``film_av``/``gated_av``: audio produces gamma/beta (or the gate) that act on the visual feature;
``film_va``/``gated_va``: visual acts on audio.

The ``attention`` head also consumes the visual *map*: ``attend(f_audio, map)`` returns the audio-attended
visual feature and the attention over the T*h*w locations (the localization map).
"""
from __future__ import annotations

import inspect
import math
import typing
from typing import Any, Dict, Mapping, Optional, Tuple, Type, Union

import torch
from torch import Tensor, nn

from utils.errors import UsageError
from utils.registry import Registry

FUSIONS: Registry[Type["FusionHead"]] = Registry("fusion")

HIDDEN_DIM = 512  # common projection width of the bimodal heads (our choice; matches the 512-d features)
# constructor arguments create_fusion supplies itself; every other one is a hyperparameter (fusion_args)
STRUCTURAL = ("num_classes", "dim_audio", "dim_visual")
ARG_TYPES = (bool, int, float, str)  # what a fusion_args value may be (written as text on the command line)


class FusionHead(nn.Module):
    """Base class: declares ``modalities`` and checks the feature dict given to ``forward``.

    ``modalities``: the features the head reads. ``uses_visual_map``: the head provides
    ``attend(f_audio, vmap) -> (f_visual, alpha)`` on the visual net's map (B, Dv, T, h, w) and the model
    then feeds it the attended feature and can localize; otherwise it gets the pooled feature.
    ``fusion_args``: the hyperparameters it was built with (set by ``create_fusion``). ``missing_fills``: the
    fills (models/missing.py) it accepts in place of an absent modality's feature.
    """

    name: str = ""
    modalities: Tuple[str, ...] = ()
    uses_visual_map: bool = False
    fusion_args: Dict[str, Any] = {}
    # How the head can run with one modality's feature absent (models/missing.py, --missing_fill): the zero
    # feature and the training mean are fine for every head here (each reads features through linear maps);
    # a head with a learned placeholder would add its own name, a head that cannot take a filled feature ().
    missing_fills: Tuple[str, ...] = ("zeros", "mean")

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


def register_fusion(name: str):
    """Class decorator: register a ``FusionHead`` subclass as ``name`` (also its ``.name``)."""
    def deco(cls: Type[FusionHead]) -> Type[FusionHead]:
        cls.name = name
        return FUSIONS.register(name)(cls)
    return deco


@register_fusion("audio")
class AudioOnly(FusionHead):
    """Unimodal audio: linear classifier on the audio feature."""

    modalities = ("audio",)

    def __init__(self, num_classes: int, dim_audio: Optional[int] = None, dim_visual: Optional[int] = None) -> None:
        super().__init__(num_classes, dim_audio, dim_visual)
        self.fc = nn.Linear(dim_audio, num_classes)

    def forward(self, feats: Dict[str, Tensor]) -> Tensor:
        """Logits from ``feats["audio"]``."""
        return self.fc(self._get(feats, "audio"))


@register_fusion("visual")
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


@register_fusion("sum")
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


@register_fusion("concat")
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


@register_fusion("film_av")
class FiLMAudioVisual(_FiLM):
    """FiLM, audio produces gamma/beta that modulate the visual feature."""

    source, target = "audio", "visual"


@register_fusion("film_va")
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


@register_fusion("gated_av")
class GatedAudioVisual(_Gated):
    """Gated, audio produces a sigmoid gate on the visual feature."""

    source, target = "audio", "visual"


@register_fusion("gated_va")
class GatedVisualAudio(_Gated):
    """Gated, visual produces a sigmoid gate on the audio feature."""

    source, target = "visual", "audio"


@register_fusion("attention")
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


@register_fusion("late")
class LateFusion(_Bimodal):
    """Late fusion: the average of two per-modality linear heads' logits."""

    def __init__(self, num_classes: int, dim_audio: int, dim_visual: int) -> None:
        super().__init__(num_classes, dim_audio, dim_visual)
        self.fc_audio = nn.Linear(dim_audio, num_classes)
        self.fc_visual = nn.Linear(dim_visual, num_classes)

    def forward(self, feats: Dict[str, Tensor]) -> Tensor:
        """``(fc_a(f_a) + fc_v(f_v)) / 2``."""
        return 0.5 * (self.fc_audio(self._get(feats, "audio")) + self.fc_visual(self._get(feats, "visual")))


def head_arg_spec(name: str) -> Dict[str, Tuple[type, Any]]:
    """The hyperparameters of head ``name``: ``{arg: (type, default)}`` from its constructor's signature.

    A hyperparameter needs a default and a type among ``ARG_TYPES`` (its annotation, else its default's type).
    """
    cls = FUSIONS.get(name)
    hints = typing.get_type_hints(cls.__init__)
    spec: Dict[str, Tuple[type, Any]] = {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.name in STRUCTURAL or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        typ = hints.get(p.name, type(p.default))
        if p.default is p.empty or typ not in ARG_TYPES:
            raise TypeError(f"fusion {name!r}: constructor argument {p.name!r} needs a default and a type among "
                            f"{', '.join(t.__name__ for t in ARG_TYPES)} to be a hyperparameter")
        spec[p.name] = (typ, p.default)
    return spec


def describe_args(name: str) -> str:
    """``hidden: int = 512, ...`` for error messages (``no arguments`` when the head has none)."""
    spec = head_arg_spec(name)
    return ", ".join(f"{k}: {t.__name__} = {d!r}" for k, (t, d) in spec.items()) or "no arguments"


def _convert(name: str, key: str, typ: type, value: Any) -> Any:
    """``value`` (text from the command line, or a Python value) as ``typ``; anything else is a UsageError."""
    if isinstance(value, str) and typ is not str:
        text = value.strip()
        try:
            if typ is bool:
                value = {"true": True, "1": True, "false": False, "0": False}[text.lower()]
            else:
                value = typ(text)
        except (KeyError, ValueError):
            raise UsageError("--fusion_args", f"{key}={text!r} is not of type {typ.__name__} (head {name!r} accepts "
                             f"{describe_args(name)})") from None
    ok = (isinstance(value, typ) and not (typ is not bool and isinstance(value, bool))) or (
        typ is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        raise UsageError("--fusion_args", f"{key}={value!r} is not of type {typ.__name__} (head {name!r} accepts "
                         f"{describe_args(name)})")
    return float(value) if typ is float else value


def parse_fusion_text(text: str) -> Dict[str, str]:
    """``"hidden=256,dropout=0.1"`` -> ``{"hidden": "256", "dropout": "0.1"}`` (values still text)."""
    out: Dict[str, str] = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key or key in out:
            raise UsageError("--fusion_args", f"expected distinct key=value pairs separated by commas, got {text!r}")
        out[key] = value
    return out


def head_args(name: str, given: Union[str, Mapping[str, Any], None] = None) -> Dict[str, Any]:
    """Every hyperparameter of head ``name``: ``given`` (text ``k=v,...`` or a mapping) checked against the
    constructor (unknown key or wrong type: ``UsageError`` naming the key and the accepted arguments),
    the rest from the defaults."""
    spec = head_arg_spec(name)
    items = parse_fusion_text(given) if isinstance(given, str) else dict(given or {})
    out = {k: d for k, (_, d) in spec.items()}
    for key, value in items.items():
        if key not in spec:
            raise UsageError("--fusion_args", f"head {name!r} has no argument {key!r}; it accepts "
                             f"{describe_args(name)}")
        out[key] = _convert(name, key, spec[key][0], value)
    return out


def create_fusion(name: str, num_classes: int, dim_audio: Optional[int], dim_visual: Optional[int],
                  fusion_args: Union[str, Mapping[str, Any], None] = None) -> FusionHead:
    """Build head ``name`` with ``fusion_args`` (checked by ``head_args``), passing only the arguments its
    constructor takes; unknown names raise ``KeyError`` listing valid ones."""
    cls = FUSIONS.get(name)
    args = head_args(name, fusion_args)
    params = inspect.signature(cls.__init__).parameters
    dims = {"num_classes": num_classes, "dim_audio": dim_audio, "dim_visual": dim_visual}
    head = cls(**{k: v for k, v in dims.items() if k in params}, **args)
    head.fusion_args = dict(args)
    return head
