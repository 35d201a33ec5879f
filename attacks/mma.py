"""MMA: the modality misalignment attack of Zhang, Liang, Shimada & Xu (ICLR 2025).

The paper (arXiv 2502.11858, "Rethinking Audio-Visual Adversarial Vulnerability from Temporal and Modality
Perspectives") was not readable in full from this environment: its text (ar5iv, arXiv HTML) is stored only
by its abstract. What is implemented here is its best-documented reading, from the abstract and from the
OpenReview discussion of the paper (ICLR 2025, forum ePJrZLIqpV) and two independent reviews that quote its
equations:

* Eq. (1), the problem: maximise the classification loss over per-modality budgets
  ``||delta_v|| <= eps_v``, ``||delta_a|| <= eps_a`` (this project's threat objects, ``attacks/threats.py``).
* Eq. (3), the misalignment loss (Section 4, "modality misalignment-based attack"): the reviews quote it as
  ``L_M = (f_a . f_v) / ||f_a . f_v||_2^2`` over the audio and visual features ``f_a``, ``f_v`` and
  describe the attack as "reducing feature similarity between audio and visual streams", "introducing
  incongruence between the audio and visual modalities". Read literally the quoted fraction is
  ``1 / (f_a . f_v)``, whose minimisation would *raise* the similarity, the opposite of the stated goal
  (both reviews flag the notation); we read it as what the text says it measures, the normalised dot
  product of the two features, i.e. the cosine ``L_M = <f_a, f_v> / (||f_a|| ||f_v||)`` per clip.
* Eq. (4), the combined objective: the attack maximises the cross-entropy while *minimising* the auxiliary
  losses weighted by ``lambda`` (a reviewer: "based on Eq. (4), loss in Eq. (2) will be minimized"). With
  only the misalignment term: ``max_delta  CE(f(x + delta), y) - lambda * L_M(x + delta)``.
* The optimiser: the paper builds on the iterative sign-gradient attacks it compares with (I-FGSM, MI-FGSM);
  here the steps are PGD's (``alpha * sign(grad)`` then projection onto the ball around the CLEAN input and
  the valid range), so MMA with ``lam=0`` is exactly this project's PGD (a test checks it bit for bit).

The paper does not report lambda (a reviewer asks for it); ``lam=1.0`` (CE and cosine on comparable
scales: the cosine lies in [-1, 1]) is our choice. The loss is summed over the batch, so a clip's example
does not depend on its batch.

Model contract: besides ``model(audio=, visual=) -> logits``, the misalignment term needs the per-modality
features ``model.features(audio=, visual=) -> {"audio": (B, D), "visual": (B, D)}`` of equal size
(``models.AVModel``, ``DefendedModel`` and the test toys offer it); a model without them is refused at
construction (unless ``lam=0``), features of unequal size at the first batch, each with the reason. On a
unimodal model (features of one modality) the term does not exist: mma is then its CE term, PGD, and says
so once in the log (as the grid drops a budget on an input the model does not read). When the
model also offers ``classify(feats)`` the logits come from the same forward as the features.

Arguments (``attacks.create_attack("mma", model, ...)``):
    eps (dict): per-modality budget; 0/absent = untouched. steps (int): 10. lam (float): 1.0 (weight of the
    audio-visual cosine). alpha, random_start, restarts, targeted, eps_unit, seed, norm: as PGD.

Example::

    >>> attack = create_attack("mma", model, eps={"audio": 0.006, "visual": 0.006}, steps=10, lam=1.0)
    >>> adv = attack({"audio": a, "visual": v}, labels)
"""
from __future__ import annotations

import logging
from typing import Dict, Mapping, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from attacks.base import ATTACKS, Attack, Frozen, _check_scalar, check_int

logger = logging.getLogger(__name__)

DEFAULT_LAM = 1.0  # lambda of Eq. (4): not reported by the paper; our choice (see the module docstring)


def _bare(model: nn.Module) -> nn.Module:
    """The module itself, looking through a DDP/DataParallel ``.module``."""
    return getattr(model, "module", model)


@ATTACKS.register("mma")
class MMA(Attack):
    """Modality misalignment attack (Zhang et al., ICLR 2025, Eq. (3)-(4)): sign-gradient ascent on
    ``CE - lam * cos(f_a, f_v)`` under per-modality budgets; see the module docstring for the reading of the
    paper, the contract and the arguments."""

    name = "mma"
    flag_args = {"steps": "attack_steps", "random_start": "random_start", "restarts": "restarts"}

    def __init__(self, model: nn.Module, eps: Mapping[str, float], steps: int = 10, lam: float = DEFAULT_LAM,
                 alpha: Union[None, float, Mapping[str, float]] = None, random_start: bool = False,
                 restarts: int = 1, targeted: bool = False, eps_unit: str = "input", seed: int = 0,
                 norm: Union[str, Mapping[str, str], None] = "Linf") -> None:
        self.steps = check_int("steps", steps)
        self.lam = _check_scalar("lam", lam)
        self._warned = False
        super().__init__(model, eps, alpha=alpha, random_start=random_start, restarts=restarts,
                         targeted=targeted, eps_unit=eps_unit, seed=seed, norm=norm)
        if self.lam > 0 and not callable(getattr(_bare(model), "features", None)):
            raise TypeError(f"mma with lam={self.lam} needs model.features(audio=, visual=) -> per-modality "
                            f"features (the paper's f_a, f_v); {type(_bare(model)).__name__} has none "
                            "(use lam=0, which is PGD, or another attack)")

    def _objective(self, inputs: Dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The summed attack objective ``(+/-)CE - lam * cos(f_a, f_v)`` of a batch."""
        if self.lam == 0:
            logits = self._forward(inputs)
        else:
            bare = _bare(self.model)
            plain = {m: (x.x if isinstance(x, Frozen) else x) for m, x in inputs.items() if x is not None}
            feats = bare.features(**plain)
            if not ("audio" in feats and "visual" in feats):
                if not self._warned:
                    logger.warning("mma: the model gives features of %s only; the misalignment term needs both "
                                   "modalities, so on this unimodal model mma is its CE term (PGD)", sorted(feats))
                    self._warned = True
            elif feats["audio"].shape[1] != feats["visual"].shape[1]:
                raise ValueError(f"mma's misalignment term (cosine of f_a and f_v) needs features of equal size, "
                                 f"got audio {feats['audio'].shape[1]} and visual {feats['visual'].shape[1]}")
            classify = getattr(bare, "classify", None)
            logits = classify(feats) if callable(classify) else self.model(**plain)
        ce = F.cross_entropy(logits, labels, reduction="sum")
        loss = -ce if self.targeted else ce
        if self.lam > 0 and "audio" in feats and "visual" in feats:
            cos = F.cosine_similarity(feats["audio"].flatten(1), feats["visual"].flatten(1), dim=1)
            loss = loss - self.lam * cos.sum()
        return loss

    def _perturb(self, clean, start, fixed: Dict[str, Optional[torch.Tensor]], labels: torch.Tensor,
                 threats) -> Dict[str, torch.Tensor]:
        adv = dict(start)
        boxes = {m: threats[m].box(clean[m]) for m in adv}  # the ball around the CLEAN input, in range
        for _ in range(self.steps):
            leaves = {m: x.detach().requires_grad_(True) for m, x in adv.items()}
            with torch.enable_grad():
                loss = self._objective({**fixed, **leaves}, labels)
                grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
            for m in adv:
                adv[m] = threats[m].clip(threats[m].step(adv[m], grads[m]), boxes[m])
        return adv
