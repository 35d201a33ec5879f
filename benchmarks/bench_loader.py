"""Clips per second of dataset.av_dataset.AVDataset against a plain loader written the straightforward way
(PIL open + torchvision transforms per frame, librosa.load per clip), on the same data, through DataLoaders
with the same workers, batch size and sample order, in one run.

    python benchmarks/bench_loader.py                       # fake data (128x128 JPEGs, 4 s audio) in a temp dir
    python benchmarks/bench_loader.py --root media/ave --list data/ave/train.csv --categories_from ave

Defaults follow the synthetic spec (img_size 64, its aud_len, one frame). AVDataset is timed on its float
path and on the uint8 transport the pipeline uses (uint8 frames / int16 audio per batch, as they reach the
device; "+ floats on CPU": with dataset.batches.DeviceLoader making the float inputs in this process). The first batch of each loader
(worker start-up, imports) is not timed; each loader runs --repeats times, interleaved, and its best run
is reported (on a shared machine, other load only ever slows a run down).
"""
from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataset import transforms as T  # noqa: E402
from dataset import windows as W  # noqa: E402
from dataset.av_dataset import AVDataset, build_loader, worker_init  # noqa: E402
from dataset.batches import DeviceLoader  # noqa: E402
from dataset.index import IndexRow, read_index  # noqa: E402
from dataset.specs import get_spec, named_datasets  # noqa: E402

FAKE_CATEGORIES = [f"class{c}" for c in range(8)]


class PlainAVDataset(Dataset):
    """The straightforward loader: PIL + torchvision per frame, librosa.load of the whole clip."""

    def __init__(self, rows: List[IndexRow], categories: Sequence[str], audio_root: str, frame_root: str,
                 train: bool, num_frames: int, stride: int, fps: int, aud_len: int, aud_rate: int,
                 img_size: int) -> None:
        from torchvision import transforms as tv

        self.rows, self.audio_root, self.frame_root, self.train = rows, audio_root, frame_root, train
        self.labels = [list(categories).index(r.label) for r in rows]
        self.num_frames, self.stride, self.fps = num_frames, stride, fps
        self.aud_len, self.aud_rate = aud_len, aud_rate
        resize = tv.Resize(T.resize_target(img_size))
        crop = [tv.RandomCrop(img_size), tv.RandomHorizontalFlip()] if train else [tv.CenterCrop(img_size)]
        self.tf = tv.Compose([resize, *crop, tv.ToTensor()])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Dict[str, object]:
        import librosa
        from PIL import Image

        row = self.rows[i]
        lo, hi = W.centre_range(row.num_frames, self.num_frames, self.stride)
        centre = random.randint(lo, hi) if self.train else W.middle_frame(row.num_frames, self.num_frames,
                                                                         self.stride)
        frames = []
        for k in W.frame_indices(centre, self.num_frames, self.stride):
            img = Image.open(f"{self.frame_root}{row.frames}/{k:06d}.jpg").convert("RGB")
            frames.append(self.tf(img))
        wave, _ = librosa.load(f"{self.audio_root}{row.audio}", sr=self.aud_rate, mono=True)
        wave = T.take_window(wave, T.centre_sample(centre, self.fps, self.aud_rate), self.aud_len)
        if self.train:
            wave = np.clip(wave * random.uniform(0.5, 1.5), -1, 1)
        return {"audio": torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)).unsqueeze(0),
                "visual": torch.stack(frames, dim=1), "label": self.labels[i], "id": row.clip_id, "index": i}


def clips_per_second(loader: Iterable[Dict[str, torch.Tensor]], batches: int) -> float:
    """Throughput over ``batches`` batches after one untimed warm-up batch."""
    it = iter(loader)
    next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        n += next(it)["audio"].shape[0]
    return n / (time.perf_counter() - t0)


