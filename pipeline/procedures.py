"""Training procedures that a fusion head declares (``head.procedure``): the extra loss terms ``train_one_epoch``
adds, the examples they need, and CRMT's second step.

- ``crmt`` (models/crmt.py, Yang et al. ICLR 2024, Sec. 4): step one adds ``--crmt_rho`` x the unimodal margin
  regulariser to the cross-entropy (``CRMTProcedure``); after ``--num_epoch`` epochs, ``--crmt_step2_epochs``
  epochs of step two train only the integration weights ``a`` to raise the certified bound
  (``crmt_step2_epoch``), with the Lipschitz constants of the unimodal logits estimated first
  (``estimate_lipschitz``).
- ``single_source`` (models/robust_fusion.py, Yang et al. CVPR 2021, Sec. 4.3): each training example is, at
  random, kept clean or perturbed on its audio or on its visual input alone by ``--robust_attack`` within
  ``--train_eps`` (the single-source adversary, against the model being trained); the loss adds
  ``--robust_odd_weight`` x the odd-one-out cross-entropy naming the perturbed modality (``SingleSourceProcedure``).
"""
from __future__ import annotations

import logging
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from tqdm import tqdm

from attacks import ATTACKS, create_attack
from models.crmt import certified_radius, crmt_margin_loss
from models.robust_fusion import ODD_CLASSES, odd_one_out_loss
from pipeline.engine import to_inputs
from utils import distributed as du
from utils.modes import model_mode

log = logging.getLogger(__name__)

# CRMT step two's optimiser over a (the code's the_second_step: SGD, lr 0.03 x its lr 1e-3, momentum 0.9,
# weight decay 1e-2; the paper gives no values)
STEP2_MOMENTUM = 0.9
STEP2_WEIGHT_DECAY = 1e-2


