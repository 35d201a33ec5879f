"""The attack base class (input contract, model mode, restarts) of every registered attack.

What an attack may do lives in ``attacks/threats.py``, once per norm (``Linf``, ``L2``, audio ``snr``): the
per-modality budget, the valid input ranges, the normalised step, the projection onto the ball around the
CLEAN input and the random start (after MadryLab/robustness' attack-step objects). Each attack's own file
holds its loop (``_perturb``) written with those pieces; under L2, FGSM is FGM and PGD/MIM take normalised
steps. An attack's options are its constructor's arguments; ``flag_args`` names the command-line flag
(a ``RunConfig`` field) that feeds each of them.

Any ``nn.Module`` called as ``model(audio=..., visual=...)`` (or with one of the two) returning logits can be
attacked: the modalities attacked come from eps, those passed from the inputs, and ``model.modalities``,
where present, is only a check.

Design decisions (each fixes a bug of the reference code, see docs/paper.md, "Behaviours of the reference code that are bugs"):

* The modalities attacked are exactly those with a non-zero eps; the fusion head is never consulted.
* Projection is onto ``[x_clean - eps, x_clean + eps]`` and the valid range at every step, for every
  attack (FGSM audio included).
* A modality that is not attacked is returned as the very tensor that was passed in (bit-identical).
* Gradients are taken with ``torch.autograd.grad`` with respect to the inputs only, so parameters' ``.grad``
  are neither computed nor touched; the model runs in eval mode during the attack and every submodule's
  previous train/eval flag is restored afterwards.
* An attack object toggles the model's train/eval flags while it runs: do not share one model between
  threads that attack concurrently (DDP processes each hold their own replica, which is fine).
* The loss is summed (not averaged) over the batch, so a sample's gradient does not depend on the batch
  it is in; together with eval mode this makes a sample's adversarial example independent of the batch
  (random starts excepted: the noise is drawn for the whole batch from the attack's generator).
"""
from __future__ import annotations

import inspect
import logging
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from attacks.threats import ALPHA_DIVISOR, NORMS, LinfThreat, make_threat, parse_norm
from utils.modes import model_mode
from utils.registry import Registry

logger = logging.getLogger(__name__)

MODALITIES: Tuple[str, ...] = ("audio", "visual")
# Every attack registers itself in its own module with ``@ATTACKS.register("name")``.
ATTACKS: "Registry[type]" = Registry("attack")
# Physical input ranges (docs/ARCHITECTURE.md conventions): waveform in [-1, 1], pixels in [0, 1].
VALID_RANGE: Dict[str, Tuple[float, float]] = {"audio": (-1.0, 1.0), "visual": (0.0, 1.0)}
# ImageNet per-channel std of torchvision's normalisation; the reference code applies the visual eps in
# this normalised space (docs/paper.md, Attacks: "Units"), so eps_unit="normalized" scales the pixel budget by it.
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)
EPS_UNITS: Tuple[str, ...] = ("input", "normalized")
Budget = Union[float, torch.Tensor]
__all__ = ["ALPHA_DIVISOR", "ATTACKS", "Attack", "LinfThreat", "MODALITIES", "NORMS", "VALID_RANGE"]


def model_modalities(model: nn.Module) -> Optional[Tuple[str, ...]]:
    """The modalities ``model`` declares (``model.modalities``, looking through a DDP/DataParallel
    ``.module``), or None when it declares none: any ``model(audio=..., visual=...) -> logits`` can be
    attacked, and ``.modalities``, where present, is only a check of the budget."""
    for candidate in (model, getattr(model, "module", None)):
        mods = getattr(candidate, "modalities", None)
        if mods is not None:
            mods = tuple(mods)
            bad = [m for m in mods if m not in MODALITIES]
            if bad or not mods:
                raise ValueError(f"model.modalities must be a non-empty subset of {MODALITIES}, got {mods}")
            return mods
    return None