def sampler(n: int, count: int, seed: int) -> RandomSampler:
    """The same random (with replacement) order for every loader, exactly one epoch long."""
    return RandomSampler(range(n), replacement=True, num_samples=count,
                         generator=torch.Generator().manual_seed(seed))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="", help="media root holding data/audio and data/frames")
    p.add_argument("--list", default="", help="index CSV (with --root); default: a fake dataset")
    p.add_argument("--categories", default="", help="comma-separated classes of --list")
    p.add_argument("--categories_from", default="", choices=["", *named_datasets()],
                   help="take the classes from this dataset spec")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=20, help="timed batches per loader")
    p.add_argument("--img_size", type=int, default=64)  # synthetic spec
    p.add_argument("--aud_len", type=int, default=get_spec("synthetic").audio_len)  # synthetic spec
    p.add_argument("--num_frames", type=int, default=1)
    p.add_argument("--stride_frames", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per loader; the best is kept")
    p.add_argument("--mode", choices=["train", "eval"], default="train")
    p.add_argument("--preload", action="store_true", help="also time AVDataset(preload=True)")
    p.add_argument("--fake_hw", type=int, default=128, help="fake frames are fake_hw x fake_hw")
    p.add_argument("--fake_seconds", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if bool(args.root) != bool(args.list):
        p.error("--root and --list go together (or give neither for a fake dataset)")
    if args.list and not (args.categories or args.categories_from):
        p.error("--list needs --categories or --categories_from")
    return args


def resolve_data(args: argparse.Namespace, tmp: str) -> tuple:
    """(list_csv, audio_root, frame_root, categories), writing a fake dataset when none is given."""
    if args.list:
        if args.categories_from:
            cats = list(get_spec(args.categories_from).categories)
        else:
            cats = args.categories.split(",")
        root = Path(args.root)
        return args.list, str(root / "data" / "audio"), str(root / "data" / "frames"), cats
    from tests.fake_media import make_fake_media

    t0 = time.perf_counter()
    frames = int(round(args.fake_seconds * 8))  # 8 fps, as the real preprocessing
    p = make_fake_media(Path(tmp), FAKE_CATEGORIES, clips_per_class=8, num_frames=frames,
                        seconds=args.fake_seconds, img_hw=(args.fake_hw, args.fake_hw), seed=args.seed)
    print(f"fake data: {len(FAKE_CATEGORIES) * 8} clips x {frames} frames of {args.fake_hw}x{args.fake_hw}, "
          f"{args.fake_seconds} s audio, written in {time.perf_counter() - t0:.1f} s")
    return str(p["all"]), str(p["audio_path"]), str(p["frame_path"]), FAKE_CATEGORIES


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    train = args.mode == "train"
    if args.workers == 0:  # load in the main process with one thread, as a worker does (no oversubscription)
        worker_init(0)
    with tempfile.TemporaryDirectory() as tmp:
        list_path, audio_root, frame_root, cats = resolve_data(args, tmp)
        common = dict(num_frames=args.num_frames, stride_frames=args.stride_frames, frame_rate=8,
                      aud_len=args.aud_len, aud_rate=11025, img_size=args.img_size, seed=args.seed)
        fast = AVDataset(list_path, audio_root, frame_root, cats, train, **common)
        raw = AVDataset(list_path, audio_root, frame_root, cats, train, **common).set_transport(raw=True)
        plain = PlainAVDataset(read_index(list_path, cats), cats, audio_root, frame_root, train, args.num_frames,
                               args.stride_frames, 8, args.aud_len, 11025, args.img_size)
        count = args.batch * (args.batches + 1)
        loaders = {
            "plain": lambda: DataLoader(plain, batch_size=args.batch, num_workers=args.workers,
                                        sampler=sampler(len(plain), count, args.seed)),
            "fast": lambda: build_loader(fast, args.batch, args.workers, shuffle=False,
                                         sampler=sampler(len(fast), count, args.seed)),
            "uint8": lambda: build_loader(raw, args.batch, args.workers, shuffle=False,
                                          sampler=sampler(len(raw), count, args.seed)),
            "uint8_cpu": lambda: DeviceLoader(build_loader(raw, args.batch, args.workers, shuffle=False,
                                                           sampler=sampler(len(raw), count, args.seed)),
                                              torch.device("cpu")),
        }
        if args.preload:
            cached = AVDataset(list_path, audio_root, frame_root, cats, train, preload=True, **common)
            loaders["preload"] = lambda: build_loader(cached, args.batch, args.workers, shuffle=False,
                                                      sampler=sampler(len(cached), count, args.seed))
        # interleaved repeats, best of each: the machine may be shared, and load only ever slows a run down
        res: Dict[str, float] = {}
        for _ in range(args.repeats):
            for name, make in loaders.items():
                res[name] = max(res.get(name, 0.0), clips_per_second(make(), args.batches))
    print(f"{args.mode}, {args.workers} workers, batch {args.batch}, {args.batches} timed batches x "
          f"{args.repeats} repeats, "
          f"img {args.img_size}, {args.num_frames} frame(s), aud_len {args.aud_len}")
    print(f"plain loader (PIL + torchvision + librosa): {res['plain']:8.1f} clips/s")
    print(f"AVDataset (cv2 + windowed WAV read):       {res['fast']:8.1f} clips/s  (float path)")
    print(f"AVDataset, uint8 transport:                 {res['uint8']:8.1f} clips/s")
    print(f"AVDataset, uint8 + floats on CPU:           {res['uint8_cpu']:8.1f} clips/s")
    if "preload" in res:
        print(f"AVDataset (preload=True):                   {res['preload']:8.1f} clips/s")
    print(f"ratio AVDataset / plain: {res['fast'] / res['plain']:.2f}x float path, "
          f"{res['uint8'] / res['plain']:.2f}x uint8 transport (target >= 3x)")
    print(f"ratio uint8 / float path: {res['uint8'] / res['fast']:.2f}x, with floats on CPU "
          f"{res['uint8_cpu'] / res['fast']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
