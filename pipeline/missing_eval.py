"""The evaluation with one input absent (--missing_modality, --missing_fill; models/missing.py): one row per
value, written to ``missing_results.{json,csv,md}`` of the evaluation folder.

A row (``reporting/results.py`` schema, read back by ``read_results``)::

    {"model": "concat", "missing_input": "visual", "missing_fill": "zeros", "clean_acc": 0.91,
     "missing_acc": 0.48, "n_samples": 160, "seconds": 0.8}

``clean_acc`` is the evaluation's clean accuracy with both inputs; ``missing_input`` "none" is that row itself
(``missing_fill`` "-"). The rows have their own file because every row of ``results.json`` is an attack row
to its readers (attack name, eps per modality).

Per-clip correctness of every row (the report's paired tests) goes to ``missing_per_sample.json``
(``reporting.per_sample.write_per_clip``, keys ``missing_input``, ``missing_fill``; one process only, as
per_sample.json): the "none" row from the clean pass's predictions, the others from their own passes.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from tqdm import tqdm

from models.missing import training_means
from pipeline.config import RunConfig
from pipeline.context import RunContext
from pipeline.engine import to_inputs, unwrap
from reporting.per_sample import MISSING_KEYS, write_per_clip
from reporting.results import markdown_table, write_results
from utils import distributed as du
from utils.modes import model_mode
from utils.rundir import EVAL_FILES

log = logging.getLogger(__name__)


@torch.no_grad()
def missing_accuracy(model: nn.Module, loader, device: torch.device, modality: str, fill: str,
                     train_mean: Optional[Mapping[str, torch.Tensor]] = None, progress: bool = False,
                     clean_preds: Optional[torch.Tensor] = None) -> Dict[str, Any]:
    """Accuracy over ``loader`` with ``modality`` absent for every clip (its input never read), its feature
    replaced by ``fill``; counts summed over processes. ``correct``: this process's clips {dataset index:
    right}; with ``clean_preds`` (the clean pass's predictions by dataset index) also ``clean_correct``."""
    bare = unwrap(model)
    present = tuple(m for m in bare.modalities if m != modality)
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    correct: Dict[int, bool] = {}
    clean_correct: Dict[int, bool] = {}
    with model_mode(bare, training=False):
        for batch in tqdm(loader, desc=f"without {modality}", disable=not (progress and du.is_main()), leave=False):
            labels = batch["label"].to(device)
            inputs = to_inputs(batch, device, present)
            absent = {modality: torch.ones(labels.numel(), dtype=torch.bool, device=device)}
            feats = bare.features_absent(**inputs, absent=absent, fill=fill, train_mean=train_mean)
            pred = bare.classify(feats).argmax(1)
            index = torch.as_tensor(batch["index"]).cpu()
            correct.update(zip(index.tolist(), (pred == labels).cpu().tolist()))
            if clean_preds is not None:
                clean_correct.update(zip(index.tolist(), (clean_preds[index] == labels.cpu()).tolist()))
            sums += torch.stack([(pred == labels).sum().double(),
                                 torch.full((), labels.numel(), dtype=torch.float64, device=device)])
    sums = du.all_reduce_sum(sums)
    n = int(sums[1].item())
    if n == 0:
        raise RuntimeError(f"without {modality}: the loader yielded no samples")
    out = {"acc": sums[0].item() / n, "n": n, "correct": correct}
    if clean_preds is not None:
        out["clean_correct"] = clean_correct
    return out


def labels_by_index(loader) -> Dict[int, int]:
    """Each clip's label by dataset index (a pass over ``loader`` that runs no model)."""
    out: Dict[int, int] = {}
    for batch in loader:
        out.update(zip(torch.as_tensor(batch["index"]).tolist(), torch.as_tensor(batch["label"]).tolist()))
    return out


def run_missing_eval(model: nn.Module, cfg: RunConfig, ctx: RunContext, label: str, clean: Mapping[str, Any],
                     loader, clean_preds: Optional[torch.Tensor] = None) -> List[Dict[str, Any]]:
    """The rows of --missing_modality on the evaluated list (``loader``: the clean pass's), written to the
    evaluation folder and recorded in eval.json (``missing``); with ``clean_preds`` (the clean pass's
    predictions by dataset index) also every row's per-clip correctness (missing_per_sample.json)."""
    means = None
    if cfg.missing_fill == "mean" and any(m != "none" for m in cfg.missing_modality):
        blob = torch.load(ctx.run_dir.features, map_location="cpu", weights_only=True)
        means = training_means(blob, tuple(unwrap(model).modalities))
    rows: List[Dict[str, Any]] = []
    per_clip: Dict[Tuple[str, str], Dict[int, bool]] = {}
    for m in cfg.missing_modality:
        t0 = time.time()
        res = ({"acc": clean["acc"], "n": clean["n"]} if m == "none" else
               missing_accuracy(model, loader, ctx.device, m, cfg.missing_fill, means, not cfg.no_progress,
                                clean_preds))
        if "correct" in res:
            per_clip[(m, cfg.missing_fill)] = res["correct"]
            per_clip.setdefault(("none", "-"), res["clean_correct"])
        rows.append({"model": label, "missing_input": m, "missing_fill": "-" if m == "none" else cfg.missing_fill,
                     "clean_acc": clean["acc"], "missing_acc": res["acc"], "n_samples": res["n"],
                     "seconds": time.time() - t0})
        log.info("%s without %s (filled with %s): accuracy %.4f on %d clips", label, m, cfg.missing_fill,
                 res["acc"], res["n"])
    if clean_preds is not None and "none" in cfg.missing_modality and ("none", "-") not in per_clip:
        labels = labels_by_index(loader)  # only "none" asked: no pass ran that saw the labels
        per_clip[("none", "-")] = {i: int(clean_preds[i]) == y for i, y in labels.items()}
    if "none" not in cfg.missing_modality:
        per_clip.pop(("none", "-"), None)
    if ctx.is_main:
        write_results(rows, ctx.out_dir, name=EVAL_FILES["missing"])
        if clean_preds is not None and du.world_size() == 1:  # per-clip outcomes are only complete in one process
            write_per_clip(per_clip, MISSING_KEYS, ctx.out_dir / EVAL_FILES["missing_per_sample"])
        print(f"\n## {label}: one input absent\n")
        print(markdown_table(rows))
    ctx.record["missing"] = {"fill": cfg.missing_fill, "inputs": list(cfg.missing_modality)}
    return rows
