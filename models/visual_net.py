"""Visual networks: torchvision ResNet trunks returning a spatio-temporal map, registered in ``VISUAL_NETS``.

Input ``(B, 3, T, H, W)`` or ``(B, 3, H, W)`` in [0, 1]; ImageNet normalisation happens inside (buffers
``mean``/``std``). Frames are folded into the batch, so the trunk output is ``(B, C, T, h, w)``;
``pool`` reduces it over ``(T, h, w)`` with the configured ``img_pool`` ("avgpool" or "maxpool").
"""
from __future__ import annotations

import functools
import logging
import os
from collections import OrderedDict
from typing import Callable, Dict, Optional

import torch
import torchvision
from torch import Tensor, nn

from utils.registry import Registry

logger = logging.getLogger(__name__)

VISUAL_NETS: Registry[Callable[..., "ResNetTrunk"]] = Registry("visual net")

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision ImageNet normalisation (ResNet*_Weights.IMAGENET1K_V1)
IMAGENET_STD = (0.229, 0.224, 0.225)  # idem
IMG_POOLS = ("avgpool", "maxpool")
PRETRAINED_CHOICES = ("imagenet",)
_TRUNK_LAYERS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")

# name -> (torchvision builder, ImageNet weights enum member, output channels)
_RESNETS: Dict[str, tuple] = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1, 512),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1, 512),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1, 2048),
    # Not in the paper: a torchvision ResNet with one BasicBlock per stage (about half of resnet18's cost),
    # for CPU-only runs such as the embedded-dataset demo. No ImageNet weights exist for it.
    "resnet10": (functools.partial(torchvision.models.resnet.ResNet, torchvision.models.resnet.BasicBlock,
                                   [1, 1, 1, 1]), None, 512),
}


def _download_imagenet(arch: str) -> Dict[str, Tensor]:
    """ImageNet state dict for ``arch`` through torchvision's weights API; a clear RuntimeError on failure."""
    weights = _RESNETS[arch][1]
    if weights is None:
        raise RuntimeError(f"pretrained='imagenet': torchvision has no ImageNet weights for {arch}; "
                           f"use resnet18/34/50 or pass weights_frame=PATH")
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError; hash mismatch a RuntimeError
        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise RuntimeError(
            f"pretrained='imagenet': could not download the {arch} ImageNet weights ({weights}) from "
            f"{weights.url} ({type(err).__name__}: {err}). The visual net is NOT trained from scratch instead. "
            f"To supply the weights locally, either copy that file into the torch hub cache {cache}/ "
            f"(or set $TORCH_HOME), or pass weights_frame=PATH (--weights_frame) with a torchvision {arch} "
            f"state dict saved by torch.save."
        ) from err


