"""Timing and exactness: our ``sparse_code`` against the reference's ISTA run to the same objective.

What is compared (the same problem for both):
- Problem: dictionary D (512, 1024) whose atoms are random nonnegative "post-ReLU" features relu(N(0, 1)),
  each atom L2-normalised (overcomplete, correlated, non-negative: the hard case); a batch of 64 queries
  drawn the same way (unit norm); lambda = 0.1 (paper). float32, one CPU thread by default.
- Reference: ISTA as the paper describes it, at its fastest convergent fixed step alpha = 1.9 / L
  (``--ref-alpha-scale``; L = ||D||_2^2), in Gram form with the Gram matrix precomputed and one fused
  product per iteration (z = A M + alpha x D, M = I - alpha G). It runs until its batch objective reaches
  ours: the number of iterations is found in an untimed run that tracks the objective, then exactly that
  many iterations are timed (no checks inside the timed loop).
- Ours: ``models.defense.sparse_code`` with its defaults (FISTA with adaptive restart, certified stop on
  the relative duality gap 1e-5 checked every 8 iterations, exact polishing on stable supports). L and
  the Gram matrix are cached per dictionary for both; their one-time cost is printed, not in the ratio.
- Exactness: f* is the float64 optimum (our solver at tol 1e-13, itself certified by its duality gap);
  scikit-learn's Lasso (tol 1e-10) on the first rows is printed as an independent check. The run fails
  (exit 1) unless every row of ours is within 1e-4 relative of f*.
- Realistic norms (issue 17): non-negative correlated atoms and queries of norm 25 (pooled ReLU features),
  d 128, K 48, 32 rows, lambda 0.1, tol 1e-5, cap 2000: iterations to certify (median, max) and rows left
  uncertified at the cap, fp32 inputs next to the same values in fp64. Before the float64 certificate, fp32
  left 0 of 32 rows certified (all ran to the cap); the run fails (exit 1) if any fp32 row is uncertified.

Usage: .venv/bin/python benchmarks/bench_defense.py [--repeats 5] [--threads 1] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models.defense import (lasso_objective, lipschitz_constant, sparse_code_certified,  # noqa: E402
                            sparse_code_with_info)

LAM = 0.1  # lambda, Tian & Xu 2021


def reference_ista(x: torch.Tensor, D: torch.Tensor, lam: float, alpha: float, n_iter: int,
                   gram: torch.Tensor) -> torch.Tensor:
    """The paper's ISTA at a fixed step, Gram form, exactly ``n_iter`` iterations."""
    M = torch.eye(D.shape[1], dtype=D.dtype, device=D.device) - alpha * gram
    c = alpha * (x @ D)
    A = x.new_zeros(x.shape[0], D.shape[1])
    for _ in range(n_iter):
        A = F.softshrink(torch.addmm(c, A, M), alpha * lam)
    return A


def iterations_to_reach(x: torch.Tensor, D: torch.Tensor, lam: float, alpha: float, target: float,
                        cap: int) -> int:
    """ISTA iterations until the batch objective (float64) is <= ``target`` (untimed; ``cap`` if never)."""
    gram = D.T @ D
    M = torch.eye(D.shape[1], dtype=D.dtype, device=D.device) - alpha * gram
    c = alpha * (x @ D)
    A = x.new_zeros(x.shape[0], D.shape[1])
    for it in range(1, cap + 1):
        A = F.softshrink(torch.addmm(c, A, M), alpha * lam)
        if it % 10 == 0 and float(lasso_objective(x.double(), D.double(), A.double(), lam).sum()) <= target:
            return it
    return cap


