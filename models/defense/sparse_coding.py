"""Sparse coding for the defense: the batched Lasso solver, its objective and step, and the gradient modes.

Each feature ``x`` is coded against a dictionary ``D`` (d, K),

    a* = argmin_a 0.5 ||x - D a||^2 + lam ||a||_1            (docs/paper.md, Defense, item 2)

- ``sparse_code`` / ``sparse_code_with_info``: batched ISTA/FISTA with per-sample stopping (the reference
  stops on one batch-wide norm, which makes a sample's code depend on its batch-mates: a bug we avoid).
- ``lasso_objective``: the per-sample objective above; ``lipschitz_constant``: L = ||D||_2^2, cached.
- ``GRAD_MODES``: how gradients pass the reconstruction D a*(x): ``unrolled`` through the solver, or
  ``bpda`` (identity backward).
"""
from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from models.defense.constants import DEFAULT_GRAD_MAX_ITER, DEFAULT_LAM, DEFAULT_MAX_ITER, DEFAULT_TOL
from utils.registry import Registry

logger = logging.getLogger(__name__)

_CHECK_EVERY = 16  # iterations between host syncs that drop stopped rows from the working set
# Below this fraction of nonzeros the iterate is multiplied as a sparse tensor (measured break-even on CPU
# for 64 x 1024 codes, 1 thread, was ~17%; not a paper constant).
_SPARSE_DENSITY = 0.15


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

