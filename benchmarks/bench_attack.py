"""Overhead of the attacks over the work they cannot avoid, and speed against torchattacks.

1. On the concat audio-visual model (models.create_model, CPU, a small batch) PGD-10 and MIM-10, each
   followed by the one forward that classifies the adversarial batch, are timed against the bare
   unavoidable work timed in the same run: 10 forwards + 10 backwards to the inputs (torch.autograd.grad)
   plus 1 forward. Target: ratio <= 1.05.
2. On a visual-only model, our PGD-10 against torchattacks' PGD (random_start=False) with the same
   eps/alpha/steps. Target: ours / theirs <= 1 (not slower).
3. The same pair on a linear model (the model costs almost nothing), many repeats: the attacks' own
   per-call overhead, which section 2 cannot resolve on a busy machine.

Timings alternate between the contenders within each repeat and the medians are reported.

    .venv/bin/python benchmarks/bench_attack.py --repeats 7 --batch 4
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attacks import create_attack  # noqa: E402
from models import create_model  # noqa: E402
from dataset.specs import get_spec  # noqa: E402

EPS = 0.006  # docs/paper.md, Attacks: grid point (0.006, 0.006) for the joint attack
STEPS = 10  # docs/paper.md, Attacks: 10 steps of eps/8


def bare_work(model: nn.Module, audio: torch.Tensor, visual: torch.Tensor, labels: torch.Tensor) -> None:
    """STEPS forwards + STEPS backwards to the inputs, then one forward: the floor of PGD-10 + evaluation."""
    a, v = audio.clone(), visual.clone()
    for _ in range(STEPS):
        a.requires_grad_(True)
        v.requires_grad_(True)
        loss = F.cross_entropy(model(audio=a, visual=v), labels, reduction="sum")
        ga, gv = torch.autograd.grad(loss, [a, v])
        a, v = a.detach(), v.detach()
    with torch.no_grad():
        model(audio=a, visual=v)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(fn: Callable[[], None], clock: str) -> float:
    """Seconds of ``fn`` on ``clock``: wall, or this process's CPU time (robust to other processes' load)."""
    now = CLOCKS[clock]
    start = now()
    fn()
    return now() - start


def race(contenders: Dict[str, Callable[[], None]], repeats: int, clock: str) -> Dict[str, List[float]]:
    """Seconds of every repeat per contender; one warm-up each, order rotated every repeat."""
    names = list(contenders)
    for fn in contenders.values():
        fn()
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            times[n].append(timed(contenders[n], clock))
    return times


def ratio(times: Dict[str, List[float]], ours: str, ref: str) -> str:
    """Median of the per-repeat ratios (adjacent runs, so slow drifts of the machine's load cancel),
    then the ratio of the medians and of the minima."""
    paired = statistics.median(o / r for o, r in zip(times[ours], times[ref]))
    med = statistics.median(times[ours]) / statistics.median(times[ref])
    return f"ratio {paired:.3f} (of medians {med:.3f}, of minima {min(times[ours]) / min(times[ref]):.3f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--clock", default="wall", choices=sorted(CLOCKS),
                   help="wall time, or process CPU time (use with --threads 1 on a shared, busy machine)")
    p.add_argument("--img_size", type=int, default=64)
    p.add_argument("--aud_len", type=int, default=get_spec("synthetic").audio_len)  # synthetic spec
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b = args.batch
    audio = torch.rand(b, 1, args.aud_len) * 2 - 1
    visual = torch.rand(b, 3, 1, args.img_size, args.img_size)
    labels = torch.randint(0, 8, (b,))

    model = create_model(arch_sound="anet", arch_frame="resnet18", arch_classifier="concat", num_classes=8).eval()
    eps = {"audio": EPS, "visual": EPS}
    pgd = create_attack("pgd", model, eps=eps, steps=STEPS)
    mim = create_attack("mim", model, eps=eps, steps=STEPS)

    def with_eval(attack: Callable) -> Callable[[], None]:
        def run() -> None:
            adv = attack({"audio": audio, "visual": visual}, labels)
            with torch.no_grad():
                model(audio=adv["audio"], visual=adv["visual"])
        return run

    times = race({"bare": lambda: bare_work(model, audio, visual, labels),
                  "pgd": with_eval(pgd), "mim": with_eval(mim)}, args.repeats, args.clock)
    med = {n: statistics.median(t) for n, t in times.items()}
    print(f"concat AV model, batch {b}, {torch.get_num_threads()} threads, {args.clock} clock, median of {args.repeats}:")
    print(f"  bare 10F+10B+1F  {med['bare'] * 1e3:8.1f} ms")
    for n in ("pgd", "mim"):
        print(f"  {n}-10 + eval    {med[n] * 1e3:8.1f} ms   {ratio(times, n, 'bare')}  (target <= 1.05)")

    try:
        import torchattacks
    except ImportError:
        print("torchattacks not installed: skipping the comparison (pip install torchattacks)")
        return
    vmodel = create_model(arch_sound="anet", arch_frame="resnet18", arch_classifier="visual", num_classes=8).eval()
    image = visual[:, :, 0]  # (B, 3, H, W): torchattacks expects 4-D images

    class Wrapped(nn.Module):
        """``model(x)`` view of a visual contract model, for torchattacks."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(audio=None, visual=x)

    alpha = EPS / 8  # docs/paper.md, Attacks: step eps/8
    theirs = torchattacks.PGD(Wrapped(vmodel), eps=EPS, alpha=alpha, steps=STEPS, random_start=False)
    ours = create_attack("pgd", vmodel, eps={"visual": EPS}, alpha=alpha, steps=STEPS)
    times = race({"torchattacks": lambda: theirs(image, labels),
                  "ours": lambda: ours({"visual": image}, labels)}, args.repeats, args.clock)
    med = {n: statistics.median(t) for n, t in times.items()}
    print(f"visual-only model, PGD-10: ours {med['ours'] * 1e3:.1f} ms, torchattacks {med['torchattacks'] * 1e3:.1f} ms, "
          f"ours/torchattacks {ratio(times, 'ours', 'torchattacks')}  (target <= 1.0)")

    class Linear(nn.Module):
        modalities = ("visual",)

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(image[0].numel(), 8)

        def forward(self, audio: Optional[torch.Tensor] = None, visual: Optional[torch.Tensor] = None) -> torch.Tensor:
            return self.fc(visual.flatten(1))

    lin = Linear().eval()
    theirs = torchattacks.PGD(Wrapped(lin), eps=EPS, alpha=alpha, steps=STEPS, random_start=False)
    ours = create_attack("pgd", lin, eps={"visual": EPS}, alpha=alpha, steps=STEPS)
    times = race({"torchattacks": lambda: theirs(image, labels),
                  "ours": lambda: ours({"visual": image}, labels)}, 20 * args.repeats, args.clock)
    med = {n: statistics.median(t) for n, t in times.items()}
    print(f"linear model (attack overhead only), PGD-10: ours {med['ours'] * 1e3:.3f} ms, torchattacks "
          f"{med['torchattacks'] * 1e3:.3f} ms, ours/torchattacks {ratio(times, 'ours', 'torchattacks')}")


if __name__ == "__main__":
    main()
