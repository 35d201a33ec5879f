"""An unattacked modality encoded once per batch (issue 18, item 5) against the uncached path.

At the paper's sizes (resnet18 on 3 frames of 224 px, anet on 65535 samples, batch 8) the concat model is
attacked by PGD-10 on every point of the paper's grid: clean, audio only, visual only, both. Each row is
the attack plus the forward that classifies its output, timed with the cache (``attacks.base.Frozen``,
the model's ``encode``/``classify_encoded``) and without (the same model behind a wrapper that offers no
``encode``: every input through its net at every step), alternating within the row; the adversarial
examples are checked bitwise equal. Targets: new / old <= 0.4 for the audio-only row, <= 0.75 for the grid.

    .venv/bin/python benchmarks/bench_unattacked.py                       # paper sizes (minutes on 2 cores)
    .venv/bin/python benchmarks/bench_unattacked.py --steps 3 --batch 2   # a quick run
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attacks import create_attack  # noqa: E402
from attacks.metrics import PAPER_EPS_GRID, format_eps  # noqa: E402
from models import create_model  # noqa: E402

AUDIO_LEN = 65535  # docs/paper.md, Model: anet's input in samples (dataset/specs.py, audio_len)
FRAMES = 3  # the benchmark size (issue 18, item 5): three frames per clip through the visual net
IMG_SIZE = 224  # docs/paper.md, Model: ResNet input
STEPS = 10  # docs/paper.md, Attacks: PGD with 10 steps of eps/8
NUM_CLASSES = 28  # AVE's 28 classes (docs/paper.md, Datasets); the head's size barely matters


class Uncached(nn.Module):
    """The model without ``encode``: attacks evaluate every input at every step (the code before item 5)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.modalities = model.modalities

    def forward(self, audio: Optional[torch.Tensor] = None, visual: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.model(audio=audio, visual=visual)


def run_row(model: nn.Module, eps: Dict[str, float], inputs: Dict[str, torch.Tensor], labels: torch.Tensor,
            steps: int) -> Dict[str, torch.Tensor]:
    """One grid row as the evaluation runs it: the attack (inputs untouched at eps 0), then one forward."""
    adv = create_attack("pgd", model, eps={m: e for m, e in eps.items() if e > 0}, steps=steps)(inputs, labels)
    with torch.no_grad():
        model(**adv)
    return adv


def timed(fn: Callable[[], Dict[str, torch.Tensor]]) -> tuple:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8, help="clips per batch (paper-size run: 8)")
    p.add_argument("--steps", type=int, default=STEPS, help="PGD steps (paper: 10)")
    p.add_argument("--frames", type=int, default=FRAMES)
    p.add_argument("--img_size", type=int, default=IMG_SIZE)
    p.add_argument("--audio_len", type=int, default=AUDIO_LEN)
    p.add_argument("--arch_frame", default="resnet18")
    p.add_argument("--arch_sound", default="anet")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    model = create_model(args.arch_sound, args.arch_frame, "concat", num_classes=NUM_CLASSES).eval()
    plain = Uncached(model)
    gen = torch.Generator().manual_seed(0)
    inputs = {"audio": torch.rand(args.batch, 1, args.audio_len, generator=gen) * 2 - 1,
              "visual": torch.rand(args.batch, 3, args.frames, args.img_size, args.img_size, generator=gen)}
    labels = torch.randint(0, NUM_CLASSES, (args.batch,), generator=gen)
    print(f"{args.arch_frame} {args.frames}x{args.img_size}px, {args.arch_sound} {args.audio_len} samples, "
          f"batch {args.batch}, PGD-{args.steps}, {torch.get_num_threads()} threads")
    with torch.no_grad():  # warm-up: the first forward pays for allocations and kernel selection
        model(**inputs)
    print(f"{'eps':<28} {'old s':>8} {'new s':>8} {'new/old':>8}  bitwise equal")
    total_old = total_new = 0.0
    audio_ratio = None
    for i, eps in enumerate(PAPER_EPS_GRID):
        runs = [("old", plain), ("new", model)] if i % 2 == 0 else [("new", model), ("old", plain)]
        secs, advs = {}, {}
        for name, m in runs:  # alternating which goes first spreads the machine's drift over both
            secs[name], advs[name] = timed(lambda m=m: run_row(m, eps, inputs, labels, args.steps))
        equal = all(torch.equal(advs["old"][k], advs["new"][k]) for k in inputs)
        ratio = secs["new"] / secs["old"]
        if eps["visual"] == 0 and eps["audio"] > 0:
            audio_ratio = ratio
        total_old += secs["old"]
        total_new += secs["new"]
        print(f"{format_eps(eps):<28} {secs['old']:8.2f} {secs['new']:8.2f} {ratio:8.3f}  {equal}")
        if not equal:
            print("error: the cached path changed an adversarial example", file=sys.stderr)
            return 1
    print(f"{'grid':<28} {total_old:8.2f} {total_new:8.2f} {total_new / total_old:8.3f}")
    print(f"audio-only new/old {audio_ratio:.3f} (target <= 0.4); grid new/old {total_new / total_old:.3f} "
          "(target <= 0.75)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
