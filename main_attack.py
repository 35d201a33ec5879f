"""Train or evaluate an audio-visual model, and attack it (FGSM / PGD / MIM on audio, visual or both).

    python main_attack.py --dataset synthetic --arch_classifier concat --mode train
    python main_attack.py --dataset synthetic --arch_classifier concat --mode eval --attack_type all

Set-up only: every flag, list and checkpoint is checked first (pipeline/config.py, pipeline/preflight.py);
the loops and drivers live in pipeline/, shared with main_defense.py. A user error prints one line and
exits 2, before anything is written.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from dataset.errors import MediaError
from pipeline.build import prepared, train_options
from pipeline.config import get_args_parser, parse_config
from pipeline.drivers import execute
from utils.errors import run_cli


def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_config(get_args_parser(), argv)
    ready = prepared(cfg)
    if ready is not None:  # None: this evaluation already finished (--reuse_eval)
        model, ctx = ready
        execute(model, cfg, ctx, train_options(cfg, model), label=cfg.id)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, extra=(MediaError,)))
