"""Training and the clean passes around it: fit (with resume), loading weights for evaluation, clean test
accuracy and the training features of the memory-bank defense."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import torch
import torch.nn as nn

from pipeline.build import build_dataset, build_loader, make_optimizer, set_epoch_lr
from pipeline.config import RunConfig
from pipeline.context import RunContext
from pipeline.engine import LogitsAndFeatures, TrainConfig, evaluate, extract_features, train_one_epoch
from pipeline.procedures import crmt_step2_epoch, estimate_lipschitz, record_lipschitz, step2_optimizer
from utils import distributed as du
from utils.checkpoint import check_arch, load_checkpoint, load_weights, model_arch, rng_state, set_rng_state
from utils.fileio import atomic_torch_save, sha256_file

log = logging.getLogger(__name__)


def checkpoint_dict(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: RunConfig, epoch: int,
                    best_acc: float, arch: Dict[str, Any], extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The one checkpoint layout: it resumes a run and records architecture, class order and schedule."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": {"lr_steps": list(cfg.lr_steps), "gamma": 0.1, "epoch": epoch},
            "epoch": epoch, "best_acc": best_acc, "args": cfg.as_dict(), "rng_state": rng_state(),
            "arch": arch, "categories": list(cfg.categories), **(extra or {})}


def fit(model: nn.Module, cfg: RunConfig, ctx: RunContext, opts: TrainConfig,
        ckpt_extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Train with resume; writes checkpoint_last.pth every epoch and checkpoint_best.pth on a new best
    val accuracy (both atomically, rank 0 only). A resume continues after checkpoint_last.pth (or from epoch 1
    when the run was killed before its first one) and keeps only the metrics rows of the epochs it holds.
    Returns the final train/val metrics. ``model`` is already on the run's device (``place_model``)."""
    optimizer = make_optimizer(model, cfg)
    arch = model_arch(model, cfg.cls_num)
    rd = ctx.run_dir
    start_epoch, best_acc = 1, -1.0
    if cfg.resume and rd.checkpoint_last.is_file():  # preflight checked it (architecture, classes, schedule)
        ck = load_checkpoint(rd.checkpoint_last)
        check_arch(ck, arch, rd.checkpoint_last)
        load_weights(model, ck["model"], str(rd.checkpoint_last))
        optimizer.load_state_dict(ck["optimizer"])
        set_rng_state(ck["rng_state"])
        start_epoch, best_acc = int(ck["epoch"]) + 1, float(ck["best_acc"])
        log.info("resumed from %s at epoch %d (best val acc %.4f)", rd.checkpoint_last, start_epoch, best_acc)
    if cfg.resume and du.is_main():
        # rows of epochs after the checkpoint (a kill between an epoch's metrics and its checkpoint) are redone
        kept = rd.keep_metrics_through(start_epoch - 1)
        log.info("resume: kept %d metrics rows of epochs 1..%d in %s", kept, start_epoch - 1, rd.metrics)

    ds_train = build_dataset(cfg, cfg.list_train, train_mode=True)
    ds_val = build_dataset(cfg, cfg.list_val, train_mode=False)
    train_loader = build_loader(ds_train, cfg, train=True, device=ctx.device)
    val_loader = build_loader(ds_val, cfg, train=False, device=ctx.device)
    net: nn.Module = LogitsAndFeatures(model)
    if du.is_distributed():
        net = du.wrap_ddp(net, ctx.device)
    val: Dict[str, Any] = {}
    tr: Dict[str, Any] = {}
    step2 = Step2(model, cfg, ctx) if cfg.crmt_step2_epochs else None
    last_epoch = cfg.num_epoch + cfg.crmt_step2_epochs
    for epoch in range(start_epoch, last_epoch + 1):
        factor = set_epoch_lr(optimizer, cfg.lr_steps, epoch)
        train_loader.sampler.set_epoch(epoch)
        if hasattr(ds_train, "set_epoch"):
            ds_train.set_epoch(epoch)
        t0 = time.time()
        if epoch <= cfg.num_epoch:
            tr = train_one_epoch(net, train_loader, optimizer, ctx.device, epoch, opts)
            ctx.metrics.log("train", epoch, lr_factor=factor, seconds=time.time() - t0, **tr)
        else:  # CRMT step two (pipeline/procedures.py): only the integration weights, the certified bound
            tr = step2.epoch(train_loader, epoch, opts.progress)
            ctx.metrics.log("crmt_step2", epoch, seconds=time.time() - t0, **tr)
            tr = {"loss": -tr["bound"], **tr}
        is_best = False
        if epoch % cfg.eval_epoch == 0 or epoch == last_epoch:
            val = evaluate(model, val_loader, ctx.device, amp=cfg.amp, progress=opts.progress, desc=f"val {epoch}",
                           channels_last=cfg.channels_last)
            ctx.metrics.log("val", epoch, **val)
            # CRMT step two aims at the bound at equal accuracy: a tie with the best then counts as better
            is_best = val["acc"] > best_acc or (epoch > cfg.num_epoch and val["acc"] >= best_acc)
            best_acc = max(best_acc, val["acc"])
        log.info("epoch %d: train loss %.4f acc %.4f | val acc %s (best %.4f)", epoch, tr["loss"], tr["acc"],
                 f"{val['acc']:.4f}" if val else "-", best_acc)
        if du.is_main():
            ck = checkpoint_dict(model, optimizer, cfg, epoch, best_acc, arch, ckpt_extra)
            if is_best:
                atomic_torch_save(ck, rd.checkpoint_best)
            atomic_torch_save(ck, rd.checkpoint_last)
        du.barrier()
    return {"train": tr, "val": val, "best_val_acc": best_acc}


