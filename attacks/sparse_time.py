"""Sparse-in-time PGD: the budget spends on at most ``frames`` of a clip's ``T`` segments."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Union

import torch
import torch.nn as nn

from attacks.base import ATTACKS, Attack, check_int
from attacks.segments import batch_segments, segment_dual_norm, segment_mask, segment_norms

SELECTIONS = ("saliency", "random")


@ATTACKS.register("sparse_time")
class SparseTime(Attack):
    """PGD whose perturbation is confined to ``frames`` (k) of the clip's ``T`` time segments, per modality
    (issue 19, item 1; the sparse-in-time threat of video attacks, e.g. Wei et al., "Sparse Adversarial
    Perturbations for Videos", AAAI 2019, here with a fixed count k instead of an L2,1 penalty).

    Segments (``attacks/segments.py``): frame ``t`` of the visual input ``(B, 3, T, H, W)``; for audio the
    ``t``-th of ``T`` equal consecutive parts of the waveform, the part matching frame ``t`` (the module
    docstring says how the loader aligns the audio window with the frames). ``T`` is the visual input's frame
    count unless ``segments`` sets it; k is capped at ``T`` (with ``T = 1`` the attack is PGD).

    Choice of the support, per sample and modality, from the loss gradient at the start (the clean input):
    ``select="saliency"`` keeps the k segments with the largest gradient norm, measured in the dual of the
    threat's norm (L1 under L-inf: the first-order gain of a signed step on segment t is eps ||g_t||_1; L2
    under L2/SNR), i.e. the k segments where a first step raises the loss most. ``reselect=r > 0`` chooses
    again every r steps from the current gradient (the perturbation on a dropped segment is removed). The
    baseline ``select="random"`` draws k segments uniformly from the attack's seeded generator (its draw is
    made for the whole batch, so a sample's support then depends on its batch position).

    The steps are PGD's (``attacks/pgd.py``) with the gradient masked to the support; after each projection
    every input outside the support is reset to the clean value, so the perturbation there is exactly 0, and
    within it the usual per-modality ball and valid range hold (``attacks/threats.py``).

    ``last_support``: ``{modality: (B, T) bool}`` of the last call, True on the perturbed segments (for the
    examples page; ``attacks.segments.frames_of`` lists them).

    Arguments: eps (dict), frames (int, 1), steps (int, 10), select ("saliency" | "random"), reselect
    (int, 0 = chosen once), segments (int, 0 = the visual frame count), alpha (None = eps/8), targeted,
    eps_unit, seed (random selection), norm.

    Example::

        >>> attack = create_attack("sparse_time", model, eps={"visual": 8 / 255}, frames=2)
        >>> adv = attack({"audio": a, "visual": v}, labels); attack.last_support["visual"]
    """

    name = "sparse_time"
    # a PGD variant equal to PGD on one-frame clips (the default --num_frames 1): run by name, not in 'all'
    in_all = False
    flag_args = {"steps": "attack_steps"}

    def __init__(self, model: nn.Module, eps: Mapping[str, float], frames: int = 1, steps: int = 10,
                 select: str = "saliency", reselect: int = 0, segments: int = 0,
                 alpha: Union[None, float, Mapping[str, float]] = None, targeted: bool = False,
                 eps_unit: str = "input", seed: int = 0,
                 norm: Union[str, Mapping[str, str], None] = "Linf") -> None:
        self.frames = check_int("frames", frames)
        self.steps = check_int("steps", steps)
        self.reselect = check_int("reselect", reselect, minimum=0)
        self.segments = check_int("segments", segments, minimum=0)
        if select not in SELECTIONS:
            raise ValueError(f"unknown select {select!r}; valid select values: {', '.join(SELECTIONS)}")
        self.select = select
        self.last_support: Dict[str, torch.Tensor] = {}
        super().__init__(model, eps, alpha=alpha, targeted=targeted, eps_unit=eps_unit, seed=seed, norm=norm)

    def _choose(self, grads: Dict[str, torch.Tensor], t: int) -> Dict[str, torch.Tensor]:
        """The support (B, T) of each attacked modality: the k segments of largest gradient dual norm, or
        k random ones."""
        k = min(self.frames, t)
        out = {}
        for m, g in grads.items():
            if self.select == "random":
                scores = torch.rand(g.shape[0], t, generator=self._generator(g.device), device=g.device)
            else:
                scores = segment_norms(g, m, t, segment_dual_norm(self.norm[m]))
            top = scores.topk(k, dim=1).indices
            out[m] = torch.zeros(g.shape[0], t, dtype=torch.bool, device=g.device).scatter_(1, top, True)
        return out

    def _perturb(self, clean, start, fixed: Dict[str, Optional[torch.Tensor]], labels: torch.Tensor,
                 threats) -> Dict[str, torch.Tensor]:
        t = batch_segments(clean, fixed, self.segments)
        adv = dict(start)
        boxes = {m: threats[m].box(clean[m]) for m in adv}
        support: Dict[str, torch.Tensor] = {}
        masks: Dict[str, torch.Tensor] = {}
        for i in range(self.steps):
            grads = self._input_grads(adv, fixed, labels)
            if i == 0 or (self.reselect and i % self.reselect == 0):
                support = self._choose(grads, t)
                masks = {m: segment_mask(support[m], m, adv[m]) for m in adv}
                adv = {m: torch.where(masks[m], adv[m], clean[m]) for m in adv}
            for m in adv:
                stepped = threats[m].clip(threats[m].step(adv[m], grads[m] * masks[m]), boxes[m])
                adv[m] = torch.where(masks[m], stepped, clean[m])  # exactly 0 outside the support
        self.last_support = {m: s.detach().cpu() for m, s in support.items()}
        return adv
