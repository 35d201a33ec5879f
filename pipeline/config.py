"""The argument parser shared by main_attack.py and main_defense.py.

Flag names follow the reference code (``--arch_sound``, ``--lr_frame``, ...) so existing command lines
keep working; ``--dataset NAME`` fills every unset value from the dataset spec (dataset/specs.py).
Values given explicitly on the command line always win over the spec.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from dataset.specs import DatasetSpec, get_spec, list_datasets

# Flags whose default comes from the dataset spec when left unset (None) on the command line.
_SPEC_DEFAULTS = {
    "audRate": "audio_rate",
    "audLen": "audio_len",
    "frameRate": "fps",
    "imgSize": "img_size",
    "num_epoch": "num_epoch",
    "lr_steps": "lr_steps",
    "mix": "mix",
    "alpha_a": "alpha_audio",
    "alpha_v": "alpha_visual",
}


def default_workers() -> int:
    """Loader workers that leave two cores to the training process (measured: on 2 cores any worker slows
    training down, benchmarks/bench_train.py)."""
    return min(8, max(0, (os.cpu_count() or 1) - 2))


def _csv_list(text: str) -> List[str]:
    return [t for t in (s.strip() for s in text.split(",")) if t]


def _minsim_weight(text: str):
    if text == "spec":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'spec', got {text!r}") from None


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Parser with every flag common to training, evaluation, attack and defense runs."""
    p = argparse.ArgumentParser("Audio-visual robustness", add_help=add_help,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--id", default="", help="run name; the run folder is <ckpt>/<id>/ (default: derived "
                   "from dataset and architecture)")
    g.add_argument("--ckpt", default="runs", help="folder holding run folders (never deleted)")
    g.add_argument("--mode", default="train", choices=["train", "eval"])
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    g.add_argument("--resume", action="store_true", help="continue from <run>/checkpoint_last.pth")
    g.add_argument("--weights", default="", help="checkpoint to evaluate (default: <run>/checkpoint_best.pth)")
    g.add_argument("--disp_iter", type=int, default=20, help="log the training loss every N iterations")
    g.add_argument("--eval_epoch", type=int, default=1, help="evaluate on the val list every N epochs")
    g.add_argument("--amp", action="store_true", help="bf16 autocast (GPU only; an error on CPU)")
    g.add_argument("--channels_last", action="store_true", help="channels_last memory format (GPU only)")
    g.add_argument("--no_progress", action="store_true", help="disable tqdm progress bars")

    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="synthetic", help=f"dataset spec: {', '.join(list_datasets())}")
    g.add_argument("--list_train", default="", help="index CSV (default: data/<dataset>/train.csv)")
    g.add_argument("--list_val", default="", help="index CSV (default: data/<dataset>/val.csv)")
    g.add_argument("--list_test", default="", help="index CSV (default: data/<dataset>/test.csv)")
    g.add_argument("--audio_path", default="", help="audio root (default: $DATA_ROOT/data/audio)")
    g.add_argument("--frame_path", default="", help="frame root (default: $DATA_ROOT/data/frames)")
    g.add_argument("--categories", type=_csv_list, default=None,
                   help="comma-separated class names (default: the dataset spec's)")
    g.add_argument("--cls_num", type=int, default=None, help="number of classes (checked against categories)")
    g.add_argument("--num_frames", type=int, default=1)
    g.add_argument("--stride_frames", type=int, default=1)
    g.add_argument("--frameRate", type=int, default=None)
    g.add_argument("--audLen", type=int, default=None, help="audio samples per clip")
    g.add_argument("--audRate", type=int, default=None)
    g.add_argument("--imgSize", type=int, default=None)
    g.add_argument("--batch_size_per_gpu", type=int, default=12, help="per process (paper: 12 per GPU)")
    g.add_argument("--workers", type=int, default=default_workers(),
                   help="DataLoader worker processes per process (default: cores - 2, at most 8; 0 on a 2-core "
                   "machine, where workers compete with the training step: see benchmarks/bench_train.py)")

    g = p.add_argument_group("model")
    g.add_argument("--arch_sound", default="anet")
    g.add_argument("--arch_frame", default="resnet18")
    g.add_argument("--arch_classifier", default="concat", help="fusion head")
    g.add_argument("--img_pool", default="avgpool", choices=["avgpool", "maxpool"])
    g.add_argument("--pretrained", default=None, choices=[None, "imagenet"],
                   help="torchvision ImageNet weights for the visual net (needs network or a torch hub cache)")
    g.add_argument("--weights_frame", default="", help="local state dict for the visual net")
    g.add_argument("--weights_sound", default="", help="local state dict for the audio net")
    g.add_argument("--init_from", nargs="+", default=[],
                   help="project checkpoints to initialise the audio/visual nets from (e.g. the unimodal models); "
                   "every net of this model must be found in exactly one of them")

    g = p.add_argument_group("optimisation (paper: SGD, momentum 0.9, wd 1e-4)")
    g.add_argument("--lr_frame", type=float, default=1e-4, help="paper: 1e-4 for the visual net")
    g.add_argument("--lr_sound", type=float, default=1e-3, help="paper: 1e-3 for the audio net")
    g.add_argument("--lr_classifier", type=float, default=1e-3, help="paper: 1e-3 for the head")
    g.add_argument("--num_epoch", type=int, default=None)
    g.add_argument("--lr_steps", type=int, nargs="+", default=None, help="epochs where lr is x0.1")
    g.add_argument("--beta1", type=float, default=0.9, help="SGD momentum (paper: 0.9)")
    g.add_argument("--weight_decay", type=float, default=1e-4, help="paper: 1e-4")
    g.add_argument("--minsim_weight", type=_minsim_weight, default=0.0,
                   help="weight w of mean cos(f_audio, f_visual) added to the loss (MinSim; paper w=1.0, KS 0.8); "
                   "'spec' takes the dataset spec's paper value")
    g.add_argument("--adv_train", default="", choices=["", "pgd"],
                   help="adversarial training (Madry): train on PGD examples with the --train_eps budget")
    g.add_argument("--train_eps", default="visual=0.006,audio=0.006",
                   help="per-modality budget for --adv_train")
    g.add_argument("--train_attack_steps", type=int, default=5)
    g.add_argument("--save_features", action="store_true",
                   help="after training, write clean eval-mode training features for memory banks")

    g = p.add_argument_group("attack evaluation")
    g.add_argument("--attack_type", default="none", help="fgsm, pgd, mim, all, a comma list, or none")
    g.add_argument("--eps", nargs="+", default=None,
                   help='eps grid, e.g. "visual=0,audio=0" "visual=0,audio=0.012" (default: the paper grid)')
    g.add_argument("--eps_unit", default="input", choices=["input", "normalized"],
                   help="input: visual eps in [0,1] pixel units; normalized: ImageNet-normalised units "
                   "(the reference code's convention)")
    g.add_argument("--attack_steps", type=int, default=10, help="paper: 10")
    g.add_argument("--random_start", action="store_true", help="PGD random start (the paper uses none)")
    g.add_argument("--restarts", type=int, default=1)
    g.add_argument("--sweep", action="store_true", help="also evaluate an eps sweep and plot acc vs eps")
    g.add_argument("--sweep_eps", type=float, nargs="+", default=[0.001, 0.002, 0.004, 0.006, 0.008, 0.012],
                   help="eps values of the sweep (paper Fig. 3 uses units of 1e-3)")
    g.add_argument("--save_examples", type=int, default=0, help="write an HTML page with N adversarial examples")
    g.add_argument("--max_eval_batches", type=int, default=0, help="stop evaluation after N batches (0: all)")
    return p


