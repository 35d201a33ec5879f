"""External feature memory banks: the sparse-coding defense of Tian & Xu (CVPR 2021), Sec. 5 / PAPER.md.

Each modality feature ``x`` is sparse-coded against a dictionary ``D`` (d, K) whose K atoms are clean
training features,

    a* = argmin_a 0.5 ||x - D a||^2 + lam ||a||_1,

and replaced by ``mix * D a* + (1 - mix) * x`` before the classifier head.

Pieces:
- ``sparse_code`` / ``sparse_code_with_info``: batched ISTA/FISTA with per-sample stopping (the reference
  stops on one batch-wide norm, which makes a sample's code depend on its batch-mates: a bug we avoid).
- ``lasso_objective``: the per-sample objective above.
- ``MemoryBank``: the atoms of one modality, chosen from a saved features file by a registered selection
  (``random``, ``kmeans``, ``class_balanced``), tied to the checkpoint that produced the features by its
  SHA-256.
- ``DefendedModel``: wraps any model following the ``features`` / ``classify`` contract; gradients through
  the defense are either unrolled through the solver or BPDA (identity backward).
"""
from __future__ import annotations

import hashlib
import logging
import os
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from utils.registry import Registry

logger = logging.getLogger(__name__)

# Paper constants (PAPER.md, "Defense (reference settings)").
DEFAULT_LAM = 0.1  # lambda of the L1 term, Tian & Xu 2021
DEFAULT_TOL = 8e-4  # ISTA tolerance, Tian & Xu 2021 (here: per-sample relative change)
DEFAULT_MAX_ITER = 2000  # at most 2000 ISTA iterations, Tian & Xu 2021
DEFAULT_MIX = 0.5  # m = 0.5 in the paper; 0.6 noted for Kinetics-Sounds
DEFAULT_BANK_SIZE = 1024  # at most 1024 atoms per modality, Tian & Xu 2021
# Not a paper constant: iterations unrolled under autograd after the no-grad solve (see DefendedModel).
DEFAULT_GRAD_MAX_ITER = 100
# Paper's fixed ISTA steps per dataset (alpha_audio, alpha_visual), PAPER.md; pass as DefendedModel(steps=).
PAPER_STEPS: Dict[str, Dict[str, float]] = {
    "music": {"audio": 1e-6, "visual": 6e-6},
    "ave": {"audio": 7e-7, "visual": 2e-6},
    "kinetics_sounds": {"audio": 5.8e-7, "visual": 2e-6},
}
MODALITIES = ("audio", "visual")
_CHECK_EVERY = 16  # iterations between host syncs that drop stopped rows from the working set
# Below this fraction of nonzeros the iterate is multiplied as a sparse tensor (measured break-even on CPU
# for 64 x 1024 codes, 1 thread, was ~17%; not a paper constant).
_SPARSE_DENSITY = 0.15

PathLike = Union[str, "os.PathLike[str]"]


# ----------------------------------------------------------------------------------------------------
# Sparse coding
# ----------------------------------------------------------------------------------------------------
_LIPSCHITZ_CACHE: "OrderedDict[tuple, Tuple[weakref.ref, float]]" = OrderedDict()
_LIPSCHITZ_CACHE_SIZE = 32


def lipschitz_constant(D: torch.Tensor) -> float:
    """L = ||D||_2^2, the Lipschitz constant of the gradient of 0.5||x - D a||^2; cached per dictionary.

    The cache key holds the tensor's identity, storage, shape, dtype, device and version counter, so an
    in-place edit of ``D`` or a new tensor triggers a recomputation.
    """
    key = (id(D), D.data_ptr(), D._version, tuple(D.shape), D.dtype, str(D.device))
    hit = _LIPSCHITZ_CACHE.get(key)
    if hit is not None and hit[0]() is D:
        _LIPSCHITZ_CACHE.move_to_end(key)
        return hit[1]
    with torch.no_grad():
        lip = float(torch.linalg.matrix_norm(D.detach(), ord=2)) ** 2
    _LIPSCHITZ_CACHE[key] = (weakref.ref(D), lip)
    while len(_LIPSCHITZ_CACHE) > _LIPSCHITZ_CACHE_SIZE:
        _LIPSCHITZ_CACHE.popitem(last=False)
    return lip


