"""CRMT: Certifiable Robust Multi-modal Training (Yang, Wei, Liang & Hu, "Quantifying and Enhancing Multi-modal
Robustness with Modality Preference", ICLR 2024, arXiv 2402.06244; code GeWu-Lab/Certifiable-Robust-Multi-modal-
Training, read, not copied).

The head (registered ``crmt``) replaces the joint linear classifier ``W [phi_a; phi_v] + b`` by
``h(x) = sum_m a^(m) * (W~^(m) phi^(m)(x^(m))) + b`` (paper Sec. 4, "the framework" figure): per modality an
orthonormal-row classifier ``W~^(m)`` (K x D_m, ``W~ W~^T = I``) and an integration weight vector ``a^(m)``
(one weight per class, multiplied elementwise). ``z^(m) = W~^(m) phi^(m)`` are the unimodal logits.

Training (``pipeline/procedures.py``), two steps (paper Sec. 4, Algorithm 1):
1. CE of ``h`` plus ``rho`` times the margin regulariser of ``crmt_margin_loss`` (paper Sec. 4, step one; the
   code's ``train_CRMT_JT``), every parameter trained;
2. ``W~`` and the encoders fixed, ``a`` trained to raise the certified bound ``certified_radius`` (paper Sec. 4,
   step two: ``min_a -1/N sum_i r(x_i)``).

The certificate (paper Sec. 3, the theorem on the perturbation radius, in the form of Sec. 4 for this head): if
``x^(m) -> z_k^(m)`` is ``tau_k^(m)``-Lipschitz (L2), the prediction ``y`` at ``x`` is unchanged by every
perturbation of joint L2 norm ``sqrt(sum_m ||d^(m)||^2) < r(x)`` with

    r(x) = min_{k != y} [sum_m (a_y^(m) z_y^(m) - a_k^(m) z_k^(m)) + b_y - b_k]
                        / sqrt(sum_m (|a_y^(m)| tau_y^(m) + |a_k^(m)| tau_k^(m))^2)

(numerator: the margin of ``h``; each modality's share of its change is at most ``(|a_y| tau_y + |a_k| tau_k)
||d^(m)||``; Cauchy-Schwarz over the modalities). Attacking one modality ``m`` alone, the radius of that
modality is the same ratio with only its own term in the denominator (the paper's uni-modal analysis, Sec. 3.3).

Where the paper is silent, or the code differs from the paper, and what we chose:
- Orthogonality: the paper asks for orthogonal ``W~^(m)``; the code's ``OWNNorm(norm_groups=outdim)`` centres
  and normalises each row separately (unit rows, not mutually orthogonal). We make the rows orthonormal, as the
  paper states, by the symmetric (ZCA) orthogonalisation of Huang et al.'s OWN that the code cites,
  ``W~ = (V V^T)^(-1/2) V``, without the centring (it is not needed for ``W~ W~^T = I`` and would cost a rank);
  it is a reparametrisation, so every optimiser step keeps the rows orthonormal. Needs K <= D_m.
- ``a`` starts at 0.1 (the code's ``a_0 = a_1 = 0.1``); ``rho`` = 2.0 (the code's cfgs/methods/CRMT_*.yaml).
- The margin regulariser is computed with logsumexp (exact) where the code adds 1e-5 inside the log.
- Lipschitz constants: the code estimates ``tau`` as the largest input-gradient norm over the training set of
  the *fused* logit (which already contains ``a``, then multiplied by ``a`` again in step two); we estimate it on
  the unimodal logit ``z_k^(m)``, which is what the bound needs (``pipeline.procedures.estimate_lipschitz``). An
  estimate from gradients at seen points is a lower bound of the true constant: an input-space radius computed
  with it is an estimate, not a guarantee. The feature-space certificate (``space="feature"``: perturbations
  of ``phi^(m)``) uses the exact constants ``tau_k^(m) = ||W~_k^(m)|| = 1`` and is sound.
- The step-two objective: the code takes only the runner-up class of ``h``; we take the minimum over every
  ``k != y`` (the bound itself).
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Optional, Sequence

import torch
from torch import Tensor, nn

from models.fusion import FusionHead, register_fusion

A_INIT = 0.1  # integration weights' start (the code: orthogonal_linear.a_0 = a_1 = 0.1; the paper is silent)
RHO = 2.0  # margin regulariser weight (the code: cfgs/methods/CRMT_JT.yaml rho 2.0)
ORTH_EPS = 1e-6  # added to the eigenvalues of V V^T before the inverse square root (numerical floor, our choice)


def orthonormal_rows(v: Tensor) -> Tensor:
    """``(V V^T)^(-1/2) V``: the rows of ``v`` (K x D, K <= D, full rank) made orthonormal, symmetrically (no row
    order preferred); differentiable (Huang et al.'s orthogonal weight normalisation, without centring)."""
    s = v @ v.t()
    evals, evecs = torch.linalg.eigh(s)
    inv_sqrt = evecs @ torch.diag_embed(evals.clamp_min(ORTH_EPS).rsqrt()) @ evecs.t()
    return inv_sqrt @ v


@register_fusion("crmt")
class CRMTFusion(FusionHead):
    """CRMT head: ``sum_m a^(m) * (W~^(m) f_m) + b`` with orthonormal-row ``W~^(m)`` (see the module docstring).

    Arguments: ``a_init`` (integration weights' start, the code's 0.1), ``orthogonal`` (False: plain rows, the
    ablation without the constraint). ``procedure = "crmt"``: trained by ``pipeline/procedures.py``'s margin
    regulariser and step two. ``aux["unimodal"]`` holds the unimodal logits of the last forward (the training
    loss reads them in the same step, inside the one DDP forward). Buffer ``lipschitz`` (M x K): the input-space
    constants ``tau_k^(m)`` recorded by step two (NaN until estimated).
    """

    modalities = ("audio", "visual")
    procedure = "crmt"

    def __init__(self, num_classes: int, dim_audio: int, dim_visual: int, a_init: float = A_INIT,
                 orthogonal: bool = True) -> None:
        super().__init__(num_classes, dim_audio, dim_visual)
        if orthogonal:
            for mod in self.modalities:
                if num_classes > self.dims[mod]:
                    raise ValueError(f"fusion 'crmt': orthonormal rows need num_classes <= dim_{mod}, got "
                                     f"{num_classes} classes and a {self.dims[mod]}-d {mod} feature "
                                     f"(use fusion_args orthogonal=false)")
        self.orthogonal = orthogonal
        self.raw = nn.ParameterDict()
        for mod in self.modalities:
            lin = nn.Linear(self.dims[mod], num_classes)  # nn.Linear's initialisation for V^(m)
            self.raw[mod] = nn.Parameter(lin.weight.detach().clone())
        self.a = nn.ParameterDict({m: nn.Parameter(torch.full((num_classes,), float(a_init)))
                                   for m in self.modalities})
        self.bias = nn.Parameter(torch.zeros(num_classes))
        self.register_buffer("lipschitz", torch.full((len(self.modalities), num_classes), float("nan")))
        self.aux: Dict[str, Dict[str, Tensor]] = {}

    def weight(self, mod: str) -> Tensor:
        """``W~^(m)`` (K x D_m): orthonormal rows (or the raw ones with ``orthogonal=False``)."""
        return orthonormal_rows(self.raw[mod]) if self.orthogonal else self.raw[mod]

    def unimodal_logits(self, feats: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """``{m: z^(m) = W~^(m) f_m}``, each (B, K)."""
        return {m: self._get(feats, m) @ self.weight(m).t() for m in self.modalities}

    def fuse(self, unimodal: Dict[str, Tensor]) -> Tensor:
        """``sum_m a^(m) * z^(m) + b``."""
        return sum(self.a[m] * unimodal[m] for m in self.modalities) + self.bias

    def forward(self, feats: Dict[str, Tensor]) -> Tensor:
        """Logits ``(B, K)``; the unimodal logits are kept in ``aux`` for the training loss."""
        z = self.unimodal_logits(feats)
        self.aux = {"unimodal": z}
        return self.fuse(z)

    def feature_lipschitz(self) -> Tensor:
        """(M x K) exact Lipschitz constants of ``f_m -> z_k^(m)``: the row norms of ``W~^(m)`` (1 when
        orthogonal)."""
        return torch.stack([self.weight(m).norm(dim=1) for m in self.modalities])


def crmt_margin_loss(unimodal: Dict[str, Tensor], labels: Tensor) -> Tensor:
    """CRMT step one's regulariser without its weight rho (paper Sec. 4, step one; README's step-one formula):
    ``mean_i log sum_m sum_{k != y_i} exp(z_k^(m) - z_y^(m))``, which falls as every unimodal margin
    ``z_y^(m) - z_k^(m)`` grows. ``unimodal``: ``{m: (B, K)}``."""
    terms = []
    for z in unimodal.values():
        diff = z - z.gather(1, labels[:, None])  # z_k - z_y, (B, K)
        terms.append(diff.masked_fill(nn.functional.one_hot(labels, z.shape[1]).bool(), float("-inf")))
    return torch.logsumexp(torch.cat(terms, dim=1), dim=1).mean()


def certified_radius(head: CRMTFusion, feats: Dict[str, Tensor], labels: Tensor, space: str = "feature",
                     modalities: Optional[Sequence[str]] = None, lipschitz: Optional[Tensor] = None) -> Tensor:
    """The CRMT certified lower bound ``r(x)`` per clip (module docstring; paper Sec. 3 theorem, Sec. 4 form).

    ``feats``: the head's input features ``{m: (B, D_m)}``; ``labels`` (B,). ``modalities``: the perturbed ones
    (default both: a joint L2 radius ``sqrt(sum_m ||d^(m)||^2)``; one name: that modality's own radius, the
    other untouched). ``space``: ``feature`` (perturbations of the features; exact constants, sound) or ``input``
    (perturbations of the inputs, with ``lipschitz`` or the head's recorded estimate; see the module docstring).
    A value <= 0 certifies nothing (the clip is misclassified or on the boundary); a perturbation of norm
    below a positive value leaves the prediction ``labels`` unchanged.
    """
    if space not in ("feature", "input"):
        raise ValueError(f"space must be 'feature' or 'input', got {space!r}")
    mods = tuple(modalities) if modalities is not None else head.modalities
    unknown = [m for m in mods if m not in head.modalities]
    if not mods or unknown:
        raise ValueError(f"modalities must be a non-empty subset of {head.modalities}, got {mods}")
    if lipschitz is None:
        lipschitz = head.feature_lipschitz() if space == "feature" else head.lipschitz
    if space == "input" and not torch.isfinite(lipschitz).all():
        raise ValueError("the input-space bound needs the Lipschitz constants of the unimodal logits: none are "
                         "recorded in this head (CRMT step two records them; or pass lipschitz=)")
    z = head.unimodal_logits(feats)
    rows = torch.arange(labels.numel(), device=labels.device)
    margin = head.fuse(z)
    margin = margin[rows, labels][:, None] - margin  # h_y - h_k, (B, K)
    denom_sq = torch.zeros_like(margin)
    for i, m in enumerate(head.modalities):
        if m not in mods:
            continue
        c = head.a[m].abs() * lipschitz[i].to(margin)  # |a_k| tau_k, (K,)
        denom_sq = denom_sq + (c[labels][:, None] + c[None, :]) ** 2
    ratio = margin / denom_sq.sqrt().clamp_min(torch.finfo(margin.dtype).tiny)
    ratio = ratio.masked_fill(nn.functional.one_hot(labels, margin.shape[1]).bool(), math.inf)
    return ratio.min(dim=1).values


def certified_accuracy(radii: Tensor, at: Iterable[float]) -> Dict[float, float]:
    """Fraction of clips whose certified radius exceeds each radius in ``at`` (0: the clean accuracy bound)."""
    n = max(radii.numel(), 1)
    return {float(r): float((radii > r).sum()) / n for r in at}
