"""Square: draws on the generator's device, AutoAttack's p schedule, the audio proposals."""
from __future__ import annotations

from typing import List

import pytest
import torch
import torch.nn as nn

from attacks import create_attack
from attacks import square as square_mod


class Linear(nn.Module):
    """Linear logits on whichever modalities are passed; ``gap`` adds a bias for class 0."""

    def __init__(self, k: int = 5, gap: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.wv = nn.Parameter(torch.randn(k, 3 * 8 * 8, generator=g) * 0.1)
        self.wa = nn.Parameter(torch.randn(k, 256, generator=g) * 0.1)
        self.bias = nn.Parameter(torch.zeros(k))
        self.bias.data[0] = gap

    def forward(self, audio=None, visual=None) -> torch.Tensor:
        z = self.bias.expand(next(x for x in (audio, visual) if x is not None).shape[0], -1)
        if visual is not None:
            z = z + visual.reshape(visual.shape[0], -1)[:, -3 * 8 * 8:] @ self.wv.t()
        if audio is not None:
            z = z + audio.flatten(1) @ self.wa.t()
        return z


def _inputs(n: int = 4, frames: bool = False):
    g = torch.Generator().manual_seed(1)
    shape = (n, 3, 2, 8, 8) if frames else (n, 3, 8, 8)
    return {"visual": torch.rand(shape, generator=g), "audio": torch.rand(n, 1, 256, generator=g) * 2 - 1}


def test_every_draw_names_the_generators_device(monkeypatch):
    """A CUDA generator only draws on CUDA: torch.randint(..., generator=g) without device= draws on the CPU
    and raises on a GPU. Every draw must pass device=generator.device."""
    real = torch.randint

    def checked(*args, generator=None, device=None, **kw):
        if generator is not None:
            assert device is not None and torch.device(device) == generator.device, \
                f"torch.randint with a {generator.device} generator but device={device}"
        return real(*args, generator=generator, device=device, **kw)

    monkeypatch.setattr(torch, "randint", checked)
    model = Linear().eval()
    for frames in (False, True):
        x = _inputs(frames=frames)
        y = torch.zeros(4, dtype=torch.long)
        for norm in ("Linf", "L2"):  # L2 flips its pattern by a coin
            create_attack("square", model, eps={"visual": 0.1, "audio": 0.1}, norm=norm, n_queries=30)(x, y)
    aa = create_attack("autoattack", model, eps={"visual": 0.1}, steps=3, n_queries=20, n_target_classes=2)
    aa({"visual": _inputs()["visual"]}, torch.zeros(4, dtype=torch.long))


# fra31/auto-attack's p_selection, worked out by hand from its published breakpoints (10, 50, 200, 500, 1000,
# 2000, 4000, 6000, 8000 iterations): (proposal index i_iter, p / p_init) for n_queries = 5000.
AUTOATTACK_P = [(0, 1), (10, 1), (11, 1 / 2), (50, 1 / 2), (51, 1 / 4), (200, 1 / 4), (201, 1 / 8), (500, 1 / 8),
                (501, 1 / 16), (1000, 1 / 16), (1001, 1 / 32), (2000, 1 / 32), (2001, 1 / 64), (4000, 1 / 64),
                (4001, 1 / 128), (4500, 1 / 128), (4998, 1 / 128)]
# resc_schedule=True (fra31's SquareAttack default): i_iter -> int(i_iter / 5000 * 10000) = 2 i_iter.
RESCALED_P = [(0, 1), (5, 1), (6, 1 / 2), (25, 1 / 2), (26, 1 / 4), (2000, 1 / 64), (2001, 1 / 128),
              (3000, 1 / 128), (3001, 1 / 256), (4000, 1 / 256), (4001, 1 / 512), (4500, 1 / 512)]


def _p_used(monkeypatch, **options) -> List[float]:
    """The p of every proposal of one 5000-query Square run on a model it cannot fool."""
    seen: List[float] = []
    size = square_mod._Windows.size

    def spy(self, p):
        seen.append(p)
        return size(self, p)

    monkeypatch.setattr(square_mod._Windows, "size", spy)
    model = Linear(gap=1e3).eval()  # class 0 by a margin no eps-ball move changes: every query is made
    x = {"audio": _inputs(1)["audio"]}
    attack = create_attack("square", model, eps={"audio": 0.01}, n_queries=5000, **options)
    attack(x, torch.zeros(1, dtype=torch.long))
    assert int(attack.last_queries[0]) == 5000
    return seen


@pytest.mark.parametrize("rescale, table", [(None, AUTOATTACK_P), (True, RESCALED_P)], ids=["default", "rescaled"])
def test_p_follows_autoattacks_schedule_at_5000_queries(monkeypatch, rescale, table):
    options = {} if rescale is None else {"rescale_schedule": rescale}
    seen = _p_used(monkeypatch, **options)
    assert len(seen) == 4999
    for i, frac in table:
        assert seen[i] == pytest.approx(0.8 * frac), f"proposal {i}: p {seen[i]} != {0.8 * frac}"


def test_autoattack_builds_square_without_rescaling():
    aa = create_attack("autoattack", Linear(), eps={"visual": 0.1}, n_queries=5000)
    square = next(s for s in aa.stages if s.name == "square")
    assert square.rescale_schedule is False and square.n_queries == 5000 and square.p_init == 0.8


# --- AutoAttack's versions against fra31/auto-attack's set_version (Linf/L2) -----------------------------

# (attack, restarts, target classes, queries, EOT iterations), in the order fra31 runs them.
FRA31_VERSIONS = {
    "standard": [("apgd-ce", 1, None, None, 1), ("apgd-t", 1, 9, None, 1), ("fab-t", 1, 9, None, None),
                 ("square", 1, None, 5000, None)],
    "plus": [("apgd-ce", 5, None, None, 1), ("apgd-dlr", 5, None, None, 1), ("fab", 5, None, None, None),
             ("square", 1, None, 5000, None), ("apgd-t", 1, 9, None, 1), ("fab-t", 1, 9, None, None)],
    "rand": [("apgd-ce", 1, None, None, 20), ("apgd-dlr", 1, None, None, 20)],
}


@pytest.mark.parametrize("version", sorted(FRA31_VERSIONS))
def test_autoattack_versions_are_fra31s(version, caplog):
    from attacks import ATTACKS
    with caplog.at_level("WARNING"):
        aa = create_attack("autoattack", Linear(), eps={"visual": 0.1}, version=version)
    expected = FRA31_VERSIONS[version]
    run = [e for e in expected if e[0] in ATTACKS]
    assert [s.name for s in aa.stages] == [e[0] for e in run]
    assert aa.missing == [e[0] for e in expected if e[0] not in ATTACKS]
    for stage, (name, restarts, targets, queries, eot) in zip(aa.stages, run):
        assert stage.restarts == restarts, name
        assert getattr(stage, "steps", 100) == 100 or name == "square"
        if targets is not None:
            assert stage.n_target_classes == targets, name
        if queries is not None:
            assert stage.n_queries == queries and stage.rescale_schedule is False, name
        if eot is not None:
            assert stage.eot_iter == eot, name
    if aa.missing:
        assert any(m in r.getMessage() for r in caplog.records for m in aa.missing)


def test_missing_parts_reach_the_report_and_the_result_row(monkeypatch):
    from attacks import autoattack
    from attacks.evaluate import evaluate_attack_grid
    # every part of fra31's versions is implemented now (fab, fab-t): a version naming an unregistered attack
    # still runs without it and says so
    monkeypatch.setitem(autoattack.VERSIONS, "standard", autoattack.VERSIONS["standard"] + (("not-here", {}),))
    model = Linear().eval()
    x = _inputs(6)["visual"]
    y = model(visual=x).argmax(1)
    opts = dict(steps=2, n_queries=10, n_target_classes=2)
    aa = create_attack("autoattack", model, eps={"visual": 0.05}, **opts)
    aa({"visual": x}, y)
    assert aa.report["missing"] == aa.missing == ["not-here"]
    rows = evaluate_attack_grid(model, [{"visual": x, "label": y}], ["autoattack"], [{"visual": 0.05}], "cpu",
                                attack_options={"autoattack": opts}, progress=False)
    assert rows[0]["missing"] == "not-here"


def test_rand_version_runs_and_eot_averages_the_gradient():
    class Noisy(Linear):
        def forward(self, audio=None, visual=None):
            z = super().forward(audio=audio, visual=visual)
            return z * (1 + 0.5 * torch.rand(z.shape[0], 1))  # a randomised model: logits scaled at random

    model = Noisy().eval()
    x = {"visual": _inputs(4)["visual"]}
    y = torch.tensor([0, 1, 2, 3])
    eot = create_attack("apgd-ce", model, eps={"visual": 0.1}, eot_iter=3)
    one = create_attack("apgd-ce", model, eps={"visual": 0.1})
    torch.manual_seed(0)
    _, _, g3 = eot._loss_grad(x, {}, y, None)
    torch.manual_seed(0)
    singles = [one._loss_grad(x, {}, y, None)[2]["visual"] for _ in range(3)]
    torch.testing.assert_close(g3["visual"], sum(singles) / 3)
    assert not torch.allclose(singles[0], singles[1])  # the draws differ, so the mean is not one draw
    aa = create_attack("autoattack", model, eps={"visual": 0.1}, version="rand", steps=2)
    aa(x, y)
    assert list(aa.report["per_attack"]) == ["clean", "apgd-ce", "apgd-dlr"] and aa.report["missing"] == []


# --- what each audio proposal writes into a waveform segment ---------------------------------------------

def _one_proposal(proposal: str, modality: str = "audio") -> torch.Tensor:
    """The perturbation of one Linf proposal covering the whole input (p = 1), from the clean input."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand((6, 1, 2048) if modality == "audio" else (6, 3, 8, 8), generator=g) * 0.5 + 0.25
    attack = create_attack("square", Linear(), eps={modality: 0.05}, audio_proposal=proposal)
    threat = attack.threat(modality, x)
    win = square_mod._Windows(x, modality)
    size = x.shape[-1] if modality == "audio" else 8
    return attack._propose(threat, x, x, threat.box(x), win, size, torch.Generator().manual_seed(0)) - x


def _low_share(delta: torch.Tensor, rate: float = 11025, below: float = 125.0) -> float:
    """Share of the perturbation's energy below ``below`` Hz (DC included)."""
    power = torch.fft.rfft(delta.double(), dim=-1).abs() ** 2
    freqs = torch.fft.rfftfreq(delta.shape[-1], d=1 / rate)
    return float(power[..., freqs < below].sum() / power.sum())


def test_audio_proposals_write_what_they_say():
    eps = 0.05
    const, rand, band, band_sign = (_one_proposal(p) for p in ("constant", "random_sign", "band", "band_sign"))
    torch.testing.assert_close(const.abs(), torch.full_like(const, eps))
    assert bool((const.sign() == const[..., :1].sign()).all())  # one sign per clip: a DC step
    assert _low_share(const) > 0.99
    torch.testing.assert_close(rand.abs(), torch.full_like(rand, eps))
    assert bool((rand.sign() != rand[..., :1].sign()).any(dim=-1).all())  # signs change inside the segment
    torch.testing.assert_close(band.abs().amax(-1), torch.full((6, 1), eps, dtype=band.dtype))
    assert _low_share(band) < 1e-6  # nothing below the mel range's 125 Hz
    torch.testing.assert_close(band_sign.abs(), torch.full_like(band_sign, eps))
    assert _low_share(band_sign) < 0.05
    visual = _one_proposal("random_sign", "visual")  # frames keep Square's constant +-eps per channel
    assert bool((visual.sign() == visual[..., :1, :1].sign()).all()) and torch.allclose(visual.abs(), torch.full_like(visual, eps), atol=1e-6)


def test_unknown_audio_proposal_and_empty_band_are_refused():
    with pytest.raises(KeyError, match="random_sign"):
        create_attack("square", Linear(), eps={"audio": 0.1}, audio_proposal="dc")
    attack = create_attack("square", Linear(), eps={"audio": 0.1}, audio_proposal="band", audio_band=(6000.0, 7000.0))
    with pytest.raises(ValueError, match="audio_band"):
        attack({"audio": _inputs()["audio"]}, torch.zeros(4, dtype=torch.long))
