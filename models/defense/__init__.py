"""External feature memory banks: the sparse-coding defense of Tian & Xu (CVPR 2021), Sec. 5 (docs/paper.md,
Defense). This package's job is only to re-export its public names, at the import paths callers use.

Each modality feature ``x`` is sparse-coded against a dictionary ``D`` (d, K) whose K atoms are clean
training features,

    a* = argmin_a 0.5 ||x - D a||^2 + lam ||a||_1,

and replaced by ``mix * D a* + (1 - mix) * x`` before the classifier head.

Modules:
- ``constants``: the paper's settings (``DEFAULT_*``, ``PAPER_STEPS``, ``MODALITIES``).
- ``sparse_coding``: ``sparse_code`` / ``sparse_code_with_info`` / ``sparse_code_certified`` (batched FISTA,
  certified per-sample stop),
  ``lasso_objective``, ``lipschitz_constant``, and ``GRAD_MODES`` (``unrolled`` / ``bpda``) with
  ``SolverConfig``.
- ``banks``: ``MemoryBank`` (atoms of one modality chosen by a ``BANK_SELECTORS`` entry, tied to its
  checkpoint by SHA-256, saved atomically) and ``build_banks``.
- ``defended``: ``DefendedModel``, the wrapper around any model with the ``features`` / ``classify`` contract.
"""
from models.defense.banks import (
    BANK_SELECTORS,
    MemoryBank,
    PathLike,
    Selector,
    build_banks,
    select_class_balanced,
    select_kmeans,
    select_random,
)
from models.defense.constants import (
    DEFAULT_BANK_SIZE,
    DEFAULT_GRAD_MAX_ITER,
    DEFAULT_LAM,
    DEFAULT_MAX_ITER,
    DEFAULT_MIX,
    DEFAULT_TOL,
    MODALITIES,
    PAPER_STEPS,
    PAPER_TOL,
)
from models.defense.defended import DefendedModel
from models.defense.sparse_coding import (
    GRAD_MODES,
    SolverConfig,
    SolverStats,
    SparseCodes,
    duality_gap,
    lasso_objective,
    lipschitz_constant,
    reconstruct_bpda,
    reconstruct_unrolled,
    sparse_code,
    sparse_code_certified,
    sparse_code_with_info,
)
from utils.fileio import sha256_file  # kept at its old path; the one implementation lives in utils.fileio

__all__ = [
    "BANK_SELECTORS", "DEFAULT_BANK_SIZE", "DEFAULT_GRAD_MAX_ITER", "DEFAULT_LAM", "DEFAULT_MAX_ITER",
    "DEFAULT_MIX", "DEFAULT_TOL", "DefendedModel", "GRAD_MODES", "MODALITIES", "MemoryBank", "PAPER_STEPS",
    "PAPER_TOL", "PathLike", "Selector", "SolverConfig", "SolverStats", "SparseCodes", "build_banks", "duality_gap", "lasso_objective", "lipschitz_constant",
    "reconstruct_bpda", "reconstruct_unrolled", "select_class_balanced", "select_kmeans", "select_random",
    "sha256_file", "sparse_code", "sparse_code_certified", "sparse_code_with_info",
]
