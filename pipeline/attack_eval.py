"""Attack evaluation of a loaded model, shared by main_attack.py and main_defense.py.

Writes into the run folder: results.{json,csv,md} (the eps grid x attacks), optionally sweep_results.* and
acc_vs_eps.png (--sweep), cosine_hist.png (audio-visual models), examples/index.html (--save_examples N),
and for defended models (--adaptive) robustness.{json,md}: the attack as the paper ran it, adaptive
attacks (BPDA, unrolled solver gradients, PGD with random restarts), the per-sample worst case over all of
them as the robust accuracy, and gradient-masking flags.
"""
from __future__ import annotations

import argparse
import json
import logging
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import distributed as du
from utils.report import markdown_table, plot_accuracy_vs_eps, plot_cosine_hist, write_results

log = logging.getLogger(__name__)

ALL_ATTACKS = ("fgsm", "pgd", "mim")
TABLE_COLUMNS = ["model", "attack", "eps_audio", "eps_visual", "clean_acc", "adv_acc", "success_rate",
                 "max_delta_audio", "max_delta_visual", "snr_db_audio", "psnr_db_visual", "n_samples", "seconds"]


def parse_attack_names(text: str) -> List[str]:
    """--attack_type: fgsm, pgd, mim, all, or a comma list of those."""
    from attacks import list_attacks

    names = list(ALL_ATTACKS) if text == "all" else [t.strip() for t in text.split(",") if t.strip()]
    valid = list_attacks()
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise SystemExit(f"error: --attack_type {text!r}: unknown attack {bad or text!r}; valid: all, none, "
                         f"{', '.join(valid)} or a comma list")
    return names


def _reducers():
    if du.is_distributed():
        return du.all_reduce_sum, du.all_reduce_max
    return None, None


def _grid(args: argparse.Namespace):
    from attacks.metrics import parse_eps

    if args.eps is None:
        return None  # the paper grid (attacks.metrics.PAPER_EPS_GRID)
    grid = []
    for s in args.eps:
        try:
            grid.append(parse_eps(s))
        except ValueError as e:
            raise SystemExit(f"error: --eps {s!r}: {e}") from e
    return grid


