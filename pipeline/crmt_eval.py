"""CRMT's certified bound per clip in an evaluation of a ``crmt`` head (main_attack.py --mode eval; models/crmt.py
``certified_radius``, Yang et al. ICLR 2024 Sec. 3 theorem): written to ``crmt_certified.json`` of the evaluation
folder and summarised in eval.json (``crmt_certified``).

Per perturbed set (audio alone, visual alone, both: a joint L2 radius) two bounds:

- ``feature``: perturbations of the head's input features; the constants are exact (orthonormal rows), so the
  bound is a certificate (sound).
- ``input``: perturbations of the inputs, with the Lipschitz constants CRMT step two estimated on the training list
  (the head's ``lipschitz`` buffer). For deep encoders these constants are ESTIMATES (the largest gradient norm seen,
  not a bound), so the input-space numbers are labelled estimates, never certificates. Absent when the run recorded
  no estimate (no step two).

Certified accuracy at r: the share of clips whose bound exceeds r (a bound <= 0: misclassified or on the boundary).
RADII are our choice (the paper reports its own radii per dataset; feature norms differ per model): 0 (the share
of clips with a positive bound) and a few steps above it. One process: under torchrun each process writes the
counts summed over processes but only its own clips' radii.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn

from models.crmt import CRMTFusion, certified_radius
from pipeline.config import RunConfig
from pipeline.context import RunContext
from pipeline.engine import to_inputs, unwrap
from utils import distributed as du
from utils.fileio import atomic_write_text
from utils.modes import model_mode
from utils.rundir import eval_file

log = logging.getLogger(__name__)

RADII = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0)  # our choice (module docstring)
SETS = {"audio": ("audio",), "visual": ("visual",), "both": ("audio", "visual")}


def crmt_head(model: nn.Module) -> Optional[CRMTFusion]:
    """The model's CRMT head, or None for any other head."""
    head = getattr(unwrap(model), "head", None)
    return head if isinstance(head, CRMTFusion) else None


@torch.no_grad()
def crmt_radii(model: nn.Module, loader, device: torch.device) -> Dict[str, Any]:
    """Every clip's bound per space and perturbed set: ``{"ids": [...], "labels": [...], "<space>/<set>": [...]}``."""
    bare = unwrap(model)
    head = crmt_head(model)
    spaces = ["feature"] + (["input"] if torch.isfinite(head.lipschitz).all() else [])
    out: Dict[str, List[Any]] = {"ids": [], "labels": [], **{f"{s}/{k}": [] for s in spaces for k in SETS}}
    with model_mode(bare, training=False):
        for batch in loader:
            labels = batch["label"].to(device)
            feats = bare.features(**to_inputs(batch, device, bare.modalities))
            out["ids"] += list(batch["id"])
            out["labels"] += labels.tolist()
            for s in spaces:
                for k, mods in SETS.items():
                    out[f"{s}/{k}"] += certified_radius(head, feats, labels, space=s, modalities=mods).tolist()
    return out


def counts(radii: Dict[str, Any]) -> torch.Tensor:
    """Per space/set key of ``radii`` (in order): the clips whose bound exceeds each radius of RADII, then n."""
    keys = [k for k in radii if "/" in k]
    return torch.stack([torch.stack([(torch.tensor(radii[k], dtype=torch.float64) > r).sum().double() for r in RADII]
                                    + [torch.tensor(float(len(radii[k])), dtype=torch.float64)]) for k in keys])


def summarise(keys: List[str], hits: torch.Tensor) -> List[Dict[str, Any]]:
    """One row per space and perturbed set (``keys``): the certified accuracy at every radius of RADII from
    ``hits`` (``counts``' rows, possibly summed over processes)."""
    rows = []
    for key, hit in zip(keys, hits.tolist()):
        space, which = key.split("/")
        n = int(hit[-1])
        rows.append({"space": space, "perturbed": which, "estimate": space == "input", "n": n,
                     **{f"r={r:g}": (hit[j] / n if n else float("nan")) for j, r in enumerate(RADII)}})
    return rows


def run_crmt_certified(model: nn.Module, cfg: RunConfig, ctx: RunContext, label: str, loader) -> None:
    """The CRMT bound of every evaluated clip into the evaluation folder (a no-op for any head but crmt)."""
    if crmt_head(model) is None:
        return
    radii = crmt_radii(model, loader, ctx.device)
    keys = [k for k in radii if "/" in k]
    rows = summarise(keys, du.all_reduce_sum(counts(radii).to(ctx.device)).cpu())
    ctx.record["crmt_certified"] = rows
    if ctx.is_main:
        atomic_write_text(eval_file(ctx.out_dir, "crmt_certified"),
                          json.dumps({"model": label, "radii": list(RADII), "rows": rows, "clips": radii}, indent=1))
    for r in rows:
        log.info("%s: CRMT %s bound, %s perturbed%s: %s", label, r["space"], r["perturbed"],
                 " (ESTIMATE: empirical Lipschitz constants)" if r["estimate"] else "",
                 ", ".join(f"{k} {v:.3f}" for k, v in r.items() if k.startswith("r=")))
