"""Fixtures and toy models shared by the test modules.

``media``: the module's fake preprocessed dataset (``tests/fake_media.make_fake_media`` with the module's
``CATS`` and ``MEDIA`` keyword arguments), made once per module. ``run_argv``: a training/evaluation command
line over such media. ``ToyAV`` / ``ToyFeaturesAV``: tiny models following the project's model contract.
``background_studies``: the suite's long study runs (tests/studies.py), started at the session's first test.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
import torch
import torch.nn as nn

from tests.fake_media import make_fake_media


@pytest.fixture(scope="session", autouse=True)
def background_studies(request, tmp_path_factory):
    """The long study runs that the selected tests read (tests/studies.py), started at the session's first test
    in the background; each test waits for the run it reads. Stopped (if still running) at the session's end."""
    from tests import studies

    wanted = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    runs = studies.start(wanted, tmp_path_factory)
    yield runs
    for _, run in runs.values():
        run.stop()


@pytest.fixture(scope="module")
def media(request, tmp_path_factory) -> Dict[str, Path]:
    """The fake media of the requesting module: its ``CATS`` and ``MEDIA`` (make_fake_media's keywords)."""
    return make_fake_media(tmp_path_factory.mktemp("media"), request.module.CATS, **request.module.MEDIA)


def run_argv(media: Dict[str, Path], ckpt: Path, run_id: str, *extra: str, cats: Sequence[str],
             lists: Sequence[str] = ("train", "val", "test"), **flags: object) -> List[str]:
    """main_attack/main_defense flags over ``media``: the synthetic dataset's classes ``cats``, the given
    ``lists``, 4096 audio samples, no workers or progress, ``--flag value`` for each of ``flags``, then
    ``extra``."""
    out = ["--dataset", "synthetic", "--categories", ",".join(cats),
           "--audio_path", str(media["audio_path"]), "--frame_path", str(media["frame_path"]),
           "--audLen", "4096", "--workers", "0", "--ckpt", str(ckpt), "--id", run_id, "--no_progress",
           "--disp_iter", "0"]
    for flag, value in flags.items():
        out += [f"--{flag}", str(value)]
    for split in lists:
        out += [f"--list_{split}", str(media[split])]
    return out + list(extra)


class ToyAV(nn.Module):
    """A tiny model following the project's contract: conv + BatchNorm + Dropout per modality, concat head.

    BatchNorm running statistics are randomised so that train and eval mode give different outputs.
    """

    def __init__(self, modalities: Sequence[str] = ("audio", "visual"), num_classes: int = 4, seed: int = 0,
                 dtype: torch.dtype = torch.float32, width: int = 4) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        gen = torch.Generator().manual_seed(seed)
        self.audio_net = nn.Sequential(nn.Conv1d(1, width, 5, stride=2), nn.BatchNorm1d(width), nn.ReLU(),
                                       nn.AdaptiveMaxPool1d(1), nn.Flatten())
        self.visual_net = nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
        # standardises the fused features (stats from a calibration batch below), so that predictions vary
        # across samples instead of being fixed by the head's bias
        self.feat_bn = nn.BatchNorm1d(width * len(self.modalities), momentum=1.0)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(width * len(self.modalities), num_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            for bn in (self.audio_net[1], self.visual_net[1]):
                bn.running_mean.copy_(torch.randn(width, generator=gen) * 0.1)
                bn.running_var.copy_(torch.rand(width, generator=gen) + 0.5)
        self.to(dtype)
        self.eval()
        self.feat_bn.train()  # only the feature standardisation learns its statistics here
        with torch.no_grad():
            self(audio=torch.rand(32, 1, 48, generator=gen).to(dtype) * 2 - 1,
                 visual=torch.rand(32, 3, 8, 8, generator=gen).to(dtype))
        self.feat_bn.momentum = 0.1
        self.train()

    def features(self, audio: Optional[torch.Tensor] = None, visual: Optional[torch.Tensor] = None
                 ) -> Dict[str, torch.Tensor]:
        """Per-modality features of equal size (``width``), what ``forward`` concatenates."""
        out = {}
        if "audio" in self.modalities:
            out["audio"] = self.audio_net(audio)
        if "visual" in self.modalities:
            if visual.dim() == 5:  # (B, 3, T, H, W): frames through the 2-D net, averaged over time
                b, c, t, h, w = visual.shape
                f = self.visual_net(visual.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
                out["visual"] = f.view(b, t, -1).mean(dim=1)
            else:
                out["visual"] = self.visual_net(visual)
        return out

    def forward(self, audio: Optional[torch.Tensor] = None, visual: Optional[torch.Tensor] = None) -> torch.Tensor:
        feats = []
        if "audio" in self.modalities:
            feats.append(self.audio_net(audio))
        if "visual" in self.modalities:
            if visual.dim() == 5:  # (B, 3, T, H, W): frames through the 2-D net, averaged over time
                b, c, t, h, w = visual.shape
                f = self.visual_net(visual.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
                feats.append(f.view(b, t, -1).mean(dim=1))
            else:
                feats.append(self.visual_net(visual))
        return self.head(self.drop(self.feat_bn(torch.cat(feats, dim=1))))


class ToyFeaturesAV(nn.Module):
    """A minimal model following the features/classify contract (linear encoders, linear head)."""

    def __init__(self, modalities: Tuple[str, ...] = ("audio", "visual"), da: int = 6, dv: int = 5) -> None:
        super().__init__()
        self.modalities = modalities
        self.arch = {"toy": True}
        self.enc_a = nn.Linear(32, da)
        self.enc_v = nn.Linear(3, dv)
        self.head = nn.Linear(da * ("audio" in modalities) + dv * ("visual" in modalities), 3)

    def features(self, audio: Optional[torch.Tensor] = None, visual: Optional[torch.Tensor] = None) -> Dict:
        out = {}
        if "audio" in self.modalities:
            out["audio"] = torch.relu(self.enc_a(audio.flatten(1)))
        if "visual" in self.modalities:
            out["visual"] = torch.relu(self.enc_v(visual.mean(dim=(2, 3))))
        return out

    def classify(self, feats: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([feats[m] for m in self.modalities], dim=1))

    def forward(self, audio: Optional[torch.Tensor] = None, visual: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.classify(self.features(audio=audio, visual=visual))
