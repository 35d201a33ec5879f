"""FAB-T / FAB (attacks/fab.py) against torchattacks' FAB, its projection against scipy, the two-modality
concatenation in budget units, AutoAttack with FAB-T, and EOT on a model robust only by its randomness."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from attacks import create_attack
from attacks.fab import project_hyperplane_box
from tests.test_autoattack import AsImage, AudioNet, Positional, VisualNet, acc, data
from utils.errors import UsageError

torchattacks = pytest.importorskip("torchattacks")


def peer_fab(model: nn.Module, norm: str, eps: float, steps: int = 10, targeted: bool = True):
    """torchattacks' FAB (a port of fra31's): targeted over the 9 most likely other classes (multi_targeted,
    as AutoAttack's FAB-T), one restart."""
    return torchattacks.FAB(model, norm=norm, eps=eps, steps=steps, n_restarts=1, multi_targeted=targeted,
                            n_classes=10, seed=0)


# --- the peer -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, targeted, norm, eps", [("fab-t", True, "Linf", 2 / 255), ("fab-t", True, "L2", 0.06),
                                                      ("fab", False, "Linf", 2 / 255)])
def test_fab_robust_accuracy_matches_torchattacks_on_visual_inputs(name, targeted, norm, eps):
    model = VisualNet().eval()
    x = data()["visual"]
    y = model(visual=x).argmax(1)
    theirs = acc(model, {"visual": peer_fab(Positional(model), norm, eps, targeted=targeted)(x, y)}, y)
    adv = create_attack(name, model, eps={"visual": eps}, norm=norm, steps=10)({"visual": x}, y)
    ours = acc(model, adv, y)
    assert abs(ours - theirs) <= 2, f"{name} {norm}: ours {ours}/32 robust vs torchattacks {theirs}/32"
    assert ours < 28  # the attack did something (clean: 32/32)


def test_fab_t_matches_torchattacks_on_audio_through_the_affine_map():
    model = AudioNet().eval()
    a = data()["audio"]
    y = model(audio=a).argmax(1)
    eps = 2 / 255
    img = ((a + 1) / 2)[:, :, None, :]  # (B,1,1,L) in [0, 1]: budgets double on the waveform
    theirs = acc(model, {"audio": peer_fab(AsImage(model), "Linf", eps)(img, y)[:, :, 0] * 2 - 1}, y)
    ours = acc(model, create_attack("fab-t", model, eps={"audio": 2 * eps}, steps=10)({"audio": a}, y), y)
    assert abs(ours - theirs) <= 2 and ours < 32, (ours, theirs)


