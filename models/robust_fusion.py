"""Robust fusion against single-source adversaries (Yang, Lin, Barman, Condessa & Kolter, "Defending Multimodal
Fusion Models against Single-Source Adversaries", CVPR 2021, arXiv 2206.12714), for two modalities.

The paper (Sec. 4) puts two things between the unimodal features and the task head:
- an *odd-one-out network* ``o`` that reads every modality's feature and outputs M+1 probabilities: that
  modality ``i`` is the perturbed (inconsistent) one, or that none is;
- a *robust feature fusion layer*: fusions ``e_i`` of the features *without* modality ``i``, and one of all
  of them, mixed by the odd-one-out probabilities, so the information of a modality judged odd does not
  pass through. Training (Sec. 4.3): the odd-one-out network learns, with a cross-entropy, to name the
  perturbed modality on examples where one modality carries a (single-source, adversarial) perturbation and
  "none" on clean ones, jointly with the task loss on those examples (``pipeline/procedures.py``).

Two modalities (the paper has three or more): the odd one out is then not decided by a majority, since
audio-inconsistent-with-visual is the same statement as the reverse. We keep the paper's structure unchanged
with M = 2 (three outputs: audio, visual, none; fusions: without audio = the visual feature's branch, without
visual = the audio branch, and both), and rely on what the detector can still learn: which modality's
feature looks perturbed *given the other*, i.e. the features of each modality under attack (off the clean
feature distribution) rather than a vote. The constructed test (tests/test_robust_fusion.py) is a case where
that is learnable; where a perturbation leaves no trace in its own modality's feature, no two-modality
detector can tell which side to drop, and the head falls back on the learned "none" branch.

Constants: the branch width ``hidden`` = 256 and a one-hidden-layer detector are our choices (the paper's
per-task networks are not ours to copy: its fusion layers follow each task's base model).
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from models.fusion import FusionHead, register_fusion

ODD_CLASSES: Tuple[str, ...] = ("audio", "visual", "none")  # the detector's outputs: M modalities, then none
HIDDEN = 256  # branch and detector width (our choice)


@register_fusion("robust_fusion")
class RobustFusion(FusionHead):
    """Odd-one-out detector + robust feature fusion (module docstring), then a linear classifier.

    ``forward``: ``p = softmax(o([f_a; f_v]))``; ``u = p_audio e_{-audio}(f_v) + p_visual e_{-visual}(f_a) +
    p_none e_all([f_a; f_v])``; logits ``fc(u)``. ``aux["odd_logits"]`` (B, 3) holds the detector's logits of
    the last forward (order ``ODD_CLASSES``) for the training loss. ``procedure = "single_source"``.
    """

    modalities = ("audio", "visual")
    procedure = "single_source"

    def __init__(self, num_classes: int, dim_audio: int, dim_visual: int, hidden: int = HIDDEN) -> None:
        super().__init__(num_classes, dim_audio, dim_visual)
        both = dim_audio + dim_visual
        self.detector = nn.Sequential(nn.Linear(both, hidden), nn.ReLU(), nn.Linear(hidden, len(ODD_CLASSES)))
        self.branch = nn.ModuleDict({
            "audio": nn.Sequential(nn.Linear(dim_visual, hidden), nn.ReLU()),   # without audio
            "visual": nn.Sequential(nn.Linear(dim_audio, hidden), nn.ReLU()),   # without visual
            "none": nn.Sequential(nn.Linear(both, hidden), nn.ReLU()),          # every modality
        })
        self.fc = nn.Linear(hidden, num_classes)
        self.aux: Dict[str, Tensor] = {}

    def odd_one_out(self, feats: Dict[str, Tensor]) -> Tensor:
        """The detector's logits (B, 3), in ``ODD_CLASSES`` order."""
        return self.detector(torch.cat([self._get(feats, "audio"), self._get(feats, "visual")], dim=1))

    def forward(self, feats: Dict[str, Tensor]) -> Tensor:
        """Logits (B, K) of the odd-one-out-weighted fusion."""
        f_a, f_v = self._get(feats, "audio"), self._get(feats, "visual")
        odd = self.odd_one_out(feats)
        p = odd.softmax(dim=1)
        inputs = {"audio": f_v, "visual": f_a, "none": torch.cat([f_a, f_v], dim=1)}
        fused = sum(p[:, i:i + 1] * self.branch[c](inputs[c]) for i, c in enumerate(ODD_CLASSES))
        self.aux = {"odd_logits": odd}
        return self.fc(fused)


def odd_one_out_loss(odd_logits: Tensor, odd_labels: Tensor) -> Tensor:
    """Cross-entropy of the detector against the index in ``ODD_CLASSES`` of the perturbed modality (or none)
    of each example (paper Sec. 4.1, the odd-one-out objective)."""
    return nn.functional.cross_entropy(odd_logits.float(), odd_labels)
