"""Evaluate a model under a grid of attacks and per-modality budgets.

``evaluate_attack_grid`` runs every (attack, eps) pair over a loader and returns one dict per row
(tables of them: ``reporting.results.markdown_table``).

Rows whose budget falls on a modality the model does not read (e.g. the paper grid's audio-only row
against a visual-only model) are evaluated, not skipped: that part of the budget is dropped (the model's
output cannot depend on an input it ignores), a warning is logged once, and the row says so with
``attacked`` (the modalities actually perturbed, "none" if nothing was) and ``max_delta_*`` = 0. Its
``adv_acc`` is then exactly what an attacker with that budget achieves against that model, so unimodal
and audio-visual models line up row by row on the same grid (the comparison the paper draws).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from attacks import ATTACKS, create_attack
from attacks.base import EPS_UNITS, MODALITIES, forward, model_modalities
from attacks.metrics import PAPER_EPS_GRID, format_eps, linf, parse_eps, psnr_db, snr_db
from attacks.sanity import check_eot, check_flags, grid_flags, merge_checks, model_checks
from attacks.threats import parse_norm
from utils.modes import model_mode

logger = logging.getLogger(__name__)

Reducer = Callable[[torch.Tensor], Optional[torch.Tensor]]

# Layout of the per-row float64 vectors handed to ``reduce`` (sums) and ``reduce_max`` (maxima).
_SUMS = ("n", "clean_correct", "adv_correct", "flipped", "snr_sum", "snr_count", "psnr_sum", "psnr_count",
         "queries_sum", "queries_count")
_MAXES = ("max_delta_audio", "max_delta_visual", "seconds")
# The command-line flags whose values evaluate_attack_grid takes as its own parameters (flag -> parameter);
# an attack's flag_args naming one of them gets the grid's value.
GRID_FLAGS = {"attack_steps": "steps", "random_start": "random_start", "restarts": "restarts"}


def _as_eps(item: Union[str, Mapping[str, float]]) -> Dict[str, float]:
    if isinstance(item, str):
        return parse_eps(item)
    if isinstance(item, Mapping):
        return parse_eps(",".join(f"{k}={v}" for k, v in item.items())) if item else {m: 0.0 for m in MODALITIES}
    raise TypeError(f"eps_grid entries must be dicts or strings like 'visual=0.006,audio=0.006', got {item!r}")


def _apply(reducer: Optional[Reducer], t: torch.Tensor) -> torch.Tensor:
    if reducer is None:
        return t
    out = reducer(t)
    return t if out is None else out


class _Row:
    """One (attack, eps) cell: its attack object and running sums."""

    def __init__(self, name: str, eps: Dict[str, float], model: nn.Module, readable: Sequence[str],
                 flag_values: Mapping[str, Any], shared: Mapping[str, Any], options: Mapping[str, Any]) -> None:
        self.name = name
        self.eps = eps
        self.norm = shared["norm"]
        cls = ATTACKS.get(name)
        # the grid-wide values of the flags the attack declares (flag_args), then its own options, then
        # eps_unit/seed/norm where its constructor takes them
        kwargs = {arg: flag_values[flag] for arg, flag in cls.flag_args.items() if flag in flag_values}
        kwargs.update(options)
        kwargs.update({k: v for k, v in shared.items() if cls.takes(k)})
        effective = {m: (eps[m] if m in readable else 0.0) for m in MODALITIES}
        dropped = [m for m in MODALITIES if eps[m] > 0 and m not in readable]
        if dropped:
            logger.warning("%s %s: the model reads only %s, so the %s budget cannot change its output and is "
                           "not applied (row reported with attacked=%s)", name, format_eps(eps),
                           "+".join(readable), "+".join(dropped),
                           "+".join(m for m in MODALITIES if effective[m] > 0) or "none")
        self.attacked = tuple(m for m in MODALITIES if effective[m] > 0)
        # an attack that acts without a budget (desync: the shift alone) runs on eps-0 rows too
        acts = self.attacked or getattr(cls, "acts_without_budget", False)
        self.attack = create_attack(name, model, eps=effective, **kwargs) if acts else None
        probe = self.attack or create_attack(name, model, eps={}, **kwargs)  # what the row records
        self.random_start = bool(getattr(probe, "random_start", False))
        self.restarts = int(getattr(probe, "restarts", 1))
        self.steps = getattr(probe, "steps", None)
        self.flags: List[str] = []
        self.sums = torch.zeros(len(_SUMS), dtype=torch.float64)
        self.maxes = torch.zeros(len(_MAXES), dtype=torch.float64)
        self.seconds = 0.0

    def add(self, key: str, value: float) -> None:
        self.sums[_SUMS.index(key)] += value

    def bump(self, key: str, value: float) -> None:
        i = _MAXES.index(key)
        self.maxes[i] = max(float(self.maxes[i]), value)


def evaluate_attack_grid(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    attack_names: Sequence[str],
    eps_grid: Optional[Sequence[Union[str, Mapping[str, float]]]],
    device: Union[str, torch.device],
    steps: int = 10,
    eps_unit: str = "input",
    random_start: bool = False,
    restarts: int = 1,
    seed: int = 0,
    norm: Union[None, str, Mapping[str, str]] = None,
    attack_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    reduce: Optional[Reducer] = None,
    reduce_max: Optional[Reducer] = None,
    progress: bool = True,
    on_batch: Optional[Callable[[Dict[str, Any]], None]] = None,
    clean_preds: Optional[torch.Tensor] = None,
    source: Optional[nn.Module] = None,
) -> List[Dict[str, Any]]:
    """Accuracy of ``model`` under every (attack, eps) pair; one dict per pair, attack-major order.

    Args:
        model: any ``nn.Module`` called as ``model(audio=a, visual=v) -> logits``; ``model.modalities``,
            where present, says which budgets can apply (the others are dropped, see the module docstring).
        loader: yields dicts with ``"label"`` and the input tensors (``"audio"``, ``"visual"``).
        attack_names: registered attacks (``attacks.list_attacks()``); unknown names raise ``KeyError``.
        eps_grid: dicts or strings (``"visual=0.006,audio=0.006"``); None = the paper grid
            ``PAPER_EPS_GRID``. A row with budget 0 everywhere runs no attack (adv_acc == clean_acc).
        device: where the model and batches live.
        steps, random_start, restarts: the values of the flags --attack_steps, --random_start, --restarts,
            given to the attacks whose ``flag_args`` name those flags (pgd, mim); the others keep their
            defaults unless ``attack_options[name]`` (e.g. ``{"square": {"n_queries": 1000}}``) says. A row
            records the steps, random_start and restarts its attack object ran with (fgsm: 1, False, 1).
        eps_unit, seed: passed to every attack whose constructor takes them.
        norm: "Linf" (default), "L2" or per modality ("visual=L2,audio=snr"); see ``attacks.threats``.
        reduce: for DDP, sums a 1-D float64 tensor across processes (returns it, or None after an in-place
            ``torch.distributed.all_reduce``); ``reduce_max`` does the same with a max. Counts are reduced
            once at the end, so accuracies under N processes equal one process on the same samples
            exactly (the dB means up to float summation order). Give both or neither.
        progress: show a tqdm bar.
        on_batch: called for every row and batch with a dict: attack, eps, attacked, batch_index, batch,
            inputs, adv, labels, clean_pred, adv_pred (e.g. to save examples), and what the attack chose for
            the batch where it says: shifts_s (desync's ``last_shifts_s``, (B,) seconds) and support
            (sparse_time's ``last_support``, {modality: (B, T) bool}); None otherwise.
        clean_preds: the model's clean predictions by dataset index (``batch["index"]``), e.g. the ``preds``
            of ``pipeline.engine.evaluate`` on the same loader: the grid then runs no clean forward.
        source: a transfer attack: every attack is crafted on ``source`` (another model, called the same way)
            and ``model`` is evaluated on those inputs. The budgets that apply are those of the modalities
            ``source`` reads; the gradient sanity checks are the source's. ``source=model`` (the same object,
            or a copy with the same weights) gives the white-box rows exactly.

    Returns:
        Rows with keys attack, eps_audio, eps_visual (as requested), eps_unit, steps, random_start, restarts,
        attacked ("audio+visual", "audio", "visual" or "none": what was actually perturbed), clean_acc,
        adv_acc, success_rate (fraction of clean-correct samples flipped; None if there are none),
        max_delta_audio, max_delta_visual (largest |delta| used, input units), snr_db_audio, psnr_db_visual
        (means over the samples the attack changed; None where that modality was not attacked or no sample
        was changed), n_samples, seconds (attack time,
        slowest process), norm_audio, norm_visual, queries (mean model queries per attacked sample of
        square and autoattack's square stage, else None), flags ("; "-joined sanity flags of
        ``attacks.sanity`` and of autoattack, "none" if nothing was flagged; computed on this process).
    """
    if (reduce is None) != (reduce_max is None):
        raise ValueError("give both reduce (sum) and reduce_max (max) for distributed evaluation, or neither")
    if isinstance(attack_names, str):
        raise TypeError(f"attack_names must be a list of names, got the string {attack_names!r}")
    for name in attack_names:
        ATTACKS.get(name)  # unknown names raise, listing the valid ones
    grid = [_as_eps(e) for e in (PAPER_EPS_GRID if eps_grid is None else eps_grid)]
    if not attack_names or not grid:
        raise ValueError("attack_names and eps_grid must be non-empty")
    if eps_unit not in EPS_UNITS:
        raise ValueError(f"unknown eps_unit {eps_unit!r}; valid eps_unit values: {', '.join(EPS_UNITS)}")
    device = torch.device(device)
    crafter = model if source is None else source
    declared = model_modalities(crafter)
    readable = declared if declared is not None else MODALITIES
    norms = parse_norm(norm)
    options = dict(attack_options or {})
    # the values of the generic attack flags; each attack takes those its flag_args name
    given = {"steps": steps, "random_start": random_start, "restarts": restarts}
    flag_values = {flag: given[param] for flag, param in GRID_FLAGS.items()}
    shared = {"eps_unit": eps_unit, "seed": seed, "norm": norms}
    rows = [_Row(name, eps, crafter, readable, flag_values, shared, options.get(name, {}))
            for name in attack_names for eps in grid]

    with model_mode(model, training=False), model_mode(crafter, training=False):
        checks = _run(model, loader, rows, device, declared or (), progress, on_batch, clean_preds, crafter)

    for row in rows:
        row.bump("seconds", row.seconds)
    sums = _apply(reduce, torch.stack([r.sums for r in rows]).flatten().to(device)).cpu().view(len(rows), -1)
    maxes = _apply(reduce_max, torch.stack([r.maxes for r in rows]).flatten().to(device)).cpu().view(len(rows), -1)
    out = [_finish(row, dict(zip(_SUMS, s.tolist())), dict(zip(_MAXES, m.tolist())), eps_unit,
                   check_flags(checks, ATTACKS.get(row.name).gradient_loss) if checks else [])
           for row, s, m in zip(rows, sums, maxes)]
    grid_flags(out)
    for r in out:
        if r["flags"] != "none":
            logger.warning("%s %s: %s", r["attack"], format_eps({"audio": r["eps_audio"], "visual": r["eps_visual"]}),
                           r["flags"])
    return out


def _run(model: nn.Module, loader: Iterable[Mapping[str, Any]], rows: List[_Row], device: torch.device,
         readable: Sequence[str], progress: bool, on_batch: Optional[Callable[[Dict[str, Any]], None]],
         clean_preds: Optional[torch.Tensor] = None, crafter: Optional[nn.Module] = None
         ) -> Optional[Dict[str, Any]]:
    """Runs the rows over the loader; returns the ``attacks.sanity.model_checks`` counts of all batches (of
    ``crafter``, the model the attacks follow: ``model`` itself unless a transfer source is given)."""
    crafter = model if crafter is None else crafter
    from tqdm import tqdm

    checks = None
    attacked = tuple(m for m in MODALITIES if any(m in r.attacked for r in rows))

    for batch_index, batch in enumerate(tqdm(loader, desc="attack grid", disable=not progress)):
        if "label" not in batch:
            raise KeyError(f"batches must be dicts with a 'label' entry, got keys {sorted(batch)}")
        missing = [m for m in sorted({*readable, *getattr(model, "modalities", ())}) if batch.get(m) is None]
        if missing:
            raise KeyError(f"the model reads {', '.join(missing)} but the batch has no such entry")
        inputs = {m: batch[m].to(device) for m in MODALITIES if batch.get(m) is not None}
        labels = torch.as_tensor(batch["label"]).to(device)
        clean_pred = _clean_pred(model, inputs, batch, clean_preds, device)
        clean_ok = clean_pred == labels
        if attacked and labels.numel():  # zero gradients, randomness, probabilities: every batch, added up
            new = model_checks(crafter, inputs, labels, [m for m in attacked if m in inputs])
            if checks is None:  # the first batch: EOT exactly when the model is stochastic (attacks.sanity)
                for row in rows:
                    if row.attack is not None:
                        check_eot(crafter, inputs, getattr(row.attack, "stage_eot", row.attack.eot_iter),
                                  ATTACKS.get(row.name).gradient_loss is not None, stochastic=new["random"])
            checks = checks if checks is not None else {}
            merge_checks(checks, new)
        for row in rows:
            start = time.perf_counter()
            if row.attack is None:
                adv, adv_pred = inputs, clean_pred
            else:
                extra = {k: batch[k].to(device) for k in getattr(row.attack, "batch_keys", ())
                         if batch.get(k) is not None}  # e.g. desync's audio_context
                adv = row.attack(inputs, labels, **extra)
                with torch.no_grad():
                    adv_pred = forward(model, adv).argmax(dim=1)
                queries = row.attack.take_queries()
                if queries is not None:
                    row.add("queries_sum", float(queries.sum()))
                    row.add("queries_count", queries.numel())
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            row.seconds += time.perf_counter() - start
            adv_ok = adv_pred == labels
            row.add("n", labels.numel())
            row.add("clean_correct", int(clean_ok.sum()))
            row.add("adv_correct", int(adv_ok.sum()))
            row.add("flipped", int((clean_ok & ~adv_ok).sum()))
            for m in row.attacked:  # untouched modalities are the input tensors themselves: delta 0
                if labels.numel():
                    row.bump(f"max_delta_{m}", float(linf(inputs[m], adv[m]).max()))
            if "audio" in row.attacked:
                snr = snr_db(inputs["audio"], adv["audio"])
                changed = torch.isfinite(snr)  # an untouched clip (e.g. APGD skips misclassified ones) has SNR inf
                row.add("snr_sum", float(snr[changed].sum()))
                row.add("snr_count", int(changed.sum()))
            if "visual" in row.attacked:
                psnr = psnr_db(inputs["visual"], adv["visual"])
                changed = torch.isfinite(psnr)
                row.add("psnr_sum", float(psnr[changed].sum()))
                row.add("psnr_count", int(changed.sum()))
            if on_batch is not None:
                on_batch({"attack": row.name, "eps": dict(row.eps), "attacked": row.attacked,
                          "shifts_s": getattr(row.attack, "last_shifts_s", None),
                          "support": getattr(row.attack, "last_support", None),
                          "batch_index": batch_index, "batch": batch, "inputs": inputs, "adv": adv,
                          "labels": labels, "clean_pred": clean_pred, "adv_pred": adv_pred})
    return checks


def _clean_pred(model: nn.Module, inputs: Dict[str, torch.Tensor], batch: Mapping[str, Any],
                clean_preds: Optional[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The batch's clean predictions: looked up in ``clean_preds`` by dataset index, else one forward."""
    if clean_preds is None:
        with torch.no_grad():
            return forward(model, inputs).argmax(dim=1)
    if "index" not in batch:
        raise KeyError("clean_preds given but the batches have no 'index' entry to look them up by")
    index = torch.as_tensor(batch["index"]).cpu()
    if index.numel() and (int(index.max()) >= len(clean_preds) or bool((clean_preds[index] < 0).any())):
        raise ValueError("clean_preds has no prediction for some samples of this batch (from another loader?)")
    return clean_preds[index].to(device)


def _finish(row: _Row, s: Dict[str, float], mx: Dict[str, float], eps_unit: str,
            model_flags: Sequence[str]) -> Dict[str, Any]:
    n = s["n"]
    report = getattr(row.attack, "report", None)
    flags = list(model_flags) + [f for f in (report or {}).get("flags", []) if f not in model_flags]
    if n == 0:
        raise ValueError("the loader yielded no samples")
    return {
        "attack": row.name,
        "eps_audio": row.eps["audio"],
        "eps_visual": row.eps["visual"],
        "eps_unit": eps_unit,
        "steps": row.steps,
        "random_start": row.random_start,
        "restarts": row.restarts,
        "attacked": "+".join(row.attacked) or "none",
        "clean_acc": s["clean_correct"] / n,
        "adv_acc": s["adv_correct"] / n,
        "success_rate": s["flipped"] / s["clean_correct"] if s["clean_correct"] else None,
        "max_delta_audio": mx["max_delta_audio"],
        "max_delta_visual": mx["max_delta_visual"],
        "snr_db_audio": s["snr_sum"] / s["snr_count"] if s["snr_count"] else None,
        "psnr_db_visual": s["psnr_sum"] / s["psnr_count"] if s["psnr_count"] else None,
        "n_samples": int(n),
        "seconds": mx["seconds"],
        "norm_audio": row.norm["audio"],
        "norm_visual": row.norm["visual"],
        "queries": s["queries_sum"] / s["queries_count"] if s["queries_count"] else None,
        "flags": "; ".join(flags) or "none",
        **({"per_attack": ", ".join(f"{k} {v * 100:.2f}%" for k, v in report["per_attack"].items()),
            "missing": ", ".join(report["missing"]) or "none"} if report else {}),
    }

