"""CRMT (models/crmt.py, pipeline/procedures.py): the margin regulariser on a hand-checked case, orthonormal
classifier rows after optimiser steps, soundness of the certified bound on a linear model (where the exact
distance to the decision boundary is known; random and gradient-directed perturbations inside the bound never
change the prediction), the Lipschitz estimate on linear encoders, and step two raising the bound."""
from __future__ import annotations

import math
from typing import Dict, Optional

import pytest
import torch
from torch import nn

from models.crmt import CRMTFusion, certified_accuracy, certified_radius, crmt_margin_loss, orthonormal_rows
from models.fusion import create_fusion
from pipeline.procedures import CRMTProcedure, crmt_step2_epoch, estimate_lipschitz, step2_optimizer

K, DA, DV, LA, LV = 3, 6, 5, 4, 3  # classes, feature dims, input dims of the linear encoders


def test_margin_loss_hand_checked():
    z = {"audio": torch.tensor([[1.0, 2.0, 0.0]]), "visual": torch.tensor([[0.5, 0.0, 0.0]])}
    y = torch.tensor([0])
    # log sum_m sum_{k != y} exp(z_k^(m) - z_y^(m)) = log(e^1 + e^-1 + 2 e^-0.5)
    expected = math.log(math.e + math.exp(-1) + 2 * math.exp(-0.5))
    assert crmt_margin_loss(z, y).item() == pytest.approx(expected, rel=1e-6)
    # the code's form: log sum_m (sum_k exp(z_k) exp(-z_y) - 1)
    code = math.log(sum(float(v.exp().sum() * (-v[0, 0]).exp() - 1) for v in z.values()))
    assert crmt_margin_loss(z, y).item() == pytest.approx(code, rel=1e-6)
    # the procedure scales it by rho and reads the head's unimodal logits of the forward
    head = create_fusion("crmt", K, DA, DV)
    feats = {"audio": torch.randn(4, DA), "visual": torch.randn(4, DV)}
    labels = torch.tensor([0, 1, 2, 0])
    head(feats)
    got = CRMTProcedure(2.0).loss(head, labels, {})
    assert got.item() == pytest.approx(2.0 * crmt_margin_loss(head.unimodal_logits(feats), labels).item(), rel=1e-6)


def test_margin_loss_falls_as_unimodal_margins_grow():
    y = torch.tensor([1])
    small = {"audio": torch.tensor([[0.0, 1.0, 0.0]]), "visual": torch.tensor([[0.0, 1.0, 0.0]])}
    large = {m: 3 * z for m, z in small.items()}
    assert crmt_margin_loss(large, y) < crmt_margin_loss(small, y)


