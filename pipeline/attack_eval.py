"""Attack evaluation of a loaded model, shared by main_attack.py and main_defense.py.

Writes into the evaluation folder (utils/rundir.py names every file): results.{json,csv,md} (the eps grid x
attacks), per_sample.json (each clip's correctness per row, for the report's paired tests), attack_choices.json
(desync's shift and sparse_time's perturbed segments per clip, reporting/attack_choices.py), optionally
sweep_results.* and acc_vs_eps.png (--sweep), cosine_hist.png (audio-visual models) and examples/index.html
(--save_examples N). Adaptive evaluation of a defended model is pipeline/adaptive.py's.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from attacks import ATTACKS, list_attacks, parse_attack_args, parse_norm
from attacks.segments import frames_of
from attacks.evaluate import GRID_FLAGS, evaluate_attack_grid
from models.av_model import av_cosine
from pipeline.build import build_dataset, build_loader
from pipeline.config import RunConfig
from pipeline.context import RunContext
from pipeline.preflight import eval_weights
from pipeline.transfer import load_source_model
from pipeline.universal import universal_options
from reporting.attack_choices import ChoiceCollector, write_choices
from reporting.examples_page import write_examples_page
from reporting.plots import plot_accuracy_vs_eps, plot_cosine_hist
from reporting.per_sample import write_per_sample
from reporting.results import markdown_table, write_results
from utils import distributed as du
from utils.rundir import EVAL_FILES

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["model", "transfer_from", "attack", "eps_audio", "eps_visual", "norm_audio", "norm_visual", "clean_acc", "adv_acc",
                 "success_rate", "max_delta_audio", "max_delta_visual", "snr_db_audio", "psnr_db_visual", "queries",
                 "mean_abs_shift_s", "shifted_share", "segments_chosen", "n_samples", "seconds", "flags"]


def reducers():
    """Sum and max reductions over processes (None without a process group)."""
    if du.is_distributed():
        return du.all_reduce_sum, du.all_reduce_max
    return None, None


def common_attack_options(cfg: RunConfig) -> Dict[str, Any]:
    """Options of evaluate_attack_grid shared by the grid, the sweep and the adaptive attacks."""
    reduce, reduce_max = reducers()
    # each attack's arguments from the flags its class declares (flag_args; those of GRID_FLAGS travel as
    # the grid's own parameters, which the adaptive attacks override), then --attack_args
    given = parse_attack_args(cfg.attack_args)
    options = {name: {**{arg: getattr(cfg, f) for arg, f in ATTACKS.get(name).flag_args.items()
                         if f not in GRID_FLAGS}, **given.get(name, {})} for name in list_attacks()}
    return dict(steps=cfg.attack_steps, eps_unit=cfg.eps_unit, random_start=cfg.random_start,
                restarts=cfg.restarts, seed=cfg.seed, norm=cfg.norm, attack_options=options, reduce=reduce,
                reduce_max=reduce_max, progress=not cfg.no_progress)


def attack_grid(model: nn.Module, loader, names: Sequence[str], grid, device: torch.device, **kw: Any
                ) -> List[Dict[str, Any]]:
    """``evaluate_attack_grid`` in fp32, with autocast disabled whatever the caller's: the paper's budget
    (0.006 x std in normalised units) is below bf16's resolution for many pixels, so a bf16 attack would
    silently lose it (README, "Precision")."""
    with torch.autocast(device.type, enabled=False):
        return evaluate_attack_grid(model, loader, names, grid, device, **kw)


def eval_loader(cfg: RunConfig, device: Optional[torch.device] = None):
    """The loader of the evaluated list (--list_test, else --list_val) with its batches on ``device``, cut to
    --max_eval_batches."""
    loader = build_loader(build_dataset(cfg, cfg.eval_list, train_mode=False), cfg, train=False, device=device)
    return take(loader, cfg.max_eval_batches) if cfg.max_eval_batches else loader


OUTCOMES = ("fooled", "resisted", "wrong on clean")  # per clip of the example row, in the order shown


def example_rank(seed: int, clip_id: str) -> str:
    """The seeded rank of a clip for the examples page (lowest first): SHA-256 of "<seed>:<id>", so the
    choice depends on neither the batch order nor any result."""
    return hashlib.sha256(f"{seed}:{clip_id}".encode()).hexdigest()


def selection_rule(seed: int) -> str:
    """The examples page's description of how its clips were chosen."""
    return (f"Chosen by a fixed rule, not by how they look: every test clip is put in a bucket (its true class, "
            f"and the attack's outcome: fooled = right on clean, wrong when attacked; resisted = right both "
            f"times; wrong on clean). In each bucket the clip with the lowest SHA-256('{seed}:<clip id>') is kept "
            f"(seed {seed}). Each class offers two clips, its fooled and its resisted one (a class without one of them "
            f"offers its wrong-on-clean clip instead); odd-numbered classes offer the resisted one first. The page "
            f"takes one clip per class in class order, then the second ones, until it has N examples.")


