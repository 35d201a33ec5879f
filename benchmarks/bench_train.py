"""Training samples/s through the real loader against the bare model step, same model and batch, one run.

    python benchmarks/bench_train.py                                   # fake media in a temp dir
    python benchmarks/bench_train.py --root media/synthetic --list data/synthetic/train.csv --dataset synthetic

"bare" is forward + backward + SGD step on one batch already in memory, repeated; "loader" is the same step
fed by AVDataset through the project's loader as training uses it (augmentation on, --workers processes,
uint8/int16 batches made float by dataset.batches.DeviceLoader; --float_path: the per-sample float path).
The ratio loader/bare is what the input pipeline costs: 1.0 means loading is fully hidden behind compute.
Target: >= 0.9 with the default workers. Interleaved repeats, best of each reported.

--compile also times the bare step with the audio and visual nets compiled (pipeline.build.compile_nets,
inductor) against the eager one, after the compilation (which is reported, not timed in the ratio).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataset.av_dataset import AVDataset, build_loader  # noqa: E402
from dataset.batches import DeviceLoader  # noqa: E402
from dataset.specs import get_spec  # noqa: E402
from models import create_model  # noqa: E402
from dataset.batches import default_workers  # noqa: E402


def step(model, opt, batch) -> None:
    loss = F.cross_entropy(model(audio=batch["audio"], visual=batch["visual"]), batch["label"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def time_bare(model, opt, batch, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step(model, opt, batch)
    return n * batch["label"].numel() / (time.perf_counter() - t0)


def time_loader(model, opt, loader, n: int) -> float:
    it = iter(loader)
    step(model, opt, next(it))  # worker start-up is not timed
    seen, t0 = 0, time.perf_counter()
    for _ in range(n):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        step(model, opt, b)
        seen += b["label"].numel()
    return seen / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=None, help="media root (default: fake media in a temp dir)")
    p.add_argument("--list", type=Path, default=None)
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--arch_frame", default="resnet10")
    p.add_argument("--arch_classifier", default="concat")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=default_workers(), help="default: the training default")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--float_path", action="store_true", help="per-sample float tensors (the path before the "
                   "uint8 transport)")
    p.add_argument("--compile", action="store_true", help="also time the compiled bare step")
    a = p.parse_args()
    spec = get_spec(a.dataset)
    tmp = None
    if a.root is None:
        from tests.fake_media import make_fake_media

        tmp = tempfile.TemporaryDirectory()
        paths = make_fake_media(Path(tmp.name), list(spec.categories), clips_per_class=8, num_frames=24,
                                seconds=3.0, img_hw=(128, 128), seed=0)
        a.root, a.list = paths["root"], paths["all"]
    ds = AVDataset(list_path=a.list, audio_path=Path(a.root) / "data" / "audio",
                   frame_path=Path(a.root) / "data" / "frames", categories=list(spec.categories), split_train=True,
                   num_frames=1, stride_frames=1, frame_rate=spec.fps, aud_len=spec.audio_len,
                   aud_rate=spec.audio_rate, img_size=spec.img_size, seed=0)
    ds.set_transport(raw=not a.float_path)
    cpu = torch.device("cpu")
    loader = DeviceLoader(build_loader(ds, batch_size=a.batch, workers=a.workers, shuffle=True, seed=0,
                                       drop_last=True), cpu)
    torch.manual_seed(0)
    model = create_model(arch_frame=a.arch_frame, arch_classifier=a.arch_classifier, num_classes=spec.num_classes)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    batch = next(iter(DeviceLoader(build_loader(ds, batch_size=a.batch, workers=0, shuffle=False, seed=0,
                                                drop_last=True), cpu)))
    step(model, opt, batch)  # warm-up
    if a.compile:
        from pipeline.build import compile_nets

        eager = max(time_bare(model, opt, batch, a.steps) for _ in range(a.repeats))
        t0 = time.perf_counter()
        compile_nets(model)
        step(model, opt, batch)
        print(f"compilation (first compiled step): {time.perf_counter() - t0:.1f} s")
    bare, fed = [], []
    for _ in range(a.repeats):
        bare.append(time_bare(model, opt, batch, a.steps))
        fed.append(time_loader(model, opt, loader, a.steps))
    b, f = max(bare), max(fed)
    print(f"model {a.arch_classifier} ({a.arch_frame} + anet), batch {a.batch}, workers {a.workers}, "
          f"img {spec.img_size}, audio {spec.audio_len} samples")
    print(f"bare model step : {b:8.1f} samples/s")
    print(f"through loader  : {f:8.1f} samples/s")
    print(f"ratio loader/bare: {f / b:.2f}  (target >= 0.9)  [{'float' if a.float_path else 'uint8'} path]")
    if a.compile:
        print(f"bare eager step : {eager:8.1f} samples/s")
        print(f"ratio compiled/eager bare step: {b / eager:.2f}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
