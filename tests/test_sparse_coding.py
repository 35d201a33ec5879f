"""The sparse coder at realistic feature scales (issue 17): fp32 features certify, the certificate is sound, and
rows that end uncertified at the cap are counted, logged and recorded."""
from __future__ import annotations

import logging
from typing import Tuple

import pytest
import torch

from models.defense import (DefendedModel, MemoryBank, duality_gap, lasso_objective, sparse_code,
                            sparse_code_certified)
from pipeline.defense import solver_counts

LAM = 0.1  # lambda, Tian & Xu 2021
NORM = 25.0  # the norm of pooled ReLU features (the review's measurement)


def _realistic(d: int = 128, K: int = 48, B: int = 32, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Non-negative, correlated atoms and queries of norm 25, float32: x (B, d), D (d, K)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(d, generator=g).abs()  # a shared non-negative profile: atoms correlate (~0.85)
    atoms = (base + 0.5 * torch.randn(K, d, generator=g)).relu()
    x = (base + 0.5 * torch.randn(B, d, generator=g)).relu()
    return NORM * x / x.norm(dim=1, keepdim=True), (NORM * atoms / atoms.norm(dim=1, keepdim=True)).T.contiguous()


@pytest.mark.parametrize("seed", [0, 1])
def test_fp32_features_at_realistic_norm_certify_well_before_the_cap(seed: int) -> None:
    # Before: 0 of 32 rows certified within 2000 iterations (the fp32 gap's rounding was ~10 x tol).
    x, D = _realistic(seed=seed)
    res = sparse_code_certified(x, D, LAM, max_iter=500, tol=1e-5)
    assert res.codes.dtype == torch.float32
    assert int(res.certified.sum()) >= 30, res.iterations.tolist()
    assert int(res.iterations[res.certified].max()) < 500


def test_certified_gap_bounds_the_suboptimality_against_sklearn() -> None:
    from sklearn.linear_model import Lasso

    x, D = _realistic(B=6, seed=2)
    res = sparse_code_certified(x, D, LAM, max_iter=2000, tol=1e-5)
    assert bool(res.certified.all())
    gap, primal = duality_gap(x, D, res.codes, LAM)
    assert gap.dtype == torch.float64
    x64, D64 = x.double(), D.double()
    for i in range(x.shape[0]):
        # sklearn minimises 1/(2n)||y - Xw||^2 + alpha||w||_1 with n = d rows: alpha = lam / d.
        m = Lasso(alpha=LAM / D.shape[0], fit_intercept=False, tol=1e-12, max_iter=500000).fit(D64.numpy(),
                                                                                          x64[i].numpy())
        f_sk = float(lasso_objective(x64[i : i + 1], D64, torch.from_numpy(m.coef_)[None], LAM)[0])
        f_ours = float(lasso_objective(x64[i : i + 1], D64, res.codes[i : i + 1].double(), LAM)[0])
        assert float(primal[i]) == pytest.approx(f_ours, rel=1e-12)
        assert f_ours - f_sk <= 1e-5 * f_sk, (i, f_ours, f_sk)  # within the certified tolerance
        assert f_ours - f_sk <= float(gap[i]) + 1e-12 * f_sk, (i, f_ours - f_sk, float(gap[i]))  # sound bound


def test_gap_of_fp32_codes_is_computed_in_fp64() -> None:
    # The fp32 gap's rounding (~1e-4 x the objective here) hid certified codes: the gap of fp32 inputs must
    # equal the gap of the same values in fp64.
    x, D = _realistic(B=8, seed=3)
    A = sparse_code(x.double(), D.double(), LAM, max_iter=5000, tol=1e-10).float()
    gap32, primal32 = duality_gap(x, D, A, LAM)
    gap64, primal64 = duality_gap(x.double(), D.double(), A.double(), LAM)
    torch.testing.assert_close(gap32, gap64, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(primal32, primal64, rtol=1e-12, atol=0)


def test_uncertified_rows_are_reported_by_the_solver() -> None:
    x, D = _realistic(B=8, seed=4)
    res = sparse_code_certified(x, D, LAM, max_iter=3, tol=1e-5)
    assert not bool(res.certified.any()) and bool((res.iterations == 3).all())
    assert not bool(sparse_code_certified(x, D, LAM, max_iter=50, tol=0).certified.any())  # tol 0: no check


class _Linear(torch.nn.Module):
    """A one-modality model with the features/classify contract whose features are the input itself."""

    modalities = ("visual",)
    arch = {"toy": True}

    def __init__(self, d: int) -> None:
        super().__init__()
        self.head = torch.nn.Linear(d, 3)

    def features(self, audio=None, visual=None):  # type: ignore[no-untyped-def]
        return {"visual": visual}

    def classify(self, feats):  # type: ignore[no-untyped-def]
        return self.head(feats["visual"])


@pytest.mark.parametrize("grad", ["unrolled", "bpda"])
def test_defended_model_counts_logs_and_records_uncertified_rows(grad: str, caplog: pytest.LogCaptureFixture
                                                                 ) -> None:
    x, D = _realistic(B=8, seed=5)
    bank = MemoryBank(D.T.contiguous(), checkpoint_sha256="h", modality="visual", select="random", seed=0)
    dm = DefendedModel(_Linear(D.shape[0]), {"visual": bank}, grad=grad, max_iter=2, grad_max_iter=2)
    with caplog.at_level(logging.WARNING):
        dm(visual=x)
        dm(visual=x[:3].clone().requires_grad_(True)).sum().backward()
    assert dm.solver_report() == {"visual": {"rows": 11, "uncertified": 11, "max_iter": 2}}
    warned = [r.getMessage() for r in caplog.records if "not certified" in r.getMessage()]
    assert len(warned) == 1 and "8 of 8 visual rows" in warned[0] and "cap of 2 iterations" in warned[0]
    with caplog.at_level(logging.WARNING):
        rec = solver_counts(dm, warn=True)
    assert rec == {"solver_rows": {"visual": 11}, "solver_uncertified_rows": {"visual": 11}, "solver_max_iter": 2}
    assert any("cap of 2 iterations" in r.getMessage() for r in caplog.records if r.name == "pipeline.defense")
    # at the default cap every row certifies, and nothing is counted as uncertified
    ok = DefendedModel(_Linear(D.shape[0]), {"visual": bank}, grad=grad)
    ok(visual=x)
    assert ok.solver_report()["visual"] == {"rows": 8, "uncertified": 0, "max_iter": 2000}
    assert solver_counts(_Linear(4)) is None