class ExampleCollector:
    """Picks the examples page's clips of one attack row (clean vs adversarial) by ``selection_rule``: one
    candidate per (class, outcome) bucket, streamed (only the current best of each bucket is kept), and
    gathers the clean-vs-attacked feature cosines of the row for the histogram."""

    def __init__(self, model: nn.Module, categories: Sequence[str], n_examples: int, attack: str,
                 attacked: Sequence[str], sample_rate: int, norms: Optional[Dict[str, str]] = None,
                 seed: int = 0) -> None:
        self.norms = dict(norms or {})
        self.model, self.categories, self.n, self.seed = model, list(categories), n_examples, seed
        self.attack, self.attacked, self.rate = attack, tuple(attacked), sample_rate
        self.buckets: Dict[Tuple[int, str], Tuple[str, Dict[str, Any]]] = {}
        self.cos_clean: List[torch.Tensor] = []
        self.cos_adv: List[torch.Tensor] = []
        mods = getattr(model, "modalities", ())
        self.av = "audio" in mods and "visual" in mods
        self.localize = bool(getattr(model, "uses_visual_map", False)) and hasattr(model, "localize")

    @property
    def examples(self) -> List[Dict[str, Any]]:
        """The chosen examples: class by class, fooled then resisted (wrong on clean fills a missing one)."""
        per_class: List[List[Dict[str, Any]]] = []
        for c in range(len(self.categories)):
            got = [self.buckets[(c, o)][1] for o in OUTCOMES if (c, o) in self.buckets][:2]
            per_class.append(got[::-1] if c % 2 else got)  # odd classes lead with the resisted clip
        # round-robin over classes so that a small N still covers as many classes (and both outcomes) as it can
        ordered = [exs[k] for k in range(2) for exs in per_class if k < len(exs)]
        return ordered[:self.n]

    def __call__(self, info: Dict[str, Any]) -> None:
        if info["attack"] != self.attack or tuple(info["attacked"]) != self.attacked:
            return
        inputs, adv = info["inputs"], info["adv"]
        if self.av:
            with torch.no_grad():
                cc, ca = av_cosine(self.model.features(**inputs)), av_cosine(self.model.features(**adv))
            if cc is not None:
                self.cos_clean.append(cc.cpu())
                self.cos_adv.append(ca.cpu())
        if not self.n:
            return
        labels, pc, pa = info["labels"].tolist(), info["clean_pred"].tolist(), info["adv_pred"].tolist()
        chosen = []
        for i, (y, c, a) in enumerate(zip(labels, pc, pa)):
            outcome = OUTCOMES[2] if c != y else (OUTCOMES[0] if a != y else OUTCOMES[1])
            rank = example_rank(self.seed, str(info["batch"]["id"][i]))
            key = (int(y), outcome)
            if key not in self.buckets or rank < self.buckets[key][0]:
                chosen.append((i, key, rank, outcome))
        if not chosen:
            return
        loc_c = loc_a = None
        if self.localize:
            with torch.no_grad():
                loc_c, loc_a = self.model.localize(**inputs), self.model.localize(**adv)
        for i, key, rank, outcome in chosen:
            if key in self.buckets and rank >= self.buckets[key][0]:
                continue  # a clip earlier in this batch already won the bucket
            self.buckets[key] = (rank, self._example(info, inputs, adv, i, outcome, loc_c, loc_a))

    def _example(self, info, inputs, adv, i: int, outcome: str, loc_c, loc_a) -> Dict[str, Any]:
        ex: Dict[str, Any] = {
            "id": info["batch"]["id"][i], "label": self.categories[int(info["labels"][i])],
            "pred_clean": self.categories[int(info["clean_pred"][i])],
            "pred_adv": self.categories[int(info["adv_pred"][i])], "metrics": {"attack outcome": outcome},
            **{f"norm_{m}": self.norms[m] for m in self.attacked if m in self.norms}}
        support = {m: frames_of(s[i:i + 1])[0] for m, s in (info.get("support") or {}).items()}
        if support:  # sparse_time: the segments it perturbed, of T
            ex["segments"] = support
            ex["num_segments"] = int(next(iter((info.get("support") or {}).values())).shape[1])
        if info.get("shifts_s") is not None:  # desync: the shift it applied to this clip's audio
            ex["shift_s"] = float(info["shifts_s"][i])
        if "visual" in inputs:
            v_c, v_a = inputs["visual"][i], adv["visual"][i]
            if v_c.dim() == 4:  # (3, T, H, W): the first perturbed frame (sparse_time), else the centre frame
                t = support["visual"][0] if support.get("visual") else v_c.shape[1] // 2
                ex["frame_index"], ex["num_frames"] = int(t), int(v_c.shape[1])
                v_c, v_a = v_c[:, t], v_a[:, t]
            ex["frame_clean"], ex["frame_adv"] = v_c.detach().cpu().clamp(0, 1), v_a.detach().cpu().clamp(0, 1)
        if "audio" in inputs:
            ex["audio_clean"] = inputs["audio"][i].detach().cpu().clamp(-1, 1)
            ex["audio_adv"] = adv["audio"][i].detach().cpu().clamp(-1, 1)
            ex["sample_rate"] = self.rate
        if loc_c is not None:
            t = loc_c.shape[1] // 2
            ex["loc_clean"], ex["loc_adv"] = loc_c[i, t].cpu().numpy(), loc_a[i, t].cpu().numpy()
        return ex


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


