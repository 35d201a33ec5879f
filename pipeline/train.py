"""Run set-up and the train/eval drivers shared by main_attack.py and main_defense.py.

The mains only parse arguments and choose what to wrap around the model; everything else (devices,
loaders, optimiser, checkpoints, resume, logging, the attack grid) lives here and in utils/engine.py.
"""
from __future__ import annotations

import argparse
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DistributedSampler

from utils import distributed as du
from utils.checkpoint import (atomic_save, load_checkpoint, check_arch, model_arch, rng_state, set_rng_state,
                              sha256_file)
from utils.config import args_to_dict, dump_args, run_dir
from utils.engine import LogitsAndFeatures, TrainConfig, evaluate, extract_features, train_one_epoch
from utils.logger import MetricLogger, setup_logging

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """Run state that must not live on ``args``."""

    device: torch.device
    run_dir: Path
    metrics: MetricLogger
    is_main: bool = True
    extra: Dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def setup(args: argparse.Namespace) -> RunContext:
    """Device, process group, run folder (never deleted), logging and seeds."""
    device = du.init_distributed(args.device)
    if (args.amp or args.channels_last) and device.type != "cuda":
        raise SystemExit("error: --amp and --channels_last are GPU options; this run is on "
                         f"{device} (drop the flag, or pass --device cuda on a GPU machine)")
    rdir = run_dir(args)
    setup_logging(rdir, du.is_main())
    if du.is_main():
        rdir.mkdir(parents=True, exist_ok=True)
        dump_args(args, rdir / ("args.json" if args.mode == "train" else f"args_{args.mode}.json"))
    seed_everything(args.seed + du.rank())
    metrics = MetricLogger(rdir, enabled=du.is_main())
    log.info("run folder %s, device %s, world size %d", rdir, device, du.world_size())
    return RunContext(device=device, run_dir=rdir, metrics=metrics, is_main=du.is_main())


def build_dataset(args: argparse.Namespace, split: str, train_mode: bool):
    """AVDataset for ``split`` (train/val/test); ``train_mode`` turns augmentation on."""
    from dataset.av_dataset import AVDataset

    return AVDataset(
        list_path=getattr(args, f"list_{split}"), audio_path=args.audio_path, frame_path=args.frame_path,
        categories=args.categories, split_train=train_mode, num_frames=args.num_frames,
        stride_frames=args.stride_frames, frame_rate=args.frameRate, aud_len=args.audLen,
        aud_rate=args.audRate, img_size=args.imgSize, seed=args.seed)


def build_loader(ds, args: argparse.Namespace, train: bool):
    """Train: a seeded shuffling DistributedSampler (also with one process, so a resumed run sees the
    same order); eval: ShardSampler (no padding, exact counts under DDP)."""
    from dataset.av_dataset import build_loader as _build

    if train:
        sampler = DistributedSampler(ds, num_replicas=du.world_size(), rank=du.rank(), shuffle=True,
                                     seed=args.seed, drop_last=False)
    else:
        sampler = du.ShardSampler(len(ds))
    return _build(ds, batch_size=args.batch_size_per_gpu, workers=args.workers, shuffle=False,
                  sampler=sampler, seed=args.seed, drop_last=False)


def build_model(args: argparse.Namespace) -> nn.Module:
    """The model named by --arch_sound/--arch_frame/--arch_classifier."""
    from models import create_model

    model = create_model(arch_sound=args.arch_sound, arch_frame=args.arch_frame,
                        arch_classifier=args.arch_classifier, num_classes=args.cls_num,
                        img_pool=args.img_pool, pretrained=args.pretrained,
                        weights_frame=args.weights_frame or None, weights_sound=args.weights_sound or None,
                        audio_rate=args.audRate)
    if getattr(args, "init_from", None) and args.mode == "train" and not args.resume:
        init_nets_from(model, args.init_from)
    return model