class Frozen:
    """An input the attack leaves unchanged, with the model's encoding of it computed once (item 5 of
    issue 18: at the paper's sizes an audio-only attack otherwise recomputes ResNet-18 at every step).

    ``frozen[idx]`` is the input ``x[idx]`` with its own cache, computed on that subset as the uncached path
    computes it (so results stay bitwise equal: a batch-size-dependent kernel sees the same shapes); the
    last subset is kept, so a subset index repeated (APGD's final check, Square's queries while no sample
    flips) reuses its encoding.
    """

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self._encoded: Optional[Tuple[nn.Module, torch.Tensor]] = None
        self._last: Optional[Tuple[torch.Tensor, "Frozen"]] = None

    @property
    def shape(self) -> torch.Size:
        return self.x.shape

    def detach(self) -> "Frozen":
        return self

    def __getitem__(self, idx: torch.Tensor) -> "Frozen":
        last = self._last
        if (last is not None and isinstance(idx, torch.Tensor) and last[0].shape == idx.shape
                and last[0].dtype == idx.dtype and torch.equal(last[0], idx)):
            return last[1]
        child = Frozen(self.x[idx])
        if isinstance(idx, torch.Tensor):
            self._last = (idx.clone(), child)
        return child

    def encoded(self, model: nn.Module, modality: str) -> torch.Tensor:
        """``model.encode(modality, x)``, computed without gradients on the first call for ``model``."""
        if self._encoded is None or self._encoded[0] is not model:
            with torch.no_grad():
                self._encoded = (model, model.encode(modality, self.x))
        return self._encoded[1]


def _encodes(model: nn.Module) -> bool:
    """The model offers ``encode``/``classify_encoded`` and runs in eval mode (a training-mode BatchNorm
    reads the batch and updates its statistics at every forward: nothing may be computed once)."""
    return (callable(getattr(model, "encode", None)) and callable(getattr(model, "classify_encoded", None))
            and not any(mod.training for mod in model.modules()))


def forward(model: nn.Module, inputs: Mapping[str, Union[None, torch.Tensor, Frozen]]) -> torch.Tensor:
    """``model(audio=..., visual=...)`` with the modalities present in ``inputs`` (None entries left out).

    The one place attacks evaluate the model. A ``Frozen`` entry (an input the attack leaves unchanged)
    is encoded once when the model offers ``encode``/``classify_encoded`` (``models.AVModel``,
    ``DefendedModel``), else passed as its tensor.
    """
    present = {m: x for m, x in inputs.items() if x is not None}
    if any(isinstance(x, Frozen) for x in present.values()):
        used = tuple(getattr(model, "modalities", ()))
        if _encodes(model) and used and all(m in present for m in used):
            return model.classify_encoded({m: present[m].encoded(model, m) if isinstance(present[m], Frozen)
                                           else model.encode(m, present[m]) for m in used})
        present = {m: x.x if isinstance(x, Frozen) else x for m, x in present.items()}
    return model(**present)


def _check_scalar(flag: str, value: object, *, allow_zero: bool = True) -> float:
    """A finite, non-negative float; errors name the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{flag} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{flag} must be a finite number {need}, got {value!r}")
    return value


def check_int(flag: str, value: object, minimum: int = 1) -> int:
    """An int (not a bool) >= ``minimum``; errors name the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{flag} must be an int >= {minimum}, got {value!r}")
    return value


def _check_eps(eps: object) -> Dict[str, float]:
    if not isinstance(eps, Mapping):
        raise TypeError(
            f"eps must be a dict per modality, e.g. {{'audio': 0.006, 'visual': 0.006}}, got {eps!r}"
        )
    out: Dict[str, float] = {}
    for key, value in eps.items():
        if key not in MODALITIES:
            raise KeyError(f"eps has unknown modality {key!r}; valid modalities: {', '.join(MODALITIES)}")
        out[key] = _check_scalar(f"eps[{key!r}]", value)
    return out