class CRMTProcedure:
    """CRMT step one (paper Sec. 4): ``rho * crmt_margin_loss`` of the head's unimodal logits of this step's
    forward (``head.aux``)."""

    def __init__(self, rho: float) -> None:
        self.rho = rho

    def prepare(self, inputs: Dict[str, torch.Tensor], labels: torch.Tensor
                ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """The inputs unchanged; no targets besides the labels."""
        return inputs, {}

    def loss(self, head: nn.Module, labels: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``rho`` x the margin regulariser."""
        return self.rho * crmt_margin_loss({m: z.float() for m, z in head.aux["unimodal"].items()}, labels)


class SingleSourceProcedure:
    """Robust fusion training (Yang et al. CVPR 2021, Sec. 4.3) adapted to two modalities.

    ``prepare``: each example is assigned, uniformly at random (seeded generator), to one of ``ODD_CLASSES``;
    the examples of ``audio`` / ``visual`` get a single-source perturbation of that input by ``attack_name``
    (budget of that modality only); ``none`` stays clean. ``loss``: ``weight`` x the odd-one-out cross-entropy
    of the detector on the examples of this step. The uniform split is our choice (the paper trains on clean and
    single-source-perturbed examples without a ratio we could take over).
    """

    def __init__(self, model: nn.Module, attack_name: str, budget: Mapping[str, float], weight: float,
                 steps: int, eps_unit: str, seed: int) -> None:
        cls = ATTACKS.get(attack_name)
        wanted = {"steps": steps, "random_start": True, "eps_unit": eps_unit, "seed": seed}
        opts = {k: v for k, v in wanted.items() if cls.takes(k)}
        self.attacks = {m: create_attack(attack_name, model, eps={m: budget[m]}, **opts)
                        for m in ("audio", "visual") if budget.get(m, 0) > 0}
        missing = [m for m in ("audio", "visual") if m not in self.attacks]
        if missing:
            raise ValueError(f"--train_eps: the single-source adversary needs a budget > 0 for {missing}")
        self.weight = weight
        self.gen = torch.Generator().manual_seed(seed)

    def prepare(self, inputs: Dict[str, torch.Tensor], labels: torch.Tensor
                ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """Inputs with one modality perturbed on the examples drawn for it; targets ``{"odd": (B,)}``."""
        odd = torch.randint(len(ODD_CLASSES), (labels.numel(),), generator=self.gen).to(labels.device)
        out = {m: x.clone() for m, x in inputs.items()}
        for m, attack in self.attacks.items():
            idx = (odd == ODD_CLASSES.index(m)).nonzero().flatten()
            if idx.numel():
                adv = attack({k: x[idx] for k, x in inputs.items()}, labels[idx])
                out[m][idx] = adv[m].detach()
        return out, {"odd": odd}

    def loss(self, head: nn.Module, labels: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``weight`` x the odd-one-out cross-entropy."""
        return self.weight * odd_one_out_loss(head.aux["odd_logits"], targets["odd"])


def build_procedure(cfg, model: nn.Module):
    """The procedure the model's head declares (``head.procedure``), or None for a plain head."""
    if cfg.mode != "train":  # an evaluation trains nothing (its --train_eps is not even parsed)
        return None
    head = getattr(model, "head", None)  # a defended model (main_defense.py) wraps its net and has no head of its own
    kind = getattr(head, "procedure", "")
    if kind == "crmt":
        return CRMTProcedure(cfg.crmt_rho)
    if kind == "single_source":
        return SingleSourceProcedure(model, cfg.robust_attack, cfg.train_budget, cfg.robust_odd_weight,
                                     cfg.train_attack_steps, cfg.eps_unit, cfg.seed)
    if kind:
        raise ValueError(f"head {type(head).__name__} declares an unknown procedure {kind!r}")
    return None


def _unimodal_inputs(model: nn.Module, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return model.head.unimodal_logits(model.features(**inputs))


def estimate_lipschitz(model: nn.Module, loader, device: torch.device, progress: bool = True) -> torch.Tensor:
    """(M x K) estimates of the Lipschitz constants ``tau_k^(m)`` of ``x^(m) -> z_k^(m)`` (CRMT's unimodal
    logits): the largest input-gradient L2 norm over ``loader``'s clips, in eval mode, maximised over
    processes. The code's ``get_lip`` does this on the fused logit; see models/crmt.py for why we differ. A
    maximum over seen points is a lower bound of the true constant (an estimate, not a guarantee)."""
    head = model.head
    tau = torch.zeros(len(head.modalities), head.num_classes, device=device)
    with model_mode(model, training=False):
        for batch in tqdm(loader, desc="lipschitz", disable=not (progress and du.is_main()), leave=False):
            inputs = {m: x.detach().requires_grad_(True) for m, x in to_inputs(batch, device, head.modalities).items()}
            z = _unimodal_inputs(model, inputs)
            for k in range(head.num_classes):
                # z_k^(m) depends on x^(m) only and clips are independent in eval mode: one backward gives every
                # clip's gradient of every modality
                grads = torch.autograd.grad(sum(z[m][:, k].sum() for m in head.modalities),
                                            [inputs[m] for m in head.modalities], retain_graph=True)
                for i, g in enumerate(grads):
                    tau[i, k] = torch.maximum(tau[i, k], g.flatten(1).norm(dim=1).max())
    return du.all_reduce_max(tau) if du.is_distributed() else tau


def crmt_step2_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, device: torch.device,
                     epoch: int, progress: bool = True) -> Dict[str, float]:
    """CRMT step two (paper Sec. 4): one pass minimising ``-mean r(x)`` over the integration weights ``a``
    only (``optimizer`` holds them), with the input-space bound and the head's recorded Lipschitz constants;
    features and ``W~`` are computed without gradient (fixed). Returns the mean bound and accuracy."""
    head = model.head
    total, correct, n = 0.0, 0, 0
    with model_mode(model, training=False):  # fixed encoders: BatchNorm statistics untouched
        for batch in tqdm(loader, desc=f"crmt step2 {epoch}", disable=not (progress and du.is_main()), leave=False):
            inputs = to_inputs(batch, device, head.modalities)
            labels = batch["label"].to(device)
            with torch.no_grad():
                feats = {m: f.to(head.bias.dtype) for m, f in model.features(**inputs).items()}
            r = certified_radius(head, feats, labels, space="input")
            loss = -r.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if du.is_distributed():
                for p in optimizer.param_groups[0]["params"]:
                    if p.grad is not None:
                        p.grad = du.all_reduce_sum(p.grad) / du.world_size()
            optimizer.step()
            with torch.no_grad():
                correct += int((head(feats).argmax(1) == labels).sum())
            total += float(r.detach().sum())
            n += labels.numel()
    return {"bound": total / max(n, 1), "acc": correct / max(n, 1), "n": n}


def step2_optimizer(model: nn.Module, lr: float) -> torch.optim.SGD:
    """SGD over the CRMT head's integration weights only (the code's the_second_step)."""
    return torch.optim.SGD(list(model.head.a.parameters()), lr=lr, momentum=STEP2_MOMENTUM,
                           weight_decay=STEP2_WEIGHT_DECAY)


def record_lipschitz(model: nn.Module, tau: torch.Tensor) -> None:
    """Store the estimated constants in the head's ``lipschitz`` buffer (saved with the checkpoint)."""
    model.head.lipschitz.copy_(tau.to(model.head.lipschitz))
    log.info("CRMT Lipschitz estimates (rows %s): %s", ", ".join(model.head.modalities),
             [[round(v, 4) for v in row] for row in tau.tolist()])
