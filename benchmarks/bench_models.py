"""Cost of one attack/training step of the audio nets: the paper's ``anet`` against ``anet_lite``, one run.

    python benchmarks/bench_models.py                       # 8192 samples (the embedded set), batch 32
    python benchmarks/bench_models.py --length 65535 --batch 8   # the paper's audio length

Times forward + backward to the input (what every attack step does; training adds the weight gradients,
which cost about the same) on a random waveform, interleaved repeats, best of each. Prints the
milliseconds per clip of each net and the ratio anet / anet_lite: how much cheaper the demo's net is. The
visual net of the demo (resnet10 at 32 px) is timed alongside for scale.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.audio_net import AUDIO_NETS  # noqa: E402
from models.visual_net import create_visual_net  # noqa: E402


def time_step(net: torch.nn.Module, x: torch.Tensor) -> float:
    """Seconds of one forward + backward to the input."""
    xr = x.clone().requires_grad_(True)
    t0 = time.perf_counter()
    net(xr).sum().backward()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--length", type=int, default=8192, help="audio samples per clip (default 8192)")
    p.add_argument("--img", type=int, default=32, help="visual input side in px (default 32)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    nets = {name: AUDIO_NETS.get(name)().eval() for name in ("anet", "anet_lite")}
    nets["resnet10"] = create_visual_net("resnet10").eval()
    inputs = {"anet": torch.rand(args.batch, 1, args.length) * 2 - 1,
              "resnet10": torch.rand(args.batch, 3, args.img, args.img)}
    inputs["anet_lite"] = inputs["anet"]
    best = {name: float("inf") for name in nets}
    for name, net in nets.items():  # warm-up
        time_step(net, inputs[name])
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits every net alike
        for name, net in nets.items():
            best[name] = min(best[name], time_step(net, inputs[name]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"audio {args.length} samples, visual {args.img} px")
    for name, sec in best.items():
        print(f"{name:10s} {sec / args.batch * 1e3:8.2f} ms/clip (forward + backward to the input)")
    print(f"ratio anet / anet_lite: {best['anet'] / best['anet_lite']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