def realistic_case(seed: int, d: int = 128, K: int = 48, B: int = 32, norm: float = 25.0) -> bool:
    """Print iterations to certify at realistic feature norms, fp32 and fp64; True if every fp32 row certified."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(d, generator=g).abs()  # a shared non-negative profile: atoms correlate (~0.85)
    atoms = (base + 0.5 * torch.randn(K, d, generator=g)).relu()
    x = (base + 0.5 * torch.randn(B, d, generator=g)).relu()
    x, D = norm * x / x.norm(dim=1, keepdim=True), (norm * atoms / atoms.norm(dim=1, keepdim=True)).T.contiguous()
    cap = 2000  # the paper's cap, Tian & Xu 2021
    ok = True
    for dtype in (torch.float32, torch.float64):
        res = sparse_code_certified(x.to(dtype), D.to(dtype), LAM, max_iter=cap, tol=1e-5)
        it = res.iterations[res.certified].float()
        n_unc = int((~res.certified).sum())
        med, mx = (f"{it.median():.0f}", f"{it.max():.0f}") if it.numel() else ("-", "-")
        print(f"realistic norms ({dtype}): D {d}x{K} non-negative atoms of norm {norm:g}, {B} rows: iterations to "
              f"certify median {med} max {mx}, {n_unc} of {B} rows uncertified at the cap {cap}")
        ok = ok and (dtype != torch.float32 or n_unc == 0)
    return ok


def timed_interleaved(fns: Dict[str, Callable[[], object]], repeats: int,
                      device: torch.device) -> Tuple[Dict[str, float], Dict[str, object]]:
    """Minimum wall time of each function over ``repeats`` rounds, run in turn within each round (so load
    from other processes on a shared machine hits all of them alike), and each one's last result."""
    best = {k: float("inf") for k in fns}
    out: Dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            out[name] = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--atoms", type=int, default=1024)  # at most 1024 atoms, Tian & Xu 2021
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ref-alpha-scale", type=float, default=1.9, help="reference alpha = scale / L")
    p.add_argument("--ref-cap", type=int, default=20000, help="most reference iterations tried")
    args = p.parse_args()
    if not 0 < args.ref_alpha_scale < 2:
        p.error(f"--ref-alpha-scale must be in (0, 2) for fixed-step ISTA to converge, got {args.ref_alpha_scale}")
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(args.seed)
    atoms = torch.relu(torch.randn(args.atoms, args.dim, generator=g))
    atoms = atoms / atoms.norm(dim=1, keepdim=True)
    x = torch.relu(torch.randn(args.batch, args.dim, generator=g))
    x = x / x.norm(dim=1, keepdim=True)
    D = atoms.T.contiguous().to(dev)
    x = x.to(dev)

    t0 = time.perf_counter()
    L = lipschitz_constant(D)
    gram = D.T @ D
    t_lip = time.perf_counter() - t0
    A_star, it_star = sparse_code_with_info(x.double(), D.double(), LAM, max_iter=50000, tol=1e-13)
    f_star_rows = lasso_objective(x.double(), D.double(), A_star, LAM)
    f_star = float(f_star_rows.sum())

    def objective(A: torch.Tensor) -> torch.Tensor:
        return lasso_objective(x.double(), D.double(), A.double(), LAM)

    sparse_code_with_info(x, D, LAM)  # warm-up (also fills the per-dictionary cache)
    A_ours, it_ours = sparse_code_with_info(x, D, LAM)
    f_ours_rows = objective(A_ours)
    f_ours = float(f_ours_rows.sum())
    alpha = args.ref_alpha_scale / L
    n_ref = iterations_to_reach(x, D, LAM, alpha, f_ours, args.ref_cap)
    times, outs = timed_interleaved({
        "ref": lambda: reference_ista(x, D, LAM, alpha, n_ref, gram),
        "ours": lambda: sparse_code_with_info(x, D, LAM),
    }, args.repeats, dev)
    f_ref = float(objective(outs["ref"]).sum())
    worst = float(((f_ours_rows - f_star_rows) / f_star_rows).max())
    print(f"problem: D {args.dim}x{args.atoms} unit-norm relu(N(0,1)) atoms, batch {args.batch}, lambda {LAM}, "
          f"{x.dtype}, device {dev}, threads {args.threads}, L = ||D||_2^2 = {L:.4g}")
    print(f"f* (float64, certified gap 1e-13, {int(it_star.max())} iterations) = {f_star:.8f}")
    print(f"one-time L and Gram computation (cached per dictionary): {t_lip * 1e3:.1f} ms")
    print(f"ours sparse_code (defaults): iterations per row max {int(it_ours.max())} "
          f"mean {it_ours.float().mean():.1f}, {times['ours'] * 1e3:.1f} ms, batch objective gap "
          f"{(f_ours - f_star) / f_star:.2e}, worst row {worst:.2e} (must be <= 1e-4)")
    reached = "reached ours" if n_ref < args.ref_cap else f"did NOT reach ours within {args.ref_cap}"
    print(f"reference ISTA alpha={args.ref_alpha_scale}/L, Gram form: {n_ref} iterations ({reached}), "
          f"{times['ref'] * 1e3:.1f} ms, batch objective gap {(f_ref - f_star) / f_star:.2e}")
    try:
        from sklearn.linear_model import Lasso

        n = min(4, args.batch)
        sk = torch.stack([torch.from_numpy(Lasso(alpha=LAM / args.dim, fit_intercept=False, tol=1e-10,
                                                 max_iter=100000).fit(D.double().cpu().numpy(),
                                                                      x[i].double().cpu().numpy()).coef_)
                          for i in range(n)])
        f_sk = lasso_objective(x[:n].double().cpu(), D.double().cpu(), sk, LAM)
        rel = float(((f_ours_rows[:n].cpu() - f_sk) / f_sk).max())
        print(f"scikit-learn Lasso on the first {n} rows: max (f_ours - f_sklearn) / f_sklearn = {rel:.2e}")
    except ImportError:
        print("scikit-learn not installed: no independent check")
    print(f"speed ratio reference / ours = {times['ref'] / times['ours']:.1f}x (target >= 10x)")
    certified = realistic_case(args.seed)
    return 0 if worst <= 1e-4 and certified else 1


if __name__ == "__main__":
    sys.exit(main())
