"""The contract every registered attack keeps, so a new attack is tested without writing a test: budgets
per sample and per modality, valid ranges, the untouched modality returned bit-identical, batch
independence (unless the class declares ``batch_dependent`` with its reason), the model's train/eval flags
restored, any ``model(audio=..., visual=...)`` attackable, and ``min_classes`` honoured."""
from __future__ import annotations

from typing import Any, Dict

import pytest
import torch
import torch.nn as nn

from attacks import ATTACKS, create_attack
from attacks.base import VALID_RANGE
from tests.conftest import ToyAV

NAMES = ATTACKS.names()
EPS = {"audio": 0.05, "visual": 0.03}


def small(name: str) -> Dict[str, Any]:
    """The attack's cheapest settings, from its constructor's arguments (any new attack gets them too)."""
    cls = ATTACKS.get(name)
    scaled = {"steps": 2, "n_queries": 4, "n_target_classes": 1, "random_start": False}
    return {k: v for k, v in scaled.items() if cls.takes(k)}


class Bare(nn.Module):
    """Any module called as ``model(audio=, visual=)``: no ``modalities``, no ``encode``, no BatchNorm;
    ``features`` only for the attacks on representations (mma)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.wa = nn.Parameter(torch.randn(16, num_classes, generator=gen, dtype=torch.float64))
        self.wv = nn.Parameter(torch.randn(3 * 36, num_classes, generator=gen, dtype=torch.float64))

    def features(self, audio: torch.Tensor, visual: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Per-modality features of equal size (what an attack on representations, e.g. mma, reads)."""
        return {"audio": audio.flatten(1) @ self.wa, "visual": (visual.flatten(1) - 0.5) @ self.wv}

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return 20 * (audio.flatten(1) @ self.wa + (visual.flatten(1) - 0.5) @ self.wv)


def batch(b: int = 5, classes: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(b, 1, 16, generator=gen, dtype=torch.float64) * 2 - 1
    v = torch.rand(b, 3, 6, 6, generator=gen, dtype=torch.float64)
    v[0].zero_()  # a saturated sample: the range must hold where the ball leaves it
    return {"audio": a, "visual": v}, torch.arange(b) % classes


def classes(name: str) -> int:
    return max(ATTACKS.get(name).min_classes, 4)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("attacked", [("audio", "visual"), ("audio",), ("visual",)])
def test_budget_range_and_untouched_modality(name, attacked):
    k = classes(name)
    inputs, labels = batch(classes=k)
    eps = {m: EPS[m] for m in attacked}
    adv = create_attack(name, Bare(k), eps=eps, **small(name))(inputs, labels)
    assert set(adv) == set(inputs)
    for m in ("audio", "visual"):
        if m not in attacked:
            assert adv[m] is inputs[m]  # the very tensor passed in
            continue
        delta = (adv[m] - inputs[m]).flatten(1).abs().amax(dim=1)
        assert bool((delta <= eps[m] + 1e-12).all()), (m, delta.max())  # per sample, per modality
        lo, hi = VALID_RANGE[m]
        assert adv[m].min() >= lo and adv[m].max() <= hi


@pytest.mark.parametrize("name", NAMES)
def test_model_mode_restored_and_batch_independence(name):
    k = classes(name)
    model = ToyAV(num_classes=k, dtype=torch.float64)
    model.train()
    model.visual_net[1].eval()  # a mixed state: every flag must come back as it was
    flags = [mod.training for mod in model.modules()]
    inputs, labels = batch(classes=k)
    attack = create_attack(name, model, eps=EPS, **small(name))
    adv = attack(inputs, labels)
    assert [mod.training for mod in model.modules()] == flags
    reason = ATTACKS.get(name).batch_dependent
    if reason:
        pytest.skip(f"{name} declares batch_dependent: {reason}")
    fresh = create_attack(name, model, eps=EPS, **small(name))
    alone = fresh({m: x[2:3] for m, x in inputs.items()}, labels[2:3])
    for m in ("audio", "visual"):
        torch.testing.assert_close(alone[m][0], adv[m][2], atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_min_classes_is_enough(name):
    k = max(ATTACKS.get(name).min_classes, 2)
    inputs, labels = batch(classes=k)
    adv = create_attack(name, Bare(k), eps={"visual": EPS["visual"]}, **small(name))(inputs, labels)
    assert adv["visual"].shape == inputs["visual"].shape


@pytest.mark.parametrize("name", NAMES)
def test_flag_args_and_options_come_from_the_constructor(name):
    cls = ATTACKS.get(name)
    assert set(cls.flag_args) <= set(cls.options())
    assert all(isinstance(f, str) and f for f in cls.flag_args.values())
