"""Clean accuracy under test-time corruptions (--corruptions, --severities) of one evaluation.

The evaluated list is read once: each batch is corrupted by every corruption at every severity (each clip from
its own generator, ``corruptions.clip_rng(--seed, dataset index, corruption)``, so the numbers depend neither on
--eval_batch_size nor on the number of processes) and classified. Writes ``corruption_results.{json,csv,md}``
(one row per corruption and severity: ``corruption``, ``corruption_modality``, ``severity``, ``clean_acc``,
``corrupt_acc``, ``n_samples``, ``seconds``; accuracies as fractions, like every result row) and records the
summary (``reporting.corruption_summary``: mean corruption accuracy, per corruption) in eval.json.

Per-clip correctness of every row (the report's paired tests) goes to ``corruption_per_sample.json``
(``reporting.per_sample.write_per_clip``, keys ``corruption``, ``severity``; one process only, as
per_sample.json), with the clean pass as the row ``("none", 0)`` (``CLEAN_KEY``).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn
from tqdm import tqdm

from corruptions import CORRUPTIONS, corrupt, parse_corruption_names
from pipeline.config import RunConfig
from pipeline.context import RunContext
from pipeline.engine import to_inputs, unwrap
from reporting.corruption_summary import corruption_summary, severity_table
from reporting.per_sample import CORRUPTION_CLEAN as CLEAN_KEY
from reporting.per_sample import CORRUPTION_KEYS, write_per_clip
from reporting.results import write_results
from utils import distributed as du
from utils.modes import model_mode
from utils.rundir import EVAL_FILES

log = logging.getLogger(__name__)


def corruption_rows(model: nn.Module, loader: Iterable, names: Tuple[str, ...], severities: Tuple[int, ...],
                    device: torch.device, seed: int, sample_rate: int, label: str = "", clean_acc: float = float("nan"),
                    progress: bool = False, channels_last: bool = False,
                    per_clip: Optional[Dict[Tuple[str, int], Dict[int, bool]]] = None,
                    clean_preds: Optional[torch.Tensor] = None) -> List[Dict[str, Any]]:
    """One result row per (corruption, severity): the accuracy of ``model`` on ``loader``'s clips corrupted
    with ``seed`` (counts summed over processes, exact under DDP). The model runs in eval mode, restored after.
    ``per_clip`` (a dict, filled in place): this process's clips {(corruption, severity): {dataset index:
    right}}, and with ``clean_preds`` (the clean pass's predictions by dataset index) the row ``CLEAN_KEY``."""
    bare = unwrap(model)
    keys = [(n, s) for n in names for s in severities]
    counts = torch.zeros(len(keys), 2, dtype=torch.float64, device=device)  # correct, n
    seconds = [0.0] * len(keys)
    with model_mode(bare, training=False), torch.no_grad(), torch.autocast(device.type, enabled=False):
        for batch in tqdm(loader, desc="corruptions", disable=not (progress and du.is_main()), leave=False):
            inputs = to_inputs(batch, device, bare.modalities, channels_last)
            labels = batch["label"].to(device)
            indices = [int(i) for i in torch.as_tensor(batch["index"]).tolist()]
            if per_clip is not None and clean_preds is not None:
                per_clip.setdefault(CLEAN_KEY, {}).update(
                    zip(indices, (clean_preds[torch.as_tensor(indices)] == labels.cpu()).tolist()))
            for k, (name, sev) in enumerate(keys):
                t0 = time.perf_counter()
                x = corrupt(name, inputs, sev, seed, indices, sample_rate)
                pred = bare(**x).argmax(1)
                ok = pred == labels
                counts[k, 0] += ok.sum().double()
                if per_clip is not None:
                    per_clip.setdefault((name, sev), {}).update(zip(indices, ok.cpu().tolist()))
                counts[k, 1] += labels.numel()
                seconds[k] += time.perf_counter() - t0
    counts = du.all_reduce_sum(counts) if du.is_distributed() else counts
    rows = []
    for k, (name, sev) in enumerate(keys):
        correct, n = counts[k].tolist()
        rows.append({"model": label, "corruption": name, "corruption_modality": CORRUPTIONS.get(name).modality,
                     "severity": sev, "clean_acc": clean_acc, "corrupt_acc": correct / n if n else float("nan"),
                     "n_samples": int(n), "seconds": seconds[k]})
    return rows


def run_corruption_eval(model: nn.Module, cfg: RunConfig, ctx: RunContext, label: str, clean: Dict[str, Any],
                        loader: Iterable, clean_preds: Optional[torch.Tensor] = None) -> List[Dict[str, Any]]:
    """The corruption rows of this evaluation, written to the evaluation folder and summarised in eval.json;
    their per-clip correctness too (corruption_per_sample.json, with the clean row from ``clean_preds``)."""
    if cfg.corruptions.strip() == "all":
        _, left_out = parse_corruption_names("all", unwrap(model).modalities, cfg.num_frames)
        for note in left_out:
            log.info("--corruptions all leaves out %s", note)
    log.info("corruptions: %s at severities %s (seed %d)", ", ".join(cfg.corruption_names),
             ",".join(map(str, cfg.severity_levels)), cfg.seed)
    per_clip: Dict[Tuple[str, int], Dict[int, bool]] = {}
    rows = corruption_rows(model, loader, cfg.corruption_names, cfg.severity_levels, ctx.device, cfg.seed,
                           cfg.audRate, label=label, clean_acc=clean["acc"], progress=not cfg.no_progress,
                           channels_last=cfg.channels_last, per_clip=per_clip, clean_preds=clean_preds)
    summary = corruption_summary(rows)
    ctx.record["corruptions"] = {"names": list(cfg.corruption_names), "severities": list(cfg.severity_levels),
                                 "seed": cfg.seed, "mca": summary["mca"], "per_corruption": summary["per_corruption"]}
    if ctx.is_main:
        write_results(rows, ctx.out_dir, name=EVAL_FILES["corruptions"])
        if du.world_size() == 1:  # per-clip outcomes are only complete in one process
            write_per_clip(per_clip, CORRUPTION_KEYS, ctx.out_dir / EVAL_FILES["corruption_per_sample"])
        print(severity_table(rows).to_markdown())
    log.info("mean corruption accuracy %.4f (clean %.4f)", summary["mca"], clean["acc"])
    return rows
