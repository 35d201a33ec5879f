"""What both mains do once their model is built: train, or evaluate and attack.

train: fit, reload the best checkpoint, the clean test pass (when a test list is given), the training
features (--save_features), then ``done_train.json``.
eval: load the weights, the clean pass on the evaluated list, the attack grid (and sweep, examples,
adaptive attacks), the corruptions (--corruptions), CRMT's bound for a crmt head (pipeline/crmt_eval.py), all
written to a staging folder published only when everything is written.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Dict, Optional

import torch.nn as nn

from attacks import ATTACKS
from attacks.sanity import check_eot
from pipeline.adaptive import run_adaptive
from pipeline.attack_eval import eval_loader, run_attack_eval
from pipeline.config import RunConfig
from pipeline.context import RunContext, published
from pipeline.corruption_eval import run_corruption_eval
from pipeline.crmt_eval import run_crmt_certified
from pipeline.defense import solver_counts
from pipeline.engine import TrainConfig
from pipeline.missing_eval import run_missing_eval
from pipeline.preflight import eval_weights
from pipeline.train import clean_accuracy, fit, load_for_eval, save_features

log = logging.getLogger(__name__)


def _train(model: nn.Module, cfg: RunConfig, ctx: RunContext, opts: TrainConfig) -> None:
    t0 = time.time()
    result = fit(model, cfg, ctx, opts)
    best = load_for_eval(model, cfg, ctx, ctx.run_dir.checkpoint_best)
    test: Optional[Dict[str, Any]] = None
    if cfg.list_test:
        test = clean_accuracy(model, cfg, ctx, cfg.list_test, "test")
    else:
        log.info("no --list_test given: no separate test pass (evaluate later with --mode eval)")
    if cfg.save_features:
        save_features(model, cfg, ctx, best)
    if ctx.is_main:
        ctx.run_dir.mark_done({"best_val_acc": result["best_val_acc"], "test": test, "seconds": time.time() - t0,
                               "command": sys.argv})


def check_model_eot(model: nn.Module, cfg: RunConfig, loader, device) -> None:
    """--eot exactly when the model is stochastic, decided on the first evaluated batch before any attack:
    two forward passes in eval mode (attacks.sanity.check_eot; UsageError naming --eot, exit 2)."""
    batch = next(iter(loader), None)
    if batch is None:
        return
    inputs = {m: batch[m].to(device) for m in ("audio", "visual") if batch.get(m) is not None}
    gradient = any(ATTACKS.get(n).gradient_loss is not None for n in cfg.attacks)
    random = check_eot(model, inputs, cfg.eot, gradient)
    log.info("model %s: %s", "stochastic" if random else "deterministic",
             f"EOT over {cfg.eot} passes" if random else "no EOT")


def _evaluate(model: nn.Module, cfg: RunConfig, ctx: RunContext, label: str) -> None:
    path = eval_weights(cfg)
    if path.is_file():
        load_for_eval(model, cfg, ctx, path)
    else:  # only reachable for the defense (preflight refuses a missing checkpoint otherwise)
        log.warning("no checkpoint at %s: evaluating the model as built (banks not fine-tuned)", path)
    tag = "test" if cfg.list_test else "val"
    loader = eval_loader(cfg, ctx.device)  # one dataset and loader: the clean pass, then the attack grid
    if cfg.attacks:
        check_model_eot(model, cfg, loader, ctx.device)
    clean = clean_accuracy(model, cfg, ctx, cfg.eval_list, tag, loader=loader, keep_preds=True)
    preds = clean.pop("preds")
    ctx.record["clean"] = {**clean, "list": cfg.eval_list}
    run_crmt_certified(model, cfg, ctx, label, loader)  # a crmt head: its bound per clip (else nothing)
    if cfg.missing_modality:
        run_missing_eval(model, cfg, ctx, label, clean, loader, clean_preds=preds)
    if cfg.attacks:
        grid = run_attack_eval(model, cfg, ctx, label=label, clean=clean, loader=loader, clean_preds=preds)
        if cfg.adaptive:
            run_adaptive(model, cfg, ctx, label, grid)
    if cfg.corruption_names:
        run_corruption_eval(model, cfg, ctx, label, clean, loader, clean_preds=preds)
    solver = solver_counts(model, warn=True)  # the defense's sparse coding: rows left uncertified at the cap
    if solver is not None:
        ctx.record["solver"] = solver


def execute(model: nn.Module, cfg: RunConfig, ctx: RunContext, opts: TrainConfig, label: str) -> None:
    """Train or evaluate ``model``; an evaluation's folder is published only if everything succeeded."""
    with published(ctx):
        if cfg.mode == "train":
            _train(model, cfg, ctx, opts)
        else:
            _evaluate(model, cfg, ctx, label)

