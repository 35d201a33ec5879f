"""The paper's defense: external feature memory banks around a (MinSim-)trained model.

Pipeline (docs/paper.md, Defense):
    1. python main_attack.py --dataset synthetic --id minsim --minsim_weight 1.0 --save_features --mode train
    2. python main_defense.py --dataset synthetic --id minsim-banks --base_weights runs/minsim/checkpoint_best.pth \\
           --features runs/minsim/features_train.pt --mode train          # build banks, fine-tune with banks fixed
    3. python main_defense.py --dataset synthetic --id minsim-banks --base_weights runs/minsim/checkpoint_best.pth \\
           --mode eval --attack_type pgd --adaptive                      # paper's attack + adaptive attacks

Set-up only: checks first, then the drivers of pipeline/ shared with main_attack.py.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from dataset.errors import MediaError
from models.fusion import FUSIONS
from pipeline.build import build_model, place_model, train_options
from pipeline.config import add_defense_args, get_args_parser, parse_config
from pipeline.context import finished_eval, setup, start
from pipeline.defense import defend, load_or_build_banks
from pipeline.drivers import execute
from pipeline.preflight import bank_paths, check_defense_inputs, check_model, preflight
from pipeline.train import load_for_eval
from utils.errors import run_cli


def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_config(add_defense_args(get_args_parser()), argv, defense=True)
    preflight(cfg)
    modalities = FUSIONS.get(cfg.arch_classifier).modalities
    paths = bank_paths(cfg, modalities)
    check_defense_inputs(cfg, paths, modalities)
    record = {"banks": {m: str(p) for m, p in paths.items()} or f"built from --features {cfg.features}"}
    if finished_eval(cfg, record) is not None:
        return 0
    device = start(cfg)
    base = build_model(cfg)
    check_model(cfg, base)
    ctx = setup(cfg, device, record)
    with ctx.abort_on_error():
        load_for_eval(base, cfg, ctx, Path(cfg.base_weights))
        model = place_model(defend(base, cfg, load_or_build_banks(cfg, ctx, paths)), cfg, ctx.device)
    execute(model, cfg, ctx, train_options(cfg, model), label=cfg.id)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, extra=(MediaError,)))
