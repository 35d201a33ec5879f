"""The temporal invariance attack (TIA) of Zhang, Liang, Shimada & Xu (ICLR 2025), as read here."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from attacks.base import ATTACKS, Attack, check_int, forward
from attacks.segments import batch_segments, tile_segment

# Weight of the temporal term against the cross-entropy: our choice (the paper's value could not be read,
# see the class docstring); 1.0 puts a cosine in [-1, 1] per segment pair next to a per-sample CE of a few nats.
TEMPORAL_WEIGHT = 1.0


@ATTACKS.register("tia")
class TemporalInvariance(Attack):
    """Temporal invariance attack: PGD on the cross-entropy plus a term that breaks the similarity of
    consecutive time segments, after Zhang, Liang, Shimada & Xu, "Rethinking Audio-Visual Adversarial
    Vulnerability from Temporal and Modality Perspectives" (ICLR 2025, arXiv 2502.11858).

    Source and reading. The paper proposes "a temporal invariance attack that exploits the inherent temporal
    redundancy across consecutive time segments" (abstract); the method section with its equations could
    not be read here (the stored copies of the paper and of its summaries give the abstract and the
    introduction only), so no equation number is cited and this is the best-documented reading: audio-visual
    models rely on consecutive segments carrying the same content (temporal invariance), so the attack
    maximises the classification loss while making the model's representations of consecutive segments
    dissimilar. Per sample, with ``h_m(t)`` the model's feature of modality m when every segment of the clip
    is segment t (``attacks.segments.tile_segment``: the representation of segment t in the model's own
    input format; its logits, which every attackable model has: a model's features are not always its own
    function of one input, e.g. the attention head's visual feature reads the audio)::

        L = CE(f(x + delta), y) - weight * sum_m mean_{t=1..T-1} cos(h_m(t), h_m(t+1))

    ascended by PGD steps (``attacks/pgd.py``) under the usual per-modality threat (``attacks/threats.py``).
    Choices where the paper was not available: the logits as the representation, cosine similarity,
    consecutive pairs only, ``weight = 1`` (``TEMPORAL_WEIGHT``), each attacked modality's term with the other
    input at its current value. With ``T = 1`` or ``weight = 0`` the attack is PGD exactly.

    Segments (``attacks/segments.py``): the T frames of ``(B, 3, T, H, W)``; for audio the T equal
    consecutive parts of the waveform, part t matching frame t. Cost: 1 + T forwards per attacked modality
    and step.

    Arguments: eps (dict), steps (int, 10), weight (float, 1.0), segments (int, 0 = the visual frame
    count), alpha (None = eps/8), random_start, restarts, targeted, eps_unit, seed, norm.

    Example::

        >>> adv = create_attack("tia", model, eps={"audio": 0.006, "visual": 0.006}, steps=10)(inputs, labels)
    """

    name = "tia"
    # a PGD variant equal to PGD on one-frame clips (the default --num_frames 1): run by name, not in 'all'
    in_all = False
    flag_args = {"steps": "attack_steps", "random_start": "random_start", "restarts": "restarts"}

    def __init__(self, model: nn.Module, eps: Mapping[str, float], steps: int = 10,
                 weight: float = TEMPORAL_WEIGHT, segments: int = 0,
                 alpha: Union[None, float, Mapping[str, float]] = None, random_start: bool = False,
                 restarts: int = 1, targeted: bool = False, eps_unit: str = "input", seed: int = 0,
                 norm: Union[str, Mapping[str, str], None] = "Linf") -> None:
        self.steps = check_int("steps", steps)
        self.segments = check_int("segments", segments, minimum=0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(f"weight must be a number >= 0, got {weight!r}")
        self.weight = float(weight)
        super().__init__(model, eps, alpha=alpha, random_start=random_start, restarts=restarts,
                         targeted=targeted, eps_unit=eps_unit, seed=seed, norm=norm)

    def segment_features(self, inputs: Dict[str, Optional[torch.Tensor]], modality: str, index: int,
                         t: int) -> torch.Tensor:
        """``h_m(index)``: the model's logits on the clip whose every ``modality`` segment is segment ``index``
        (the other input as given; a ``Frozen`` one stays encoded once)."""
        return forward(self.model, {**inputs, modality: tile_segment(inputs[modality], modality, index, t)})

    def temporal_similarity(self, inputs: Dict[str, Optional[torch.Tensor]], modality: str, t: int) -> torch.Tensor:
        """Per sample, the mean cosine of ``h_m`` over consecutive segment pairs, ``(B,)``."""
        reps = [self.segment_features(inputs, modality, i, t) for i in range(t)]
        sims = [F.cosine_similarity(reps[i], reps[i + 1], dim=1) for i in range(t - 1)]
        return torch.stack(sims, dim=1).mean(dim=1)

    def _tia_grads(self, adv: Dict[str, torch.Tensor], fixed: Dict[str, Optional[torch.Tensor]],
                   labels: torch.Tensor, t: int) -> Dict[str, torch.Tensor]:
        """Gradient of the summed TIA objective with respect to the attacked inputs only."""
        if t == 1 or self.weight == 0:
            return self._input_grads(adv, fixed, labels)
        leaves = {m: x.detach().requires_grad_(True) for m, x in adv.items()}
        with torch.enable_grad():
            inputs = {**fixed, **leaves}
            loss = F.cross_entropy(self._forward(inputs), labels, reduction="sum")
            if self.targeted:
                loss = -loss
            for m in leaves:
                loss = loss - self.weight * self.temporal_similarity(inputs, m, t).sum()
            grads = torch.autograd.grad(loss, list(leaves.values()))
        return dict(zip(leaves, grads))

    def _perturb(self, clean, start, fixed: Dict[str, Optional[torch.Tensor]], labels: torch.Tensor,
                 threats) -> Dict[str, torch.Tensor]:
        t = batch_segments(clean, fixed, self.segments)
        adv = dict(start)
        boxes = {m: threats[m].box(clean[m]) for m in adv}
        for _ in range(self.steps):
            grads = self._tia_grads(adv, fixed, labels, t)
            for m in adv:
                adv[m] = threats[m].clip(threats[m].step(adv[m], grads[m]), boxes[m])
        return adv