def pick_example_row(names: Sequence[str], grid, modalities: Sequence[str]):
    """The row shown on the examples page: the strongest attack on every modality the model reads."""
    attack = "pgd" if "pgd" in names else names[0]
    best, best_n = None, 0
    for eps in grid:
        attacked = tuple(m for m in ("audio", "visual") if eps.get(m, 0) > 0 and m in modalities)
        if len(attacked) > best_n:
            best, best_n = attacked, len(attacked)
    return attack, best


def run_attack_eval(model: nn.Module, cfg: RunConfig, ctx: RunContext, label: str, clean: Dict[str, Any],
                    loader: Optional[Any] = None, clean_preds: Optional[torch.Tensor] = None) -> Dict[str, Any]:
    """The attack grid (and the sweep, plots, examples) on the evaluated list, over ``loader`` (the clean
    pass's, default ``eval_loader``); the grid reuses that pass's ``clean_preds`` when given. Returns the rows
    and the per-sample correctness of every row (adaptive evaluation reuses the paper's PGD rows)."""
    names, grid = list(cfg.attacks), [dict(e) for e in cfg.eps_grid]
    loader = loader if loader is not None else eval_loader(cfg, ctx.device)
    mods = tuple(getattr(model, "modalities", ()))
    ex_attack, ex_mods = pick_example_row(names, grid, mods)
    collector = ExampleCollector(model, cfg.categories, cfg.save_examples, ex_attack, ex_mods or (), cfg.audRate,
                                 parse_norm(cfg.norm), seed=cfg.seed)
    common = common_attack_options(cfg)
    source_info = add_transfer_and_fit_options(common, names, cfg, ctx)
    per_sample = PerSampleCorrect()
    choices = ChoiceCollector()

    def on_batch(info: Dict[str, Any]) -> None:
        collector(info)
        per_sample(info)
        choices(info)

    rows = attack_grid(model, loader, names, grid, ctx.device, on_batch=on_batch, clean_preds=clean_preds, **common)
    for r in rows:
        r["model"] = label
        if source_info is not None:  # each row names the run its inputs were crafted on
            r["transfer_from"] = source_info["run"]
    one_process = du.world_size() == 1  # per-clip outcomes and choices are only complete in one process
    if one_process:
        choices.summarise(rows)
    elif choices.shifts or choices.support:
        log.warning("under torchrun the clips' shifts / perturbed segments are not recorded (attack_choices.json)")
    store = common["attack_options"].get("universal", {}).get("store")
    if getattr(store, "used", None):
        ctx.record["universal"] = store.used
    if ctx.is_main:
        write_results(rows, ctx.out_dir, name=EVAL_FILES["results"])
        if one_process:
            write_per_sample(per_sample.correct, ctx.out_dir / EVAL_FILES["per_sample"])
            if choices.shifts or choices.support:
                write_choices(choices, ctx.out_dir / EVAL_FILES["attack_choices"])
        print(f"\n## {label}: clean accuracy {clean['acc'] * 100:.2f}% on {clean['n']} clips ({cfg.eval_list})\n")
        print(markdown_table(rows, [c for c in TABLE_COLUMNS if any(c in r for r in rows)]))
        for r in rows:
            ctx.metrics.log("attack", 0, **{k: v for k, v in r.items() if isinstance(v, (int, float))})
    write_plots_and_examples(collector, cfg, ctx, label)
    if cfg.sweep:
        # the sweep uses the strongest listed attack (pgd if given) and writes its own files
        run_sweep(model, loader, cfg, ctx, label, "pgd" if "pgd" in names else names[-1], common)
    return {"rows": rows, "per_sample": per_sample, "loader": loader, "common": common}


