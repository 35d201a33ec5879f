"""APGD-CE-100 overhead over the bare work, and AutoAttack's time per sample on CPU.

1. On the embedded dataset's concat model (anet + resnet10, 64 px, 1 frame, CPU), APGD-CE with 100 steps on
   both modalities (plus the forward that classifies its output) is timed against the bare unavoidable work
   timed in the same run: 100 forwards + 100 backwards to the inputs (``torch.autograd.grad``) plus one
   forward. Target: ratio <= 1.05. APGD itself costs 101 gradient evaluations (the start point and 100
   steps) and two no-grad forwards (clean and final), so the ideal ratio is about 1.02.
2. The standard AutoAttack (apgd-ce, apgd-t with min(9, K-1) targets, square) at the paper's both-modalities
   eps, seconds per sample, with ``--queries`` Square queries (5000 = the paper).

Timings alternate between the contenders and medians of ``--clock`` (cpu: this process's CPU time, robust
to other processes' load; wall) are reported.

    .venv/bin/python benchmarks/bench_autoattack.py --repeats 3 --batch 8 --queries 5000
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attacks import create_attack  # noqa: E402
from models import create_model  # noqa: E402

EPS = {"audio": 0.006, "visual": 0.006}  # docs/paper.md, Attacks: the both-modalities grid point
STEPS = 100  # Croce & Hein 2020: APGD 100 iterations
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def bare(model, audio, visual, labels) -> None:
    a, v = audio.clone(), visual.clone()
    for _ in range(STEPS):
        a.requires_grad_(True)
        v.requires_grad_(True)
        loss = F.cross_entropy(model(audio=a, visual=v), labels, reduction="sum")
        torch.autograd.grad(loss, [a, v])
        a, v = a.detach(), v.detach()
    with torch.no_grad():
        model(audio=a, visual=v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--queries", type=int, default=5000, help="Square queries of the autoattack timing")
    ap.add_argument("--aa_batch", type=int, default=8, help="samples of the autoattack timing")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = create_model(arch_sound="anet", arch_frame="resnet10", arch_classifier="concat", num_classes=8,
                         audio_rate=11025).eval()
    g = torch.Generator().manual_seed(0)
    audio = torch.rand(args.batch, 1, 8192, generator=g) * 0.6 - 0.3
    visual = torch.rand(args.batch, 3, 1, 64, 64, generator=g)
    with torch.no_grad():
        labels = model(audio=audio, visual=visual).argmax(1)
    now = CLOCKS[args.clock]
    apgd = create_attack("apgd-ce", model, eps=EPS, steps=STEPS)
    t_bare, t_apgd = [], []
    for _ in range(args.repeats):
        s = now(); bare(model, audio, visual, labels); t_bare.append(now() - s)
        s = now()
        adv = apgd({"audio": audio, "visual": visual}, labels)
        with torch.no_grad():
            model(**adv)
        t_apgd.append(now() - s)
    mb, ma = statistics.median(t_bare), statistics.median(t_apgd)
    print(f"APGD-CE-{STEPS} / bare {STEPS} fwd+bwd ({args.clock}, batch {args.batch}): {ma:.2f}s / {mb:.2f}s "
          f"= {ma / mb:.3f} (target <= 1.05)")
    n = args.aa_batch
    # every sample the model gets right (labels = its predictions), so each stage attacks them all
    aa = create_attack("autoattack", model, eps=EPS, steps=STEPS, n_queries=args.queries)
    s = now()
    aa({"audio": audio[:n], "visual": visual[:n]}, labels[:n])
    total = now() - s
    rep = aa.report
    print(f"autoattack ({STEPS} APGD steps, {args.queries} Square queries, {args.clock}): {total / n:.2f} s/sample "
          f"over {n} samples; robust acc {rep['robust_acc']:.3f}; per stage {rep['per_attack']}; "
          f"mean Square queries {rep['square_queries']}; flags {rep['flags'] or 'none'}")


if __name__ == "__main__":
    main()
