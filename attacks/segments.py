"""Time segments of a clip, shared by the temporal attacks (sparse_time, time_shared, tia).

A clip has ``T`` segments: the visual input ``(B, 3, T, H, W)`` has one frame per segment (a 4-D input
``(B, 3, H, W)`` is one segment), and the audio waveform ``(B, 1, L)`` is cut into ``T`` consecutive parts,
segment ``t`` being samples ``floor(t L / T) .. floor((t + 1) L / T) - 1``.

How audio aligns with frames (dataset/av_dataset.py, dataset/windows.py): the loader centres the audio
window of ``aud_len`` samples on the sample of the window's centre frame (``transforms.centre_sample``), and
the ``T`` frames lie ``stride`` frames apart around that same centre frame. The audio segment ``t`` is thus
the part of the waveform that matches frame ``t`` in order; it covers exactly the time of frame ``t`` (its
``stride / fps`` seconds) when the two windows have the same length, ``aud_len = T * stride * aud_rate /
fps``; otherwise the pairing is ordinal (the ``t``-th of ``T`` equal parts of a window centred on the same
instant). With ``T = 1`` the whole waveform is one segment.
"""
from __future__ import annotations

from typing import Mapping, Optional, Union

import torch


def clip_segments(inputs: Mapping[str, object], segments: int = 0) -> int:
    """The number of segments ``T`` of a batch: ``segments`` when > 0, else the visual input's frame count
    (dim 2 of a 5-D tensor; 1 for a 4-D or absent visual input). ``inputs`` values may be tensors or
    ``attacks.base.Frozen`` (anything with ``.shape``)."""
    if segments > 0:
        return int(segments)
    visual = inputs.get("visual")
    shape = getattr(visual, "shape", None)
    return int(shape[2]) if shape is not None and len(shape) == 5 else 1


def check_segments(modality: str, x: torch.Tensor, t: int) -> None:
    """A ``ValueError`` when ``x`` cannot hold ``t`` segments (a visual input with another frame count,
    a waveform shorter than ``t`` samples)."""
    if modality == "visual":
        have = x.shape[2] if x.dim() == 5 else 1
        if have != t:
            raise ValueError(f"the visual input has {have} frame(s) (shape {tuple(x.shape)}) but the attack uses "
                             f"{t} segments; pass segments=0 (the visual frame count) or a matching value")
    elif x.shape[-1] < t:
        raise ValueError(f"the audio input has {x.shape[-1]} samples, fewer than its {t} segments")


def batch_segments(clean: Mapping[str, torch.Tensor], fixed: Mapping[str, object], segments: int = 0) -> int:
    """The segment count ``T`` of an attack's batch (``clip_segments`` over the attacked and the fixed inputs),
    each attacked input checked to hold it (``check_segments``)."""
    t = clip_segments({**fixed, **clean}, segments)
    for m, x in clean.items():
        check_segments(m, x, t)
    return t


def sample_segment(length: int, t: int, device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """Segment id of every audio sample ``0..length-1`` (``floor(i T / length)`` up to rounding at the
    boundaries ``floor(t L / T)``), a long tensor ``(length,)``."""
    starts = torch.tensor([(k * length) // t for k in range(1, t)], dtype=torch.long, device=device)
    return torch.searchsorted(starts, torch.arange(length, device=device), right=True)


def segment_mask(support: torch.Tensor, modality: str, x: torch.Tensor) -> torch.Tensor:
    """A boolean mask broadcasting against ``x`` that is True on the segments ``support`` (B, T) marks."""
    b, t = support.shape
    if modality == "visual":
        if x.dim() == 5:
            return support[:, None, :, None, None]
        return support.reshape(b, 1, 1, 1)  # one frame: T == 1
    ids = sample_segment(x.shape[-1], t, x.device)
    return support[:, ids].reshape(b, *([1] * (x.dim() - 2)), x.shape[-1])


def segment_norms(g: torch.Tensor, modality: str, t: int, p: float) -> torch.Tensor:
    """Per sample and segment, the ``p``-norm (1 or 2) of ``g`` restricted to that segment: ``(B, T)``."""
    powered = g.abs() if p == 1 else g.square()
    b = g.shape[0]
    if modality == "visual":
        per = powered.sum(dim=(1, 3, 4)) if g.dim() == 5 else powered.flatten(1).sum(1, keepdim=True)
    else:
        flat = powered.reshape(b, -1, g.shape[-1]).sum(1)  # (B, L)
        per = torch.zeros(b, t, dtype=flat.dtype, device=flat.device)
        per.index_add_(1, sample_segment(g.shape[-1], t, g.device), flat)
    return per if p == 1 else per.sqrt()


def tile_segment(x: torch.Tensor, modality: str, index: int, t: int) -> torch.Tensor:
    """The clip as it would be if every segment were segment ``index``: frame ``index`` repeated ``T`` times,
    or audio segment ``index`` repeated (and cut) to the waveform's length. Differentiable in ``x``."""
    if modality == "visual":
        if x.dim() != 5:
            return x
        return x[:, :, index:index + 1].expand(-1, -1, t, -1, -1)
    length = x.shape[-1]
    lo, hi = (index * length) // t, ((index + 1) * length) // t
    part = x[..., lo:hi]
    reps = -(-length // part.shape[-1])
    return part.repeat(*([1] * (x.dim() - 1)), reps)[..., :length]


def segment_dual_norm(norm: str) -> float:
    """The norm of the gradient that measures a segment's first-order gain under a step of the threat's norm:
    L1 for an L-inf step (``<g, eps sign g> = eps ||g||_1``), L2 for an L2/SNR step."""
    return 1.0 if norm == "Linf" else 2.0


def frames_of(support: Optional[torch.Tensor]) -> list:
    """The indices of the True segments of each sample of ``support`` (B, T), for pages and logs."""
    if support is None:
        return []
    return [row.nonzero().flatten().tolist() for row in support.cpu()]
