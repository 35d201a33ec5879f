"""Adaptive evaluation of a defended model (main_defense.py --adaptive).

The attack as the paper ran it (PGD through the solver), then FGSM and PGD through the other gradient mode
(BPDA or unrolled), PGD with random restarts, APGD-CE and APGD-T through both, and the black-box Square
attack (``--adaptive_attacks`` picks a subset; the paper's attack always runs); the robust accuracy is the
per-sample worst case over all of them, and robustness.* names the attacks it was taken over. Writes
adaptive_results.*, robustness.* and gradient_check.json into the eval folder.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.attack_eval import PerSampleCorrect, attack_grid
from attacks import ATTACKS
from attacks.sanity import vanishing_gradient
from pipeline.config import RunConfig, adaptive_families
from pipeline.context import RunContext
from pipeline.defense import solver_counts
from reporting.per_sample import WORST_CASE, row_key, write_per_sample
from reporting.results import markdown_table, write_results
from utils import distributed as du
from utils.fileio import atomic_write_text
from utils.modes import model_mode
from utils.rundir import EVAL_FILES

log = logging.getLogger(__name__)


def _set_grad_mode(model: nn.Module, mode: str) -> None:
    if not hasattr(model, "set_grad_mode"):
        raise TypeError("--adaptive needs a defended model (models.defense.DefendedModel)")
    model.set_grad_mode(mode)


def _per_sample_correct(model, loader, attack: str, eps: Dict[str, float], ctx, common: Dict[str, Any],
                        **overrides) -> Dict[str, Any]:
    """One attack configuration on one eps: its row plus per-sample correctness keyed by dataset index."""
    keep = PerSampleCorrect()
    kw = {**common, **overrides}
    row = attack_grid(model, loader, [attack], [eps], ctx.device, on_batch=keep, **kw)[0]
    return {"row": row, "correct": keep.correct[keep.key(attack, eps)]}


def _solver_delta(before: Dict[str, Any] | None, after: Dict[str, Any] | None) -> Dict[str, int]:
    """The sparse-coding rows solved by one eps's adaptive attacks (all modalities; the paper's attack reused
    from the grid solves nothing here): how many, and how many ended uncertified at the cap."""
    if before is None or after is None:
        return {}
    return {k: sum(after[k].values()) - sum(before[k].values()) for k in ("solver_rows", "solver_uncertified_rows")}


def gradient_norms(model: nn.Module, loader, device: torch.device, max_batches: int = 2) -> Dict[str, float]:
    """Per-modality fraction of samples whose input gradient of the CE loss vanishes (the threshold of
    ``attacks.sanity.vanishing_gradient``, shared with the grid's flag)."""
    zero = {m: 0 for m in model.modalities}
    n = 0
    with model_mode(model, training=False), torch.autocast(device.type, enabled=False):
        for i, batch in enumerate(loader):
            if i >= max_batches:
                break
            inputs = {m: batch[m].to(device).requires_grad_(True) for m in model.modalities}
            loss = F.cross_entropy(model(**inputs), batch["label"].to(device), reduction="sum")
            grads = torch.autograd.grad(loss, list(inputs.values()))
            for m, g in zip(inputs, grads):
                zero[m] += int(vanishing_gradient(g).sum())
            n += batch["label"].numel()
    return {m: z / max(n, 1) for m, z in zero.items()}


def run_adaptive(model: nn.Module, cfg: RunConfig, ctx: RunContext, label: str, grid_out: Dict[str, Any]
                 ) -> Dict[str, Any]:
    """The paper's attack plus adaptive ones on every eps of ``cfg.adaptive_grid``; robust accuracy is the
    per-sample worst case over all of them. Flags gradient masking (FGSM beating PGD, restarts mattering,
    zero gradients). ``grid_out`` is what ``run_attack_eval`` returned (its PGD rows are the paper's attack)."""
    loader, common = grid_out["loader"], grid_out["common"]
    paper = grid_out["per_sample"] if "pgd" in cfg.attacks else None
    paper_rows = grid_out["rows"]
    grid = [dict(e) for e in cfg.adaptive_grid]
    base_mode = model.grad_mode
    restarts = cfg.restarts
    other = "bpda" if base_mode == "unrolled" else "unrolled"
    paper_name = f"paper: pgd ({base_mode})"
    families = adaptive_families(cfg.adaptive_attacks)
    too_few = [f for f, _ in families if f in ATTACKS.names() and ATTACKS.get(f).min_classes > cfg.cls_num]
    if too_few:  # only with 'all': an attack named on too few classes is refused by pipeline/config.py
        log.warning("--adaptive: %s need(s) more classes than this run's %d; left out", ", ".join(too_few),
                    cfg.cls_num)
        families = tuple((f, m) for f, m in families if f not in too_few)
    rs = {"random_start": True, "restarts": restarts}
    configs = [  # (family, name, attack, grad mode, overrides); the paper's attack = the grid's PGD rows
        (None, paper_name, "pgd", base_mode, {}),
        ("fgsm", f"fgsm ({other})", "fgsm", other, {}),
        ("pgd", f"pgd ({other})", "pgd", other, {}),
        ("pgd_restarts", f"pgd ({base_mode}, random start x{restarts})", "pgd", base_mode, rs),
        ("pgd_restarts", f"pgd ({other}, random start x{restarts})", "pgd", other, rs),
        *[(a, f"{a} ({mode})", a, mode, {}) for a in ("apgd-ce", "apgd-t") for mode in (base_mode, other)],
        ("square", "square (black box)", "square", base_mode, {}),  # no gradients: one gradient mode is enough
    ]
    configs = [c[1:] for c in configs
               if c[0] is None or any(f == c[0] and m in (None, c[3]) for f, m in families)]
    summary: List[Dict[str, Any]] = []
    detail: List[Dict[str, Any]] = []
    worst_by_clip: Dict[Any, Dict[int, bool]] = {}
    try:
        for eps in grid:
            if all(v == 0 for v in eps.values()):
                continue
            results = {}
            before = solver_counts(model)
            for cname, attack, mode, over in configs:
                key = PerSampleCorrect.key(attack, eps)
                if cname == paper_name and paper is not None and key in paper.correct and not common["random_start"]:
                    row = dict(next(r for r in paper_rows if r["attack"] == "pgd" and
                                    PerSampleCorrect.key("pgd", {"audio": r["eps_audio"], "visual": r["eps_visual"]}) == key))
                    res = {"row": row, "correct": paper.correct[key]}
                else:
                    _set_grad_mode(model, mode)
                    res = _per_sample_correct(model, loader, attack, eps, ctx, common, **over)
                res["row"].update({"model": label, "config": cname, "grad": mode})
                results[cname] = res
                detail.append(res["row"])
            keys = sorted(results[paper_name]["correct"])
            worst = torch.tensor([all(r["correct"][k] for r in results.values()) for k in keys], dtype=torch.float64)
            worst_by_clip[row_key(WORST_CASE, eps.get("audio", 0.0), eps.get("visual", 0.0))] = {
                int(k): bool(w) for k, w in zip(keys, worst.tolist())}
            counts = du.all_reduce_sum(torch.tensor([worst.sum().item(), float(len(keys))], dtype=torch.float64))
            acc = {c: results[c]["row"]["adv_acc"] for c in results}  # under DDP: already summed rows
            flags = []
            pgd_other = acc.get(f"pgd ({other})", acc[paper_name])
            if f"fgsm ({other})" in acc and acc[f"fgsm ({other})"] < min(acc[paper_name], pgd_other):
                flags.append("FGSM beats PGD: gradient masking likely")
            for mode, single in ((base_mode, paper_name), (other, f"pgd ({other})")):
                rs_name = f"pgd ({mode}, random start x{restarts})"
                if rs_name in acc and single in acc and acc[rs_name] < acc[single]:
                    flags.append(f"random starts lower PGD ({mode}) accuracy: the single run was not the strongest")
            white = min(a for c, a in acc.items() if not c.startswith("square"))
            if "square (black box)" in acc and acc["square (black box)"] < white:
                flags.append("black box beats white box: Square below every gradient attack (gradient masking likely)")
            if acc[paper_name] > counts[0].item() / counts[1].item():
                flags.append("the paper's attack overestimates robustness")
            summary.append({"model": label, "eps_audio": eps.get("audio", 0.0), "eps_visual": eps.get("visual", 0.0),
                            "clean_acc": results[paper_name]["row"]["clean_acc"],
                            "paper_attack_acc": acc[paper_name], **{f"acc[{c}]": a for c, a in acc.items()},
                            "robust_acc": counts[0].item() / counts[1].item(), "n_samples": int(counts[1].item()),
                            "attacks": "paper pgd, " + ", ".join(f if m is None else f"{f}:{m}" for f, m in families),
                            **_solver_delta(before, solver_counts(model)),
                            "flags": "; ".join(flags) or "none"})
        _set_grad_mode(model, "bpda")
        zero = gradient_norms(model, loader, ctx.device)
        _set_grad_mode(model, "unrolled")
        zero_u = gradient_norms(model, loader, ctx.device)
    finally:
        _set_grad_mode(model, base_mode)
    vanish = {f"zero_grad_fraction_{m}[{g}]": v for g, z in (("bpda", zero), ("unrolled", zero_u)) for m, v in z.items()}
    if ctx.is_main:
        write_results(detail, ctx.out_dir, name=EVAL_FILES["adaptive"])
        write_results(summary, ctx.out_dir, name=EVAL_FILES["robustness"])
        atomic_write_text(ctx.out_dir / EVAL_FILES["gradient_check"], json.dumps(vanish, indent=2))
        if du.world_size() == 1:  # the grid's per-clip rows plus the adaptive worst case
            write_per_sample({**grid_out["per_sample"].correct, **worst_by_clip}, ctx.out_dir / EVAL_FILES["per_sample"])
        print(f"\n## {label}: robust accuracy (per-sample worst case over all attacks)\n")
        print(markdown_table(summary, ["model", "eps_audio", "eps_visual", "clean_acc", "paper_attack_acc",
                                       "robust_acc", "flags"]))
        if any(v > 0.5 for v in vanish.values()):
            log.warning("gradients vanish for most samples (%s): gradient masking", vanish)
    return {"summary": summary, "detail": detail, "zero_grad": vanish}
