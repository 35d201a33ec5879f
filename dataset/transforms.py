"""Sample-level transforms on uint8 frames and float32 waveforms (numpy, no PIL).

Everything here is a small pure function so that the dataset, the tests and the benchmark share one
definition of each step (which frames a sample reads is in dataset/windows.py). Randomness always comes
from an explicit ``numpy.random.Generator``.

Paper settings (docs/paper.md, Model): frames are resized to 1.1x the input size, then randomly
cropped and horizontally flipped for training, centre-cropped for evaluation; audio is a window of
``aud_len`` samples centred on the chosen frame, tiled when the clip is too short, and its volume is scaled
by U(0.5, 1.5) and clipped to [-1, 1] for training.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np
import torch

RESIZE_NUM, RESIZE_DEN = 11, 10  # resize to 1.1 x img_size before cropping (docs/paper.md, Model)
VOLUME_RANGE = (0.5, 1.5)  # training volume scale U(0.5, 1.5) (docs/paper.md, Model)
# cv2 decodes a JPEG at 1/2, 1/4 or 1/8 of its size almost for free (DCT scaling): flags by factor
_REDUCED_FLAGS = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                  (2, cv2.IMREAD_REDUCED_COLOR_2))


def resize_target(img_size: int) -> int:
    """Shorter side after the pre-crop resize: int(1.1 * img_size), computed exactly in integers."""
    return img_size * RESIZE_NUM // RESIZE_DEN


def short_side_shape(h: int, w: int, short: int) -> Tuple[int, int]:
    """(height, width) that makes the shorter side ``short`` and keeps the aspect ratio (rounded)."""
    if h <= w:
        return short, max(short, int(round(w * short / h)))
    return max(short, int(round(h * short / w))), short


def decode_flag(h: int, w: int, short: int) -> int:
    """cv2.imread flag that decodes an (h, w) JPEG at the largest 1/2^k reduction whose shorter side is
    still at least ``short`` (so the image is only ever shrunk afterwards, never enlarged)."""
    for factor, flag in _REDUCED_FLAGS:
        if -(-min(h, w) // factor) >= short:  # libjpeg rounds the reduced size up
            return flag
    return cv2.IMREAD_COLOR


def resize_short(img: np.ndarray, short: int) -> np.ndarray:
    """Resize an HxWxC uint8 image so that its shorter side is ``short``.

    Bilinear when enlarging or shrinking by less than 2x (about 9x faster than cv2's area filter at
    fractional ratios, with little aliasing at that ratio: reduced JPEG decoding, :func:`decode_flag`,
    leaves at most a <2x shrink for large frames), area filter when shrinking by 2x or more.
    """
    h, w = img.shape[:2]
    nh, nw = short_side_shape(h, w, short)
    if (nh, nw) == (h, w):
        return img
    interp = cv2.INTER_AREA if 2 * nh <= h else cv2.INTER_LINEAR
    return cv2.resize(img, (nw, nh), interpolation=interp)


def random_crop_params(rng: np.random.Generator, h: int, w: int, size: int) -> Tuple[int, int, bool]:
    """(top, left, flip) of a random ``size`` crop of an (h, w) image and a fair-coin horizontal flip."""
    _check_crop(h, w, size)
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    flip = bool(rng.random() < 0.5)
    return top, left, flip


def center_crop_params(h: int, w: int, size: int) -> Tuple[int, int, bool]:
    """(top, left, flip=False) of the centred ``size`` crop (torchvision's rounding)."""
    _check_crop(h, w, size)
    return int(round((h - size) / 2.0)), int(round((w - size) / 2.0)), False


def _check_crop(h: int, w: int, size: int) -> None:
    if size > h or size > w:
        raise ValueError(f"crop size {size} is larger than the image ({h}x{w})")


def crop_stack(frames: Sequence[np.ndarray], top: int, left: int, size: int, flip: bool) -> np.ndarray:
    """Crop (and optionally mirror) every HxWx3 frame the same way; returns a (T, size, size, 3) uint8 array."""
    out = np.stack([f[top:top + size, left:left + size] for f in frames])
    if flip:
        out = out[:, :, ::-1]
    return out


def frames_to_tensor(stack: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB -> contiguous float32 tensor (3, T, H, W) in [0, 1]."""
    if stack.dtype != np.uint8 or stack.ndim != 4 or stack.shape[-1] != 3:
        raise ValueError(f"expected a (T, H, W, 3) uint8 array, got {stack.dtype} {stack.shape}")
    chw = np.ascontiguousarray(stack.transpose(3, 0, 1, 2))
    return torch.from_numpy(chw).float().div_(255.0)


def centre_sample(frame: int, fps: int, rate: int) -> int:
    """Audio sample at the centre of frame ``frame`` (numbered from 1): floor((frame - 0.5) / fps * rate),
    computed in integers so there is no float rounding."""
    return ((2 * frame - 1) * rate) // (2 * fps)


def window_start(total: int, centre: int, length: int) -> int:
    """Start of a ``length`` window centred on sample ``centre`` (the centre lands at ``length // 2``),
    clamped inside a signal of ``total >= length`` samples."""
    if total < length:
        raise ValueError(f"signal of {total} samples is shorter than the window ({length})")
    return min(max(centre - length // 2, 0), total - length)


def tile_to(signal: np.ndarray, length: int) -> np.ndarray:
    """Repeat a 1-D signal end to end until it has at least ``length`` samples (returned as is if it has)."""
    if signal.shape[0] == 0:
        raise ValueError("cannot tile an empty signal")
    if signal.shape[0] >= length:
        return signal
    return np.tile(signal, -(-length // signal.shape[0]))


def take_window(signal: np.ndarray, centre: int, length: int) -> np.ndarray:
    """``length`` samples of ``signal`` (tiled if shorter) centred on ``centre`` and clamped inside it."""
    full = tile_to(signal, length)
    start = window_start(full.shape[0], centre, length)
    return full[start:start + length]


def draw_gain(rng: np.random.Generator) -> np.float32:
    """The training volume factor U(0.5, 1.5) as float32 (one draw of ``rng``)."""
    return np.float32(rng.uniform(*VOLUME_RANGE))


def scale_volume(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Multiply by U(0.5, 1.5) and clip to [-1, 1] (training-time audio augmentation; dataset/batches.py
    applies the same two float32 operations on the device for the raw transport)."""
    return np.clip(wave * draw_gain(rng), -1.0, 1.0).astype(np.float32, copy=False)