class Step2:
    """CRMT step two over epochs ``--num_epoch + 1 ..`` (pipeline/procedures.py): the Lipschitz constants are
    estimated once on the training list in eval mode (recorded in the head's buffer, so in the checkpoint; a
    resume inside step two keeps the recorded ones), then SGD over the integration weights."""

    def __init__(self, model: nn.Module, cfg: RunConfig, ctx: RunContext) -> None:
        self.model, self.cfg, self.ctx = model, cfg, ctx
        self.optimizer = step2_optimizer(model, cfg.crmt_step2_lr)

    def epoch(self, loader, epoch: int, progress: bool) -> Dict[str, Any]:
        """One step-two epoch (the constants estimated first when none are recorded)."""
        if not torch.isfinite(self.model.head.lipschitz).all():
            eval_loader = build_loader(build_dataset(self.cfg, self.cfg.list_train, train_mode=False), self.cfg,
                                       train=False, device=self.ctx.device)
            record_lipschitz(self.model, estimate_lipschitz(self.model, eval_loader, self.ctx.device, progress))
        return crmt_step2_epoch(self.model, loader, self.optimizer, self.ctx.device, epoch, progress)


def load_for_eval(model: nn.Module, cfg: RunConfig, ctx: RunContext, path: Path) -> Path:
    """Load the model weights of checkpoint ``path`` (checked by preflight) into ``model`` where it is."""
    ck = load_checkpoint(path)
    check_arch(ck, model_arch(model, cfg.cls_num), path)
    load_weights(model, ck["model"], str(path))
    log.info("loaded %s (epoch %s)", path, ck.get("epoch"))
    return path


def save_features(model: nn.Module, cfg: RunConfig, ctx: RunContext, ckpt_path: Path) -> Path:
    """Clean eval-mode features of the training list (no augmentation), tagged with the checkpoint hash."""
    out = ctx.run_dir.features
    if not du.is_main():
        return out
    loader = build_loader(build_dataset(cfg, cfg.list_train, train_mode=False), cfg, train=False,
                          device=ctx.device, whole=True)
    feats = extract_features(model, loader, ctx.device, progress=not cfg.no_progress)
    feats["checkpoint_sha256"] = sha256_file(ckpt_path)
    feats["checkpoint"] = str(ckpt_path)
    atomic_torch_save(feats, out)
    log.info("wrote %d training features to %s", len(feats["ids"]), out)
    return out


def clean_accuracy(model: nn.Module, cfg: RunConfig, ctx: RunContext, list_path: str, tag: str,
                   loader: Optional[Iterable] = None, keep_preds: bool = False) -> Dict[str, Any]:
    """Clean accuracy on ``list_path`` (logged to metrics under ``tag`` and returned), over ``loader`` when
    the caller built it (an evaluation's one loader, already cut to --max_eval_batches).

    Always fp32, also under --amp: the number reported is the attack grid's clean row (attacks are fp32).
    ``keep_preds``: the result's ``preds`` are the predictions by dataset index, for the grid to reuse."""
    max_batches = 0
    if loader is None:
        loader = build_loader(build_dataset(cfg, list_path, train_mode=False), cfg, train=False, device=ctx.device)
        max_batches = cfg.max_eval_batches if cfg.mode == "eval" else 0
    res = evaluate(model, loader, ctx.device, amp=False, progress=not cfg.no_progress, desc=tag,
                   max_batches=max_batches, channels_last=cfg.channels_last, keep_preds=keep_preds)
    ctx.metrics.log(tag, 0, **{k: v for k, v in res.items() if k != "preds"})
    log.info("clean %s accuracy %.4f on %d clips (%s)", tag, res["acc"], res["n"], list_path)
    return res