class Attack:
    """Base of every attack: the input contract, model mode, restarts (with random starts), the threat
    object of each attacked modality and the loss gradient with respect to the inputs.

    A subclass registers itself, declares its options as constructor arguments (passing the shared ones
    on) and writes its loop in ``_perturb``. See ``attacks.create_attack`` for the arguments.
    """

    name: str = "attack"
    # ``--attack_type all`` runs every registered attack whose class has in_all = True (autoattack, an
    # ensemble of attacks already in 'all', sets False).
    in_all: bool = True
    # Constructor argument -> the command-line flag (``RunConfig`` field) that feeds it in an evaluation;
    # an argument left out keeps its default unless ``--attack_args name:arg=value`` sets it.
    flag_args: Mapping[str, str] = {}
    # Fewest classes the attack works on (apgd-t's targeted DLR loss needs 4); the pre-flight check of
    # pipeline/config.py reads it, so a run on fewer classes stops before any work.
    min_classes: int = 1
    # The loss whose input gradient the attack follows: "ce", "dlr", or None (gradient-free). The
    # vanishing-gradient flag of attacks/sanity.py applies to "ce" only (a saturated softmax).
    gradient_loss: Optional[str] = "ce"
    # Set by attacks whose result for a sample depends on the rest of its batch beyond the random-start
    # noise (none here); the contract test then skips its batch-independence check and prints the reason.
    batch_dependent: Optional[str] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = [a for a in cls.flag_args if a not in cls.options()]
        if unknown:
            raise TypeError(f"{cls.__name__}.flag_args names {', '.join(unknown)}, not arguments of its "
                            f"constructor ({', '.join(cls.options())})")

    @classmethod
    def options(cls) -> List[str]:
        """The constructor's keyword arguments besides ``model`` and ``eps`` (the attack's options)."""
        return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model", "eps")]

    @classmethod
    def takes(cls, option: str) -> bool:
        """Whether the constructor has the argument ``option`` (e.g. ``random_start``)."""
        return option in cls.options()

    def __init__(
        self,
        model: nn.Module,
        eps: Mapping[str, float],
        *,
        alpha: Union[None, float, Mapping[str, float]] = None,
        random_start: bool = False,
        restarts: int = 1,
        targeted: bool = False,
        eps_unit: str = "input",
        seed: int = 0,
        norm: Union[str, Mapping[str, str], None] = "Linf",
        eot_iter: int = 1,
    ) -> None:
        """The parts every attack shares; a subclass's own constructor says which of them it takes.

        ``eot_iter``: forward/backward passes whose input gradients are averaged at every gradient the attack
        takes (expectation over transformation, ``_eot_grads``); 1 for a deterministic model."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.eps = _check_eps(eps)
        if eps_unit not in EPS_UNITS:
            raise ValueError(f"unknown eps_unit {eps_unit!r}; valid eps_unit values: {', '.join(EPS_UNITS)}")
        self.eps_unit = eps_unit
        self.norm: Dict[str, str] = parse_norm(norm)
        if eps_unit == "normalized" and self.norm["visual"] != "Linf" and self.eps.get("visual", 0) > 0:
            raise ValueError(f"eps_unit='normalized' is a per-channel L-inf budget; it cannot be used with the "
                             f"{self.norm['visual']} norm on visual (use eps_unit='input')")
        self.restarts = check_int("restarts", restarts)
        if restarts > 1 and not random_start:
            raise ValueError(f"restarts={restarts} needs random_start=True: without a random start every "
                             "restart repeats the same deterministic attack")
        self.random_start = bool(random_start)
        self.targeted = bool(targeted)
        self.eot_iter = check_int("eot_iter", eot_iter)
        self.seed = int(seed)
        self._generators: Dict[torch.device, torch.Generator] = {}

        # Which modalities are attacked depends only on eps (never on the fusion head).
        self.attacked: Tuple[str, ...] = tuple(m for m in MODALITIES if self.eps.get(m, 0.0) > 0)
        readable = model_modalities(model)  # only a check: the budget says what is attacked
        missing = [m for m in self.attacked if readable is not None and m not in readable]
        if missing:
            raise ValueError(
                f"eps puts a budget on {', '.join(missing)} but the model only reads "
                f"{', '.join(readable)} (model.modalities); set eps to 0 for {', '.join(missing)}"
            )
        self.alpha = self._resolve_alpha(alpha)

    # -- configuration ---------------------------------------------------------------------------------
    def _resolve_alpha(self, alpha: Union[None, float, Mapping[str, float]]) -> Dict[str, float]:
        """Step size per attacked modality, in the same unit as eps (default eps / 8)."""
        if alpha is None:  # a radius / 8; for snr (dB) that is eps + 20 log10(8)
            return {m: (self.eps[m] + 20.0 * math.log10(ALPHA_DIVISOR) if self.norm[m] == "snr"
                        else self.eps[m] / ALPHA_DIVISOR) for m in self.attacked}
        if isinstance(alpha, Mapping):
            bad = [k for k in alpha if k not in MODALITIES]
            if bad:
                raise KeyError(f"alpha has unknown modality {bad[0]!r}; valid modalities: {', '.join(MODALITIES)}")
            lacking = [m for m in self.attacked if m not in alpha]
            if lacking:
                raise ValueError(f"alpha has no step size for attacked modality {', '.join(lacking)}; give "
                                 "one per modality with eps > 0, a single float, or None (eps/8)")
            return {m: _check_scalar(f"alpha[{m!r}]", alpha[m], allow_zero=False) for m in self.attacked}
        value = _check_scalar("alpha", alpha, allow_zero=False)
        return {m: value for m in self.attacked}

    def _scale(self, modality: str, value: float, x: torch.Tensor) -> Budget:
        """``value`` in input units: per-channel ``value * std_c`` for normalised visual budgets."""
        if self.eps_unit == "input" or modality != "visual":
            return value
        if x.dim() < 2 or x.shape[1] != len(IMAGENET_STD):
            raise ValueError(f"eps_unit='normalized' needs visual input with {len(IMAGENET_STD)} channels in "
                             f"dim 1, got shape {tuple(x.shape)}")
        shape = (1, len(IMAGENET_STD)) + (1,) * (x.dim() - 2)
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(shape)
        return std * value

    def threat(self, modality: str, x: torch.Tensor):
        """The threat object (``attacks.threats``) of ``modality`` for the clean batch ``x`` (input units)."""
        lo, hi = VALID_RANGE[modality]
        return make_threat(self.norm[modality], x, self._scale(modality, self.eps[modality], x),
                           self._scale(modality, self.alpha[modality], x), lo, hi)

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed)
            self._generators[device] = gen
        return self._generators[device]

    # -- the attack ------------------------------------------------------------------------------------
    def _forward(self, inputs: Dict[str, Optional[torch.Tensor]]) -> torch.Tensor:
        return forward(self.model, inputs)

    def _eot_grads(self, adv: Dict[str, torch.Tensor], fixed: Dict[str, Optional[torch.Tensor]],
                   objective: Callable[[torch.Tensor], torch.Tensor]
                   ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """Expectation over transformation (EOT; Athalye, Carlini & Wagner, ICML 2018, Sec. 4: the gradient of
        the expected loss over the model's randomness, estimated by a Monte-Carlo mean): the input gradients of
        ``objective(logits).sum()`` averaged over ``self.eot_iter`` forward/backward passes.

        The one place every gradient-based attack differentiates the model (``_input_grads``, APGD's loss,
        FAB's linearisation), so ``eot_iter`` (``--eot N``) applies to all of them alike. ``objective`` maps
        logits (B, K) to a per-sample value (B,); the sum makes a sample's gradient independent of its batch.
        Returns (the per-sample objective averaged over the passes, the last pass's logits, the mean gradient
        per attacked modality). With ``eot_iter == 1`` this is one plain forward/backward pass.
        """
        leaves = {m: x.detach().requires_grad_(True) for m, x in adv.items()}
        total: Optional[Tuple[torch.Tensor, ...]] = None
        value_sum: Optional[torch.Tensor] = None
        for _ in range(self.eot_iter):
            with torch.enable_grad():
                logits = self._forward({**fixed, **leaves})
                value = objective(logits)
                grads = torch.autograd.grad(value.sum(), list(leaves.values()))
            total = grads if total is None else tuple(t + g for t, g in zip(total, grads))
            value_sum = value.detach() if value_sum is None else value_sum + value.detach()
        assert total is not None and value_sum is not None
        if self.eot_iter > 1:
            total = tuple(t / self.eot_iter for t in total)
            value_sum = value_sum / self.eot_iter
        return value_sum, logits.detach(), dict(zip(leaves, total))

    def _input_grads(self, adv: Dict[str, torch.Tensor], fixed: Dict[str, Optional[torch.Tensor]],
                     labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Gradient of the (summed; targeted: negated) cross-entropy with respect to the attacked inputs only,
        averaged over ``eot_iter`` passes (``_eot_grads``)."""
        sign = -1.0 if self.targeted else 1.0
        return self._eot_grads(adv, fixed, lambda z: sign * F.cross_entropy(z, labels, reduction="none"))[2]

    def _perturb(self, clean: Dict[str, torch.Tensor], start: Dict[str, torch.Tensor],
                 fixed: Dict[str, Optional[torch.Tensor]], labels: torch.Tensor,
                 threats: Dict[str, LinfThreat]) -> Dict[str, torch.Tensor]:
        """One run of the attack from ``start`` (the clean input or a random start): the attack's loop,
        written in its own file with ``self._input_grads`` and the threat objects' ``step``/``box``/``clip``."""
        raise NotImplementedError(f"{type(self).__name__} must implement _perturb (its attack loop)")

    def take_queries(self) -> Optional[torch.Tensor]:
        """Model queries per sample of the last call, then forgotten; None for attacks that do not count
        them (the grid's ``queries`` column)."""
        return None

    @torch.no_grad()
    def _score(self, inputs: Dict[str, Optional[torch.Tensor]],
               labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (attack objective, success) of adversarial inputs."""
        logits = self._forward(inputs)
        loss = F.cross_entropy(logits, labels, reduction="none")
        pred = logits.argmax(dim=1)
        if self.targeted:
            return -loss, pred == labels
        return loss, pred != labels

    def _check_inputs(self, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> None:
        if not isinstance(inputs, Mapping):
            raise TypeError(f"inputs must be a dict {{'audio': a, 'visual': v}}, got {type(inputs).__name__}")
        bad = [k for k in inputs if k not in MODALITIES]
        if bad:
            raise KeyError(f"inputs has unknown key {bad[0]!r}; valid keys: {', '.join(MODALITIES)}")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
            raise ValueError(f"labels must be a 1-D tensor of class indices, got "
                             f"{getattr(labels, 'shape', type(labels).__name__)}")
        for m in self.attacked:
            x = inputs.get(m)
            if x is None:
                raise KeyError(f"eps[{m!r}] = {self.eps[m]} but inputs has no {m!r} tensor")
            if not torch.is_floating_point(x):
                raise TypeError(f"inputs[{m!r}] must be a floating-point tensor, got {x.dtype}")
            if x.shape[0] != labels.shape[0]:
                raise ValueError(f"inputs[{m!r}] has batch size {x.shape[0]} but labels has {labels.shape[0]}")
            lo, hi = VALID_RANGE[m]
            if x.numel():
                x_min, x_max = (float(t) for t in torch.aminmax(x.detach()))
                if not (lo <= x_min and x_max <= hi):  # also catches NaN
                    raise ValueError(f"inputs[{m!r}] must lie in [{lo}, {hi}] (physical range; normalisation "
                                     f"belongs inside the model), got [{x_min:.4g}, {x_max:.4g}]")

    def __call__(self, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Attack a batch: ``{"audio": a, "visual": v}, labels -> {"audio": a_adv, "visual": v_adv}``.

        With ``targeted=True`` the ``labels`` are the target classes. Modalities with eps 0 (or no eps)
        come back as the very tensors passed in.
        """
        self._check_inputs(inputs, labels)
        out: Dict[str, torch.Tensor] = dict(inputs)
        if not self.attacked:
            return out
        clean = {m: inputs[m].detach() for m in self.attacked}
        fixed = {m: (x if x is None or isinstance(x, Frozen) else Frozen(x.detach()))
                 for m, x in inputs.items() if m not in self.attacked}
        labels = labels.detach()
        threats = {m: self.threat(m, clean[m]) for m in self.attacked}

        with model_mode(self.model, training=False):
            best = self._run_restarts(clean, fixed, labels, threats)
        out.update(best)
        return out

    def _run_restarts(self, clean: Dict[str, torch.Tensor], fixed: Dict[str, Optional[torch.Tensor]],
                      labels: torch.Tensor, threats: Dict[str, LinfThreat]) -> Dict[str, torch.Tensor]:
        """Run the attack ``restarts`` times; per sample keep the first successful, else highest-loss, run."""
        best: Dict[str, torch.Tensor] = {}
        best_loss = best_ok = None
        for r in range(self.restarts):
            if self.random_start:
                start = {m: threats[m].random_perturb(clean[m], self._generator(clean[m].device))
                         for m in self.attacked}
            else:
                start = dict(clean)
            if r == 0:
                best = self._perturb(clean, start, fixed, labels, threats)
                if self.restarts > 1:
                    best_loss, best_ok = self._score({**fixed, **best}, labels)
                continue
            # Only still-robust samples are attacked again (auto-attack); the others keep their example.
            todo = (~best_ok).nonzero().flatten()
            if todo.numel() == 0:
                break
            sub = lambda d: {m: (x[todo] if x is not None else None) for m, x in d.items()}  # noqa: E731
            adv = self._perturb(sub(clean), sub(start), sub(fixed), labels[todo],
                                {m: t.select(todo) for m, t in threats.items()})
            loss, ok = self._score({**sub(fixed), **adv}, labels[todo])
            better = ok | (loss > best_loss[todo])
            idx = todo[better]
            for m in self.attacked:
                best[m][idx] = adv[m][better]
            best_loss[idx] = loss[better]
            best_ok[idx] = ok[better]
            logger.debug("%s restart %d: %d/%d samples improved", self.name, r, int(better.sum()), len(todo))
        return best

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(eps={self.eps}, norm={self.norm}, unit={self.eps_unit}, "
                f"steps={getattr(self, 'steps', None)}, "
                f"alpha={self.alpha}, random_start={self.random_start}, restarts={self.restarts}, "
                f"targeted={self.targeted})")
