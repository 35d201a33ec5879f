"""Transfer attacks (--transfer_from RUN): the source run's model, rebuilt from its checkpoint, on which the
attacks are crafted while the run's own model is evaluated (``attacks.evaluate.evaluate_attack_grid(...,
source=...)``).

The source is checked before any work by ``pipeline.preflight.check_transfer_source`` (a run folder with its
checkpoint_best.pth, the same classes in the same order, the same input sizes). Its architecture comes from
the checkpoint's own ``arch`` record (nets, head and head arguments, plugin file), so any trained run of the
project can be a source, whatever this run's --arch_* flags say.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Tuple

import torch
import torch.nn as nn

from models import create_model
from pipeline.config import RunConfig
from pipeline.preflight import check_transfer_source, transfer_run
from utils.checkpoint import check_arch, load_checkpoint, load_weights, model_arch
from utils.fileio import sha256_file
from utils.plugins import load_plugins

log = logging.getLogger(__name__)


def source_record(cfg: RunConfig) -> Dict[str, Any]:
    """What eval.json and the result rows say about the source: its run folder, id, checkpoint and SHA-256
    (the hash is part of the evaluation's configuration hash, so --reuse_eval sees a retrained source)."""
    rd = transfer_run(cfg)
    return {"run": str(rd.root), "id": rd.root.name, "checkpoint": str(rd.checkpoint_best),
            "checkpoint_sha256": sha256_file(rd.checkpoint_best)}


def load_source_model(cfg: RunConfig, device: torch.device) -> Tuple[nn.Module, Dict[str, Any]]:
    """The --transfer_from model in eval mode on ``device`` with its weights, and ``source_record``."""
    meta = check_transfer_source(cfg)  # cheap (memory-mapped) and names --transfer_from on any problem
    rd = transfer_run(cfg)
    arch, args = dict(meta["arch"]), dict(meta.get("args") or {})
    if arch.get("plugins"):
        load_plugins([str(p) for p in arch["plugins"]], flag=f"--transfer_from (plugins recorded in {rd.root})")
    model = create_model(arch_sound=arch["arch_sound"], arch_frame=arch["arch_frame"],
                         arch_classifier=arch["arch_classifier"], num_classes=cfg.cls_num,
                         img_pool=args.get("img_pool", "avgpool"), audio_rate=int(args.get("audRate", cfg.audRate)),
                         fusion_args=arch.get("fusion_args", {}))
    ck = load_checkpoint(rd.checkpoint_best)
    check_arch(ck, model_arch(model, cfg.cls_num), rd.checkpoint_best, "--transfer_from")
    load_weights(model, ck["model"], f"--transfer_from {rd.checkpoint_best}", flag="--transfer_from")
    model.to(device).eval()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    info = source_record(cfg)
    log.info("transfer: crafting the attacks on %s (%s, epoch %s)", info["run"], arch["arch_classifier"],
             ck.get("epoch"))
    return model, info