def load_trunk_weights(trunk: nn.Module, path: str, arch: str) -> None:
    """Load a local torchvision ResNet state dict into ``trunk``; ``fc.*`` keys are dropped (the head is ours).

    Errors name the file: missing file, not a state dict, or missing/unexpected/mis-shaped keys.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights_frame: no such file {path!r}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"weights_frame {path!r}: expected a state dict (str -> Tensor) of a torchvision {arch}, "
            f"got {type(state).__name__}" + (f" with keys {sorted(state)[:5]}" if isinstance(state, dict) else "")
        )
    dropped = [k for k in state if k.startswith("fc.")]
    if dropped:
        logger.info("weights_frame %s: ignoring classifier keys %s", path, dropped)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = set(trunk.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise RuntimeError(
            f"weights_frame {path!r} does not match a torchvision {arch} trunk: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    try:
        trunk.load_state_dict(state, strict=True)
    except RuntimeError as err:  # shape mismatches
        raise RuntimeError(f"weights_frame {path!r} does not fit the {arch} trunk: {err}") from err
    logger.info("loaded %s trunk weights from %s", arch, path)


class ResNetTrunk(nn.Module):
    """A torchvision ResNet without avgpool/fc; ``forward`` gives the map, ``pool`` the pooled feature.

    Args:
        arch: "resnet18", "resnet34" or "resnet50".
        img_pool: "avgpool" or "maxpool", applied over (T, h, w) by ``pool``.
        pretrained: None or "imagenet" (torchvision IMAGENET1K_V1 weights; no silent fallback if the
            download fails).
        weights_path: local torchvision state dict to load instead (exclusive with ``pretrained``).
    """

    def __init__(self, arch: str, img_pool: str = "avgpool", pretrained: Optional[str] = None,
                 weights_path: Optional[str] = None) -> None:
        super().__init__()
        if arch not in _RESNETS:
            raise KeyError(f"unknown visual net {arch!r}; valid visual net names: {', '.join(sorted(_RESNETS))}")
        if img_pool not in IMG_POOLS:
            raise ValueError(f"img_pool must be one of {IMG_POOLS}, got {img_pool!r}")
        if pretrained is not None and pretrained not in PRETRAINED_CHOICES:
            raise ValueError(f"pretrained must be None or one of {PRETRAINED_CHOICES}, got {pretrained!r}")
        if pretrained is not None and weights_path:
            raise ValueError("give either pretrained='imagenet' or weights_frame=PATH for the visual net, not both")
        builder, _, out_dim = _RESNETS[arch]
        net = builder() if _RESNETS[arch][1] is None else builder(weights=None)
        self.arch = arch
        self.img_pool = img_pool
        self.out_dim = out_dim
        self.trunk = nn.Sequential(OrderedDict((name, getattr(net, name)) for name in _TRUNK_LAYERS))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        if pretrained == "imagenet":
            state = {k: v for k, v in _download_imagenet(arch).items() if not k.startswith("fc.")}
            self.trunk.load_state_dict(state, strict=True)
            logger.info("loaded torchvision ImageNet weights for %s", arch)
        elif weights_path:
            load_trunk_weights(self.trunk, weights_path, arch)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, T, H, W)`` or ``(B, 3, H, W)`` in [0, 1] -> map ``(B, C, T, h, w)``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{self.arch}: visual must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 4:
            x = x.unsqueeze(2)
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"{self.arch}: visual must have shape (B, 3, T, H, W) or (B, 3, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{self.arch}: visual must be float in [0, 1], got dtype {x.dtype}")
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        fmap = self.trunk((frames - self.mean) / self.std)  # (B*T, C, h', w')
        fmap = fmap.view(b, t, *fmap.shape[1:])
        return fmap.transpose(1, 2)  # (B, C, T, h', w')

    def pool(self, fmap: Tensor) -> Tensor:
        """Reduce a ``(B, C, T, h, w)`` map over (T, h, w) with ``img_pool`` -> ``(B, C)``."""
        if self.img_pool == "maxpool":
            return fmap.amax(dim=(2, 3, 4))
        return fmap.mean(dim=(2, 3, 4))


@VISUAL_NETS.register("resnet18")
def resnet18(**kwargs) -> ResNetTrunk:
    """ResNet-18 trunk (the paper's visual net)."""
    return ResNetTrunk("resnet18", **kwargs)


@VISUAL_NETS.register("resnet34")
def resnet34(**kwargs) -> ResNetTrunk:
    """ResNet-34 trunk."""
    return ResNetTrunk("resnet34", **kwargs)


@VISUAL_NETS.register("resnet50")
def resnet50(**kwargs) -> ResNetTrunk:
    """ResNet-50 trunk (2048-d features)."""
    return ResNetTrunk("resnet50", **kwargs)


@VISUAL_NETS.register("resnet10")
def resnet10(**kwargs) -> ResNetTrunk:
    """ResNet-10 trunk (one BasicBlock per stage; CPU runs, no ImageNet weights)."""
    return ResNetTrunk("resnet10", **kwargs)


def create_visual_net(name: str, img_pool: str = "avgpool", pretrained: Optional[str] = None,
                      weights_path: Optional[str] = None) -> ResNetTrunk:
    """Build the visual net registered as ``name``; unknown names raise ``KeyError`` listing valid ones."""
    return VISUAL_NETS.get(name)(img_pool=img_pool, pretrained=pretrained, weights_path=weights_path)
