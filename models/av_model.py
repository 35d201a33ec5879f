"""The audio-visual classifier: audio net + visual net + fusion head, built by ``create_model``.

Only the nets the head uses are instantiated; an audio-only model has no visual net and ignores (or
accepts ``None`` for) the visual input, and vice versa. See docs/ARCHITECTURE.md, "Models".
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from models.audio_net import AUDIO_NETS, create_audio_net
from models.fusion import FUSIONS, FusionHead, create_fusion, head_args
from models.missing import MISSING_FILLS
from models.visual_net import IMG_POOLS, PRETRAINED_CHOICES, VISUAL_NETS, create_visual_net
from utils.checkpoint import load_weights, read_state_file
from utils.plugins import plugin_file

logger = logging.getLogger(__name__)

DEFAULT_AUDIO_RATE = 11025  # docs/paper.md, Preprocessing and layout: mono WAV at 11025 Hz


def _given(path: Optional[str]) -> bool:
    """True for a non-empty path (the CLI's unset value is the empty string)."""
    return path is not None and path != ""


def load_audio_weights(net: nn.Module, path: str, arch: str) -> None:
    """Load a local state dict saved from an audio net ``arch`` (``net.state_dict()``); errors name the file."""
    load_weights(net, read_state_file(path, "weights_sound"), f"weights_sound {path!r} (audio net {arch})")
    logger.info("loaded %s weights from %s", arch, path)


class AVModel(nn.Module):
    """Audio net + visual net + fusion head; ``forward(audio=, visual=) -> logits``.

    Attributes:
        audio_net / visual_net: the nets (``None`` when the head does not use that modality).
        head: the fusion head; ``modalities`` mirrors ``head.modalities``.
        arch: ``{"arch_sound", "arch_frame", "arch_classifier"}`` names, the head's ``fusion_args`` and,
            for a head from a plugin file, ``plugins`` (that file): the record checkpoints are checked against.
    """

    def __init__(self, audio_net: Optional[nn.Module], visual_net: Optional[nn.Module], head: FusionHead,
                 arch: Dict[str, Any]) -> None:
        super().__init__()
        for mod, net in (("audio", audio_net), ("visual", visual_net)):
            if (mod in head.modalities) != (net is not None):
                raise ValueError(f"head {head.name!r} uses {head.modalities}: {mod} net must "
                                 f"{'be given' if mod in head.modalities else 'be None'}")
        self.audio_net = audio_net
        self.visual_net = visual_net
        self.head = head
        self.arch = dict(arch)

    @property
    def modalities(self) -> Tuple[str, ...]:
        """The inputs this model reads: ("audio",), ("visual",) or ("audio", "visual")."""
        return tuple(self.head.modalities)

    @property
    def uses_visual_map(self) -> bool:
        """True when the head attends over the visual map (then ``localize`` works)."""
        return bool(self.head.uses_visual_map)

    def _require(self, mod: str, x: Optional[Tensor]) -> Tensor:
        if x is None:
            shape = "(B, 1, L)" if mod == "audio" else "(B, 3, T, H, W) or (B, 3, H, W)"
            raise ValueError(f"model with head {self.arch['arch_classifier']!r} uses {self.modalities} and needs "
                             f"the {mod} input {shape}; got None")
        return x

    def encode(self, modality: str, x: Tensor) -> Tensor:
        """What the model computes from ``modality``'s input alone: the audio feature ``(B, Da)``; the pooled
        visual feature ``(B, Dv)``, or the visual map for a head that attends over it (``uses_visual_map``).

        Attacks compute it once per batch for an input they leave unchanged (``attacks.base.forward``).
        """
        if modality == "audio":
            return self.audio_net(self._require("audio", x))
        vmap = self.visual_net(self._require("visual", x))
        return vmap if self.head.uses_visual_map else self.visual_net.pool(vmap)

    @property
    def independent_features(self) -> bool:
        """True when each modality's feature is its ``encode`` (no head attends across modalities)."""
        return not self.head.uses_visual_map

    def features_from(self, encoded: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Per-modality features from ``encode``'s outputs: the attention head's visual feature is the
        audio-attended pooled map; otherwise the encodings themselves."""
        feats = dict(encoded)
        if self.head.uses_visual_map and "visual" in feats:
            feats["visual"], _ = self.head.attend(encoded["audio"], encoded["visual"])
        return feats

    def features(self, audio: Optional[Tensor] = None, visual: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Per-modality features ``{"audio": (B, Da), "visual": (B, Dv)}`` for the modalities used.

        For a head with ``uses_visual_map`` the visual feature is the audio-attended one (``head.attend``).
        """
        inputs = {"audio": audio, "visual": visual}
        return self.features_from({m: self.encode(m, inputs[m]) for m in self.modalities})

    @property
    def missing_fills(self) -> Tuple[str, ...]:
        """The fills (models/missing.py) the head accepts in place of an absent modality's feature."""
        return tuple(self.head.missing_fills)

    def features_absent(self, audio: Optional[Tensor] = None, visual: Optional[Tensor] = None, *,
                        absent: Mapping[str, Tensor], fill: str = "zeros",
                        train_mean: Optional[Mapping[str, Tensor]] = None, encode_all: bool = False
                        ) -> Dict[str, Tensor]:
        """``features`` with some modalities absent per sample: ``absent[m]`` (B,) bool marks the samples whose
        ``m`` feature is replaced by the fill ``fill`` (``models.missing.MISSING_FILLS``; ``train_mean``: the
        training set's mean feature per modality, for ``"mean"``). A modality absent for every sample is never
        encoded (its input may be None) unless ``encode_all``. The attention head attends with the filled audio
        feature; an absent visual feature replaces the attended one."""
        if fill not in self.missing_fills:
            raise ValueError(f"head {self.arch['arch_classifier']!r} supports the missing-input fills "
                             f"{', '.join(self.missing_fills) or 'none'}, not {fill!r}")
        fill_fn = MISSING_FILLS.get(fill)
        inputs = {"audio": audio, "visual": visual}
        whole = set() if encode_all else {m for m, mask in absent.items() if m in self.modalities and bool(mask.all())}
        enc = {m: self.encode(m, inputs[m]) for m in self.modalities if m not in whole}
        means = train_mean or {}

        def filled(m: str, value: Optional[Tensor], like: Tensor) -> Tensor:
            vec = fill_fn(like if value is None else value, means.get(m))
            if value is None:
                return vec.expand(like.shape[0], -1)
            return torch.where(absent[m].to(value.device)[:, None], vec.expand_as(value), value)

        if "audio" in absent and "audio" in self.modalities:
            like = enc["audio"] if "audio" in enc else self._feature_like("audio", absent["audio"], enc)
            enc["audio"] = filled("audio", enc.get("audio"), like)
        feats = self.features_from(enc)
        if "visual" in absent and "visual" in self.modalities:
            like = feats["visual"] if "visual" in feats else self._feature_like("visual", absent["visual"], enc)
            feats["visual"] = filled("visual", feats.get("visual"), like)
        return feats

    def _feature_like(self, modality: str, mask: Tensor, enc: Dict[str, Tensor]) -> Tensor:
        """A zero ``(B, D_m)`` template of an absent modality's feature (dtype and device of the features)."""
        ref = next(iter(enc.values()), None)
        dtype = ref.dtype if ref is not None else next(self.parameters()).dtype
        device = ref.device if ref is not None else mask.device
        return torch.zeros(mask.shape[0], self.head.dims[modality], dtype=dtype, device=device)

    def classify(self, feats: Dict[str, Tensor]) -> Tensor:
        """Logits ``(B, K)`` from (possibly replaced) features, e.g. by a defense."""
        return self.head(feats)

    def classify_encoded(self, encoded: Dict[str, Tensor]) -> Tensor:
        """Logits ``(B, K)`` from ``encode``'s outputs of every modality used: ``forward`` in two halves."""
        return self.classify(self.features_from(encoded))

    def forward(self, audio: Optional[Tensor] = None, visual: Optional[Tensor] = None) -> Tensor:
        """Logits ``(B, K)``; audio ``(B, 1, L)`` in [-1, 1], visual ``(B, 3[, T], H, W)`` in [0, 1]."""
        return self.classify(self.features(audio=audio, visual=visual))

    def localize(self, audio: Optional[Tensor] = None, visual: Optional[Tensor] = None) -> Tensor:
        """Attention over the visual map, ``(B, T, h, w)`` summing to 1 per sample (heads with
        ``uses_visual_map`` only)."""
        if not self.head.uses_visual_map:
            raise ValueError(f"localize needs a head with attention over the visual map (uses_visual_map, "
                             f"e.g. 'attention'); this model's head is {self.arch['arch_classifier']!r}")
        f_audio = self.audio_net(self._require("audio", audio))
        _, alpha = self.head.attend(f_audio, self.visual_net(self._require("visual", visual)))
        return alpha


def create_model(arch_sound: str = "anet", arch_frame: str = "resnet18", arch_classifier: str = "concat",
                 num_classes: int = 2, img_pool: str = "avgpool", pretrained: Optional[str] = None,
                 weights_frame: Optional[str] = None, weights_sound: Optional[str] = None,
                 audio_rate: int = DEFAULT_AUDIO_RATE,
                 fusion_args: Union[str, Mapping[str, Any], None] = None) -> AVModel:
    """Build an ``AVModel`` from registry names (see docs/ARCHITECTURE.md, "Models").

    ``fusion_args`` (``{"hidden": 256}`` or ``"hidden=256"``) are the head's hyperparameters, checked against
    its constructor first (``models.fusion.head_args``: a ``UsageError`` naming the key) and recorded in
    ``model.arch["fusion_args"]`` with the defaults filled in.

    All three names are validated even when a net is unused. ``weights_frame``/``weights_sound`` are local
    state dicts (``None`` or "" for none); giving one for a net the head does not use is an error.
    ``pretrained="imagenet"`` loads torchvision ImageNet weights into the visual net (ignored, with a log
    line, for an audio-only head).
    """
    head_cls = FUSIONS.get(arch_classifier)
    fusion_args = head_args(arch_classifier, fusion_args)  # before any net is built
    AUDIO_NETS.get(arch_sound)
    VISUAL_NETS.get(arch_frame)
    mods = head_cls.modalities
    if pretrained is not None and pretrained not in PRETRAINED_CHOICES:
        raise ValueError(f"pretrained must be None or one of {PRETRAINED_CHOICES}, got {pretrained!r}")
    if img_pool not in IMG_POOLS:
        raise ValueError(f"img_pool must be one of {IMG_POOLS}, got {img_pool!r}")
    for mod, flag, path in (("audio", "weights_sound", weights_sound), ("visual", "weights_frame", weights_frame)):
        if _given(path) and mod not in mods:
            raise ValueError(f"{flag}={path!r} given but head {arch_classifier!r} uses only {mods}: "
                             f"there is no {mod} net to load it into")
    audio_net = visual_net = None
    if "audio" in mods:
        audio_net = create_audio_net(arch_sound, audio_rate=audio_rate)
        if _given(weights_sound):
            load_audio_weights(audio_net, weights_sound, arch_sound)
    if "visual" in mods:
        visual_net = create_visual_net(arch_frame, img_pool=img_pool, pretrained=pretrained,
                                       weights_path=weights_frame if _given(weights_frame) else None)
    elif pretrained is not None:
        logger.info("pretrained=%r ignored: head %r has no visual net", pretrained, arch_classifier)
    head = create_fusion(arch_classifier, num_classes=num_classes,
                         dim_audio=audio_net.out_dim if audio_net is not None else None,
                         dim_visual=visual_net.out_dim if visual_net is not None else None,
                         fusion_args=fusion_args)
    arch: Dict[str, Any] = {"arch_sound": arch_sound, "arch_frame": arch_frame, "arch_classifier": arch_classifier,
                            "fusion_args": dict(head.fusion_args)}
    plugin = plugin_file(head_cls)
    if plugin is not None:
        arch["plugins"] = [plugin]
    return AVModel(audio_net, visual_net, head, arch)


def av_cosine(feats: Dict[str, Tensor], required: bool = False) -> Optional[Tensor]:
    """Per-sample cosine between the audio and visual features, in fp32 (the paper's MinSim quantity).

    None where it is undefined (a unimodal model, or features of unequal size); ``required``: a ValueError
    saying why instead."""
    if "audio" not in feats or "visual" not in feats:
        problem = f"needs an audio-visual model (both features), got {sorted(feats)}"
    elif feats["audio"].shape[1] != feats["visual"].shape[1]:
        problem = (f"needs features of equal size, got audio {feats['audio'].shape[1]} and visual "
                   f"{feats['visual'].shape[1]}")
    else:
        return torch.nn.functional.cosine_similarity(feats["audio"].float(), feats["visual"].float(), dim=1)
    if required:
        raise ValueError(f"the audio-visual cosine {problem}")
    return None