def add_defense_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of the memory-bank defense (main_defense.py)."""
    g = p.add_argument_group("defense (paper: lambda 0.1, m 0.5, at most 1024 atoms)")
    g.add_argument("--base_weights", default="", help="checkpoint of the (MinSim-)trained model to defend")
    g.add_argument("--features", default="", help="features file from --save_features (to build banks)")
    g.add_argument("--bank", default="", help="a folder with saved banks bank_audio.pt / bank_visual.pt")
    g.add_argument("--weights_Da", default="", help="audio bank file (reference flag name)")
    g.add_argument("--weights_Dv", default="", help="visual bank file (reference flag name)")
    g.add_argument("--bank_size", type=int, default=1024, help="atoms per modality (paper: at most 1024)")
    g.add_argument("--bank_select", default="random", help="random, kmeans or class_balanced")
    g.add_argument("--lam", type=float, default=0.1, help="sparse-coding lambda (paper: 0.1)")
    g.add_argument("--mix", type=float, default=None, help="m in m*D a + (1-m) x (paper: 0.5; KS 0.6)")
    g.add_argument("--alpha_a", type=float, default=None, help="ISTA step for audio (paper, per dataset)")
    g.add_argument("--alpha_v", type=float, default=None, help="ISTA step for visual (paper, per dataset)")
    g.add_argument("--fixed_step", action="store_true",
                   help="use the paper's fixed ISTA steps alpha_a/alpha_v instead of 1/||D||^2")
    g.add_argument("--ista_iters", type=int, default=2000, help="paper: at most 2000")
    g.add_argument("--ista_tol", type=float, default=8e-4, help="paper: 8e-4 (per sample here)")
    g.add_argument("--defense_grad", default="unrolled", choices=["unrolled", "bpda"])
    g.add_argument("--unrolled_iters", type=int, default=100,
                   help="solver iterations recorded under autograd (warm-started from the converged code) "
                   "when gradients are unrolled through the solver")
    g.add_argument("--adaptive", action="store_true",
                   help="also run the adaptive attacks (unrolled, BPDA, PGD with restarts)")
    g.add_argument("--adaptive_eps", nargs="+", default=None,
                   help="eps of the grid to run the adaptive attacks on (default: every nonzero row of --eps)")
    return p


def resolve_args(args: argparse.Namespace, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Fill unset values from the dataset spec and check consistency; errors name the flag."""
    spec: DatasetSpec = get_spec(args.dataset)
    for flag, field in _SPEC_DEFAULTS.items():
        if hasattr(args, flag) and getattr(args, flag) is None:
            value = getattr(spec, field)
            setattr(args, flag, list(value) if isinstance(value, tuple) else value)
    if args.minsim_weight == "spec":
        args.minsim_weight = spec.minsim_weight
    if args.categories is None:
        args.categories = list(spec.categories)
    if args.cls_num is None:
        args.cls_num = len(args.categories)
    elif args.cls_num != len(args.categories):
        raise SystemExit(f"error: --cls_num {args.cls_num} disagrees with the {len(args.categories)} "
                         f"categories ({', '.join(args.categories)})")
    if len(set(args.categories)) != len(args.categories):
        raise SystemExit("error: --categories has duplicate names")
    for split in ("train", "val", "test"):
        flag = f"list_{split}"
        if not getattr(args, flag):
            setattr(args, flag, str(spec.list_path(split)))
    if not args.audio_path:
        args.audio_path = str(spec.audio_path())
    if not args.frame_path:
        args.frame_path = str(spec.frame_path())
    if not args.id:
        args.id = f"{spec.name}-{args.arch_sound}-{args.arch_frame}-{args.arch_classifier}"
    for flag in ("batch_size_per_gpu", "num_epoch", "num_frames", "stride_frames", "audLen", "imgSize"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise SystemExit(f"error: --{flag} must be >= 1, got {getattr(args, flag)}")
    if args.workers < 0:
        raise SystemExit(f"error: --workers must be >= 0, got {args.workers}")
    if args.minsim_weight < 0:
        raise SystemExit(f"error: --minsim_weight must be >= 0, got {args.minsim_weight}")
    return args


def run_dir(args: argparse.Namespace) -> Path:
    """The run folder ``<ckpt>/<id>``."""
    return Path(args.ckpt) / args.id


def dump_args(args: argparse.Namespace, path: Path) -> None:
    """Write the resolved arguments as JSON next to the results (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(vars(args), indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def args_to_dict(args: argparse.Namespace) -> Dict[str, Any]:
    """Plain-JSON view of the arguments (for checkpoints, loaded with weights_only=True)."""
    return json.loads(json.dumps(vars(args), default=str))
