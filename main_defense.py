"""The paper's defense: external feature memory banks around a (MinSim-)trained model.

Pipeline (PAPER.md, Defense):
    1. python main_attack.py --dataset synthetic --id minsim --minsim_weight 1.0 --save_features --mode train
    2. python main_defense.py --dataset synthetic --id minsim-banks --base_weights runs/minsim/checkpoint_best.pth \
           --features runs/minsim/features_train.pt --mode train          # build banks, fine-tune with banks fixed
    3. python main_defense.py --dataset synthetic --id minsim-banks --base_weights runs/minsim/checkpoint_best.pth \
           --mode eval --attack_type pgd --adaptive                      # paper's attack + adaptive attacks

Set-up only: the loops are utils/engine.py's, the drivers utils/runner.py's and utils/attack_run.py's.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

from utils import distributed as du
from utils.config import add_defense_args, get_args_parser, resolve_args

log = logging.getLogger("main_defense")


def load_or_build_banks(args: argparse.Namespace, base_hash: str, run_dir: Path) -> Dict[str, object]:
    """Banks from --bank, --weights_Da/--weights_Dv, built from --features (then saved in the run), or the
    ones saved in the run folder by an earlier call."""
    from models.defense import MemoryBank, build_banks

    if not (args.bank or args.weights_Da or args.weights_Dv or args.features) and any(run_dir.glob("bank_*.pt")):
        args.bank = str(run_dir)  # the banks this run built earlier (e.g. --mode train, then --mode eval)
    if args.bank:
        args.weights_Da = args.weights_Da or str(Path(args.bank) / "bank_audio.pt")
        args.weights_Dv = args.weights_Dv or str(Path(args.bank) / "bank_visual.pt")
    if args.weights_Da or args.weights_Dv:
        banks = {}
        for m, path in (("audio", args.weights_Da), ("visual", args.weights_Dv)):
            if path and (Path(path).is_file() or not args.bank):
                banks[m] = MemoryBank.load(path, expected_checkpoint_sha256=base_hash)
        return banks
    if not args.features:
        raise SystemExit("error: give --features (from main_attack.py --save_features) to build memory banks, "
                         "or --bank / --weights_Da --weights_Dv to load saved ones")
    banks = build_banks(args.features, size=args.bank_size, select=args.bank_select, seed=args.seed)
    for m, bank in banks.items():
        if bank.checkpoint_sha256 != base_hash:
            raise SystemExit(f"error: --features {args.features} came from a checkpoint with sha256 "
                             f"{bank.checkpoint_sha256}, but --base_weights {args.base_weights} has {base_hash}")
        if du.is_main():
            bank.save(run_dir / f"bank_{m}.pt")
    log.info("memory banks %s saved in %s (load them again with --bank %s)",
             {m: b.size for m, b in banks.items()}, run_dir, run_dir)
    return banks


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = add_defense_args(get_args_parser())
    args = resolve_args(parser.parse_args(argv))
    if not args.base_weights:
        raise SystemExit("error: --base_weights (the checkpoint of the model to defend) is required")
    from models.defense import DefendedModel
    from utils import runner
    from utils.checkpoint import sha256_file
    from main_attack import build_train_config

    ctx = runner.setup(args)
    base = runner.build_model(args)
    runner.load_for_eval(base, args, ctx, Path(args.base_weights))
    banks = load_or_build_banks(args, sha256_file(args.base_weights), ctx.run_dir)
    steps = {"audio": args.alpha_a, "visual": args.alpha_v} if args.fixed_step else None
    model = DefendedModel(base, banks, lam=args.lam, mix=args.mix, grad=args.defense_grad,
                          max_iter=args.ista_iters, tol=args.ista_tol, steps=steps,
                          grad_max_iter=args.unrolled_iters).to(ctx.device)
    # eval without a fine-tuned checkpoint evaluates the base model with the banks as built
    runner.execute(model, args, ctx, build_train_config(args, model), label=args.id,
                   weights_optional=True, adaptive=args.adaptive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