def init_nets_from(model: nn.Module, paths: List[str]) -> None:
    """Copy the ``audio_net``/``visual_net`` weights of project checkpoints into ``model``.

    Each net of ``model`` must be found in exactly one checkpoint with identical keys and shapes; anything
    else is an error naming the checkpoint and the net (no partial, silent initialisation).
    """
    from utils.checkpoint import load_checkpoint

    state = model.state_dict()
    nets = [n for n in ("audio_net", "visual_net") if getattr(model, n, None) is not None]
    found: Dict[str, str] = {}
    for path in paths:
        ck = load_checkpoint(Path(path))["model"]
        for net in nets:
            keys = {k for k in ck if k.startswith(net + ".")}
            if not keys:
                continue
            want = {k for k in state if k.startswith(net + ".")}
            if keys != want:
                raise RuntimeError(f"--init_from {path}: its {net} does not match this model's "
                                   f"({len(want - keys)} missing, {len(keys - want)} unexpected keys)")
            if net in found:
                raise RuntimeError(f"--init_from: {net} is in both {found[net]} and {path}")
            for k in keys:
                if ck[k].shape != state[k].shape:
                    raise RuntimeError(f"--init_from {path}: {k} has shape {tuple(ck[k].shape)}, "
                                       f"this model needs {tuple(state[k].shape)}")
                state[k].copy_(ck[k])
            found[net] = path
    missing = [n for n in nets if n not in found]
    if missing:
        raise RuntimeError(f"--init_from {' '.join(paths)}: no checkpoint holds this model's {', '.join(missing)}")
    log.info("initialised %s", ", ".join(f"{n} from {p}" for n, p in found.items()))


