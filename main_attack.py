"""Train or evaluate an audio-visual model, and attack it (FGSM / PGD / MIM on audio, visual or both).

    python main_attack.py --dataset synthetic --arch_classifier concat --mode train
    python main_attack.py --dataset synthetic --arch_classifier concat --mode eval --attack_type all

Set-up only: the loops live in utils/engine.py and the drivers in utils/runner.py and utils/attack_run.py,
shared with main_defense.py.
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Optional, Sequence

from utils.config import get_args_parser, resolve_args

if TYPE_CHECKING:  # imported lazily at run time so --help stays fast
    from utils.engine import TrainConfig


def build_train_config(args: argparse.Namespace, model) -> "TrainConfig":
    """Training options, with a PGD adversary for --adv_train (Madry-style, per-modality eps)."""
    from utils.engine import TrainConfig

    cfg = TrainConfig(minsim_weight=args.minsim_weight, amp=args.amp, channels_last=args.channels_last,
                      disp_iter=args.disp_iter, progress=not args.no_progress)
    if args.adv_train:
        from attacks import create_attack
        from attacks.metrics import parse_eps

        cfg.adv_attack = create_attack(args.adv_train, model, eps=parse_eps(args.train_eps),
                                       steps=args.train_attack_steps, random_start=True,
                                       eps_unit=args.eps_unit, seed=args.seed)
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = resolve_args(get_args_parser().parse_args(argv))
    from utils import runner

    ctx = runner.setup(args)
    model = runner.build_model(args).to(ctx.device)
    runner.execute(model, args, ctx, build_train_config(args, model), label=args.id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
