"""The temporal attacks (sparse_time, time_shared, tia) on multi-frame clips: the attack contract with
T > 1 (tests/test_attack_contract.py covers T = 1), the support of the sparse attack, the shared delta,
and each attack against its simplest baseline on a toy model built to be vulnerable to it."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from attacks import create_attack
from attacks.base import VALID_RANGE
from attacks.segments import frames_of, sample_segment, segment_mask, segment_norms, tile_segment
from tests.conftest import ToyAV

TEMPORAL = ("sparse_time", "time_shared", "tia")
EPS = {"audio": 0.05, "visual": 0.03}
T, L = 4, 48


def clips(b: int = 5, t: int = T, length: int = L, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(b, 1, length, generator=gen, dtype=torch.float64) * 2 - 1
    v = torch.rand(b, 3, t, 6, 6, generator=gen, dtype=torch.float64)
    v[0].zero_()  # saturated: the range must hold
    return {"audio": a, "visual": v}, torch.arange(b) % 4


@pytest.mark.parametrize("name", TEMPORAL)
@pytest.mark.parametrize("attacked", [("audio", "visual"), ("audio",), ("visual",)])
def test_contract_on_multi_frame_clips(name, attacked):
    model = ToyAV(num_classes=4, dtype=torch.float64)
    model.train()
    flags = [mod.training for mod in model.modules()]
    inputs, labels = clips()
    eps = {m: EPS[m] for m in attacked}
    adv = create_attack(name, model, eps=eps, steps=3)(inputs, labels)
    assert [mod.training for mod in model.modules()] == flags
    for m in ("audio", "visual"):
        if m not in attacked:
            assert adv[m] is inputs[m]
            continue
        delta = (adv[m] - inputs[m]).flatten(1).abs().amax(dim=1)
        assert bool((delta <= eps[m] + 1e-12).all())
        assert bool((delta > 0).any())
        lo, hi = VALID_RANGE[m]
        assert adv[m].min() >= lo and adv[m].max() <= hi
    alone = create_attack(name, model, eps=eps, steps=3)({m: x[2:3] for m, x in inputs.items()}, labels[2:3])
    for m in attacked:
        torch.testing.assert_close(alone[m][0], adv[m][2], atol=1e-9, rtol=0)


def test_segments_cover_the_waveform_in_order():
    ids = sample_segment(10, 3)
    assert ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]  # boundaries floor(t L / T) = 3, 6
    x = torch.arange(10.0).view(1, 1, 10)
    assert tile_segment(x, "audio", 1, 3).flatten().tolist() == [3, 4, 5, 3, 4, 5, 3, 4, 5, 3]
    g = torch.ones(1, 1, 10)
    assert segment_norms(g, "audio", 3, 1).tolist() == [[3.0, 3.0, 4.0]]
    support = torch.tensor([[False, True, False]])
    assert segment_mask(support, "audio", x).flatten().tolist() == [False] * 3 + [True] * 3 + [False] * 4


@pytest.mark.parametrize("k", [1, 2])
def test_sparse_support_is_exactly_k_frames_and_zero_elsewhere(k):
    model = ToyAV(num_classes=4, dtype=torch.float64)
    inputs, labels = clips()
    attack = create_attack("sparse_time", model, eps=EPS, frames=k, steps=3)
    adv = attack(inputs, labels)
    for m in ("audio", "visual"):
        support = attack.last_support[m]
        assert support.shape == (5, T) and support.sum(1).tolist() == [k] * 5
        mask = segment_mask(support, m, inputs[m]).expand_as(inputs[m])
        delta = adv[m] - inputs[m]
        assert bool((delta[~mask] == 0).all())  # exactly zero outside the chosen segments
        changed = delta.abs() > 0
        # every chosen segment of a sample that moved carries perturbation (sample 0 visual is saturated)
        per_seg = segment_norms(changed.double(), m, T, 1)
        assert bool(((per_seg > 0) <= support).all())
    assert all(len(f) == k for f in frames_of(attack.last_support["visual"]))


def test_time_shared_delta_is_the_same_on_every_frame_and_segment():
    model = ToyAV(num_classes=4, dtype=torch.float64)
    inputs, labels = clips()
    adv = create_attack("time_shared", model, eps=EPS, steps=4)(inputs, labels)
    dv = adv["visual"] - inputs["visual"]
    da = (adv["audio"] - inputs["audio"]).view(5, 1, T, L // T)
    for t in range(1, T):
        # equal up to the rounding of (x + d) - x; a saturated pixel holds the shared d only within range
        keep = (inputs["visual"][:, :, t] > 0.05) & (inputs["visual"][:, :, t] < 0.95) & \
               (inputs["visual"][:, :, 0] > 0.05) & (inputs["visual"][:, :, 0] < 0.95)
        torch.testing.assert_close(dv[:, :, t][keep], dv[:, :, 0][keep], atol=1e-12, rtol=0)
        torch.testing.assert_close(da[:, :, t], da[:, :, 0], atol=1e-12, rtol=0)
    assert dv.abs().amax() > 0 and da.abs().amax() > 0
    with pytest.raises(ValueError, match="Linf"):
        create_attack("time_shared", model, eps=EPS, norm="L2")


class FirstSegment(nn.Module):
    """Reads only frame 0 and audio segment 0 (linear): vulnerable to a one-segment attack."""

    modalities = ("audio", "visual")

    def __init__(self, t: int = 8, length: int = 64, classes: int = 4) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.seg = length // t
        self.wv = nn.Parameter(torch.randn(3 * 16, classes, generator=gen, dtype=torch.float64))
        self.wa = nn.Parameter(torch.randn(self.seg, classes, generator=gen, dtype=torch.float64))

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return (visual[:, :, 0].flatten(1) - 0.5) @ self.wv + audio[:, 0, :self.seg] @ self.wa


def accuracy(model, name, inputs, labels, **kw) -> float:
    adv = create_attack(name, model, **kw)(inputs, labels)
    with torch.no_grad():
        return float((model(**adv).argmax(1) == labels).double().mean())


def test_one_segment_attack_is_as_strong_as_pgd_on_a_first_frame_model_and_saliency_beats_random():
    model = FirstSegment()
    gen = torch.Generator().manual_seed(0)
    inputs = {"audio": torch.rand(64, 1, 64, generator=gen, dtype=torch.float64) * 0.5 - 0.25,
              # pixels away from 0 and 1: the valid range never binds (where it does, a shared delta is
              # held to the tightest frame's room and is weaker than PGD by design)
              "visual": torch.rand(64, 3, 8, 4, 4, generator=gen, dtype=torch.float64) * 0.6 + 0.2}
    with torch.no_grad():
        labels = model(**inputs).argmax(1)  # clean accuracy 100 %
    eps = {"audio": 0.02, "visual": 0.04}
    pgd = accuracy(model, "pgd", inputs, labels, eps=eps, steps=10)
    sparse = accuracy(model, "sparse_time", inputs, labels, eps=eps, frames=1, steps=10)
    rand = accuracy(model, "sparse_time", inputs, labels, eps=eps, frames=1, steps=10, select="random", seed=3)
    shared = accuracy(model, "time_shared", inputs, labels, eps=eps, steps=10)
    assert pgd < 0.5, pgd  # the budget matters on this model
    assert sparse <= pgd and shared <= pgd, (sparse, shared, pgd)
    assert rand >= sparse + 0.3, (rand, sparse)  # a random frame is frame 0 only 1 time in 8


class TemporalGate(nn.Module):
    """Predicts class 0 while consecutive frames look alike (cosine of per-frame features), class 1 else:
    a model that relies on temporal invariance."""

    modalities = ("visual",)

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(2)
        self.w = nn.Parameter(torch.randn(3 * 16, 8, generator=gen, dtype=torch.float64))

    def forward(self, visual: torch.Tensor, audio=None) -> torch.Tensor:
        f = torch.einsum("bctn,nk->btk", visual.flatten(3) - 0.5, self.w.view(3, 16, 8).sum(0) / 3)
        cos = nn.functional.cosine_similarity(f[:, 1:], f[:, :-1], dim=2).mean(1)
        return torch.stack([8 * (cos - 0.9), torch.zeros_like(cos)], dim=1)


def test_tia_is_pgd_without_its_term_and_breaks_temporal_similarity():
    model = ToyAV(num_classes=4, dtype=torch.float64)
    inputs, labels = clips()
    pgd = create_attack("pgd", model, eps=EPS, steps=3)(inputs, labels)
    plain = create_attack("tia", model, eps=EPS, steps=3, weight=0.0)(inputs, labels)
    one = {"audio": inputs["audio"], "visual": inputs["visual"][:, :, 0]}
    for m in EPS:
        torch.testing.assert_close(plain[m], pgd[m], atol=0, rtol=0)
    torch.testing.assert_close(create_attack("tia", model, eps=EPS, steps=3)(one, labels)["visual"],
                               create_attack("pgd", model, eps=EPS, steps=3)(one, labels)["visual"], atol=0, rtol=0)
    model.eval()  # the attack runs the model in eval mode; measure it so (no dropout)
    tia = create_attack("tia", model, eps=EPS, steps=5, weight=5.0)
    adv = tia(inputs, labels)
    pgd5 = create_attack("pgd", model, eps=EPS, steps=5)(inputs, labels)
    with torch.no_grad():
        for m in EPS:
            assert tia.temporal_similarity(adv, m, T).mean() < tia.temporal_similarity(pgd5, m, T).mean()


def test_tia_at_least_as_strong_as_pgd_on_a_model_relying_on_temporal_invariance():
    model = TemporalGate()
    gen = torch.Generator().manual_seed(5)
    base = torch.rand(48, 3, 1, 4, 4, generator=gen, dtype=torch.float64)
    visual = (base + 0.02 * torch.randn(48, 3, 6, 4, 4, generator=gen, dtype=torch.float64)).clamp(0, 1)
    labels = torch.zeros(48, dtype=torch.long)
    with torch.no_grad():
        assert float((model(visual=visual).argmax(1) == 0).double().mean()) > 0.9
    eps = {"visual": 0.03}
    pgd = accuracy(model, "pgd", {"visual": visual}, labels, eps=eps, steps=5)
    tia = accuracy(model, "tia", {"visual": visual}, labels, eps=eps, steps=5)
    assert tia <= pgd, (tia, pgd)
