"""Universal adversarial perturbations: one delta per modality, fitted once, added to every clip.

Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, "Universal adversarial perturbations" (CVPR 2017, arXiv
1610.08401) define a universal perturbation as one ``v`` with ``||v||_p <= xi`` that fools the classifier on
most points of the data distribution (Sec. 2, Eq. 1: ``P(k(x + v) != k(x)) >= 1 - delta``); their Algorithm 1
builds it by passing over the data, adding for each still-unfooled point the minimal (DeepFool) step that
fools it and projecting onto the ``xi``-ball (``P_{p,xi}``, Eq. 2) after each addition.

What is implemented here (our choice, said so because the original uses DeepFool steps): the gradient
variant, stochastic projected gradient ascent on the mini-batch MEAN cross-entropy of ``x + delta``, in the
form of Shafahi, Najibi, Xu, Dickerson, Davis & Goldstein, "Universal Adversarial Training" (AAAI 2020,
arXiv 1811.11304), Sec. "Universal perturbations via stochastic gradient" / their first algorithm (one ascent
step on ``delta`` per mini-batch, projected on the ball after every step). In place of their clipped loss
(``min(CE, beta)``, which stops fooled points from dominating the mean) only the clips not yet fooled contribute
(their cross-entropy, summed and divided by the chunk size), as only unfooled points update ``v`` in
Moosavi-Dezfooli et al.'s Algorithm 1; this needs no ``beta`` (a constant we could not check offline). Without
either, the unbounded loss of fooled clips drove the fit on tests/test_transfer_universal.py's toy model into
flipping clips between two classes (40% fooled, against 100% for ART's Algorithm 1). Steps are those of this
project's threat objects: ``alpha * sign(g)`` under L-inf, ``alpha * g / ||g||_2`` under L2. Why not DeepFool: DeepFool needs
per-class gradients (K backward passes per point and step), which at the paper's sizes (anet on 65535 samples,
ResNet-18) costs K times a PGD step; the gradient variant costs one forward/backward per mini-batch, uses the
same loss as the rest of the project, and handles the product of per-modality balls (one projection per
modality) without a joint minimal-norm problem. Shafahi et al. report it stronger than Algorithm 1 at equal
budget on ImageNet (their Table 1).

How it fits the ``Attack`` contract: ``attack(inputs, labels)`` returns ``clamp(x + delta, valid range)``
with the SAME delta for every clip (one tensor of the shape of one clip per attacked modality), so every
sample's perturbation is within its ball (clamping to the range only shrinks it), the untouched modality is
the tensor passed in, and the model's train/eval flags are restored (the base's ``__call__``). The delta is
fitted once, on ``fit_data`` (an iterable of batches: the training list in ``main_attack.py``) at the first
call, or given as ``delta``. Without either, it is fitted on the first batch the attack is called on and then
kept for every later call: that makes a sample's result depend on the batch it came with, hence
``batch_dependent``. Fitting on ``fit_data`` is re-batched into chunks of exactly ``fit_batch`` clips, so the
delta does not depend on the loader's batch size (``--eval_batch_size`` stays result-neutral).

A ``store`` (``pipeline/universal.py``'s ``DeltaStore``) saves the fitted delta with its fit settings and
returns a saved one when the settings match (``fit_settings()`` is what must match, the store adds the
model checkpoint and the fitted list).

Arguments (through ``attacks.create_attack("universal", model, ...)``):
    eps (dict): per-modality budget; 0/absent = untouched. Norms Linf and L2 (snr is refused: its radius is
        per clip, ``||x|| 10^(-eps/20)``, so no single delta has it).
    epochs (int): 5 passes over ``fit_data`` (our choice: on the demo's 576 training clips, 90 ascent steps of
        ``eps/8``, enough to reach and move along the ball's surface; Shafahi et al. use about 10 epochs).
    alpha (None | float | dict): step size; None = eps / 8 (as PGD here).
    fit_batch (int): 32 clips per ascent step (Shafahi et al. use mini-batches; 32 is ART's default batch).
    fit_data (iterable of batch dicts | None), delta (dict | None), store (object | None): see above.
    eps_unit (str), seed (int: recorded in the fit settings; the fit itself draws nothing), norm.

Example::

    >>> uap = create_attack("universal", model, eps={"audio": 0.006, "visual": 0.006}, fit_data=train_loader)
    >>> adv = uap({"audio": a, "visual": v}, labels)      # the same delta on every clip
    >>> uap.delta["visual"].shape                          # (3, T, H, W): one clip's shape
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from attacks.base import ATTACKS, VALID_RANGE, Attack, Frozen, check_int, forward
from attacks.threats import make_threat

log = logging.getLogger(__name__)


def rebatch(data: Iterable[Mapping[str, Any]], size: int, modalities: Tuple[str, ...]
            ) -> Iterator[Tuple[Dict[str, torch.Tensor], torch.Tensor]]:
    """The clips of ``data`` (batch dicts with ``label`` and the modalities' tensors) in chunks of exactly
    ``size`` (the last one shorter), in order, whatever the incoming batch size."""
    buf: Dict[str, list] = {m: [] for m in modalities}
    labels: list = []
    have = 0
    for batch in data:
        if "label" not in batch:
            raise KeyError(f"fit_data batches must be dicts with a 'label' entry, got keys {sorted(batch)}")
        missing = [m for m in modalities if batch.get(m) is None]
        if missing:
            raise KeyError(f"fit_data batches have no {', '.join(missing)} entry, which the model reads")
        for m in modalities:
            buf[m].append(batch[m])
        labels.append(torch.as_tensor(batch["label"]))
        have += len(labels[-1])
        while have >= size:
            cat = {m: torch.cat(buf[m]) for m in modalities}
            y = torch.cat(labels)
            yield {m: cat[m][:size] for m in modalities}, y[:size]
            buf = {m: [cat[m][size:]] for m in modalities}
            labels, have = [y[size:]], have - size
    if have:
        yield {m: torch.cat(buf[m]) for m in modalities}, torch.cat(labels)


@ATTACKS.register("universal")
class Universal(Attack):
    """One perturbation per modality for all clips (Moosavi-Dezfooli et al., CVPR 2017), fitted by
    stochastic projected gradient ascent on the mini-batch mean cross-entropy (Shafahi et al., AAAI 2020).
    See the module docstring for the algorithm, the choices and how it keeps the attack contract."""

    name = "universal"
    in_all = False  # it fits on the training list first: asked for by name, not part of 'all'
    batch_dependent = ("without fit_data or delta, the one delta is fitted on the first batch the attack is called "
                       "on and kept: a sample's result then depends on that batch (with fit_data, as in "
                       "main_attack.py, it does not)")

    def __init__(self, model: nn.Module, eps: Mapping[str, float], epochs: int = 5,
                 alpha: Union[None, float, Mapping[str, float]] = None, fit_batch: int = 32,
                 fit_data: Optional[Iterable[Mapping[str, Any]]] = None,
                 delta: Optional[Mapping[str, torch.Tensor]] = None, store: Optional[Any] = None,
                 eps_unit: str = "input", seed: int = 0, norm: Union[str, Mapping[str, str], None] = "Linf") -> None:
        self.epochs = check_int("epochs", epochs)
        self.fit_batch = check_int("fit_batch", fit_batch)
        super().__init__(model, eps, alpha=alpha, eps_unit=eps_unit, seed=seed, norm=norm)
        snr = [m for m in self.attacked if self.norm[m] == "snr"]
        if snr:
            raise ValueError("universal: the snr norm has a radius per clip (||x|| 10^(-eps/20)); one delta for "
                             "all clips cannot have it: use norm Linf or L2 for " + ", ".join(snr))
        self.fit_data, self.store = fit_data, store
        self.delta: Optional[Dict[str, torch.Tensor]] = None
        self.fit_info: Dict[str, Any] = {}
        if delta is not None:
            self.delta = self._check_delta(delta)
            self.fit_info = {"source": "given"}

    @property
    def steps(self) -> int:
        """Ascent steps per epoch are set by the data; the grid's ``steps`` column shows the epochs."""
        return self.epochs

    def fit_settings(self) -> Dict[str, Any]:
        """What the fitted delta depends on besides the model and the data (the store's key)."""
        return {"attack": self.name, "eps": {m: self.eps[m] for m in self.attacked},
                "norm": {m: self.norm[m] for m in self.attacked}, "eps_unit": self.eps_unit,
                "alpha": {m: self.alpha[m] for m in self.attacked}, "epochs": self.epochs,
                "fit_batch": self.fit_batch, "seed": self.seed, "loss": "mean cross-entropy"}

    # -- the delta's threat set --------------------------------------------------------------------------
    def _delta_threat(self, m: str, like: torch.Tensor):
        """The ball of the delta itself (around 0); the range bound is loose (a delta beyond the width of the
        valid range changes nothing the clamp does not already cut)."""
        lo, hi = VALID_RANGE[m]
        return make_threat(self.norm[m], like, self._scale(m, self.eps[m], like),
                           self._scale(m, self.alpha[m], like), -(hi - lo), hi - lo)

    def _check_delta(self, delta: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        out = {}
        for m in self.attacked:
            if m not in delta or not isinstance(delta[m], torch.Tensor):
                raise ValueError(f"universal: delta has no {m!r} tensor, but eps attacks {m}")
            d = delta[m].detach()
            t = self._delta_threat(m, d.unsqueeze(0))
            inside = t.project(d.unsqueeze(0), torch.zeros_like(d).unsqueeze(0))[0]
            if not torch.allclose(inside, d, atol=1e-6, rtol=0):
                raise ValueError(f"universal: the given {m} delta lies outside its {self.norm[m]} ball of eps "
                                 f"{self.eps[m]}")
            out[m] = d
        return out

    # -- fitting ---------------------------------------------------------------------------------------
    def fit(self, data: Iterable[Mapping[str, Any]]) -> Dict[str, torch.Tensor]:
        """Fit the delta on ``data`` (batch dicts with ``label`` and the inputs), ``epochs`` passes of one
        projected ascent step per ``fit_batch`` clips; returns and keeps it. The model's flags are restored."""
        from utils.modes import model_mode

        with model_mode(self.model, training=False):
            return self._fit(lambda: rebatch(data, self.fit_batch, self._needed()))

    def _needed(self) -> Tuple[str, ...]:
        """The inputs a fitting chunk must carry: those the model declares, else the attacked ones."""
        declared = getattr(self.model, "modalities", None)
        return tuple(declared) if declared else self.attacked

    def _fit(self, chunks) -> Dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        delta: Dict[str, torch.Tensor] = {}
        threats: Dict[str, Any] = {}
        steps = n_last = fooled_last = 0
        for epoch in range(self.epochs):
            n_last = fooled_last = 0
            for inputs, labels in chunks():
                labels = labels.to(next(iter(inputs.values())).device)
                if not delta:  # shapes and device from the first chunk
                    for m in self.attacked:
                        like = torch.zeros_like(inputs[m][:1])
                        delta[m], threats[m] = like[0], self._delta_threat(m, like)
                leaves = {m: delta[m].detach().requires_grad_(True) for m in self.attacked}
                adv = {m: (inputs[m] + leaves[m]).clamp(*VALID_RANGE[m]) for m in self.attacked}
                fixed = {m: Frozen(x) for m, x in inputs.items() if m not in self.attacked}
                with torch.enable_grad():
                    logits = forward(self.model, {**fixed, **adv})
                    # only clips not yet fooled push delta (Moosavi-Dezfooli et al., Algorithm 1: the update
                    # runs for points with k(x + v) = k(x)); an unbounded loss of fooled clips would otherwise
                    # dominate the mean (what Shafahi et al.'s clipped loss guards against)
                    unfooled = (logits.argmax(1) == labels).to(logits.dtype).detach()
                    per_clip = F.cross_entropy(logits, labels, reduction="none")
                    loss = (per_clip * unfooled).sum() / labels.numel()
                    grads = torch.autograd.grad(loss, list(leaves.values()))
                fooled_last += int(labels.numel() - unfooled.sum())
                n_last += labels.numel()
                for (m, g) in zip(leaves, grads):
                    stepped = threats[m].step(delta[m].unsqueeze(0), g.unsqueeze(0))
                    delta[m] = threats[m].project(stepped, torch.zeros_like(stepped))[0].detach()
                steps += 1
        if not delta:
            raise ValueError("universal: the fit data yielded no clips")
        self.delta = delta
        self.fit_info = {"source": "fitted", "ascent_steps": steps, "clips_per_epoch": n_last,
                         "fooled_last_epoch": fooled_last / max(n_last, 1), "seconds": time.perf_counter() - t0}
        log.info("universal: fitted %s in %d steps (%.1f s); %.1f%% of the %d fitting clips misclassified during "
                 "the last epoch", "+".join(self.attacked), steps, self.fit_info["seconds"],
                 100 * self.fit_info["fooled_last_epoch"], n_last)
        return delta

    def _ensure_delta(self, clean: Dict[str, torch.Tensor], fixed: Dict[str, Any], labels: torch.Tensor) -> None:
        if self.delta is not None:
            return
        if self.fit_data is not None:
            if self.store is not None:
                saved = self.store.load(self)
                if saved is not None:
                    self.delta = self._check_delta({m: d.to(clean[m].device, clean[m].dtype)
                                                    for m, d in saved.items()})
                    self.fit_info = {"source": "reused"}
                    return
            self._fit(lambda: rebatch(self.fit_data, self.fit_batch, self._needed()))
            if self.store is not None:
                self.store.save(self)
            return
        log.warning("universal: no fit_data or delta given: fitting the delta on the first batch it attacks")
        inputs = {**{m: (x.x if isinstance(x, Frozen) else x) for m, x in fixed.items() if x is not None}, **clean}
        self._fit(lambda: iter([(inputs, labels)]))

    def _perturb(self, clean, start, fixed, labels, threats) -> Dict[str, torch.Tensor]:
        self._ensure_delta(clean, fixed, labels)
        out = {}
        for m in clean:
            d = self.delta[m].to(clean[m].device, clean[m].dtype)
            if d.shape != clean[m].shape[1:]:
                raise ValueError(f"universal: the {m} delta has the shape {tuple(d.shape)} of the clips it was "
                                 f"fitted on, these clips have {tuple(clean[m].shape[1:])}")
            out[m] = (clean[m] + d).clamp(*VALID_RANGE[m])
        return out


__all__ = ["Universal", "rebatch"]