def test_classifier_rows_stay_orthonormal_after_optimiser_steps():
    torch.manual_seed(0)
    head = create_fusion("crmt", K, DA, DV)
    opt = torch.optim.SGD(head.parameters(), lr=0.5, momentum=0.9)
    before = {m: head.weight(m).detach().clone() for m in head.modalities}
    for _ in range(5):
        feats = {"audio": torch.randn(8, DA), "visual": torch.randn(8, DV)}
        labels = torch.randint(K, (8,))
        loss = nn.functional.cross_entropy(head(feats), labels) + crmt_margin_loss(head.aux["unimodal"], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for m in head.modalities:
        w = head.weight(m)
        assert torch.allclose(w @ w.t(), torch.eye(K), atol=1e-5), m
        assert not torch.allclose(w, before[m], atol=1e-3), f"{m}: the step did not move the classifier"
    assert torch.allclose(head.feature_lipschitz(), torch.ones(2, K), atol=1e-5)
    # the ablation without the constraint keeps its raw rows (not orthonormal)
    plain = create_fusion("crmt", K, DA, DV, fusion_args={"orthogonal": False})
    w = plain.weight("audio")
    assert not torch.allclose(w @ w.t(), torch.eye(K), atol=1e-2)


def test_orthonormal_rows_is_the_symmetric_polar_factor():
    v = torch.randn(3, 7, dtype=torch.float64)
    u, _, vh = torch.linalg.svd(v, full_matrices=False)
    assert torch.allclose(orthonormal_rows(v), u @ vh, atol=1e-8)


def test_too_many_classes_for_orthonormal_rows_is_refused():
    with pytest.raises(ValueError, match="num_classes <= dim_visual"):
        create_fusion("crmt", 6, 8, 5)


class LinearAV(nn.Module):
    """Linear encoders ``f_m = A_m x_m`` (x_audio (B, LA), x_visual (B, LV)) and a CRMT head: every Lipschitz
    constant and the exact distance to the decision boundary are known."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.modalities = ("audio", "visual")
        self.enc = nn.ModuleDict({"audio": nn.Linear(LA, DA, bias=False), "visual": nn.Linear(LV, DV, bias=False)})
        self.head: CRMTFusion = create_fusion("crmt", K, DA, DV)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
            for m in self.modalities:  # positive integration weights of different sizes per class and modality
                self.head.a[m].copy_(torch.rand(K, generator=g) + 0.2)
        self.double()

    def features(self, audio: torch.Tensor, visual: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"audio": self.enc["audio"](audio), "visual": self.enc["visual"](visual)}

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(audio, visual))

    def tau(self) -> torch.Tensor:
        """Exact (M x K) Lipschitz constants of x_m -> z_k^(m): row norms of W~^(m) A_m."""
        return torch.stack([(self.head.weight(m) @ self.enc[m].weight).norm(dim=1) for m in self.modalities])

    def exact_distance(self, x: Dict[str, torch.Tensor], y: torch.Tensor, mods) -> torch.Tensor:
        """Distance to the decision boundary of a linear model (perturbing ``mods``): min_k g_k / ||grad g_k||."""
        logits = self(**x)
        rows = torch.arange(y.numel())
        g = logits[rows, y][:, None] - logits
        norm_sq = torch.zeros(K, K, dtype=torch.float64)  # [y, k]
        for m in mods:
            lin = self.head.a[m][:, None] * self.head.weight(m) @ self.enc[m].weight  # (K, L_m): rows of grad h_k
            norm_sq = norm_sq + ((lin[:, None, :] - lin[None, :, :]) ** 2).sum(-1)
        d = g / norm_sq[y].sqrt()
        d[rows, y] = math.inf
        return d.min(1).values


def _worst_directions(model: LinearAV, y: int, k: int, mods) -> Dict[str, torch.Tensor]:
    """The unit direction (joint over ``mods``) that lowers h_y - h_k fastest."""
    d = {m: -(model.head.a[m][y] * model.head.weight(m)[y] - model.head.a[m][k] * model.head.weight(m)[k])
         @ model.enc[m].weight for m in mods}
    n = math.sqrt(sum(float(v.square().sum()) for v in d.values()))
    return {m: v / n for m, v in d.items()}


@pytest.mark.parametrize("mods", [("audio", "visual"), ("audio",), ("visual",)])
def test_certified_bound_is_sound_on_a_linear_model(mods):
    torch.manual_seed(1)
    model = LinearAV(seed=1)
    n = 64
    x = {"audio": torch.randn(n, LA, dtype=torch.float64), "visual": torch.randn(n, LV, dtype=torch.float64)}
    with torch.no_grad():
        y = model(**x).argmax(1)  # certify the model's own prediction
        r = certified_radius(model.head, model.features(**x), y, space="input", modalities=mods,
                             lipschitz=model.tau())
        exact = model.exact_distance(x, y, mods)
    assert (r > 0).all() and (r <= exact * (1 + 1e-9)).all()  # sound; and not vacuous:
    assert (r / exact).median() > 0.3  # the triangle inequality over classes loosens it, never unboundedly here
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for i in range(n):
            xi = {m: x[m][i:i + 1] for m in x}
            # random directions (1000) and each class's worst direction, all at 0.999 r
            tries = 1000
            deltas = {m: torch.randn(tries, x[m].shape[1], generator=gen, dtype=torch.float64) if m in mods
                      else torch.zeros(tries, x[m].shape[1], dtype=torch.float64) for m in x}
            norm = torch.sqrt(sum(d.square().sum(1) for d in deltas.values()))
            deltas = {m: d / norm[:, None] for m, d in deltas.items()}
            worst = [_worst_directions(model, int(y[i]), k, mods) for k in range(K) if k != int(y[i])]
            for w in worst:
                deltas = {m: torch.cat([deltas[m], w.get(m, torch.zeros(1, x[m].shape[1], dtype=torch.float64))
                                        .reshape(1, -1)]) for m in x}
            pert = {m: xi[m] + 0.999 * float(r[i]) * deltas[m] for m in x}
            assert (model(**pert).argmax(1) == y[i]).all(), f"clip {i}: a perturbation inside the bound flips it"
            # beyond the exact distance the worst direction does flip it (the tries can fail)
            k_star = [k for k in range(K) if k != int(y[i])]
            outs = [model(**{m: xi[m] + 1.001 * float(exact[i]) * w.get(m, 0) for m in x}).argmax(1)
                    for w in worst]
            assert any(int(o) != int(y[i]) for o in outs), (i, k_star)


def test_certified_bound_is_sound_against_gradient_attacks():
    """PGD (L2, joint ball of radius 0.999 r per clip) on the margin of the linear model never flips it."""
    torch.manual_seed(3)
    model = LinearAV(seed=3)
    n = 32
    x = {"audio": torch.randn(n, LA, dtype=torch.float64), "visual": torch.randn(n, LV, dtype=torch.float64)}
    with torch.no_grad():
        y = model(**x).argmax(1)
        r = certified_radius(model.head, model.features(**x), y, space="input", lipschitz=model.tau())
    delta = {m: torch.zeros_like(v, requires_grad=True) for m, v in x.items()}
    for _ in range(50):
        logits = model(**{m: x[m] + delta[m] for m in x})
        other = logits.masked_fill(nn.functional.one_hot(y, K).bool(), -math.inf).max(1).values
        margin = logits.gather(1, y[:, None]).squeeze(1) - other
        grads = torch.autograd.grad(margin.sum(), [delta[m] for m in x])
        with torch.no_grad():
            gnorm = torch.sqrt(sum(g.square().sum(1) for g in grads))[:, None]
            for m, g in zip(x, grads):
                delta[m] -= 0.2 * r[:, None] * g / gnorm
            dnorm = torch.sqrt(sum(d.square().sum(1) for d in delta.values()))
            scale = torch.clamp(0.999 * r / dnorm, max=1.0)[:, None]
            for d in delta.values():
                d.mul_(scale)
    with torch.no_grad():
        assert (model(**{m: x[m] + delta[m] for m in x}).argmax(1) == y).all()


def test_feature_space_bound_and_certified_accuracy():
    """Feature-space certificate (exact constants 1): perturbing the features inside it keeps the label;
    misclassified clips get a bound <= 0 and count as uncertified."""
    torch.manual_seed(4)
    head = create_fusion("crmt", K, DA, DV).double()
    feats = {"audio": torch.randn(50, DA, dtype=torch.float64), "visual": torch.randn(50, DV, dtype=torch.float64)}
    with torch.no_grad():
        pred = head(feats).argmax(1)
        labels = pred.clone()
        labels[:10] = (pred[:10] + 1) % K  # ten clips whose label is not the prediction
        r = certified_radius(head, feats, labels)
        assert (r[:10] <= 0).all() and (r[10:] > 0).all()
        acc = certified_accuracy(r, [0.0, float(r.max())])
        assert acc[0.0] == pytest.approx(40 / 50) and acc[float(r.max())] == 0.0
        d = {m: torch.randn_like(f) for m, f in feats.items()}
        norm = torch.sqrt(sum(v.square().sum(1) for v in d.values()))[:, None]
        pert = {m: feats[m][10:] + 0.999 * r[10:, None] * d[m][10:] / norm[10:] for m in feats}
        assert (head(pert).argmax(1) == labels[10:]).all()


def test_input_bound_needs_recorded_lipschitz_constants():
    head = create_fusion("crmt", K, DA, DV)
    feats = {"audio": torch.randn(2, DA), "visual": torch.randn(2, DV)}
    with pytest.raises(ValueError, match="Lipschitz"):
        certified_radius(head, feats, torch.tensor([0, 1]), space="input")


def _loader(model: LinearAV, n: int = 48, batch: int = 16, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    x = {"audio": torch.randn(n, LA, generator=g, dtype=torch.float64),
         "visual": torch.randn(n, LV, generator=g, dtype=torch.float64)}
    with torch.no_grad():
        y = model(**x).argmax(1)
    return [{"audio": x["audio"][i:i + batch], "visual": x["visual"][i:i + batch], "label": y[i:i + batch]}
            for i in range(0, n, batch)]


def test_lipschitz_estimate_on_linear_encoders_is_exact():
    model = LinearAV(seed=6)
    tau = estimate_lipschitz(model, _loader(model), torch.device("cpu"), progress=False)
    assert torch.allclose(tau.double(), model.tau().detach(), rtol=1e-5)


def test_step_two_trains_only_a_and_raises_the_bound():
    model = LinearAV(seed=7)
    model.head.lipschitz.copy_(model.tau().detach())
    loader = _loader(model)
    frozen = {k: v.detach().clone() for k, v in model.state_dict().items() if ".a." not in k}
    opt = step2_optimizer(model, lr=0.05)
    first = crmt_step2_epoch(model, loader, opt, torch.device("cpu"), 1, progress=False)
    for e in range(2, 6):
        last = crmt_step2_epoch(model, loader, opt, torch.device("cpu"), e, progress=False)
    assert last["bound"] > first["bound"]
    for k, v in model.state_dict().items():
        if k in frozen:
            assert torch.equal(v, frozen[k]), f"step two changed {k}"