def add_transfer_and_fit_options(common: Dict[str, Any], names: Sequence[str], cfg: RunConfig,
                                  ctx: RunContext) -> Optional[Dict[str, Any]]:
    """In place on ``common`` (the grid's options): ``source``, the --transfer_from model the attacks are
    crafted on (returns its record, also put in eval.json; None without the flag), and for every attack that
    takes ``fit_data`` (universal) the training list and the delta store of ``pipeline/universal.py``."""
    source_info = None
    if cfg.transfer_from:
        common["source"], source_info = load_source_model(cfg, ctx.device)
        ctx.record["transfer_from"] = source_info
    fitters = [n for n in names if ATTACKS.get(n).takes("fit_data") and ATTACKS.get(n).takes("store")]
    if fitters:
        weights = eval_weights(cfg)
        checkpoint = (source_info["checkpoint"] if source_info else str(weights) if weights.is_file()
                      else cfg.base_weights)
        fit = universal_options(cfg, ctx.run_dir, ctx.out_dir, ctx.device, checkpoint, write=ctx.is_main)
        for n in fitters:
            common["attack_options"][n] = {**fit, **common["attack_options"].get(n, {})}
    return source_info


def take(loader, n: int):
    """``loader`` cut to its first ``n`` batches (keeps ``sampler`` and ``len``)."""
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


def draw_after_results(ctx: RunContext, name: str, draw: Callable[[], Any]) -> None:
    """Draw a plot of results already written: a failure is logged as an error and listed under
    ``plot_errors`` in eval.json, and never loses the evaluation (its folder is still published)."""
    try:
        draw()
    except Exception as e:  # noqa: BLE001 - any plotting failure; the numbers are already on disk
        msg = f"{name} not drawn: {type(e).__name__}: {str(e).strip()[:300]}"
        log.error("%s (the results are written; the evaluation is kept)", msg)
        ctx.record.setdefault("plot_errors", []).append(msg)


def write_plots_and_examples(collector: ExampleCollector, cfg: RunConfig, ctx: RunContext, label: str) -> None:
    """The cosine histogram (audio-visual models, one process) and the examples page."""
    if collector.cos_clean and du.world_size() == 1:
        cc, ca = torch.cat(collector.cos_clean), torch.cat(collector.cos_adv)
        title = f"{label}: cos(f_audio, f_visual), clean vs {collector.attack} on {'+'.join(collector.attacked)}"
        draw_after_results(ctx, EVAL_FILES["cosine_hist"],
                           lambda: plot_cosine_hist(cc.numpy(), ca.numpy(), ctx.out_dir / EVAL_FILES["cosine_hist"],
                                                    title))
    if cfg.save_examples and ctx.is_main:
        if not collector.examples:
            raise RuntimeError("--save_examples: no attacked row to take examples from (every eps is 0?)")
        page = write_examples_page(collector.examples, ctx.out_dir / EVAL_FILES["examples"],
                                   f"{label}: {collector.attack} on {'+'.join(collector.attacked) or 'no budget'}",
                                   selection=selection_rule(collector.seed))
        log.info("examples page: %s", page)


def run_sweep(model: nn.Module, loader, cfg: RunConfig, ctx: RunContext, label: str, attack: str,
              common: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Accuracy vs eps for audio-only, visual-only and both (each modality gets eps), one attack."""
    mods = tuple(getattr(model, "modalities", ()))
    grid = [{"audio": 0.0, "visual": 0.0}]
    for e in cfg.sweep_eps:
        if "audio" in mods:
            grid.append({"audio": e, "visual": 0.0})
        if "visual" in mods:
            grid.append({"audio": 0.0, "visual": e})
        if len(mods) == 2:
            grid.append({"audio": e, "visual": e})
    rows = attack_grid(model, loader, [attack], grid, ctx.device, **common)
    for r in rows:
        r["model"] = label
    if ctx.is_main:
        write_results(rows, ctx.out_dir, name=EVAL_FILES["sweep"])
        draw_after_results(ctx, EVAL_FILES["acc_vs_eps"], lambda: plot_accuracy_vs_eps(
            rows, ctx.out_dir / EVAL_FILES["acc_vs_eps"], f"{label}: {attack} accuracy vs eps"))
    return rows
