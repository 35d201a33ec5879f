"""Certification of a trained model over the evaluated list (main_certify.py): for each --cert_modalities setting
(randomise the audio, the visual input, or both), each clip's certificate by --cert_method (models/certify.py:
Gaussian smoothing, Cohen et al. 2019; models/mmcert.py: MMCert sub-sampling, Wang et al. 2024).

Writes into the evaluation folder: ``certify.json`` (the settings, then per setting every clip's label, prediction
or abstention (-1), the probability bound, its joint radius and per-modality radii), ``certified.{md,csv}`` (certified
accuracy at the report's radii, reporting/certify.py) and ``certified_accuracy.png`` (the curves with the sample
counts and confidence level in the caption). eval.json holds the table's rows under ``certify``.

Each clip's draws come from a generator seeded by SHA-256 of (--seed, setting, clip id): a clip's certificate does
not depend on the batch or on the other clips, and a rerun gives the same numbers on the same device.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any, Dict, List, Mapping, Tuple

import torch
import torch.nn as nn

from models.certify import CERTIFIERS, Certifier
from models.fusion import FUSIONS
from pipeline.attack_eval import draw_after_results, eval_loader
from pipeline.config import RunConfig
from pipeline.context import RunContext, published
from pipeline.preflight import eval_weights
from pipeline.train import load_for_eval
from reporting.certify import caption, certified_table, plot_certified_accuracy
from utils import distributed as du
from utils.errors import UsageError
from utils.fileio import atomic_write_csv, atomic_write_text
from utils.rundir import eval_file

log = logging.getLogger(__name__)


def setting_modalities(setting: str) -> Tuple[str, ...]:
    """The inputs a --cert_modalities setting randomises."""
    return ("audio", "visual") if setting == "both" else (setting,)


def build_certifier(model: nn.Module, cfg: RunConfig, setting: str) -> Certifier:
    """The --cert_method certifier of one setting around ``model``."""
    mods = setting_modalities(setting)
    cls = CERTIFIERS.get(cfg.cert_method)
    if cfg.cert_method == "smoothing":
        return cls(model, {m: getattr(cfg, f"sigma_{m}") for m in mods}, cfg.cls_num, batch=cfg.cert_batch)
    keep = {"visual": cfg.keep_frames, "audio": cfg.keep_segments}
    return cls(model, {m: keep[m] for m in mods}, cfg.cls_num, audio_segments=cfg.audio_segments,
               batch=cfg.cert_batch)


def clip_generator(seed: int, setting: str, clip_id: str, device: torch.device) -> torch.Generator:
    """The generator of one clip's draws: seeded by SHA-256 of "<seed>:<setting>:<clip id>"."""
    digest = hashlib.sha256(f"{seed}:{setting}:{clip_id}".encode()).hexdigest()
    return torch.Generator(device=device).manual_seed(int(digest[:15], 16))


def params(cfg: RunConfig) -> Dict[str, Any]:
    """The settings a certify record states (and its caption prints)."""
    return {"n0": cfg.cert_n0, "n": cfg.cert_n, "alpha": cfg.cert_alpha, "sigma_audio": cfg.sigma_audio,
            "sigma_visual": cfg.sigma_visual, "keep_frames": cfg.keep_frames, "num_frames": cfg.num_frames,
            "keep_segments": cfg.keep_segments, "audio_segments": cfg.audio_segments, "batch": cfg.cert_batch,
            "seed": cfg.seed}


def certify_clips(model: nn.Module, cfg: RunConfig, device: torch.device, loader) -> Dict[str, Any]:
    """Every clip of ``loader`` certified in every setting: the certify record (see the module docstring)."""
    inputs_of = FUSIONS.get(cfg.arch_classifier).modalities
    settings = tuple(dict.fromkeys(cfg.cert_modalities))
    certifiers = {s: build_certifier(model, cfg, s) for s in settings}
    blocks: Dict[str, Dict[str, Any]] = {s: {"modalities": list(setting_modalities(s)), "clips": []}
                                         for s in settings}
    for batch in loader:
        labels = batch["label"].tolist()
        for i, clip_id in enumerate(batch["id"]):
            inputs = {m: batch[m][i:i + 1].to(device) for m in inputs_of}
            for s, cert in certifiers.items():
                t0 = time.time()
                c = cert.certify(inputs, cfg.cert_n0, cfg.cert_n, cfg.cert_alpha,
                                 clip_generator(cfg.seed, s, clip_id, device))
                blocks[s]["clips"].append({"id": clip_id, "label": labels[i], "prediction": c.prediction,
                                           "guess": c.guess, "count": c.count, "n": c.n, "p_lower": c.p_lower,
                                           "radius": c.radius, "radii": c.radii,
                                           "seconds": round(time.time() - t0, 3)})
                log.info("%s [%s]: label %d, %s, p_A >= %.4f, radius %.4g %s", clip_id, s, labels[i],
                         "abstain" if c.prediction < 0 else f"class {c.prediction}", c.p_lower, c.radius, c.radii)
    return {"method": cfg.cert_method, "params": params(cfg), "report_radii": list(cfg.cert_radii),
            "categories": list(cfg.categories), "settings": blocks}


def write_certify(record: Mapping[str, Any], ctx: RunContext, title: str) -> List[Dict[str, Any]]:
    """certify.json, certified.{md,csv} and the plot into the evaluation folder; returns the table's rows."""
    out = ctx.out_dir
    atomic_write_text(eval_file(out, "certify"), json.dumps(record, indent=1))
    table, rows = certified_table(record)
    atomic_write_text(eval_file(out, "certify_table", ".md"), f"{caption(record)}\n\n{table.to_markdown()}")
    keys = list(rows[0]) if rows else []
    atomic_write_csv(eval_file(out, "certify_table", ".csv"), keys, [[r[k] for k in keys] for r in rows])
    draw_after_results(ctx, "certified-accuracy plot",
                       lambda: plot_certified_accuracy(record, eval_file(out, "certify_plot"), title))
    print(caption(record))
    print(table.to_markdown())
    return rows


def run_certification(model: nn.Module, cfg: RunConfig, ctx: RunContext, label: str) -> None:
    """Certify the evaluated list and write the results (one process: the draws are per clip)."""
    if du.world_size() > 1:
        raise UsageError("NPROC", "main_certify.py runs in one process (its draws are per clip); launch it without "
                         "torchrun")
    record = certify_clips(model, cfg, ctx.device, eval_loader(cfg, ctx.device))
    ctx.record["certify"] = write_certify(record, ctx, f"{label}: certified accuracy ({cfg.cert_method})")


def execute_certify(model: nn.Module, cfg: RunConfig, ctx: RunContext, label: str) -> None:
    """Load the evaluated checkpoint, certify, and publish the evaluation folder (removed on any failure)."""
    with published(ctx):
        load_for_eval(model, cfg, ctx, eval_weights(cfg))
        run_certification(model, cfg, ctx, label)

