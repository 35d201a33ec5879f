"""Square's Linf proposals on the waveform: which one a trained audio model feels most, at equal queries and eps.

Square's own proposal sets a waveform segment to a constant +-eps (a DC step), which a log-mel front end
starting at 125 Hz barely sees. For each trained run folder given (``<ckpt>/<id>`` with its args and
its best checkpoint), its clips that the model classifies correctly are attacked on audio only by Square
with every ``audio_proposal`` of ``attacks.square.AUDIO_PROPOSALS`` (same seed, eps, query budget), and the
table gives per run and proposal: robust accuracy on those clips, the mean margin ``z_y - max_{k!=y} z_k``
left, as a fraction of the clean margin (lower = stronger), and the mean queries spent.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_square_audio.py runs/sq/audio runs/sq/vggish runs/sq/concat \\
        --eps 0.012 --queries 300
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attacks import create_attack  # noqa: E402
from attacks.square import AUDIO_PROPOSALS, margin  # noqa: E402
from dataset.av_dataset import AVDataset  # noqa: E402
from models import create_model  # noqa: E402
from utils.checkpoint import load_checkpoint  # noqa: E402
from utils.errors import UsageError, run_cli  # noqa: E402
from utils.rundir import RunDir  # noqa: E402

EPS = 0.012  # docs/paper.md, Attacks: the audio-only grid point of the demo (eps_audio 0.012)


def load_run(run: Path, lists: List[str]) -> tuple:
    """The run's model (best checkpoint, eval mode) and its clips of ``lists`` (default: its test list)."""
    rd = RunDir(run)
    if not rd.args.is_file():
        raise UsageError("runs", f"{run} has no {rd.args.name} (not a run folder)")
    a = json.loads(rd.args.read_text())
    model = create_model(arch_sound=a["arch_sound"], arch_frame=a["arch_frame"], arch_classifier=a["arch_classifier"],
                         num_classes=len(a["categories"]), img_pool=a["img_pool"], audio_rate=a["audRate"])
    model.load_state_dict(load_checkpoint(rd.checkpoint_best)["model"])
    model.eval()
    batches = []
    for lst in lists or [a["list_test"]]:
        ds = AVDataset(lst, a["audio_path"], a["frame_path"], a["categories"], split_train=False,
                       num_frames=a["num_frames"], stride_frames=a["stride_frames"], frame_rate=a["frameRate"],
                       aud_len=a["audLen"], aud_rate=a["audRate"], img_size=a["imgSize"], seed=a["seed"])
        batches += [ds[i] for i in range(len(ds))]
    audio = torch.stack([b["audio"] for b in batches])
    visual = torch.stack([b["visual"] for b in batches])
    labels = torch.tensor([b["label"] for b in batches])
    inputs = {m: x for m, x in (("audio", audio), ("visual", visual)) if m in model.modalities}
    return model, inputs, labels, a


@torch.no_grad()
def measure(model: nn.Module, inputs: Dict[str, torch.Tensor], labels: torch.Tensor, eps: float, queries: int,
            seed: int) -> List[dict]:
    """Per proposal: robust accuracy, margin left / clean margin, mean queries, on the clean-correct clips."""
    logits = model(**inputs)
    keep = logits.argmax(1) == labels
    x = {m: v[keep] for m, v in inputs.items()}
    y = labels[keep]
    clean_margin = margin(logits[keep].float(), y)
    rows = []
    for name in AUDIO_PROPOSALS.names():
        attack = create_attack("square", model, eps={"audio": eps}, n_queries=queries, seed=seed,
                               audio_proposal=name)
        adv = attack(x, y)
        m = margin(model(**adv).float(), y)
        rows.append({"proposal": name, "n": int(y.numel()), "robust_acc": float((m > 0).float().mean()),
                     "margin_left": float(m.clamp_min(0).sum() / clean_margin.sum()),
                     "queries": float(attack.last_queries.float().mean())})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="trained run folders (<ckpt>/<id>)")
    p.add_argument("--lists", nargs="*", default=[], help="index CSVs of the clips (default: each run's test list)")
    p.add_argument("--eps", type=float, default=EPS, help="Linf budget on the waveform")
    p.add_argument("--queries", type=int, default=300, help="Square's query budget")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (results are averaged)")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"eps {args.eps} (Linf, audio only), {args.queries} queries, seeds {args.seeds}")
    print("| run | arch | proposal | n | robust acc | margin left | queries |")
    print("|---|---|---|---|---|---|---|")
    for run in args.runs:
        model, inputs, labels, a = load_run(run, args.lists)
        per_seed = [measure(model, inputs, labels, args.eps, args.queries, s) for s in args.seeds]
        for i, name in enumerate(AUDIO_PROPOSALS.names()):
            rs = [rows[i] for rows in per_seed]
            mean = {k: sum(r[k] for r in rs) / len(rs) for k in ("robust_acc", "margin_left", "queries")}
            print(f"| {run.name} | {a['arch_sound']}/{a['arch_classifier']} | {name} | {rs[0]['n']} | "
                  f"{mean['robust_acc']:.3f} | {mean['margin_left']:.3f} | {mean['queries']:.0f} |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
