"""Training objectives: what one training step minimises (--adv_train, --adv_train_modality, --noise_train).

An objective turns a clean batch into the examples of the step (``examples``: the training adversary or the noise
runs here, in fp32, outside autocast) and then into the loss terms (``loss``: the forward passes through the
training net, under autocast when --amp). The engine adds MinSim to what ``loss`` returns.

* ``plain``: cross-entropy on the clean batch (no --adv_train).
* ``madry`` (``--adv_train ATTACK`` for any registered attack, e.g. ``pgd``): cross-entropy on the attack's
  examples (Madry et al., ICLR 2018, eq. 2.1).
* ``trades`` (``--adv_train trades``): CE(f(x), y) + beta * KL(f(x) || f(x')), x' maximising the KL in the ball
  (Zhang et al., ICML 2019).
* ``fast`` (``--adv_train fast``): cross-entropy on FGSM from a uniform random start with step 1.25 eps (Wong,
  Rice & Kolter, ICLR 2020).
* ``noise`` (``--noise_train audio=S,visual=S``): cross-entropy on x + N(0, sigma^2 I) (Cohen, Rosenfeld &
  Kolter, ICML 2019).

Objectives register themselves by name in ``OBJECTIVES``; ``objective_for(cfg, model)`` builds the one a run asks
for. The modality schedule (``ModalitySchedule``: ``both``, ``random``, ``alternate``) says which modalities the
training adversary attacks at each batch; it is a function of (seed, epoch, batch index) only, so a resumed run
draws the same modalities as an uninterrupted one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from attacks import ATTACKS, create_attack
from attacks.base import MODALITIES, Attack, check_int, forward, model_modalities
from utils import distributed as du
from utils.registry import Registry

log = logging.getLogger(__name__)

Inputs = Dict[str, torch.Tensor]
OBJECTIVES: "Registry[type]" = Registry("training objective")
# --adv_train_modality: which modalities the training adversary attacks per batch.
SCHEDULES: Tuple[str, ...] = ("both", "random", "alternate")
# TRADES, the authors' CIFAR-10 setting (train_trades_cifar10.py of yaodongyu/TRADES; the paper's sec. 5 CIFAR10
# experiments): eps 0.031, 10 steps of 0.007, 1/lambda = beta = 6. The step is kept as a fraction of eps so that
# it carries over to this project's per-modality budgets.
TRADES_BETA = 6.0
TRADES_STEP_RATIO = 0.007 / 0.031
# TRADES Algorithm 1: x' starts at x + 0.001 N(0, I) (the KL and its gradient vanish at x' = x); 0.001 is for
# pixels in [0, 1] at eps 0.031, so here the start's std is the same fraction of each modality's eps.
TRADES_START_RATIO = 0.001 / 0.031
# Fast AT (Wong, Rice & Kolter, ICLR 2020, sec. 4 and Algorithm 3, "FGSM adversarial training with random
# initialization"): delta ~ U(-eps, eps), one FGSM step of alpha = 1.25 eps, projected back onto the ball.
FAST_ALPHA_RATIO = 1.25


def batch_seed(*keys: int) -> int:
    """A 63-bit seed derived from ``keys`` (numpy's SeedSequence: distinct keys, independent streams)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


class ModalitySchedule:
    """Which modalities the training adversary attacks at batch ``step`` of ``epoch``.

    ``both``: every modality with a budget, every batch (Madry's setting on a multimodal input). ``random``: one
    modality drawn uniformly per batch from a generator seeded by (seed, epoch, step). ``alternate``: the
    modalities in turn, audio on even batches of an epoch and visual on odd ones. The last two need two
    modalities with a budget (pipeline/config.py refuses them otherwise).
    """

    def __init__(self, kind: str, modalities: Sequence[str], seed: int = 0) -> None:
        if kind not in SCHEDULES:
            raise KeyError(f"unknown modality schedule {kind!r}; valid: {', '.join(SCHEDULES)}")
        self.kind, self.seed = kind, int(seed)
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        if not self.modalities or (kind != "both" and len(self.modalities) < 2):
            raise ValueError(f"modality schedule {kind!r} needs {'two modalities' if kind != 'both' else 'a modality'}"
                             f" with a budget, got {self.modalities}")

    def choices(self) -> Tuple[Tuple[str, ...], ...]:
        """Every subset ``pick`` can return."""
        return (self.modalities,) if self.kind == "both" else tuple((m,) for m in self.modalities)

    def pick(self, epoch: int, step: int) -> Tuple[str, ...]:
        """The modalities attacked at batch ``step`` (0-based) of ``epoch``."""
        if self.kind == "both":
            return self.modalities
        if self.kind == "alternate":
            return (self.modalities[step % len(self.modalities)],)
        rng = np.random.default_rng(batch_seed(self.seed, epoch, step))
        return (self.modalities[int(rng.integers(len(self.modalities)))],)


@dataclass
class StepLoss:
    """One step's loss terms: ``ce`` (the cross-entropy term), ``robust`` (an extra term, e.g. TRADES' beta * KL;
    0 where there is none), and the logits and features of the cross-entropy's inputs (train accuracy, MinSim)."""

    logits: torch.Tensor
    feats: Dict[str, torch.Tensor]
    ce: torch.Tensor
    robust: torch.Tensor


class Objective:
    """Plain training: cross-entropy on the clean batch. Subclasses change ``examples`` and/or ``loss``."""

    name = "plain"

    def examples(self, inputs: Inputs, labels: torch.Tensor, epoch: int, step: int) -> Dict[str, Inputs]:
        """The step's inputs: ``{"train": ...}`` (the cross-entropy's) and any others ``loss`` reads."""
        return {"train": inputs}

    def loss(self, net: nn.Module, examples: Mapping[str, Inputs], labels: torch.Tensor) -> StepLoss:
        """The loss terms; ``net`` returns ``(logits, feats)`` (``pipeline.engine.LogitsAndFeatures``)."""
        logits, feats = net(**examples["train"])
        ce = F.cross_entropy(logits.float(), labels)
        return StepLoss(logits, feats, ce, torch.zeros((), device=ce.device))

    def describe(self) -> str:
        return self.name


OBJECTIVES.register("plain")(Objective)


class AdversarialObjective(Objective):
    """An objective with a training adversary: one attack per modality subset the schedule can pick (each with its
    own random-start generator), built by ``build(eps)`` with the budget restricted to that subset."""

    def __init__(self, budget: Mapping[str, float], schedule: ModalitySchedule,
                 build: Callable[[Dict[str, float]], Attack]) -> None:
        self.schedule = schedule
        self.adversaries = {mods: build({m: float(budget[m]) for m in mods}) for mods in schedule.choices()}
        self.last_attacked: Tuple[str, ...] = ()

    def adversarial(self, inputs: Inputs, labels: torch.Tensor, epoch: int, step: int) -> Inputs:
        """The adversary's examples of the batch (modalities the schedule leaves out are the very tensors passed)."""
        self.last_attacked = self.schedule.pick(epoch, step)
        return self.adversaries[self.last_attacked](inputs, labels)  # attacks restore the model's mode

    def examples(self, inputs: Inputs, labels: torch.Tensor, epoch: int, step: int) -> Dict[str, Inputs]:
        return {"train": self.adversarial(inputs, labels, epoch, step)}

    def describe(self) -> str:
        one = next(iter(self.adversaries.values()))
        return f"{self.name} ({type(one).__name__}, modality schedule {self.schedule.kind})"


def attack_adversary(name: str, model: nn.Module, eps: Mapping[str, float], steps: int, eps_unit: str = "input",
                     seed: int = 0) -> Attack:
    """The registered attack ``name`` as a training adversary: Madry's setting (``steps`` steps from a random
    start) for the options its constructor takes; FGSM, which takes neither, is plain FGSM."""
    wanted = {"steps": steps, "random_start": True, "eps_unit": eps_unit, "seed": seed}
    cls = ATTACKS.get(name)
    return create_attack(name, model, eps=dict(eps), **{k: v for k, v in wanted.items() if cls.takes(k)})


def _schedule(cfg: Any) -> ModalitySchedule:
    return ModalitySchedule(cfg.adv_train_modality, [m for m, e in cfg.train_budget.items() if e > 0], cfg.seed)


@OBJECTIVES.register("madry")
class MadryAT(AdversarialObjective):
    """Madry et al. (ICLR 2018, eq. 2.1): minimise the cross-entropy of the adversary's examples; the adversary is
    the registered attack named by --adv_train (``attack_adversary``)."""

    name = "madry"

    @classmethod
    def from_config(cls, cfg: Any, model: nn.Module) -> "MadryAT":
        obj = cls(cfg.train_budget, _schedule(cfg), lambda eps: attack_adversary(
            cfg.adv_train, model, eps, cfg.train_attack_steps, cfg.eps_unit, cfg.seed))
        obj.name = f"madry:{cfg.adv_train}"
        return obj


@OBJECTIVES.register("fast")
class FastAT(AdversarialObjective):
    """"Fast is better than free" (Wong, Rice & Kolter, ICLR 2020, sec. 4, Algorithm 3): FGSM from a random start,
    delta ~ U(-eps, eps) per element, one signed-gradient step of alpha = 1.25 eps (FAST_ALPHA_RATIO), projected
    onto the ball and the valid range; then cross-entropy on the result. Written as PGD with one step from a
    random start, which is exactly that.

    Differences from the paper, chosen here: the gradient is taken in eval mode (every attack of this project runs
    the model in eval mode; the authors' code keeps train mode), and neither its cyclic learning rate nor its
    mixed precision is used (the run's --lr_* / --amp apply), so the cost measured is that of the step alone.
    """

    name = "fast"

    @classmethod
    def from_config(cls, cfg: Any, model: nn.Module) -> "FastAT":
        return cls(cfg.train_budget, _schedule(cfg), lambda eps: fast_adversary(model, eps, cfg.eps_unit, cfg.seed))


def fast_adversary(model: nn.Module, eps: Mapping[str, float], eps_unit: str = "input", seed: int = 0) -> Attack:
    """FGSM with a uniform random start and step 1.25 eps per modality (FastAT)."""
    alpha = {m: FAST_ALPHA_RATIO * e for m, e in eps.items() if e > 0}
    return create_attack("pgd", model, eps=dict(eps), steps=1, alpha=alpha, random_start=True, eps_unit=eps_unit,
                         seed=seed)


class TradesAdversary(Attack):
    """TRADES' inner maximisation (Zhang et al., ICML 2019, sec. 4, eq. 5 and Algorithm 1): x' maximising
    KL(f(x) || f(x')) over the ball, by ``steps`` signed-gradient steps of ``alpha`` (default
    TRADES_STEP_RATIO * eps) from x + TRADES_START_RATIO * eps * N(0, I), each projected onto the ball around
    the clean input and the valid range. f(x) is the clean prediction, computed once, without gradient. The KL is
    summed over the batch, so a sample's x' does not depend on its batch (but for the start noise).

    Not a registered evaluation attack: it needs no labels and maximises no error, only the distance between
    two predictions. It uses the project's threat objects, input contract and model mode (eval, as the authors'
    code does while it searches x').
    """

    name = "trades-kl"

    def __init__(self, model: nn.Module, eps: Mapping[str, float], steps: int = 10,
                 alpha: Union[None, float, Mapping[str, float]] = None, eps_unit: str = "input",
                 seed: int = 0) -> None:
        self.steps = check_int("steps", steps)
        if alpha is None and isinstance(eps, Mapping):
            alpha = {m: TRADES_STEP_RATIO * float(e) for m, e in eps.items() if float(e) > 0}
        super().__init__(model, eps, alpha=alpha, eps_unit=eps_unit, seed=seed)

    def _perturb(self, clean, start, fixed, labels, threats) -> Dict[str, torch.Tensor]:
        with torch.no_grad():
            target = F.log_softmax(forward(self.model, {**fixed, **clean}).float(), dim=1)
        adv: Dict[str, torch.Tensor] = {}
        boxes = {m: threats[m].box(clean[m]) for m in clean}
        for m, x in clean.items():
            noise = torch.randn(x.shape, generator=self._generator(x.device), device=x.device, dtype=x.dtype)
            adv[m] = threats[m].clip(x + noise * (TRADES_START_RATIO * threats[m].radius()), boxes[m])
        for _ in range(self.steps):
            leaves = {m: x.detach().requires_grad_(True) for m, x in adv.items()}
            with torch.enable_grad():
                logp = F.log_softmax(forward(self.model, {**fixed, **leaves}).float(), dim=1)
                kl = F.kl_div(logp, target, log_target=True, reduction="sum")  # sum_i KL(f(x_i) || f(x'_i))
                grads = torch.autograd.grad(kl, list(leaves.values()))
            for (m, _), g in zip(leaves.items(), grads):
                adv[m] = threats[m].clip(threats[m].step(adv[m], g), boxes[m])
        return adv


@OBJECTIVES.register("trades")
class TRADES(AdversarialObjective):
    """TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan, "Theoretically Principled Trade-off between Robustness
    and Accuracy", ICML 2019, arXiv 1901.08573), sec. 4, eq. 5 with the KL as the surrogate of the boundary term:

        loss = CE(f(x), y) + beta * (1/B) sum_i KL(f(x_i) || f(x'_i)),   beta = 1/lambda (default 6, TRADES_BETA)

    x' from ``TradesAdversary`` (eval mode); the loss's forward passes of x and x' both run in train mode and the
    gradient flows through both distributions, as in the authors' trades_loss. The budget is --train_eps, the
    steps --train_attack_steps, the step TRADES_STEP_RATIO * eps per modality. ``StepLoss.ce`` is the clean
    cross-entropy and ``StepLoss.robust`` beta * KL; the logged train accuracy is the clean one.
    """

    name = "trades"

    def __init__(self, budget: Mapping[str, float], schedule: ModalitySchedule,
                 build: Callable[[Dict[str, float]], Attack], beta: float = TRADES_BETA) -> None:
        if not beta >= 0:
            raise ValueError(f"TRADES beta must be >= 0, got {beta}")
        super().__init__(budget, schedule, build)
        self.beta = float(beta)

    @classmethod
    def from_config(cls, cfg: Any, model: nn.Module) -> "TRADES":
        return cls(cfg.train_budget, _schedule(cfg), lambda eps: TradesAdversary(
            model, eps, steps=cfg.train_attack_steps, eps_unit=cfg.eps_unit, seed=cfg.seed), beta=cfg.trades_beta)

    def examples(self, inputs: Inputs, labels: torch.Tensor, epoch: int, step: int) -> Dict[str, Inputs]:
        return {"train": inputs, "adv": self.adversarial(inputs, labels, epoch, step)}

    def loss(self, net: nn.Module, examples: Mapping[str, Inputs], labels: torch.Tensor) -> StepLoss:
        logits, feats = net(**examples["train"])
        adv_logits, _ = net(**examples["adv"])
        ce = F.cross_entropy(logits.float(), labels)
        kl = trades_kl(logits, adv_logits)
        return StepLoss(logits, feats, ce, self.beta * kl)


def trades_kl(clean_logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """(1/B) sum_i KL(softmax(clean_i) || softmax(adv_i)), in fp32 (the TRADES regulariser)."""
    return F.kl_div(F.log_softmax(adv_logits.float(), dim=1), F.log_softmax(clean_logits.float(), dim=1),
                    log_target=True, reduction="batchmean")


@OBJECTIVES.register("noise")
class GaussianNoiseTraining(Objective):
    """Gaussian data augmentation for randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019, arXiv 1902.02918, sec. 3,
    "Training the base classifier", and sec. 4, where each sigma's base classifier is trained with noise of that
    sigma):
    cross-entropy on x_m + N(0, sigma_m^2 I) for each modality m of ``sigma`` (others clean).

    No clipping to the valid range: the smoothed classifier g(x) = argmax P(f(x + delta) = c) of Cohen et al. (eq. 1,
    Theorem 1) evaluates the base classifier on unclipped Gaussian noise, and training should see the noise
    distribution certification uses; clipping would fold the tails onto the range's edges (a different, non-Gaussian
    distribution near silent audio or black/white pixels). The models normalise inside and accept any float.

    The noise of batch ``step`` of ``epoch`` comes from a generator seeded by (seed, epoch, step, rank): a resume
    draws what an uninterrupted run draws.
    """

    name = "noise"

    def __init__(self, sigma: Mapping[str, float], seed: int = 0) -> None:
        bad = {m: s for m, s in sigma.items() if m not in MODALITIES or not s > 0}
        if bad or not sigma:
            raise ValueError(f"noise sigma must be > 0 per modality ({', '.join(MODALITIES)}), got {dict(sigma)}")
        self.sigma = {m: float(s) for m, s in sigma.items()}
        self.seed = int(seed)

    @classmethod
    def from_config(cls, cfg: Any, model: nn.Module) -> "GaussianNoiseTraining":
        readable = model_modalities(model) or MODALITIES
        missing = [m for m in cfg.train_noise if m not in readable]
        if missing:
            raise ValueError(f"--noise_train puts noise on {', '.join(missing)}, which the model does not read")
        return cls(cfg.train_noise, cfg.seed)

    def examples(self, inputs: Inputs, labels: torch.Tensor, epoch: int, step: int) -> Dict[str, Inputs]:
        out = dict(inputs)
        for i, (m, s) in enumerate(sorted(self.sigma.items())):
            x = inputs[m]
            gen = torch.Generator(device=x.device)
            gen.manual_seed(batch_seed(self.seed, epoch, step, du.rank(), i))
            out[m] = x + s * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return {"train": out}

    def describe(self) -> str:
        return f"noise ({', '.join(f'sigma_{m} {s:g}' for m, s in sorted(self.sigma.items()))})"


# --adv_train names that are objectives of their own; any other --adv_train name is a registered attack (madry).
ADV_TRAIN_OBJECTIVES: Tuple[str, ...] = ("trades", "fast")


def adv_train_names() -> list:
    """The valid --adv_train values: the objectives of ADV_TRAIN_OBJECTIVES and every registered attack."""
    return [*ADV_TRAIN_OBJECTIVES, *(a for a in ATTACKS.names() if a not in ADV_TRAIN_OBJECTIVES)]


def objective_name(cfg: Any) -> str:
    """The registered objective a run trains with: noise, trades, fast, madry (any attack) or plain."""
    if getattr(cfg, "train_noise", None):
        return "noise"
    if not cfg.adv_train:
        return "plain"
    return cfg.adv_train if cfg.adv_train in ADV_TRAIN_OBJECTIVES else "madry"


def objective_for(cfg: Any, model: nn.Module) -> Objective:
    """The training objective of ``cfg`` for ``model`` (the bare model the adversary attacks)."""
    cls = OBJECTIVES.get(objective_name(cfg))
    obj = cls.from_config(cfg, model) if hasattr(cls, "from_config") else cls()
    log.info("training objective: %s", obj.describe())
    return obj