def make_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.SGD:
    """SGD with the paper's per-module learning rates (visual 1e-4, audio and head 1e-3 by default)."""
    groups: Dict[str, List[nn.Parameter]] = {"visual": [], "audio": [], "classifier": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        parts = name.split(".")
        if "visual_net" in parts:
            groups["visual"].append(p)
        elif "audio_net" in parts:
            groups["audio"].append(p)
        else:
            groups["classifier"].append(p)
    lrs = {"visual": args.lr_frame, "audio": args.lr_sound, "classifier": args.lr_classifier}
    params = [{"params": ps, "lr": lrs[k], "initial_lr": lrs[k], "name": k} for k, ps in groups.items() if ps]
    return torch.optim.SGD(params, lr=args.lr_classifier, momentum=args.beta1, weight_decay=args.weight_decay)


def set_epoch_lr(optimizer: torch.optim.Optimizer, lr_steps: List[int], epoch: int) -> float:
    """x0.1 at every step epoch already reached (paper: lr steps, factor 0.1). Returns the factor."""
    factor = 0.1 ** sum(1 for s in lr_steps if epoch >= s)
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * factor
    return factor


def fit(model: nn.Module, args: argparse.Namespace, ctx: RunContext, cfg: TrainConfig,
        ckpt_extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Train with resume; writes checkpoint_last.pth every epoch and checkpoint_best.pth on a new best
    val accuracy (both atomically, rank 0 only). Returns the final train/val metrics."""
    model.to(ctx.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, args)
    arch = model_arch(model, args.cls_num)
    start_epoch, best_acc = 1, -1.0
    last_path, best_path = ctx.run_dir / "checkpoint_last.pth", ctx.run_dir / "checkpoint_best.pth"
    if args.resume:
        if not last_path.is_file():
            raise SystemExit(f"error: --resume but {last_path} does not exist")
        ck = load_checkpoint(last_path)
        check_arch(ck, arch, last_path)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        set_rng_state(ck["rng_state"])
        start_epoch, best_acc = int(ck["epoch"]) + 1, float(ck["best_acc"])
        log.info("resumed from %s at epoch %d (best val acc %.4f)", last_path, start_epoch, best_acc)
    elif last_path.exists():
        raise SystemExit(f"error: {ctx.run_dir} already holds a training run; pass --resume to continue it "
                         "or choose another --id (run folders are never overwritten)")

    ds_train = build_dataset(args, "train", train_mode=True)
    ds_val = build_dataset(args, "val", train_mode=False)
    train_loader, val_loader = build_loader(ds_train, args, train=True), build_loader(ds_val, args, train=False)
    net: nn.Module = LogitsAndFeatures(model)
    if du.is_distributed():
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    val: Dict[str, Any] = {}
    tr: Dict[str, Any] = {}
    for epoch in range(start_epoch, args.num_epoch + 1):
        factor = set_epoch_lr(optimizer, args.lr_steps, epoch)
        train_loader.sampler.set_epoch(epoch)
        if hasattr(ds_train, "set_epoch"):
            ds_train.set_epoch(epoch)
        t0 = time.time()
        tr = train_one_epoch(net, train_loader, optimizer, ctx.device, epoch, cfg)
        ctx.metrics.log("train", epoch, lr_factor=factor, seconds=time.time() - t0, **tr)
        is_best = False
        if epoch % args.eval_epoch == 0 or epoch == args.num_epoch:
            val = evaluate(model, val_loader, ctx.device, amp=args.amp, progress=cfg.progress, desc=f"val {epoch}")
            ctx.metrics.log("val", epoch, **val)
            is_best = val["acc"] > best_acc
            best_acc = max(best_acc, val["acc"])
        log.info("epoch %d: train loss %.4f acc %.4f | val acc %s (best %.4f)", epoch, tr["loss"], tr["acc"],
                 f"{val['acc']:.4f}" if val else "-", best_acc)
        if du.is_main():
            ck = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "scheduler": {"lr_steps": list(args.lr_steps), "gamma": 0.1, "epoch": epoch},
                  "epoch": epoch, "best_acc": best_acc, "args": args_to_dict(args), "rng_state": rng_state(),
                  "arch": arch, **(ckpt_extra or {})}
            if is_best:
                atomic_save(ck, best_path)
            atomic_save(ck, last_path)
        du.barrier()
    return {"train": tr, "val": val, "best_val_acc": best_acc}


def load_for_eval(model: nn.Module, args: argparse.Namespace, ctx: RunContext, path: Optional[Path] = None
                  ) -> Path:
    """Load weights (default: <run>/checkpoint_best.pth) after checking the architecture."""
    path = Path(path or args.weights or ctx.run_dir / "checkpoint_best.pth")
    ck = load_checkpoint(path)
    check_arch(ck, model_arch(model, args.cls_num), path)
    model.load_state_dict(ck["model"])
    model.to(ctx.device)
    log.info("loaded %s (epoch %s)", path, ck.get("epoch"))
    return path


def save_features(model: nn.Module, args: argparse.Namespace, ctx: RunContext, ckpt_path: Path) -> Path:
    """Clean eval-mode features of the training list (no augmentation), tagged with the checkpoint hash."""
    out = ctx.run_dir / "features_train.pt"
    if not du.is_main():
        return out
    from dataset.av_dataset import build_loader as _build

    ds = build_dataset(args, "train", train_mode=False)
    loader = _build(ds, batch_size=args.batch_size_per_gpu, workers=args.workers, shuffle=False, seed=args.seed)
    feats = extract_features(model, loader, ctx.device, progress=not args.no_progress)
    feats["checkpoint_sha256"] = sha256_file(ckpt_path)
    feats["checkpoint"] = str(ckpt_path)
    atomic_save(feats, out)
    log.info("wrote %d training features to %s", len(feats["ids"]), out)
    return out


def test_accuracy(model: nn.Module, args: argparse.Namespace, ctx: RunContext) -> Dict[str, Any]:
    """Clean accuracy on the test list (logged to metrics and returned)."""
    loader = build_loader(build_dataset(args, "test", train_mode=False), args, train=False)
    res = evaluate(model, loader, ctx.device, amp=args.amp, progress=not args.no_progress, desc="test",
                   max_batches=args.max_eval_batches)
    ctx.metrics.log("test", 0, **res)
    log.info("clean test accuracy %.4f on %d clips", res["acc"], res["n"])
    return res


def execute(model: nn.Module, args: argparse.Namespace, ctx: RunContext, cfg: TrainConfig, label: str,
            weights_optional: bool = False, adaptive: bool = False) -> None:
    """What both mains do after building their model.

    train: fit, reload the best checkpoint, report test accuracy, optionally save training features.
    eval: load the weights (--weights or <run>/checkpoint_best.pth; with ``weights_optional`` a missing
    file is logged and the model is evaluated as built), report test accuracy, run the attack grid.
    """
    from utils.attack_run import run_attack_eval

    try:
        if args.mode == "train":
            fit(model, args, ctx, cfg)
            best = load_for_eval(model, args, ctx, ctx.run_dir / "checkpoint_best.pth")
            test_accuracy(model, args, ctx)
            if args.save_features:
                save_features(model, args, ctx, best)
            return
        path = Path(args.weights) if args.weights else ctx.run_dir / "checkpoint_best.pth"
        if path.is_file() or not weights_optional:
            load_for_eval(model, args, ctx, path)
        else:
            log.warning("no checkpoint at %s: evaluating the model as built (not fine-tuned)", path)
        clean = test_accuracy(model, args, ctx)
        if args.attack_type != "none":
            run_attack_eval(model, args, ctx, label=label, clean=clean, adaptive=adaptive)
    finally:
        ctx.metrics.close()
        du.cleanup()
