"""Frame windows: which frames a sample reads. Pure integer arithmetic, no dependencies, so that the loader
(dataset/av_dataset.py) and the index checks (dataset/index.py) share one definition.

A window is ``num_frames`` frames ``stride`` apart around a centre frame; frames are numbered from 1
(docs/paper.md, Preprocessing and layout: ``000001.jpg``...). Training draws the centre uniformly from
:func:`train_centre_range`; evaluation uses :func:`middle_frame`.
"""
from __future__ import annotations

from typing import List, Tuple


def frame_indices(centre: int, num_frames: int, stride: int) -> List[int]:
    """Frame numbers (from 1) of ``num_frames`` frames ``stride`` apart around ``centre``: the centre is
    frame ``num_frames // 2`` of the window (0-based), e.g. T=3, s=2, c=10 -> [8, 10, 12]."""
    return [centre + (k - num_frames // 2) * stride for k in range(num_frames)]


def centre_range(total: int, num_frames: int, stride: int) -> Tuple[int, int]:
    """Inclusive (lo, hi) of the centres whose whole window lies in frames 1..total; lo > hi if none."""
    lo = 1 + (num_frames // 2) * stride
    hi = total - (num_frames - 1 - num_frames // 2) * stride
    return lo, hi


def frames_needed(num_frames: int, stride: int) -> int:
    """Fewest frames a clip must have to hold one window: the smallest ``total`` with a non-empty
    :func:`centre_range`, i.e. ``(num_frames - 1) * stride + 1``."""
    lo, hi = centre_range(0, num_frames, stride)
    return lo - hi  # centre_range(total) is non-empty exactly when total >= lo - hi(0)


def train_centre_range(total: int, num_frames: int, stride: int, margin: int) -> Tuple[int, int]:
    """Training centres: :func:`centre_range` kept ``margin`` frames from both clip ends (the reference keeps
    the centre 3 s from the ends, dataset/specs.py ``train_margin_s``); a clip too short for the margin gives
    only its :func:`middle_frame`. ``margin`` 0 is :func:`centre_range` itself."""
    lo, hi = centre_range(total, num_frames, stride)
    if margin <= 0 or lo > hi:
        return lo, hi
    lo_m, hi_m = max(lo, 1 + margin), min(hi, total - margin)
    if lo_m > hi_m:
        mid = middle_frame(total, num_frames, stride)
        return mid, mid
    return lo_m, hi_m


def middle_frame(total: int, num_frames: int, stride: int) -> int:
    """Eval centre: the middle frame (total + 1) // 2, moved inside the valid range if the window needs it."""
    lo, hi = centre_range(total, num_frames, stride)
    return min(max((total + 1) // 2, lo), hi)