def _check_problem(x: torch.Tensor, D: torch.Tensor, lam: float) -> None:
    if x.dim() != 2:
        raise ValueError(f"sparse_code: x must be (B, d), got shape {tuple(x.shape)}")
    if D.dim() != 2:
        raise ValueError(f"sparse_code: dictionary D must be (d, K), got shape {tuple(D.shape)}")
    if x.shape[1] != D.shape[0]:
        raise ValueError(
            f"sparse_code: feature dimension {x.shape[1]} of x does not match dictionary rows {D.shape[0]}"
        )
    if D.shape[1] == 0:
        raise ValueError("sparse_code: dictionary D has no atoms (K = 0)")
    if not lam >= 0:
        raise ValueError(f"sparse_code: lam must be >= 0, got {lam}")


def lasso_objective(x: torch.Tensor, D: torch.Tensor, A: torch.Tensor, lam: float = DEFAULT_LAM) -> torch.Tensor:
    """Per-sample objective 0.5 ||x_i - D a_i||^2 + lam ||a_i||_1; x (B, d), D (d, K), A (B, K) -> (B,)."""
    _check_problem(x, D, lam)
    if A.shape != (x.shape[0], D.shape[1]):
        raise ValueError(f"lasso_objective: A must be {(x.shape[0], D.shape[1])}, got {tuple(A.shape)}")
    resid = x - A @ D.T
    return 0.5 * resid.pow(2).sum(dim=1) + lam * A.abs().sum(dim=1)


