"""MMCert: certification by independent random sub-sampling of each modality (Wang, Fu, Zou & Jia, "MMCert:
Provable Defense against Adversarial Attacks to Multi-modal Models", CVPR 2024, arXiv 2403.19080).

Construction (Wang et al., Section 4, "independent sub-sampling" and the ensemble classifier): the basic elements
of a clip are its frames (``n_v`` = the frames the loader gives, ``--num_frames``) and ``n_a`` equal audio segments
(``--audio_segments``); each draw keeps ``k_v`` frames and ``k_a`` segments chosen uniformly without replacement,
independently per modality, and the base model predicts from them; the ensemble predicts the most frequent class,
and its label probabilities are bounded by Clopper-Pearson from ``N`` Monte-Carlo draws (Section 4). How a draw is
shown to the base model is our choice, as the paper leaves it to the model: the kept frames in their order (the
visual nets average over time), and the waveform with the segments not kept set to 0 (its length unchanged). Both
depend only on the kept elements and their positions, which is all the certificate needs.

Certificate (the paper's threat model, Section 3, restricted to *modification*: ``r_m`` elements of modality m
changed, none added or deleted, since our inputs have a fixed number of frames and samples). A draw that keeps no
modified element sees the same input before and after the attack, so the base model's answer is the same. Under
uniform sub-sampling that draw has the same probability for both inputs, and the draws that keep a modified element
weigh

    Delta(r) = 1 - prod_m C(n_m - r_m, k_m) / C(n_m, k_m)

in both. Hence ``p'_A >= p_A - Delta`` and ``p'_B <= p_B + Delta`` for every other class, and the ensemble's class
stays A when ``p_A_lower - p_B_upper > 2 Delta(r)`` (Wang et al., Theorem 1, in this case; it is the
Neyman-Pearson argument of the paper with equal numbers of elements before and after). ``p_B_upper = 1 -
p_A_lower`` (as in Cohen et al.'s CERTIFY). Every probability of the ensemble is a multiple of ``1 / N_s``, ``N_s =
prod_m C(n_m, k_m)`` (the draws are equally likely), so the bounds are rounded to that lattice (up for ``p_A``, down
for ``p_B``), which is sound and, for few frames, less conservative; the test is then exact in integers. A
modality that is not sub-sampled (``k_m = n_m``) gets ``r_m = 0``: any change to it is seen by every draw.

The certified counts: per modality with the other untouched (``radii``: frames for visual, segments for audio) and
jointly the largest ``r`` changed in every sub-sampled modality at once (``radius``; the paper reports r1 = r2).
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from models.certify import CERTIFIERS, MODALITIES, Certifier
from utils.errors import UsageError

_TOL = 1e-9  # float slack on the lattice rounding, applied in the conservative direction


def lattice_counts(p_lower: float, sizes: Mapping[str, Tuple[int, int]]) -> Tuple[int, int]:
    """(A, N_s): the lower bound ``p_lower`` on p_A as ``A / N_s``, rounded up to the lattice of the ensemble's
    probabilities. ``sizes``: modality -> (n elements, k kept)."""
    n_s = math.prod(math.comb(n, k) for n, k in sizes.values())
    return max(0, math.ceil(p_lower * n_s - _TOL)), n_s


def certified(p_lower: float, sizes: Mapping[str, Tuple[int, int]], modified: Mapping[str, int]) -> bool:
    """Whether ``p_lower`` certifies the ensemble's class against ``modified[m]`` changed elements of each
    modality (``sizes``: modality -> (n, k); a modality missing from ``modified`` is untouched)."""
    a, n_s = lattice_counts(p_lower, sizes)
    b = n_s - a  # p_B_upper = 1 - p_A_lower, rounded down to the lattice
    untouched = math.prod(math.comb(n - modified.get(m, 0), k) for m, (n, k) in sizes.items())
    return a - b > 2 * (n_s - untouched)  # p_A - p_B > 2 Delta, in units of 1 / N_s


def certified_counts(p_lower: float, sizes: Mapping[str, Tuple[int, int]]) -> Optional[Tuple[int, Dict[str, int]]]:
    """(joint r, {modality: r_m}) of the largest certified numbers of changed elements, or None (abstain) when
    not even r = 0 is certified (p_A_lower <= 1/2 on the lattice)."""
    if not certified(p_lower, sizes, {}):
        return None
    per: Dict[str, int] = {}
    for m, (n, k) in sizes.items():
        r = 0
        while r < n and certified(p_lower, sizes, {m: r + 1}):
            r += 1
        per[m] = r
    joint = 0
    while joint < min(n for n, _ in sizes.values()) and certified(p_lower, sizes, {m: joint + 1 for m in sizes}):
        joint += 1
    return joint, per


@CERTIFIERS.register("mmcert")
class SubsamplingCertifier(Certifier):
    """MMCert's sub-sampling ensemble (see the module docstring). ``keep``: {"visual": k_v frames, "audio": k_a
    segments}; a modality missing from ``keep`` is passed whole (not certified). ``audio_segments``: n_a.

    >>> cert = SubsamplingCertifier(model, {"visual": 2, "audio": 4}, audio_segments=16, num_classes=8).certify(
    ...     {"audio": a[:1], "visual": v[:1]}, n0=100, n=10_000, alpha=0.001, gen=torch.Generator())
    """

    name = "mmcert"

    def __init__(self, model: nn.Module, keep: Mapping[str, int], num_classes: int, audio_segments: int = 16,
                 batch: int = 1000) -> None:
        super().__init__(model, num_classes, batch)
        self.keep = {m: int(k) for m, k in keep.items() if k}
        if not self.keep or any(m not in MODALITIES or k < 1 for m, k in self.keep.items()):
            raise UsageError("--keep_frames", f"needs frames and/or audio segments to keep (>= 1), got {dict(keep)}")
        if audio_segments < 1:
            raise UsageError("--audio_segments", f"must be >= 1, got {audio_segments}")
        self.audio_segments = audio_segments

    @property
    def modalities(self) -> tuple:
        return tuple(m for m in MODALITIES if m in self.keep)

    def sizes(self, inputs: Mapping[str, Tensor]) -> Dict[str, Tuple[int, int]]:
        """modality -> (elements n, kept k) of one clip; a ValueError when more are kept than there are."""
        out = {}
        for m, k in self.keep.items():
            x = inputs[m]
            n = (x.shape[2] if x.dim() == 5 else 1) if m == "visual" else self.audio_segments
            if m == "audio" and n > x.shape[-1]:
                raise UsageError("--audio_segments", f"{n} segments of a waveform of {x.shape[-1]} samples")
            if k > n:
                what = "--keep_frames" if m == "visual" else "--keep_segments"
                raise UsageError(what, f"keeps {k} of {n} {'frames' if m == 'visual' else 'segments'}")
            out[m] = (n, k)
        return out

    @staticmethod
    def _choose(num: int, n: int, k: int, gen: torch.Generator) -> Tensor:
        """(num, k) sorted indices, each row k of range(n) uniformly without replacement."""
        keys = torch.rand((num, n), generator=gen, device=gen.device)
        return keys.argsort(dim=1)[:, :k].sort(dim=1).values

    def _draw(self, inputs: Mapping[str, Tensor], num: int, gen: torch.Generator) -> Dict[str, Tensor]:
        sizes = self.sizes(inputs)
        out = {}
        for m, x in inputs.items():
            rep = x.expand(num, *x.shape[1:])
            if m not in sizes:
                out[m] = rep
            elif m == "visual":
                v = rep if rep.dim() == 5 else rep.unsqueeze(2)
                idx = self._choose(num, *sizes[m], gen).to(x.device)  # (num, k)
                gather = idx[:, None, :, None, None].expand(num, v.shape[1], idx.shape[1], *v.shape[3:])
                out[m] = torch.gather(v, 2, gather)
            else:
                n, k = sizes[m]
                idx = self._choose(num, n, k, gen).to(x.device)
                kept = torch.zeros(num, n, dtype=torch.bool, device=x.device).scatter_(1, idx, True)
                length = x.shape[-1]
                segment = torch.arange(length, device=x.device) * n // length  # sample -> its segment
                out[m] = rep * kept[:, segment].view(num, *([1] * (x.dim() - 2)), length).to(x.dtype)
        return out

    def _radii(self, p_lower: float, inputs: Mapping[str, Tensor]) -> Optional[tuple]:
        counts = certified_counts(p_lower, self.sizes(inputs))
        if counts is None:
            return None
        return float(counts[0]), {m: float(r) for m, r in counts[1].items()}
