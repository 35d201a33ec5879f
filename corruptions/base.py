"""The corruption registry, per-clip random generators and the batch entry point.

A corruption is registered by name with the modality it changes (``visual``, ``audio`` or ``both``) and five
severities. An atomic corruption is a function of ONE clip::

    fn(x, severity, rng, sample_rate) -> x'     # visual x: (3, T, H, W) or (3, H, W) in [0, 1]
                                                # audio x: (1, L) in [-1, 1]; same shape, dtype, device out

``rng`` is a ``numpy.random.RandomState`` seeded from (seed, the clip's dataset index, the atomic corruption's
name) by ``clip_rng``, so a clip's corruption depends neither on the batch it is in nor on the other clips,
and its draws do not depend on the severity (higher severities scale the same draws, where the corruption
has draws). ``RandomState`` (not ``Generator``) because the peers the tests compare against
(imagecorruptions, audiomentations) draw from numpy's legacy global state: seeded alike, they draw the same
numbers. A bimodal corruption (``bimodal.py``) applies one visual and one audio atom to the same clip at the
same severity, each with its own atom's generator.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from utils.registry import Registry

SEVERITIES = (1, 2, 3, 4, 5)  # Hendrycks & Dietterich (ICLR 2019): five severities per corruption
MODALITIES = ("visual", "audio", "both")

ClipFn = Callable[[torch.Tensor, int, np.random.RandomState, int], torch.Tensor]


@dataclass(frozen=True)
class Corruption:
    """One registered corruption: ``parts`` maps each modality it changes to the name of an atomic
    corruption (an atom's own name for itself); ``fn`` is the atom's clip function (None for a pair);
    ``min_frames``: frames per clip it needs (frame_freeze: 2); ``source``: where its severities come from."""

    name: str
    modality: str
    parts: Tuple[Tuple[str, str], ...]
    fn: Optional[ClipFn] = None
    min_frames: int = 1
    source: str = ""


CORRUPTIONS: Registry[Corruption] = Registry("corruption")


def register_atom(name: str, modality: str, source: str, min_frames: int = 1) -> Callable[[ClipFn], ClipFn]:
    """Decorator: register a clip function as the atomic corruption ``name`` of ``modality``."""
    if modality not in ("visual", "audio"):
        raise ValueError(f"an atomic corruption changes visual or audio, got {modality!r}")

    def deco(fn: ClipFn) -> ClipFn:
        CORRUPTIONS.register(name)(Corruption(name, modality, ((modality, name),), fn, min_frames, source))
        return fn

    return deco


def register_pair(name: str, visual: str, audio: str, source: str) -> Corruption:
    """Register the bimodal corruption ``name``: the visual atom and the audio atom together."""
    v, a = CORRUPTIONS.get(visual), CORRUPTIONS.get(audio)
    if v.modality != "visual" or a.modality != "audio":
        raise ValueError(f"{name}: {visual!r} must be a visual atom and {audio!r} an audio atom")
    c = Corruption(name, "both", (("visual", visual), ("audio", audio)), None, v.min_frames, source)
    CORRUPTIONS.register(name)(c)
    return c


def list_corruptions(modality: Optional[str] = None) -> List[str]:
    """Registered corruption names (sorted), optionally only those of one modality (visual, audio, both)."""
    return [n for n in CORRUPTIONS.names() if modality is None or CORRUPTIONS.get(n).modality == modality]


def clip_rng(seed: int, index: int, atom: str) -> np.random.RandomState:
    """The generator of one clip (dataset index ``index``) and one atomic corruption under ``seed``."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and clip index must be >= 0, got seed {seed}, index {index}")
    return np.random.RandomState([seed & 0xFFFFFFFF, seed >> 32, index & 0xFFFFFFFF, index >> 32,
                                  zlib.crc32(atom.encode())])


def check_severity(severity: int) -> int:
    """``severity`` if it is one of 1..5, else a ValueError naming the valid ones."""
    if isinstance(severity, bool) or int(severity) != severity or int(severity) not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(map(str, SEVERITIES))}, got {severity!r}")
    return int(severity)