class ExampleCollector:
    """Keeps the first N test clips of one attack row (clean vs adversarial), for the HTML page and the
    clean-vs-attacked feature cosine histogram."""

    def __init__(self, model: nn.Module, categories: Sequence[str], n_examples: int, attack: str,
                 attacked: Sequence[str], sample_rate: int) -> None:
        self.model, self.categories, self.n = model, list(categories), n_examples
        self.attack, self.attacked, self.rate = attack, tuple(attacked), sample_rate
        self.examples: List[Dict[str, Any]] = []
        self.cos_clean: List[torch.Tensor] = []
        self.cos_adv: List[torch.Tensor] = []
        mods = getattr(model, "modalities", ())
        self.av = "audio" in mods and "visual" in mods
        self.localize = getattr(model, "arch", {}).get("arch_classifier") == "attention" and hasattr(model, "localize")

    def __call__(self, info: Dict[str, Any]) -> None:
        if info["attack"] != self.attack or tuple(info["attacked"]) != self.attacked:
            return
        inputs, adv = info["inputs"], info["adv"]
        if self.av:
            with torch.no_grad():
                fc, fa = self.model.features(**inputs), self.model.features(**adv)
            if fc["audio"].shape[1] == fc["visual"].shape[1]:
                self.cos_clean.append(F.cosine_similarity(fc["audio"], fc["visual"], dim=1).cpu())
                self.cos_adv.append(F.cosine_similarity(fa["audio"], fa["visual"], dim=1).cpu())
        if len(self.examples) >= self.n:
            return
        loc_c = loc_a = None
        if self.localize:
            with torch.no_grad():
                loc_c, loc_a = self.model.localize(**inputs), self.model.localize(**adv)
        for i in range(info["labels"].numel()):
            if len(self.examples) >= self.n:
                break
            ex: Dict[str, Any] = {
                "id": info["batch"]["id"][i], "label": self.categories[int(info["labels"][i])],
                "pred_clean": self.categories[int(info["clean_pred"][i])],
                "pred_adv": self.categories[int(info["adv_pred"][i])]}
            if "visual" in inputs:
                v_c, v_a = inputs["visual"][i], adv["visual"][i]
                if v_c.dim() == 4:  # (3, T, H, W): show the centre frame
                    v_c, v_a = v_c[:, v_c.shape[1] // 2], v_a[:, v_a.shape[1] // 2]
                ex["frame_clean"], ex["frame_adv"] = v_c.detach().cpu().clamp(0, 1), v_a.detach().cpu().clamp(0, 1)
            if "audio" in inputs:
                ex["audio_clean"] = inputs["audio"][i].detach().cpu().clamp(-1, 1)
                ex["audio_adv"] = adv["audio"][i].detach().cpu().clamp(-1, 1)
                ex["sample_rate"] = self.rate
            if loc_c is not None:
                t = loc_c.shape[1] // 2
                ex["loc_clean"], ex["loc_adv"] = loc_c[i, t].cpu().numpy(), loc_a[i, t].cpu().numpy()
            self.examples.append(ex)


class PerSampleCorrect:
    """Per (attack, eps) row, whether each test sample (by dataset index) is still classified correctly."""

    def __init__(self) -> None:
        self.correct: Dict[tuple, Dict[int, bool]] = {}

    @staticmethod
    def key(attack: str, eps: Dict[str, float]) -> tuple:
        return attack, float(eps.get("audio", 0.0)), float(eps.get("visual", 0.0))

    def __call__(self, info: Dict[str, Any]) -> None:
        d = self.correct.setdefault(self.key(info["attack"], info["eps"]), {})
        ok = (info["adv_pred"] == info["labels"]).cpu().tolist()
        for idx, o in zip(info["batch"]["index"].tolist(), ok):
            d[int(idx)] = bool(o)


def _pick_example_row(names: Sequence[str], grid, modalities: Sequence[str]):
    """The row shown on the examples page: the strongest attack on every modality the model reads."""
    from attacks.metrics import PAPER_EPS_GRID

    attack = "pgd" if "pgd" in names else names[0]
    grid = PAPER_EPS_GRID if grid is None else grid
    best, best_n = None, 0
    for eps in grid:
        attacked = tuple(m for m in ("audio", "visual") if eps.get(m, 0) > 0 and m in modalities)
        if len(attacked) > best_n:
            best, best_n = attacked, len(attacked)
    return attack, best


def run_attack_eval(model: nn.Module, args: argparse.Namespace, ctx, label: str, clean: Dict[str, Any],
                    adaptive: bool = False) -> List[Dict[str, Any]]:
    """The attack grid (and the sweep, plots, examples, adaptive evaluation) on the test list."""
    from attacks.evaluate import evaluate_attack_grid
    from utils.runner import build_dataset, build_loader

    names, grid = parse_attack_names(args.attack_type), _grid(args)
    loader = build_loader(build_dataset(args, "test", train_mode=False), args, train=False)
    if args.max_eval_batches:
        loader = _take(loader, args.max_eval_batches)
    reduce, reduce_max = _reducers()
    mods = tuple(getattr(model, "modalities", ()))
    ex_attack, ex_mods = _pick_example_row(names, grid, mods)
    collector = ExampleCollector(model, args.categories, args.save_examples, ex_attack, ex_mods or (), args.audRate)
    common = dict(steps=args.attack_steps, eps_unit=args.eps_unit, random_start=args.random_start,
                  restarts=args.restarts, seed=args.seed, reduce=reduce, reduce_max=reduce_max,
                  progress=not args.no_progress)
    per_sample = PerSampleCorrect()

    def on_batch(info: Dict[str, Any]) -> None:
        collector(info)
        per_sample(info)

    rows = evaluate_attack_grid(model, loader, names, grid, ctx.device, on_batch=on_batch, **common)
    for r in rows:
        r["model"] = label
    if ctx.is_main:
        write_results(rows, ctx.run_dir, name="results")
        print(f"\n## {label}: clean test accuracy {clean['acc'] * 100:.2f}% on {clean['n']} clips\n")
        print(markdown_table(rows, [c for c in TABLE_COLUMNS if c in rows[0]]))
        for r in rows:
            ctx.metrics.log("attack", 0, **{k: v for k, v in r.items() if isinstance(v, (int, float))})
    _write_plots_and_examples(collector, args, ctx, label)
    if args.sweep:
        # the sweep uses the strongest listed attack (pgd if given) and writes its own files
        run_sweep(model, loader, args, ctx, label, "pgd" if "pgd" in names else names[-1], common)
    if adaptive:
        run_adaptive(model, loader, args, ctx, label, common, per_sample if "pgd" in names else None, rows)
    return rows


def _take(loader, n: int):
    class _Limited:
        def __init__(self, inner):
            self.inner, self.sampler = inner, getattr(inner, "sampler", None)

        def __iter__(self):
            for i, b in enumerate(self.inner):
                if i >= n:
                    break
                yield b

        def __len__(self):
            return min(n, len(self.inner))

    return _Limited(loader)


def _write_plots_and_examples(collector: ExampleCollector, args, ctx, label: str) -> None:
    if collector.cos_clean and du.world_size() == 1:
        cc, ca = torch.cat(collector.cos_clean), torch.cat(collector.cos_adv)
        plot_cosine_hist(cc.numpy(), ca.numpy(), ctx.run_dir / "cosine_hist.png",
                         f"{label}: cos(f_audio, f_visual), clean vs {collector.attack} on "
                         f"{'+'.join(collector.attacked)}")
    if args.save_examples and ctx.is_main:
        if not collector.examples:
            raise RuntimeError("--save_examples: no attacked row to take examples from (every eps is 0?)")
        from utils.report import write_examples_page

        page = write_examples_page(collector.examples, ctx.run_dir / "examples",
                                   f"{label}: {collector.attack} on {'+'.join(collector.attacked)}")
        log.info("examples page: %s", page)


def run_sweep(model, loader, args, ctx, label: str, attack: str, common: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Accuracy vs eps for audio-only, visual-only and both (each modality gets eps), one attack."""
    from attacks.evaluate import evaluate_attack_grid

    mods = tuple(getattr(model, "modalities", ()))
    grid = [{"audio": 0.0, "visual": 0.0}]
    for e in args.sweep_eps:
        if "audio" in mods:
            grid.append({"audio": e, "visual": 0.0})
        if "visual" in mods:
            grid.append({"audio": 0.0, "visual": e})
        if len(mods) == 2:
            grid.append({"audio": e, "visual": e})
    rows = evaluate_attack_grid(model, loader, [attack], grid, ctx.device, **common)
    for r in rows:
        r["model"] = label
    if ctx.is_main:
        write_results(rows, ctx.run_dir, name="sweep_results")
        plot_accuracy_vs_eps(rows, ctx.run_dir / "acc_vs_eps.png", f"{label}: {attack} accuracy vs eps")
    return rows


# ----------------------------------------------------------------------------------------------------------
# Adaptive evaluation of a defended model


def _set_grad_mode(model: nn.Module, mode: str) -> None:
    if not hasattr(model, "set_grad_mode"):
        raise TypeError("--adaptive needs a defended model (models.defense.DefendedModel)")
    model.set_grad_mode(mode)


def _per_sample_correct(model, loader, attack: str, eps: Dict[str, float], ctx, common: Dict[str, Any],
                        **overrides) -> Dict[str, Any]:
    """One attack configuration on one eps: its row plus per-sample correctness keyed by dataset index."""
    from attacks.evaluate import evaluate_attack_grid

    keep = PerSampleCorrect()
    kw = {**common, **overrides}
    row = evaluate_attack_grid(model, loader, [attack], [eps], ctx.device, on_batch=keep, **kw)[0]
    return {"row": row, "correct": keep.correct[keep.key(attack, eps)]}


def gradient_norms(model: nn.Module, loader, device: torch.device, max_batches: int = 2) -> Dict[str, float]:
    """Per-modality fraction of samples whose input gradient of the CE loss is (numerically) zero."""
    was = model.training
    model.eval()
    zero = {m: 0 for m in model.modalities}
    n = 0
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        inputs = {m: batch[m].to(device).requires_grad_(True) for m in model.modalities}
        loss = F.cross_entropy(model(**inputs), batch["label"].to(device), reduction="sum")
        grads = torch.autograd.grad(loss, list(inputs.values()))
        for m, g in zip(inputs, grads):
            zero[m] += int((g.flatten(1).abs().amax(1) < 1e-12).sum())
        n += batch["label"].numel()
    model.train(was)
    return {m: z / max(n, 1) for m, z in zero.items()}


def run_adaptive(model: nn.Module, loader, args, ctx, label: str, common: Dict[str, Any],
                 paper: Optional[PerSampleCorrect] = None, paper_rows: Sequence[Dict[str, Any]] = ()
                 ) -> Dict[str, Any]:
    """The paper's attack plus adaptive ones on every eps of the grid; robust accuracy is the per-sample
    worst case over all of them. Flags gradient masking (FGSM beating PGD, restarts mattering, zero
    gradients)."""
    from attacks.metrics import PAPER_EPS_GRID

    grid = _grid(args) or PAPER_EPS_GRID
    if args.adaptive_eps:
        from attacks.metrics import parse_eps

        grid = [parse_eps(e) for e in args.adaptive_eps]
    base_mode = model.grad_mode
    restarts = args.restarts
    other = "bpda" if base_mode == "unrolled" else "unrolled"
    paper_name = f"paper: pgd ({base_mode})"
    configs = [  # (name, attack, grad mode, overrides); the paper's attack = the grid's PGD rows
        (paper_name, "pgd", base_mode, {}),
        (f"fgsm ({other})", "fgsm", other, {}),
        (f"pgd ({other})", "pgd", other, {}),
        (f"pgd ({base_mode}, random start x{restarts})", "pgd", base_mode,
         {"random_start": True, "restarts": restarts}),
        (f"pgd ({other}, random start x{restarts})", "pgd", other, {"random_start": True, "restarts": restarts}),
    ]
    summary: List[Dict[str, Any]] = []
    detail: List[Dict[str, Any]] = []
    try:
        for eps in grid:
            if all(v == 0 for v in eps.values()):
                continue
            results = {}
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
            counts = du.all_reduce_sum(torch.tensor([worst.sum().item(), float(len(keys))], dtype=torch.float64))
            acc = {c: results[c]["row"]["adv_acc"] for c in results}  # under DDP: already summed rows
            flags = []
            if acc[f"fgsm ({other})"] < min(acc[paper_name], acc[f"pgd ({other})"]):
                flags.append("FGSM beats PGD: gradient masking likely")
            for mode, single in ((base_mode, paper_name), (other, f"pgd ({other})")):
                if acc[f"pgd ({mode}, random start x{restarts})"] < acc[single]:
                    flags.append(f"random starts lower PGD ({mode}) accuracy: the single run was not the strongest")
            if acc[paper_name] > counts[0].item() / counts[1].item():
                flags.append("the paper's attack overestimates robustness")
            summary.append({"model": label, "eps_audio": eps.get("audio", 0.0), "eps_visual": eps.get("visual", 0.0),
                            "clean_acc": results[paper_name]["row"]["clean_acc"],
                            "paper_attack_acc": acc[paper_name], **{f"acc[{c}]": a for c, a in acc.items()},
                            "robust_acc": counts[0].item() / counts[1].item(), "n_samples": int(counts[1].item()),
                            "flags": "; ".join(flags) or "none"})
        _set_grad_mode(model, "bpda")
        zero = gradient_norms(model, loader, ctx.device)
        _set_grad_mode(model, "unrolled")
        zero_u = gradient_norms(model, loader, ctx.device)
    finally:
        _set_grad_mode(model, base_mode)
    vanish = {f"zero_grad_fraction_{m}[{g}]": v for g, z in (("bpda", zero), ("unrolled", zero_u)) for m, v in z.items()}
    if ctx.is_main:
        write_results(detail, ctx.run_dir, name="adaptive_results")
        write_results(summary, ctx.run_dir, name="robustness")
        (ctx.run_dir / "gradient_check.json").write_text(json.dumps(vanish, indent=2))
        print(f"\n## {label}: robust accuracy (per-sample worst case over all attacks)\n")
        print(markdown_table(summary, ["model", "eps_audio", "eps_visual", "clean_acc", "paper_attack_acc",
                                       "robust_acc", "flags"]))
        if any(v > 0.5 for v in vanish.values()):
            log.warning("gradients vanish for most samples (%s): gradient masking", vanish)
    return {"summary": summary, "detail": detail, "zero_grad": vanish}
