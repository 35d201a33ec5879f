"""A tiny fake preprocessed dataset in the layout of docs/paper.md (Preprocessing and layout), for tests and
benchmarks.

    <root>/data/audio/<class>/<vid>.wav              mono 16-bit PCM at ``rate`` Hz
    <root>/data/frames/<class>/<vid>.mp4/000001.jpg  ``num_frames`` JPEG frames per clip
    <root>/{train,val,test,all}.csv                  index rows /<class>/<vid>.wav,/<class>/<vid>.mp4,<n>

Each class has its own background colour and tone frequency (so a model can learn it); frames carry a
square that moves with the frame number, plus noise. Everything is drawn from ``seed``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
import soundfile as sf

AUDIO_RATE = 11025  # the paper's audio rate


def _frame(rng: np.random.Generator, colour: np.ndarray, k: int, hw: Tuple[int, int]) -> np.ndarray:
    """One BGR uint8 frame: class colour, a bright square whose position depends on ``k``, noise."""
    h, w = hw
    img = np.empty((h, w, 3), np.float32)
    img[:] = colour
    side = max(2, min(h, w) // 4)
    top, left = (k * 3) % max(1, h - side), (k * 5) % max(1, w - side)
    img[top:top + side, left:left + side] = 255.0 - colour
    img += rng.normal(0.0, 8.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _tone(rng: np.random.Generator, freq: float, n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)) + rng.normal(0.0, 0.05, n)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def write_clip(root: Path, cls: str, vid: str, frames: Sequence[np.ndarray], audio: np.ndarray,
               rate: int = AUDIO_RATE) -> str:
    """Write one clip's frames (BGR uint8) and mono audio; returns its index row (without newline)."""
    fdir = root / "data" / "frames" / cls / f"{vid}.mp4"
    fdir.mkdir(parents=True, exist_ok=True)
    for k, img in enumerate(frames, start=1):
        if not cv2.imwrite(str(fdir / f"{k:06d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise OSError(f"could not write {fdir / f'{k:06d}.jpg'}")
    adir = root / "data" / "audio" / cls
    adir.mkdir(parents=True, exist_ok=True)
    sf.write(str(adir / f"{vid}.wav"), audio, rate, subtype="PCM_16")
    return f"/{cls}/{vid}.wav,/{cls}/{vid}.mp4,{len(frames)}"


def make_fake_media(root: Path, categories: Sequence[str], clips_per_class: int, num_frames: int,
                    seconds: float, img_hw: Tuple[int, int], seed: int) -> Dict[str, Path]:
    """Write ``clips_per_class`` clips per class under ``root`` and the index CSVs.

    Split per class: the last ``max(1, clips_per_class // 3)`` clips are held out and listed in both
    val.csv and test.csv (fake data: the two eval lists are the same); the rest are in train.csv; all.csv
    lists every clip. Returns the paths: root, audio_path, frame_path, train, val, test, all.
    """
    if clips_per_class < 2 or num_frames < 1 or seconds <= 0 or min(img_hw) < 4 or not categories:
        raise ValueError(f"make_fake_media: need clips_per_class >= 2, num_frames >= 1, seconds > 0, "
                         f"img_hw >= 4 and categories; got {clips_per_class}, {num_frames}, {seconds}, "
                         f"{img_hw}, {list(categories)}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    n_eval = max(1, clips_per_class // 3)
    n_samples = int(round(seconds * AUDIO_RATE))
    train: List[str] = []
    held: List[str] = []
    for c, cls in enumerate(categories):
        colour = rng.uniform(30, 225, 3).astype(np.float32)
        freq = 220.0 * (1 + c)
        for j in range(clips_per_class):
            frames = [_frame(rng, colour, k, img_hw) for k in range(1, num_frames + 1)]
            row = write_clip(root, cls, f"vid{j:03d}", frames, _tone(rng, freq, n_samples, AUDIO_RATE))
            (train if j < clips_per_class - n_eval else held).append(row)
    paths = {"root": root, "audio_path": root / "data" / "audio", "frame_path": root / "data" / "frames",
             "train": root / "train.csv", "val": root / "val.csv", "test": root / "test.csv",
             "all": root / "all.csv"}
    for name, rows in (("train", train), ("val", held), ("test", held), ("all", train + held)):
        paths[name].write_text("".join(r + "\n" for r in rows))
    return paths