class Concatenated(nn.Module):
    """Audio and visual read from one [0, 1] vector (B,1,1,n): audio = 2 y - 1, visual = y."""

    def __init__(self, k: int = 10) -> None:
        super().__init__()
        self.v, self.a = VisualNet(k, 1), AudioNet(k, 2)

    def split(self, y: torch.Tensor):
        flat = y.flatten(1)
        return flat[:, :64].view(-1, 1, 64) * 2 - 1, flat[:, 64:].view(-1, 3, 8, 8)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        audio, visual = self.split(y)
        return self.two(audio=audio, visual=visual)

    def two(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return self.v(visual=visual) + self.a(audio=audio)


def test_two_modalities_in_budget_units_are_fab_on_the_concatenated_input():
    """Under L-inf, a per-modality budget (audio 2e on [-1, 1], visual e on [0, 1]) is one L-inf ball of
    radius e on the concatenated [0, 1] input: our two-modality FAB-T must match the single-input peer."""
    model = Concatenated().eval()
    x = data()
    y_in = torch.cat([((x["audio"] + 1) / 2).flatten(1), x["visual"].flatten(1)], dim=1)[:, None, None, :]
    labels = model(y_in).argmax(1)
    e = 1.5 / 255
    theirs = int((model(peer_fab(model, "Linf", e)(y_in, labels)).argmax(1) == labels).sum())
    wrapped = type("Two", (nn.Module,), {"forward": lambda self, audio, visual: model.two(audio, visual)})()
    adv = create_attack("fab-t", wrapped, eps={"audio": 2 * e, "visual": e}, steps=10)(x, labels)
    ours = acc(wrapped, adv, labels)
    assert abs(ours - theirs) <= 2 and ours < 30, (ours, theirs)
    assert (adv["audio"] - x["audio"]).abs().max() <= 2 * e + 1e-7 and (adv["visual"] - x["visual"]).abs().max() <= e + 1e-7


# --- the projection against scipy -------------------------------------------------------------------------------

def test_projection_onto_hyperplane_and_box_is_the_minimum_norm_point():
    scipy_opt = pytest.importorskip("scipy.optimize")
    import numpy as np

    gen = torch.Generator().manual_seed(0)
    n, b = 7, 6
    w = torch.randn(b, n, generator=gen, dtype=torch.float64)
    w[0, :3] = 0  # coordinates the hyperplane ignores
    lo = -torch.rand(b, n, generator=gen, dtype=torch.float64)
    hi = torch.rand(b, n, generator=gen, dtype=torch.float64)
    c = torch.randn(b, generator=gen, dtype=torch.float64) * 0.5
    for norm in ("Linf", "L2"):
        d = project_hyperplane_box(w, c, lo, hi, norm)
        for i in range(b):
            wi, li, hi_i, ci = (t[i].numpy() for t in (w, lo, hi, c))
            if norm == "Linf":  # min t s.t. w.d = c, -t <= d <= t, lo <= d <= hi: a linear program
                res = scipy_opt.linprog(np.r_[np.zeros(n), 1.0], A_eq=np.r_[wi, 0.0][None], b_eq=[ci],
                                        A_ub=np.r_[np.c_[np.eye(n), -np.ones(n)], np.c_[-np.eye(n), -np.ones(n)]],
                                        b_ub=np.zeros(2 * n), bounds=list(zip(li, hi_i)) + [(0, None)])
                feasible, best = res.status == 0, res.fun if res.status == 0 else None
                ours = float(d[i].abs().max())
            else:
                res = scipy_opt.minimize(lambda v: v @ v, np.zeros(n), jac=lambda v: 2 * v, method="SLSQP",
                                         bounds=list(zip(li, hi_i)),
                                         constraints=[{"type": "eq", "fun": lambda v: wi @ v - ci, "jac": lambda v: wi}],
                                         options={"ftol": 1e-14, "maxiter": 500})
                feasible = res.success and abs(wi @ res.x - ci) < 1e-8
                best, ours = (float(np.sqrt(res.fun)) if feasible else None), float(d[i].norm())
            assert bool((d[i] >= lo[i] - 1e-12).all() and (d[i] <= hi[i] + 1e-12).all())
            if feasible:
                assert abs(float(w[i] @ d[i]) - float(c[i])) < 1e-9
                assert ours == pytest.approx(best, rel=1e-5, abs=1e-9), (norm, i)
            else:  # the box cannot reach the hyperplane: the corner closest to it
                side = 1.0 if c[i] >= 0 else -1.0
                corner = torch.where(side * w[i] > 0, hi[i], torch.where(side * w[i] < 0, lo[i], torch.zeros(n,
                                     dtype=torch.float64)))
                torch.testing.assert_close(d[i], corner)


# --- AutoAttack with FAB-T ----------------------------------------------------------------------------------------

def test_autoattack_standard_runs_fab_t_in_its_place_and_misses_nothing():
    model = VisualNet().eval()
    x = data(16)["visual"]
    y = model(visual=x).argmax(1)
    aa = create_attack("autoattack", model, eps={"visual": 1 / 255}, steps=5, n_queries=20, n_target_classes=2)
    assert [s.name for s in aa.stages] == ["apgd-ce", "apgd-t", "fab-t", "square"]  # fra31's standard order
    fab_t = aa.stages[2]
    assert (fab_t.steps, fab_t.restarts, fab_t.n_target_classes) == (5, 1, 2)  # the scaled-down settings
    aa({"visual": x}, y)
    assert aa.report["missing"] == [] and "fab-t" in aa.report["per_attack"]
    full = create_attack("autoattack", model, eps={"visual": 1 / 255})
    assert (full.stages[2].steps, full.stages[2].restarts, full.stages[2].n_target_classes) == (100, 1, 9)
    plus = create_attack("autoattack", model, eps={"visual": 1 / 255}, version="plus")
    assert plus.missing == [] and [s.name for s in plus.stages][2] == "fab" and plus.stages[2].restarts == 5


# --- EOT ----------------------------------------------------------------------------------------------------------

class RandomlyMasked(nn.Module):
    """A linear classifier robust only by its randomness: every forward adds ``(x - x.detach()) @ R`` with a
    fresh Gaussian R to the logits (zero in value, large random noise in the input gradient) and a 1e-3 logit
    jitter (so two forwards differ). The noise has mean zero: EOT's average recovers the true gradient."""

    def __init__(self, noise: float = 20.0, k: int = 4, n: int = 3 * 8 * 8) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(n, k, generator=gen) / n ** 0.5 * 8)
        self.noise = noise

    def forward(self, visual: torch.Tensor) -> torch.Tensor:
        x = visual.flatten(1)
        z = (x - 0.5) @ self.w
        if not self.noise:
            return z
        r = torch.randn(x.shape[1], self.w.shape[1]) * self.noise * self.w.abs().mean()
        return z + (x - x.detach()) @ r + 1e-3 * torch.randn_like(z)


