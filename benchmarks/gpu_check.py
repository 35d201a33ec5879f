"""One-go GPU check at the paper's sizes on fake in-memory media (docs/paper.md, Model and Preprocessing:
224 px frames, 1-3 per clip, 65535 audio samples, ResNet-18). Prints one table; exits 1 if any row failed.

Rows: training clips/s (fp32 / bf16 / bf16 + channels_last, batch 12 and 64, 1 and 3 frames); PGD-10 time
over the bare forward+backward at batch 12, 64, 256; sparse coding time (1024 x 512 bank, batch 64);
defended PGD-10 with BPDA and with unrolled gradients; loader clips/s at 224 px, 3 frames from 640x360
JPEGs to the device, the float path against the uint8 one (dataset/batches.py), with the default
workers; peak memory of each row. ``--cpu --tiny`` runs every row on small sizes (the test suite does);
``--only loader`` runs one group of rows. The torchrun row is benchmarks/gpu_check.sh's.
No librosa/soundfile import: media are random tensors, the loader's files are written with cv2 and wave.

    python benchmarks/gpu_check.py [--cpu] [--tiny] [--only train|pgd|solver|defended|loader]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
import wave
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from attacks import create_attack  # noqa: E402
from models import create_model  # noqa: E402
from models.defense import DefendedModel, MemoryBank, sparse_code_with_info  # noqa: E402

IMG, AUD = 224, 65535  # paper sizes (docs/paper.md, Preprocessing)
EPS = 0.006  # docs/paper.md, Attacks
ROWS: List[Dict[str, str]] = []


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure(name: str, fn: Callable[[], float], dev: torch.device) -> None:
    """Run ``fn`` (returns the figure), record figure and peak memory; a failure is a FAIL row."""
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        fig = fn()
        peak = torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else float("nan")
        ROWS.append({"check": name, "result": fig if isinstance(fig, str) else f"{fig:.3g}",
                     "peak GiB": f"{peak:.2f}", "status": "ok"})
    except Exception as e:  # noqa: BLE001 - every failure becomes a row, the exit code says it
        traceback.print_exc()
        ROWS.append({"check": name, "result": f"{type(e).__name__}: {e}"[:80], "peak GiB": "-", "status": "FAIL"})
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def batch(b: int, frames: int, img: int, aud: int, dev: torch.device):
    a = torch.rand(b, 1, aud, device=dev) * 2 - 1
    v = torch.rand(b, 3, frames, img, img, device=dev)
    return a, v, torch.randint(0, 10, (b,), device=dev)


def train_rate(b: int, frames: int, amp: bool, cl: bool, img: int, aud: int, steps: int, dev: torch.device) -> float:
    model = create_model("anet", "resnet18", "concat", num_classes=10).to(dev)
    if cl:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    a, v, y = batch(b, frames, img, aud, dev)
    if cl:
        v = v.contiguous(memory_format=torch.channels_last_3d)

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(audio=a, visual=v).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return steps * b / (time.perf_counter() - t0)


def pgd_over_bare(b: int, img: int, aud: int, n: int, dev: torch.device) -> str:
    model = create_model("anet", "resnet18", "concat", num_classes=10).to(dev).eval()
    a, v, y = batch(b, 1, img, aud, dev)
    pgd = create_attack("pgd", model, eps={"audio": EPS, "visual": EPS}, steps=n)

    def bare() -> None:
        for _ in range(n):
            ai, vi = a.clone().requires_grad_(True), v.clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(audio=ai, visual=vi), y), [ai, vi])

    times = {}
    for name, fn in (("bare", bare), ("pgd", lambda: pgd({"audio": a, "visual": v}, y))):
        fn()
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        times[name] = time.perf_counter() - t0
    return f"{times['pgd'] / times['bare']:.3f} ({times['pgd'] * 1e3:.0f} ms)"


def fista_ms(dim: int, atoms: int, dev: torch.device) -> str:
    g = torch.Generator().manual_seed(0)
    at = torch.randn(atoms, dim, generator=g).relu()
    x = torch.randn(64, dim, generator=g).relu()
    D = (at / at.norm(dim=1, keepdim=True)).T.contiguous().to(dev)
    x = (x / x.norm(dim=1, keepdim=True)).to(dev)
    sparse_code_with_info(x, D)
    sync(dev)
    t0 = time.perf_counter()
    _, it = sparse_code_with_info(x, D)
    sync(dev)
    return f"{(time.perf_counter() - t0) * 1e3:.1f} ms, {int(it.max())} iterations"


def defended_pgd(grad: str, b: int, img: int, aud: int, atoms: int, n: int, dev: torch.device) -> str:
    base = create_model("anet", "resnet18", "concat", num_classes=10).to(dev).eval()
    a, v, y = batch(b, 1, img, aud, dev)
    with torch.no_grad():
        feats = base.features(audio=a, visual=v)
    g = torch.Generator().manual_seed(0)
    # atoms drawn near the clean features (a bank of training features in the real run)
    banks = {m: MemoryBank(f[torch.randint(0, b, (atoms,), generator=g)].cpu() *
                           (1 + 0.1 * torch.rand(atoms, 1, generator=g)), "0" * 64, modality=m)
             for m, f in feats.items()}
    model = DefendedModel(base, banks, grad=grad).to(dev)
    pgd = create_attack("pgd", model, eps={"audio": EPS, "visual": EPS}, steps=n)
    sync(dev)
    t0 = time.perf_counter()
    pgd({"audio": a, "visual": v}, y)
    sync(dev)
    return f"{(time.perf_counter() - t0) * 1e3:.0f} ms"


def write_media(root: Path, clips: int, frames: int, hw: tuple, seconds: float) -> Path:
    """``clips`` clips of ``frames`` noisy JPEGs (h, w) and 16-bit WAVs at 11025 Hz; returns the index CSV."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for c in range(clips):
        fdir = root / "frames" / f"c{c % 4}" / f"v{c}.mp4"
        fdir.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (hw[0] // 8, hw[1] // 8, 3), dtype=np.uint8)
        for k in range(1, frames + 1):  # smooth content with some noise, as video frames
            img = cv2.resize(base, (hw[1], hw[0])) + rng.integers(0, 16, (*hw, 3), dtype=np.uint8)
            cv2.imwrite(str(fdir / f"{k:06d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        (root / "audio" / f"c{c % 4}").mkdir(parents=True, exist_ok=True)
        with wave.open(str(root / "audio" / f"c{c % 4}" / f"v{c}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(11025)
            w.writeframes(rng.integers(-8000, 8000, int(seconds * 11025), dtype=np.int16).tobytes())
        rows.append(f"/c{c % 4}/v{c}.wav,/c{c % 4}/v{c}.mp4,{frames}\n")
    (root / "list.csv").write_text("".join(rows))
    return root / "list.csv"


def loader_old_vs_new(img: int, aud: int, tiny: bool, dev: torch.device) -> str:
    """Clips/s reaching ``dev`` as float model inputs: the float path (per-sample floats, pinned, copied)
    against the uint8 path (uint8/int16 batches, DeviceLoader: side-stream copy and conversion)."""
    from dataset.av_dataset import AVDataset, build_loader
    from dataset.batches import DeviceLoader, default_workers

    hw, clips, frames, b, n = ((36, 64), 8, 24, 2, 3) if tiny else ((360, 640), 48, 64, 32, 12)
    workers = default_workers()
    with tempfile.TemporaryDirectory() as tmp:
        csv = write_media(Path(tmp), clips, frames, hw, frames / 8)
        ds = [AVDataset(csv, Path(tmp) / "audio", Path(tmp) / "frames", [f"c{i}" for i in range(4)], True,
                        num_frames=3, stride_frames=1, aud_len=aud, img_size=img) for _ in range(2)]
        ds[1].set_transport(raw=True)

        loaders = (build_loader(ds[0], b, workers, shuffle=True, drop_last=True),
                   DeviceLoader(build_loader(ds[1], b, workers, shuffle=True, drop_last=True), dev))

        def old():
            while True:  # epochs until the timed batches are done
                for batch in loaders[0]:
                    yield {k: batch[k].to(dev, non_blocking=True) for k in ("audio", "visual")}

        def new():
            while True:
                yield from loaders[1]

        def rate(make) -> float:
            it, seen = make(), 0
            next(it)  # worker start-up is not timed
            sync(dev)
            t0 = time.perf_counter()
            for _ in range(n):
                seen += next(it)["visual"].shape[0]
            sync(dev)
            return seen / (time.perf_counter() - t0)

        rates = {"old": 0.0, "new": 0.0}
        for _ in range(2):  # interleaved, best of each
            for name, make in (("old", old), ("new", new)):
                rates[name] = max(rates[name], rate(make))
    return (f"{rates['new'] / rates['old']:.2f}x ({rates['old']:.0f} -> {rates['new']:.0f} clips/s, "
            f"{workers} workers, batch {b})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu", action="store_true", help="run on CPU (with --tiny: the test suite's smoke run)")
    p.add_argument("--tiny", action="store_true", help="small sizes: 32 px, 4096 samples, batch 2, PGD-1")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per row")
    p.add_argument("--only", default="", choices=["", "train", "pgd", "solver", "defended", "loader"],
                   help="run one group of rows")
    args = p.parse_args()
    want = (lambda group: not args.only or args.only == group)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --cpu --tiny for the smoke run)", file=sys.stderr)
        return 1
    dev = torch.device("cpu" if args.cpu else "cuda")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    img, aud = (32, 4096) if args.tiny else (IMG, AUD)
    train_b, pgd_b = ((2,), (2,)) if args.tiny else ((12, 64), (12, 64, 256))
    steps = 1 if args.tiny else args.steps
    n_pgd = 1 if args.tiny else 10  # PGD-10: docs/paper.md, Attacks
    precisions = [("fp32", False, False), ("bf16", True, False), ("bf16+channels_last", True, True)]
    if args.tiny:
        precisions = precisions[:1] + precisions[2:] if dev.type == "cuda" else precisions[:1]
    for frames in (1, 3) if want("train") else ():
        for b in train_b[:1] if args.tiny else train_b:
            for label, amp, cl in precisions:
                measure(f"train clips/s, {frames} frame(s), batch {b}, {label}",
                        lambda: train_rate(b, frames, amp, cl, img, aud, steps, dev), dev)
    for b in pgd_b if want("pgd") else ():
        measure(f"PGD-{n_pgd} / bare fwd-bwd, batch {b}", lambda: pgd_over_bare(b, img, aud, n_pgd, dev), dev)
    dim, atoms = (64, 128) if args.tiny else (512, 1024)
    if want("solver"):
        measure(f"sparse coding, {atoms} atoms x {dim}, batch 64", lambda: fista_ms(dim, atoms, dev), dev)
    for grad in ("bpda", "unrolled") if want("defended") else ():
        measure(f"defended PGD-{n_pgd} ({grad}), batch {pgd_b[0]}",
                lambda: defended_pgd(grad, pgd_b[0], img, aud, atoms, n_pgd, dev), dev)
    if want("loader"):
        measure(f"loader clips/s to the device, {img} px, 3 frames from {'64x36' if args.tiny else '640x360'} "
                "JPEGs, uint8 path / float path", lambda: loader_old_vs_new(img, aud, args.tiny, dev), dev)
    width = max(len(r["check"]) for r in ROWS)
    print(f"device: {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}, torch {torch.__version__}")
    print(f"| {'check':<{width}} | result | peak GiB | status |")
    print(f"|{'-' * (width + 2)}|---|---|---|")
    for r in ROWS:
        print(f"| {r['check']:<{width}} | {r['result']} | {r['peak GiB']} | {r['status']} |")
    return 1 if any(r["status"] == "FAIL" for r in ROWS) else 0


if __name__ == "__main__":
    sys.exit(main())