def sparse_code_with_info(
    x: torch.Tensor,
    D: torch.Tensor,
    lam: float = DEFAULT_LAM,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    step: Optional[float] = None,
    accelerate: bool = True,
    init: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``sparse_code`` that also returns the number of iterations each row ran, a LongTensor (B,).

    See ``sparse_code`` for the arguments.
    """
    _check_problem(x, D, lam)
    if max_iter < 1:
        raise ValueError(f"sparse_code: max_iter must be >= 1, got {max_iter}")
    if not tol >= 0:
        raise ValueError(f"sparse_code: tol must be >= 0, got {tol}")
    if not torch.isfinite(x).all():
        raise ValueError("sparse_code: x contains NaN or Inf")
    B, d = x.shape
    K = D.shape[1]
    D = D.to(device=x.device, dtype=x.dtype)
    lip = lipschitz_constant(D)
    if step is None:
        if lip == 0.0:
            raise ValueError("sparse_code: dictionary D is all zeros (||D||_2 = 0)")
        step = 1.0 / lip
    elif not step > 0:
        raise ValueError(f"sparse_code: step must be > 0, got {step}")
    elif step * lip > 1.0 + 1e-6:
        # Not an error: the paper's fixed alphas are legitimate inputs; ISTA diverges only past 2/L.
        logger.warning(
            "sparse_code: step %.3g exceeds 1/L = %.3g (L = ||D||_2^2); ISTA/FISTA may not converge",
            step, 1.0 / lip,
        )

    # Gradient of the smooth part: y D^T D - x D. Use the Gram matrix when it is the cheaper product.
    gram = D.T @ D if K <= 2 * d else None
    xD = x @ D  # (B, K)
    # Sparse products only without autograd (the unrolled pass stays dense and differentiable).
    sparse_ok = not (torch.is_grad_enabled() and (x.requires_grad or D.requires_grad))

    if init is None:
        a = x.new_zeros(B, K)
    else:
        if init.shape != (B, K):
            raise ValueError(f"sparse_code: init must be {(B, K)}, got {tuple(init.shape)}")
        a = init.to(device=x.device, dtype=x.dtype)
    out = a  # rows are written back here as they stop
    n_iter = torch.zeros(B, dtype=torch.long, device=x.device)
    # Working set: the rows still iterating, compacted every _CHECK_EVERY iterations.
    rows = torch.arange(B, device=x.device)
    xw, xDw, y = x, xD, a
    t = x.new_ones(B, 1)
    active = torch.ones(B, 1, dtype=torch.bool, device=x.device)
    n_w = torch.zeros(B, dtype=torch.long, device=x.device)
    use_sparse = False
    thr = step * lam
    for it in range(max_iter):
        y_op = y.to_sparse() if use_sparse else y
        if gram is not None:
            grad = y_op @ gram - xDw
        else:
            grad = (y_op @ D.T - xw) @ D
        z = y - step * grad
        a_new = z - z.clamp(-thr, thr)  # soft threshold: prox of thr * ||.||_1
        delta = a_new - a
        if accelerate:
            # FISTA (Beck & Teboulle 2009) with the gradient-based adaptive restart of
            # O'Donoghue & Candes 2015, decided per row: restart when the momentum points uphill.
            restart = ((y - a_new) * delta).sum(dim=1, keepdim=True) > 0
            t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
            t_new = torch.where(restart, torch.ones_like(t_new), t_new)
            beta = torch.where(restart, torch.zeros_like(t), (t - 1.0) / t_new)
            y_new = a_new + beta * delta
        else:
            t_new, y_new = t, a_new
        # Rows that already stopped keep their values; no quantity is shared across rows.
        a = torch.where(active, a_new, a)
        y = torch.where(active, y_new, y)
        t = torch.where(active, t_new, t)
        n_w = n_w + active.squeeze(1).long()
        if tol > 0:
            with torch.no_grad():
                converged = delta.norm(dim=1, keepdim=True) <= tol * a_new.norm(dim=1, keepdim=True)
            active = active & ~converged
        if (it + 1) % _CHECK_EVERY == 0:
            keep = active.squeeze(1)
            if tol > 0 and not bool(keep.all()):  # one host sync per check
                done = ~keep
                out = out.index_copy(0, rows[done], a[done])
                n_iter = n_iter.index_copy(0, rows[done], n_w[done])
                rows, a, y, t, active, n_w = rows[keep], a[keep], y[keep], t[keep], active[keep], n_w[keep]
                xw, xDw = xw[keep], xDw[keep]
                if rows.numel() == 0:
                    break
            if sparse_ok:
                use_sparse = float(torch.count_nonzero(y)) < _SPARSE_DENSITY * y.numel()
    if rows.numel() > 0:
        out = out.index_copy(0, rows, a)
        n_iter = n_iter.index_copy(0, rows, n_w)
    logger.debug("sparse_code: B=%d K=%d iterations max=%d", B, K, int(n_iter.max()))
    return out, n_iter


def sparse_code(
    x: torch.Tensor,
    D: torch.Tensor,
    lam: float = DEFAULT_LAM,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    step: Optional[float] = None,
    accelerate: bool = True,
    init: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Lasso codes A (B, K) of every row of x (B, d) over the dictionary D (d, K).

    Minimises 0.5 ||x_i - D a_i||^2 + lam ||a_i||_1 for each row i independently by proximal gradient
    (FISTA with adaptive restart when ``accelerate``, else plain ISTA), all rows in batched matmuls on
    x's device and dtype.

    Args:
        lam: L1 weight (paper: 0.1).
        max_iter: iteration cap (paper: 2000).
        tol: a row stops updating once ||a_i^{k+1} - a_i^k|| <= tol * ||a_i^{k+1}|| (paper: 8e-4). The test
            is per row, never a batch-wide norm. ``tol = 0`` disables early stopping (exactly max_iter
            iterations, as the unrolled gradient pass of ``DefendedModel`` uses).
        step: fixed step size; None uses 1/L with L = ||D||_2^2 (cached per dictionary). The paper's alpha
            values (``PAPER_STEPS``) are such fixed steps.
        accelerate: FISTA momentum (default) or plain ISTA.
        init: optional warm start (B, K).

    Speed: rows that stopped are dropped from the working set every 16 iterations, and once the
    iterates are sparse (< 15% nonzeros) the products use a sparse left operand (no-grad calls only).
    Neither changes a row's result beyond floating-point rounding.

    The loop consists of differentiable tensor ops only: called under autograd it yields unrolled
    gradients (memory grows linearly with the iterations run).
    """
    return sparse_code_with_info(x, D, lam, max_iter, tol, step, accelerate, init)[0]


# ----------------------------------------------------------------------------------------------------
# Reconstruction with a chosen gradient mode
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SolverConfig:
    """Settings of the sparse-coding solve inside the defense."""

    lam: float = DEFAULT_LAM
    max_iter: int = DEFAULT_MAX_ITER
    tol: float = DEFAULT_TOL
    step: Optional[float] = None
    accelerate: bool = True
    grad_max_iter: Optional[int] = DEFAULT_GRAD_MAX_ITER


GRAD_MODES: Registry[Callable[[torch.Tensor, torch.Tensor, SolverConfig], torch.Tensor]] = Registry(
    "defense gradient mode"
)


def _solve_no_grad(x: torch.Tensor, D: torch.Tensor, cfg: SolverConfig) -> torch.Tensor:
    with torch.no_grad():
        return sparse_code(x.detach(), D.detach(), cfg.lam, cfg.max_iter, cfg.tol, cfg.step, cfg.accelerate)


@GRAD_MODES.register("unrolled")
def reconstruct_unrolled(x: torch.Tensor, D: torch.Tensor, cfg: SolverConfig) -> torch.Tensor:
    """D a*(x), differentiable by unrolling the solver.

    Without autograd (or x not requiring grad) this is the plain solve. Under autograd:
    - ``cfg.grad_max_iter is None``: the whole solve (up to ``max_iter``, stopping on ``tol``) is recorded;
      the gradient is exact for the computed output, memory ~ iterations x B x K.
    - ``cfg.grad_max_iter = T``: the code A0 is first solved without autograd, then T proximal-gradient
      iterations (no early stop) are run under autograd, warm-started from A0, giving A_T. The output
      value is exactly A0 (``A0 + A_T - A_T.detach()``), so logits do not depend on whether autograd is
      on; the gradient is dA_T/dx, the T-term truncation of the implicit (fixed-point) derivative, at
      T iterations' memory.
    """
    if not (torch.is_grad_enabled() and x.requires_grad):
        return _solve_no_grad(x, D, cfg) @ D.T
    if cfg.grad_max_iter is None:
        A = sparse_code(x, D, cfg.lam, cfg.max_iter, cfg.tol, cfg.step, cfg.accelerate)
    else:
        A0 = _solve_no_grad(x, D, cfg)
        A_T = sparse_code(x, D, cfg.lam, cfg.grad_max_iter, 0.0, cfg.step, cfg.accelerate, init=A0)
        A = A0 + (A_T - A_T.detach())
    return A @ D.T


class _BPDAReconstruct(torch.autograd.Function):
    """Forward: the sparse-code reconstruction D a*(x); backward: identity w.r.t. x (BPDA, Athalye et al.
    2018), nothing w.r.t. the dictionary."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, D: torch.Tensor, cfg: SolverConfig) -> torch.Tensor:  # type: ignore[override]
        return _solve_no_grad(x, D, cfg) @ D.T

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> Tuple[torch.Tensor, None, None]:  # type: ignore[override]
        return grad_out, None, None


@GRAD_MODES.register("bpda")
def reconstruct_bpda(x: torch.Tensor, D: torch.Tensor, cfg: SolverConfig) -> torch.Tensor:
    """D a*(x) in the forward pass, identity in the backward pass."""
    return _BPDAReconstruct.apply(x, D, cfg)


# ----------------------------------------------------------------------------------------------------
# Memory banks
# ----------------------------------------------------------------------------------------------------
# (features (N, d), labels (N,) or None, size, generator) -> (atoms (K, d), atom labels (K,) or None)
Selector = Callable[
    [torch.Tensor, Optional[torch.Tensor], int, torch.Generator], Tuple[torch.Tensor, Optional[torch.Tensor]]
]
BANK_SELECTORS: Registry[Selector] = Registry("memory-bank selection")


@BANK_SELECTORS.register("random")
def select_random(
    feats: torch.Tensor, labels: Optional[torch.Tensor], size: int, gen: torch.Generator
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``size`` distinct training features drawn uniformly at random."""
    idx = torch.randperm(feats.shape[0], generator=gen)[:size]
    return feats[idx], (labels[idx] if labels is not None else None)


@BANK_SELECTORS.register("class_balanced")
def select_class_balanced(
    feats: torch.Tensor, labels: Optional[torch.Tensor], size: int, gen: torch.Generator
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The same number of atoms for every class, drawn at random within each class.

    Per class: min(size // C, the smallest class count), so the bank is exactly balanced.
    """
    if labels is None:
        raise ValueError("memory-bank selection 'class_balanced' needs labels")
    classes = torch.unique(labels)
    if size < len(classes):
        raise ValueError(
            f"memory-bank selection 'class_balanced': size {size} is smaller than the {len(classes)} classes"
        )
    counts = torch.stack([(labels == c).sum() for c in classes])
    per_class = min(size // len(classes), int(counts.min()))
    if per_class * len(classes) < size:
        logger.info(
            "class_balanced bank: %d classes x %d atoms = %d (< size %d; smallest class has %d samples)",
            len(classes), per_class, per_class * len(classes), size, int(counts.min()),
        )
    picks = []
    for c in classes:
        members = torch.nonzero(labels == c).squeeze(1)
        picks.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    idx = torch.cat(picks)
    return feats[idx], labels[idx]


@BANK_SELECTORS.register("kmeans")
def select_kmeans(
    feats: torch.Tensor, labels: Optional[torch.Tensor], size: int, gen: torch.Generator, n_iter: int = 100
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``size`` k-means centroids (k-means++ seeding, then Lloyd iterations); atoms carry no label."""
    x = feats.double()
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=gen))
    centers = [x[first]]
    d2 = (x - x[first]).pow(2).sum(1)
    for _ in range(1, size):
        total = float(d2.sum())
        if total > 0:
            nxt = int(torch.multinomial(d2 / total, 1, generator=gen))
        else:  # every point coincides with a chosen centre: any choice is equally good
            nxt = int(torch.randint(n, (1,), generator=gen))
        centers.append(x[nxt])
        d2 = torch.minimum(d2, (x - x[nxt]).pow(2).sum(1))
    C = torch.stack(centers)
    assign = torch.full((n,), -1, dtype=torch.long)
    for it in range(n_iter):
        new_assign = torch.cdist(x, C).argmin(dim=1)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
        sums = torch.zeros_like(C).index_add_(0, assign, x)
        cnt = torch.bincount(assign, minlength=size).to(x.dtype)
        empty = cnt == 0
        C = torch.where(empty[:, None], C, sums / cnt.clamp(min=1)[:, None])
    logger.debug("kmeans bank: %d centroids after %d Lloyd iterations", size, it + 1)
    return C.to(feats.dtype), None


class MemoryBank:
    """The atoms (K, d) of one modality's dictionary plus their provenance.

    Build with ``MemoryBank.build`` (from features) or ``build_banks`` (from a saved features file);
    persist with ``save`` / ``load``. ``dictionary`` is the (d, K) matrix used by ``sparse_code``.
    """

    def __init__(
        self,
        atoms: torch.Tensor,
        checkpoint_sha256: str,
        modality: str = "",
        select: str = "",
        seed: int = 0,
        atom_labels: Optional[torch.Tensor] = None,
    ) -> None:
        if not isinstance(atoms, torch.Tensor) or atoms.dim() != 2:
            raise ValueError(f"MemoryBank: atoms must be a (K, d) tensor, got {getattr(atoms, 'shape', type(atoms))}")
        if atoms.shape[0] == 0 or atoms.shape[1] == 0:
            raise ValueError(f"MemoryBank: empty bank (atoms shape {tuple(atoms.shape)})")
        if not torch.isfinite(atoms).all():
            raise ValueError("MemoryBank: atoms contain NaN or Inf")
        if atom_labels is not None and atom_labels.shape != (atoms.shape[0],):
            raise ValueError(f"MemoryBank: atom_labels must be ({atoms.shape[0]},), got {tuple(atom_labels.shape)}")
        self.atoms = atoms.detach().float().contiguous()
        self.checkpoint_sha256 = str(checkpoint_sha256)
        self.modality = modality
        self.select = select
        self.seed = int(seed)
        self.atom_labels = atom_labels

    @property
    def size(self) -> int:
        """Number of atoms K."""
        return self.atoms.shape[0]

    @property
    def dim(self) -> int:
        """Feature dimension d."""
        return self.atoms.shape[1]

    @property
    def dictionary(self) -> torch.Tensor:
        """The (d, K) dictionary matrix (atoms as columns)."""
        return self.atoms.T

    def __repr__(self) -> str:
        return (f"MemoryBank(modality={self.modality!r}, size={self.size}, dim={self.dim}, "
                f"select={self.select!r}, seed={self.seed}, checkpoint={self.checkpoint_sha256[:12]})")

    @classmethod
    def build(
        cls,
        features: torch.Tensor,
        size: int,
        select: str,
        checkpoint_hash: str,
        labels: Optional[torch.Tensor] = None,
        seed: int = 0,
        modality: str = "",
    ) -> "MemoryBank":
        """Choose up to ``size`` atoms (paper: at most 1024) from ``features`` (N, d) with the registered
        selection ``select``, seeded by ``seed``."""
        selector = BANK_SELECTORS.get(select)
        if not isinstance(features, torch.Tensor) or features.dim() != 2:
            got = getattr(features, "shape", type(features))
            raise ValueError(f"MemoryBank.build: features must be (N, d), got {got}")
        if features.shape[0] == 0:
            raise ValueError(f"MemoryBank.build: no {modality or 'input'} features to build a bank from")
        if size < 1:
            raise ValueError(f"MemoryBank.build: size must be >= 1, got {size}")
        if labels is not None and labels.shape != (features.shape[0],):
            raise ValueError(f"MemoryBank.build: labels must be ({features.shape[0]},), got {tuple(labels.shape)}")
        n = features.shape[0]
        if size > n:
            logger.info("MemoryBank.build: size %d > %d features; the %s bank gets at most %d atoms",
                        size, n, modality or "", n)
            size = n
        gen = torch.Generator().manual_seed(int(seed))
        atoms, atom_labels = selector(features.detach().cpu().float(), labels.cpu() if labels is not None else None,
                                      size, gen)
        bank = cls(atoms, checkpoint_hash, modality=modality, select=select, seed=seed, atom_labels=atom_labels)
        logger.info("built %r", bank)
        return bank

    def save(self, path: PathLike) -> None:
        """Write the bank with its provenance (torch.save)."""
        torch.save(
            {"atoms": self.atoms, "atom_labels": self.atom_labels, "checkpoint_sha256": self.checkpoint_sha256,
             "modality": self.modality, "select": self.select, "seed": self.seed},
            path,
        )

    @classmethod
    def load(cls, path: PathLike, *, expected_checkpoint_sha256: Optional[str]) -> "MemoryBank":
        """Read a bank written by ``save`` and check it was built from the expected checkpoint.

        ``expected_checkpoint_sha256`` is required; pass None explicitly to skip the check (logged).
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(f"memory bank file {os.fspath(path)!r} does not exist")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict):
            raise ValueError(f"memory bank file {os.fspath(path)!r}: expected a dict, got {type(blob).__name__}")
        missing = [k for k in ("atoms", "checkpoint_sha256") if k not in blob]
        if missing:
            raise ValueError(f"memory bank file {os.fspath(path)!r} lacks key(s) {missing}")
        stored = blob["checkpoint_sha256"]
        if expected_checkpoint_sha256 is None:
            logger.warning("loading memory bank %s without checking its checkpoint (built from %s)", path, stored)
        elif stored != expected_checkpoint_sha256:
            raise ValueError(
                f"memory bank file {os.fspath(path)!r} was built from checkpoint sha256 {stored}, "
                f"but the model's checkpoint has sha256 {expected_checkpoint_sha256}"
            )
        return cls(blob["atoms"], stored, modality=blob.get("modality", ""), select=blob.get("select", ""),
                   seed=blob.get("seed", 0), atom_labels=blob.get("atom_labels"))


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (identifies the checkpoint a bank belongs to)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"cannot hash {os.fspath(path)!r}: no such file")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def build_banks(features_path: PathLike, size: int = DEFAULT_BANK_SIZE, select: str = "random",
                seed: int = 0) -> Dict[str, MemoryBank]:
    """Memory banks for every modality in a features file written by training's ``--save_features``.

    File format: ``{"audio": (N, Da), "visual": (N, Dv), "labels": (N,), "ids": list[str],
    "checkpoint_sha256": str}``; a unimodal file may hold only one of the modality keys.
    """
    name = os.fspath(features_path)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"features file {name!r} does not exist")
    blob = torch.load(name, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict):
        raise ValueError(f"features file {name!r}: expected a dict, got {type(blob).__name__}")
    for key in ("labels", "checkpoint_sha256"):
        if key not in blob:
            raise ValueError(f"features file {name!r} lacks key {key!r}")
    present = [m for m in MODALITIES if m in blob]
    if not present:
        raise ValueError(f"features file {name!r} holds none of the modality keys {MODALITIES}")
    labels = blob["labels"]
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
        raise ValueError(f"features file {name!r}: 'labels' must be a 1-D tensor")
    banks = {}
    for m in present:
        feats = blob[m]
        if not isinstance(feats, torch.Tensor) or feats.dim() != 2 or feats.shape[0] != labels.shape[0]:
            raise ValueError(
                f"features file {name!r}: {m!r} must be (N, d) with N = {labels.shape[0]} labels, "
                f"got {getattr(feats, 'shape', type(feats))}"
            )
        banks[m] = MemoryBank.build(feats, size, select, blob["checkpoint_sha256"], labels=labels, seed=seed,
                                    modality=m)
    return banks


# ----------------------------------------------------------------------------------------------------
# The defended model
# ----------------------------------------------------------------------------------------------------
class DefendedModel(nn.Module):
    """A model whose modality features are replaced by ``mix * D a* + (1 - mix) * x`` before its head.

    Args:
        model: follows the contract ``features(audio=, visual=) -> {m: (B, d_m)}``, ``classify(feats)``,
            ``modalities``.
        banks: one ``MemoryBank`` per modality of the model (exactly those).
        lam: L1 weight (paper 0.1). mix: m (paper 0.5; 0.6 noted for Kinetics-Sounds).
        grad: a name in ``GRAD_MODES``: ``unrolled`` (gradients through the solver) or ``bpda``
            (identity backward through the reconstruction).
        max_iter, tol: solver cap and per-sample tolerance (paper 2000, 8e-4).
        steps: fixed step per modality (the paper's alphas, e.g. ``PAPER_STEPS["ave"]``), or None for 1/L.
        grad_max_iter: iterations unrolled under autograd in ``unrolled`` mode, warm-started from the
            no-grad solution (the forward value stays that solution; see ``reconstruct_unrolled``);
            None records the whole solve (exact gradient but memory ~ iterations x B x K floats, ~0.5 GB
            per modality for 2000 x 64 x 1024 float32).
        accelerate: FISTA (True) or plain ISTA.

    The banks are fixed buffers (move with ``.to()``, never trained).
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
        for m in mods:
            bank = banks[m]
            atoms = getattr(bank, "atoms", None)
            if not isinstance(atoms, torch.Tensor) or atoms.dim() != 2 or atoms.shape[0] == 0:
                raise ValueError(f"DefendedModel: the {m} bank is empty or not a (K, d) bank: {bank!r}")
            self.register_buffer(f"dict_{m}", atoms.detach().T.contiguous().clone())
            self.bank_info[m] = repr(bank)

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

    def purify(self, feats: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Replace each feature x by mix * D a*(x) + (1 - mix) * x."""
        out = {}
        for m in self.modalities:
            if m not in feats:
                raise KeyError(f"DefendedModel: the model returned no {m!r} feature (got {sorted(feats)})")
            x = feats[m]
            D = self.dictionary(m).to(dtype=x.dtype)
            if x.dim() != 2 or x.shape[1] != D.shape[0]:
                raise ValueError(
                    f"DefendedModel: {m} features have shape {tuple(x.shape)} but the {m} bank has "
                    f"dimension {D.shape[0]} ({self.bank_info[m]})"
                )
            recon = self._reconstruct(x, D, self.cfgs[m])
            out[m] = self.mix * recon + (1.0 - self.mix) * x
        return out

    def features(
        self, audio: Optional[torch.Tensor] = None, visual: Optional[torch.Tensor] = None
    ) -> Dict[str, torch.Tensor]:
        """The wrapped model's features after the memory-bank purification."""
        return self.purify(self.model.features(audio=audio, visual=visual))

    def classify(self, feats: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The wrapped model's head (on already purified features)."""
        return self.model.classify(feats)

    def forward(self, audio: Optional[torch.Tensor] = None, visual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits of the defended model."""
        return self.model.classify(self.features(audio=audio, visual=visual))
