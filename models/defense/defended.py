"""The defended model: a wrapper that purifies each modality feature with its memory bank before the head.

Each feature x becomes ``mix * D a*(x) + (1 - mix) * x`` (docs/paper.md, Defense, item 2); gradients pass
the purification as the chosen ``GRAD_MODES`` entry says (unrolled or BPDA).
"""
from __future__ import annotations

import logging
from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from models.defense.banks import MemoryBank
from models.defense.constants import (DEFAULT_GRAD_MAX_ITER, DEFAULT_LAM, DEFAULT_MAX_ITER, DEFAULT_MIX,
                                      DEFAULT_TOL)
from models.defense.sparse_coding import GRAD_MODES, SolverConfig, SolverStats

logger = logging.getLogger(__name__)


class DefendedModel(nn.Module):
    """A model whose modality features are replaced by ``mix * D a* + (1 - mix) * x`` before its head.

    Args:
        model: follows the contract ``features(audio=, visual=) -> {m: (B, d_m)}``, ``classify(feats)``,
            ``modalities``.
        banks: one ``MemoryBank`` per modality of the model (exactly those).
        lam: L1 weight (paper 0.1). mix: m (paper 0.5; 0.6 noted for Kinetics-Sounds).
        grad: a name in ``GRAD_MODES``: ``unrolled`` (gradients through the solver) or ``bpda``
            (identity backward through the reconstruction).
        max_iter, tol: solver cap (paper 2000) and per-sample certified tolerance (relative duality gap,
            default 1e-5; the paper stopped on a change of 8e-4).
        steps: fixed step per modality (the paper's alphas, e.g. ``PAPER_STEPS["ave"]``), or None for 1/L.
        grad_max_iter: iterations unrolled under autograd in ``unrolled`` mode, warm-started from the
            no-grad solution (the forward value stays that solution; see ``reconstruct_unrolled``);
            None records the whole solve (exact gradient but memory ~ iterations x B x K floats, ~0.5 GB
            per modality for 2000 x 64 x 1024 float32).
        accelerate: FISTA (True) or plain ISTA.

    The banks are fixed buffers (move with ``.to()``, never trained). Rows whose solve ends uncertified (ran
    to ``max_iter``) are counted per modality (``solver_report``); the first such solve of a modality logs a
    warning with the count and the cap, later ones log at debug level.
    """

    def __init__(
        self,
        model: nn.Module,
        banks: Mapping[str, MemoryBank],
        lam: float = DEFAULT_LAM,
        mix: float = DEFAULT_MIX,
        grad: str = "unrolled",
        max_iter: int = DEFAULT_MAX_ITER,
        tol: float = DEFAULT_TOL,
        steps: Optional[Mapping[str, float]] = None,
        grad_max_iter: Optional[int] = DEFAULT_GRAD_MAX_ITER,
        accelerate: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self._reconstruct = GRAD_MODES.get(grad)
        self.grad = grad
        if not lam > 0:
            raise ValueError(f"DefendedModel: lam must be > 0, got {lam}")
        if not 0.0 <= mix <= 1.0:
            raise ValueError(f"DefendedModel: mix must be in [0, 1], got {mix}")
        if max_iter < 1:
            raise ValueError(f"DefendedModel: max_iter must be >= 1, got {max_iter}")
        if not tol >= 0:
            raise ValueError(f"DefendedModel: tol must be >= 0, got {tol}")
        if grad_max_iter is not None and grad_max_iter < 1:
            raise ValueError(f"DefendedModel: grad_max_iter must be >= 1 or None, got {grad_max_iter}")
        mods = tuple(model.modalities)
        extra = sorted(set(banks) - set(mods))
        if extra:
            raise ValueError(f"DefendedModel: bank(s) for {extra}, which the model does not use (it uses {mods})")
        lacking = [m for m in mods if m not in banks]
        if lacking:
            raise ValueError(f"DefendedModel: no memory bank for modality {lacking} (the model uses {mods})")
        steps = dict(steps or {})
        bad_steps = sorted(set(steps) - set(mods))
        if bad_steps:
            raise ValueError(f"DefendedModel: steps given for {bad_steps}, which the model does not use ({mods})")
        for m, s in steps.items():
            if not s > 0:
                raise ValueError(f"DefendedModel: steps[{m!r}] must be > 0, got {s}")
        self.mix = float(mix)
        self.cfgs = {
            m: SolverConfig(lam=float(lam), max_iter=int(max_iter), tol=float(tol), step=steps.get(m),
                            accelerate=accelerate, grad_max_iter=grad_max_iter)
            for m in mods
        }
        self.bank_info = {}
        # the fixed dictionaries are identical on every rank: DDP need not broadcast them (utils.distributed)
        self.ddp_ignored_buffers = tuple(f"dict_{m}" for m in mods)
        for m in mods:
            bank = banks[m]
            atoms = getattr(bank, "atoms", None)
            if not isinstance(atoms, torch.Tensor) or atoms.dim() != 2 or atoms.shape[0] == 0:
                raise ValueError(f"DefendedModel: the {m} bank is empty or not a (K, d) bank: {bank!r}")
            self.register_buffer(f"dict_{m}", atoms.detach().T.contiguous().clone())
            self.bank_info[m] = repr(bank)
        self.solver_stats = {m: SolverStats() for m in mods}

    def solver_report(self) -> Dict[str, Dict[str, int]]:
        """Per modality: rows solved (``rows``) and rows that ended uncertified at the cap (``uncertified``),
        since construction or ``reset_solver_stats``, with the cap (``max_iter``)."""
        return {m: {"rows": st.rows, "uncertified": st.uncertified, "max_iter": self.cfgs[m].max_iter}
                for m, st in self.solver_stats.items()}

    def reset_solver_stats(self) -> None:
        """Start the row counts of ``solver_report`` again from zero."""
        self.solver_stats = {m: SolverStats() for m in self.solver_stats}

    @property
    def grad_mode(self) -> str:
        """How gradients pass the defense: "unrolled" or "bpda"."""
        return self.grad

    def set_grad_mode(self, grad: str) -> None:
        """Switch between unrolled and BPDA gradients (adaptive attacks try both on one model)."""
        self._reconstruct = GRAD_MODES.get(grad)
        self.grad = grad

    @property
    def modalities(self) -> Tuple[str, ...]:
        """The wrapped model's modalities."""
        return tuple(self.model.modalities)

    @property
    def arch(self):  # type: ignore[no-untyped-def]
        """The wrapped model's ``arch`` description."""
        return self.model.arch

    def dictionary(self, modality: str) -> torch.Tensor:
        """The fixed (d, K) dictionary of ``modality``."""
        return getattr(self, f"dict_{modality}")

    def purify(self, feats: Mapping[str, torch.Tensor],
               modalities: Optional[Tuple[str, ...]] = None) -> Dict[str, torch.Tensor]:
        """Replace each feature x by mix * D a*(x) + (1 - mix) * x (of ``modalities``, default all the model's).

        Runs in float32 (float64 if the features or the bank are float64) with autocast disabled, whatever
        the caller's dtype: under bf16 autocast the pooled features are bf16, and bf16 codes would be far
        from the Lasso optimum. The purified features are returned in that working precision.
        """
        out = {}
        for m in self.modalities if modalities is None else modalities:
            if m not in feats:
                raise KeyError(f"DefendedModel: the model returned no {m!r} feature (got {sorted(feats)})")
            x = feats[m]
            D = self.dictionary(m)
            if x.dim() != 2 or x.shape[1] != D.shape[0]:
                raise ValueError(
                    f"DefendedModel: {m} features have shape {tuple(x.shape)} but the {m} bank has "
                    f"dimension {D.shape[0]} ({self.bank_info[m]})"
                )
            dtype = torch.float64 if torch.float64 in (x.dtype, D.dtype) else torch.float32
            with torch.autocast(x.device.type, enabled=False):
                x = x.to(dtype)
                D = D if D.dtype == dtype else D.to(dtype)  # the fp32 buffer itself: its L and Gram stay cached
                call = SolverStats()
                recon = self._reconstruct(x, D, self.cfgs[m], call)
                self._count(m, call)
                out[m] = self.mix * recon + (1.0 - self.mix) * x
        return out

    def _count(self, m: str, call: SolverStats) -> None:
        total = self.solver_stats[m]
        first = total.uncertified == 0
        total.rows += call.rows
        total.uncertified += call.uncertified
        if call.uncertified:
            cfg = self.cfgs[m]
            logger.log(logging.WARNING if first else logging.DEBUG,
                       "defense: %d of %d %s rows not certified within the cap of %d iterations (relative "
                       "duality gap tol %g); %d of %d so far", call.uncertified, call.rows, m, cfg.max_iter,
                       cfg.tol, total.uncertified, total.rows)

    def features(
        self, audio: Optional[torch.Tensor] = None, visual: Optional[torch.Tensor] = None
    ) -> Dict[str, torch.Tensor]:
        """The wrapped model's features after the memory-bank purification."""
        return self.purify(self.model.features(audio=audio, visual=visual))

    def classify(self, feats: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The wrapped model's head (on already purified features)."""
        return self.model.classify(feats)

    def _caches_codes(self) -> bool:
        """Whether ``encode`` purifies: the wrapped model encodes, and each feature reads only its own input."""
        return hasattr(self.model, "encode") and getattr(self.model, "independent_features", False)

    def encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """What the defended model computes from ``modality``'s input alone (``AVModel.encode``): the
        purified feature (its sparse code solved here) when features are independent across modalities,
        else the wrapped model's encoding; a wrapped model without ``encode`` encodes as the input itself."""
        if not hasattr(self.model, "encode"):
            return x
        enc = self.model.encode(modality, x)
        return self.purify({modality: enc}, (modality,))[modality] if self._caches_codes() else enc

    def classify_encoded(self, encoded: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits from ``encode``'s outputs of every modality: ``forward`` in two halves."""
        if not hasattr(self.model, "encode"):
            return self.forward(**encoded)
        if self._caches_codes():
            return self.model.classify(self.model.features_from(dict(encoded)))
        return self.model.classify(self.purify(self.model.features_from(dict(encoded))))

    def forward(self, audio: Optional[torch.Tensor] = None, visual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits of the defended model."""
        return self.model.classify(self.features(audio=audio, visual=visual))
