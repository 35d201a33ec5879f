"""The modality misalignment attack (attacks/mma.py): PGD when lam=0, lower audio-visual cosine than PGD at
the same budget, and the model contract it needs (features of equal size) refused with the reason."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attacks import create_attack
from tests.conftest import ToyAV

EPS = {"audio": 0.05, "visual": 0.05}


def batch(b: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(b, 1, 48, generator=gen, dtype=torch.float64) * 2 - 1
    v = torch.rand(b, 3, 8, 8, generator=gen, dtype=torch.float64)
    return {"audio": a, "visual": v}, torch.arange(b) % 4


def cosine(model: nn.Module, inputs) -> torch.Tensor:
    with torch.no_grad():
        f = model.features(**inputs)
    return F.cosine_similarity(f["audio"], f["visual"], dim=1)


def test_lam_zero_is_pgd_bit_for_bit():
    model = ToyAV(dtype=torch.float64).eval()
    inputs, labels = batch()
    pgd = create_attack("pgd", model, eps=EPS, steps=5)(inputs, labels)
    mma = create_attack("mma", model, eps=EPS, steps=5, lam=0.0)(inputs, labels)
    for m in EPS:
        assert torch.equal(pgd[m], mma[m])


def test_misalignment_lowers_the_cosine_more_than_pgd():
    model = ToyAV(dtype=torch.float64, seed=1).eval()
    inputs, labels = batch(seed=1)
    clean = cosine(model, inputs)
    pgd = cosine(model, create_attack("pgd", model, eps=EPS, steps=10)(inputs, labels))
    mma = cosine(model, create_attack("mma", model, eps=EPS, steps=10, lam=50.0)(inputs, labels))
    assert float(mma.mean()) < float(pgd.mean()) - 0.05, (clean, pgd, mma)
    assert float(mma.mean()) < float(clean.mean())


def test_objective_is_ce_minus_lam_cosine():
    """The step follows the gradient of CE - lam * cos: one step from the clean input equals a hand-made one."""
    model = ToyAV(dtype=torch.float64, seed=2).eval()
    inputs, labels = batch(seed=2)
    lam, alpha = 3.0, 0.01
    a = inputs["audio"].clone().requires_grad_(True)
    v = inputs["visual"].clone().requires_grad_(True)
    f = model.features(audio=a, visual=v)
    loss = F.cross_entropy(model(audio=a, visual=v), labels, reduction="sum") - lam * F.cosine_similarity(
        f["audio"], f["visual"], dim=1).sum()
    ga, gv = torch.autograd.grad(loss, [a, v])
    want_a = (inputs["audio"] + alpha * ga.sign()).clamp(-1, 1)
    want_v = (inputs["visual"] + alpha * gv.sign()).clamp(0, 1)
    adv = create_attack("mma", model, eps=EPS, steps=1, lam=lam, alpha=alpha)(inputs, labels)
    torch.testing.assert_close(adv["audio"], want_a, atol=1e-12, rtol=0)
    torch.testing.assert_close(adv["visual"], want_v, atol=1e-12, rtol=0)


class NoFeatures(nn.Module):
    def forward(self, audio, visual):
        return torch.stack([audio.mean(dim=(1, 2)), visual.mean(dim=(1, 2, 3))], dim=1)


class Unequal(NoFeatures):
    def features(self, audio, visual):
        return {"audio": audio.flatten(1)[:, :3], "visual": visual.flatten(1)[:, :5]}


def test_contract_refusals_name_the_reason():
    with pytest.raises(TypeError, match="model.features"):
        create_attack("mma", NoFeatures(), eps=EPS)
    create_attack("mma", NoFeatures(), eps=EPS, lam=0.0)  # lam=0 is PGD: any model
    inputs, labels = batch()
    with pytest.raises(ValueError, match="equal size"):
        create_attack("mma", Unequal(), eps=EPS, steps=1)(inputs, labels % 2)