def _robust(model, name, eps, x, y, **kw) -> int:
    torch.manual_seed(0)
    adv = create_attack(name, model, eps={"visual": eps}, **kw)({"visual": x}, y)
    with torch.no_grad():
        return int((model(**adv).argmax(1) == y).sum())


def test_eot_breaks_a_model_robust_only_by_its_randomness():
    model = RandomlyMasked().eval()
    x = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = model(visual=x).argmax(1)
    without = _robust(model, "pgd", 0.03, x, y, steps=10)
    with_eot = _robust(model, "pgd", 0.03, x, y, steps=10, eot_iter=100)
    model.noise = 0.0
    noiseless = _robust(model, "pgd", 0.03, x, y, steps=10)
    model.noise = 20.0
    assert without >= 24, without  # the random gradients hide the classifier from PGD
    assert with_eot <= 14 and noiseless <= 8, (with_eot, noiseless)  # EOT sees it again
    # FAB-T takes its gradients through the same mechanism (Attack._eot_grads)
    fab_without = _robust(model, "fab-t", 0.05, x, y, steps=10, n_target_classes=3)
    fab_with = _robust(model, "fab-t", 0.05, x, y, steps=10, n_target_classes=3, eot_iter=100)
    assert fab_with <= fab_without - 8, (fab_with, fab_without)


def test_autoattack_asks_for_eot_on_a_stochastic_model_and_rand_uses_it():
    model = RandomlyMasked().eval()
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = model(visual=x).argmax(1)
    with pytest.raises(UsageError, match="--eot: .*stochastic"):
        create_attack("autoattack", model, eps={"visual": 0.03}, steps=2, n_queries=5, n_target_classes=2)(
            {"visual": x}, y)
    rand = create_attack("autoattack", model, eps={"visual": 0.03}, version="rand", steps=2)
    assert [s.eot_iter for s in rand.stages] == [20, 20]  # fra31's rand version: EOT over 20 draws
    rand({"visual": x}, y)
    assert "randomness" in " ".join(rand.report["flags"])
    standard = create_attack("autoattack", model, eps={"visual": 0.03}, steps=2, n_queries=5, n_target_classes=2,
                             eot_iter=3)
    assert [s.eot_iter for s in standard.stages if s.name != "square"] == [3, 3, 3]
    standard({"visual": x}, y)


def test_eot_averages_gradients_over_that_many_passes():
    class Counting(VisualNet):
        calls = 0

        def forward(self, visual):
            Counting.calls += 1
            return super().forward(visual)

    model = Counting().eval()
    x = data(4)["visual"]
    y = model(visual=x).argmax(1)
    for name, kw in (("fgsm", {}), ("pgd", dict(steps=2)), ("apgd-ce", dict(steps=2, random_start=False)),
                     ("fab-t", dict(steps=2, n_target_classes=1))):
        one, five = (create_attack(name, model, eps={"visual": 0.01}, eot_iter=n, **kw) for n in (1, 5))
        Counting.calls = 0
        adv1 = one({"visual": x}, y)
        calls1 = Counting.calls
        Counting.calls = 0
        adv5 = five({"visual": x}, y)
        grads = {"fgsm": 1, "pgd": 2, "apgd-ce": 3, "fab-t": 2}[name]  # gradient passes of one run
        assert Counting.calls - calls1 == 4 * grads, (name, calls1, Counting.calls)
        torch.testing.assert_close(adv5["visual"], adv1["visual"])  # a deterministic model: the same mean