def corrupt(name: str, inputs: Mapping[str, torch.Tensor], severity: int, seed: int, indices: Sequence[int],
            sample_rate: int = 11025) -> Dict[str, torch.Tensor]:
    """``inputs`` (a batch: ``visual`` (B,3,T,H,W) or (B,3,H,W) in [0,1], ``audio`` (B,1,L) in [-1,1]) with the
    corruption ``name`` at ``severity`` applied to each clip; clip ``i`` draws from
    ``clip_rng(seed, indices[i], atom)``. Modalities the corruption does not change are returned as they are
    (the same tensors); a modality it changes must be present (KeyError otherwise)."""
    spec = CORRUPTIONS.get(name)
    severity = check_severity(severity)
    out = dict(inputs)
    for modality, atom_name in spec.parts:
        if modality not in inputs:
            raise KeyError(f"corruption {name!r} changes the {modality} input, which the batch lacks")
        x = inputs[modality]
        if len(indices) != x.shape[0]:
            raise ValueError(f"{len(indices)} clip indices for a batch of {x.shape[0]}")
        atom = CORRUPTIONS.get(atom_name)
        out[modality] = torch.stack([atom.fn(x[i], severity, clip_rng(seed, int(indices[i]), atom_name), sample_rate)
                                     for i in range(x.shape[0])])
    return out


def unusable(name: str, modalities: Sequence[str], num_frames: int) -> Optional[str]:
    """Why corruption ``name`` cannot be evaluated on a model reading ``modalities`` with ``num_frames``
    frames per clip (None when it can): it must change only inputs the model reads (a bimodal one needs
    both), and have the frames it needs."""
    spec = CORRUPTIONS.get(name)
    missing = [m for m, _ in spec.parts if m not in modalities]
    if missing:
        return f"it changes the {' and '.join(missing)} input, which this model does not read"
    if "visual" in dict(spec.parts) and num_frames < spec.min_frames:
        return f"it needs clips of at least {spec.min_frames} frames (--num_frames is {num_frames})"
    return None


def parse_corruption_names(text: str, modalities: Sequence[str], num_frames: int) -> Tuple[List[str], List[str]]:
    """``--corruptions``: a comma list of registered names, or ``all``. Returns (names to run, notes on the
    names ``all`` left out); an unknown name, a repeated one, or a named one this model cannot be evaluated
    under (``unusable``) raises ValueError."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if items == ["all"]:
        names, notes = [], []
        for n in list_corruptions():
            why = unusable(n, modalities, num_frames)
            (notes.append(f"{n}: {why}") if why else names.append(n))
        return names, notes
    bad = [n for n in items if n not in CORRUPTIONS]
    if bad or not items:
        raise ValueError(f"unknown corruption {', '.join(map(repr, bad)) or repr(text)}; valid: all, "
                         f"{', '.join(list_corruptions())}")
    if len(set(items)) != len(items):
        raise ValueError(f"names a corruption twice: {text!r}")
    for n in items:
        why = unusable(n, modalities, num_frames)
        if why:
            raise ValueError(f"{n}: {why}")
    return items, []


def parse_severities(text: str) -> Tuple[int, ...]:
    """``--severities``: ``a-b`` (inclusive), a comma list, or one value, each in 1..5; sorted, distinct."""
    out: List[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                if lo > hi:
                    raise ValueError(f"empty range {part!r}")
                out += range(lo, hi + 1)
            else:
                out.append(int(part))
    except ValueError as e:
        raise ValueError(f"expected a range like 1-5, a list like 1,3,5 or one value, got {text!r} ({e})") from None
    bad = [s for s in out if s not in SEVERITIES]
    if bad or not out:
        raise ValueError(f"severities are 1..5 (ImageNet-C's five), got {text!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"names a severity twice: {text!r}")
    return tuple(sorted(out))
