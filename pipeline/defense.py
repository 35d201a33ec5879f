"""The memory-bank defense around a trained model (main_defense.py): banks loaded from the paths preflight
resolved, or built from a features file and saved in the run folder, then ``DefendedModel``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from models.defense import DefendedModel, MemoryBank, build_banks
from pipeline.config import RunConfig
from pipeline.context import RunContext
from utils import distributed as du
from utils.errors import UsageError
from utils.fileio import sha256_file

log = logging.getLogger(__name__)


def load_or_build_banks(cfg: RunConfig, ctx: RunContext, paths: Dict[str, Path]) -> Dict[str, MemoryBank]:
    """Banks from ``paths`` (checked by preflight), or built from --features (then saved in the run folder)."""
    base_hash = sha256_file(cfg.base_weights)
    if paths:
        return {m: MemoryBank.load(p, expected_checkpoint_sha256=base_hash) for m, p in paths.items()}
    banks = build_banks(cfg.features, size=cfg.bank_size, select=cfg.bank_select, seed=cfg.seed)
    for m, bank in banks.items():
        if bank.checkpoint_sha256 != base_hash:
            raise UsageError("--features", f"{cfg.features} came from a checkpoint with sha256 "
                             f"{bank.checkpoint_sha256}, but --base_weights {cfg.base_weights} has {base_hash}")
        if ctx.is_main:
            bank.save(ctx.run_dir.bank(m))
    log.info("memory banks %s saved in %s (load them again with --bank %s)",
             {m: b.size for m, b in banks.items()}, ctx.run_dir.root, ctx.run_dir.root)
    return banks


def defend(base: nn.Module, cfg: RunConfig, banks: Dict[str, MemoryBank]) -> DefendedModel:
    """``DefendedModel`` with the run's solver settings (docs/paper.md, Defense)."""
    steps = {"audio": cfg.alpha_a, "visual": cfg.alpha_v} if cfg.fixed_step else None
    if steps is not None:
        steps = {m: s for m, s in steps.items() if m in base.modalities}
    return DefendedModel(base, banks, lam=cfg.lam, mix=cfg.mix, grad=cfg.defense_grad, max_iter=cfg.ista_iters,
                         tol=cfg.ista_tol, steps=steps, grad_max_iter=cfg.unrolled_iters)


def solver_counts(model: nn.Module, warn: bool = False) -> Optional[Dict[str, Any]]:
    """The defended model's sparse-coding rows so far, summed over processes (call on every rank):
    ``solver_rows``, ``solver_uncertified_rows`` (ended at the iteration cap without a certificate) and
    ``solver_max_iter``; None for a model without the defense. ``warn``: log a warning when rows ended
    uncertified (the end of an evaluation)."""
    if not isinstance(model, DefendedModel):
        return None
    report = model.solver_report()
    mods = sorted(report)
    # on the model's device: NCCL reduces CUDA tensors only
    device = next(model.parameters()).device
    counts = du.all_reduce_sum(torch.tensor([[report[m]["rows"], report[m]["uncertified"]] for m in mods],
                                            dtype=torch.float64, device=device)).cpu()
    out = {"solver_rows": {m: int(counts[i, 0]) for i, m in enumerate(mods)},
           "solver_uncertified_rows": {m: int(counts[i, 1]) for i, m in enumerate(mods)},
           "solver_max_iter": max(report[m]["max_iter"] for m in mods)}
    if warn and any(out["solver_uncertified_rows"].values()):
        log.warning("defense: rows not certified within the cap of %d iterations: %s of %s",
                    out["solver_max_iter"], out["solver_uncertified_rows"], out["solver_rows"])
    return out
