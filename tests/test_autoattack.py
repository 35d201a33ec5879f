"""Tests of the threat models per norm, APGD, Square and AutoAttack: peers (torchattacks), budgets, flags."""
from __future__ import annotations

import math
from typing import Dict, Optional

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attacks import create_attack, parse_norm
from attacks.evaluate import evaluate_attack_grid
from attacks.metrics import snr_db
from attacks.sanity import grid_flags
from utils.errors import UsageError

torchattacks = pytest.importorskip("torchattacks")


def _centre(net: nn.Sequential, x: torch.Tensor) -> None:
    """Standardise the logits on calibration data so that predictions vary across samples."""
    with torch.no_grad():
        z = net(x)
        net[-1].weight /= z.std(0).clamp_min(1e-6)[:, None]
        net[-1].bias /= z.std(0).clamp_min(1e-6)
        net[-1].bias -= net(x).mean(0)


class VisualNet(nn.Module):
    """A user's own model: no ``.modalities``, forward takes only ``visual``."""

    def __init__(self, k: int = 10, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                                 nn.Linear(8 * 4 * 4, k))
        _centre(self.net, data(64, seed=99)["visual"])

    def forward(self, visual: torch.Tensor) -> torch.Tensor:
        return self.net(visual) * 3


class AudioNet(nn.Module):
    """Waveform classifier in [-1, 1]; ``as_image`` is the same model on [0, 1] images of shape (B,1,1,L)."""

    def __init__(self, k: int = 10, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Conv1d(1, 8, 5, stride=2), nn.ReLU(), nn.AdaptiveAvgPool1d(4), nn.Flatten(),
                                 nn.Linear(32, k))
        _centre(self.net, data(64, seed=99)["audio"])

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.net(audio) * 3


class AsImage(nn.Module):
    def __init__(self, audio_model: nn.Module) -> None:
        super().__init__()
        self.m = audio_model

    def forward(self, img: torch.Tensor) -> torch.Tensor:  # [0, 1] (B,1,1,L) -> [-1, 1] (B,1,L)
        return self.m(img[:, :, 0] * 2 - 1)


class Positional(nn.Module):
    """``model(visual=x)`` as ``model(x)`` for torchattacks."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(visual=x)


class TwoModal(nn.Module):
    def __init__(self, k: int = 6) -> None:
        super().__init__()
        self.v, self.a = VisualNet(k, 1), AudioNet(k, 2)

    def forward(self, audio: Optional[torch.Tensor] = None, visual: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.v(visual) + self.a(audio)


def data(n: int = 32, seed: int = 0) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    visual = torch.rand(n, 3, 8, 8, generator=g) * 0.4 + torch.rand(n, 3, 1, 1, generator=g) * 0.6
    audio = (torch.rand(n, 1, 64, generator=g) - 0.5) * torch.rand(n, 1, 1, generator=g) * 1.6
    return {"visual": visual, "audio": audio}


def acc(model: nn.Module, x: Dict[str, torch.Tensor], y: torch.Tensor) -> int:
    with torch.no_grad():
        return int((model(**x).argmax(1) == y).sum())


# --- peers: torchattacks' APGD, APGDT and Square (ports of fra31's code) ---------------------------------

PEERS = [("apgd-ce", lambda m, norm, eps: torchattacks.APGD(m, norm=norm, eps=eps, steps=20, seed=0, loss="ce"),
          dict(steps=20)),
         ("apgd-t", lambda m, norm, eps: torchattacks.APGDT(m, norm=norm, eps=eps, steps=10, seed=0, n_classes=10),
          dict(steps=10)),
         ("square", lambda m, norm, eps: torchattacks.Square(m, norm=norm, eps=eps, n_queries=150, seed=0),
          dict(n_queries=150, rescale_schedule=True))]  # torchattacks' (and fra31's SquareAttack's) default


@pytest.mark.parametrize("norm, eps", [("Linf", 4 / 255), ("L2", 0.3)])
@pytest.mark.parametrize("name, peer, opts", PEERS, ids=[p[0] for p in PEERS])
def test_visual_attacks_reach_at_most_the_peers_robust_accuracy(name, peer, opts, norm, eps):
    model = VisualNet().eval()
    x = data()["visual"]
    y = model(visual=x).argmax(1)  # every sample clean-correct
    theirs = acc(model, {"visual": peer(Positional(model), norm, eps)(x, y)}, y)
    adv = create_attack(name, model, eps={"visual": eps}, norm=norm, **opts)({"visual": x}, y)
    ours = acc(model, adv, y)
    assert ours <= theirs + 2, f"{name} {norm}: ours {ours}/32 robust vs torchattacks {theirs}/32"
    assert ours < 32  # the attack did something


@pytest.mark.parametrize("norm, eps", [("Linf", 4 / 255), ("L2", 0.3)])
@pytest.mark.parametrize("name, peer, opts", PEERS[:2], ids=[p[0] for p in PEERS[:2]])
def test_audio_attacks_match_peers_through_the_affine_map(name, peer, opts, norm, eps):
    model = AudioNet().eval()
    a = data()["audio"]
    y = model(audio=a).argmax(1)
    img = ((a + 1) / 2)[:, :, None, :]  # (B,1,1,L) in [0, 1]; budgets scale by 2 on the waveform
    theirs = acc(model, {"audio": peer(AsImage(model), norm, eps)(img, y)[:, :, 0] * 2 - 1}, y)
    ours = acc(model, create_attack(name, model, eps={"audio": 2 * eps}, norm=norm, **opts)({"audio": a}, y), y)
    assert ours <= theirs + 2 and ours < 32


# --- budgets, ranges, norms ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, opts", [("fgsm", {}), ("pgd", dict(steps=3)), ("mim", dict(steps=3)),
                                        ("apgd-ce", dict(steps=5)), ("apgd-t", dict(steps=3, n_target_classes=2)),
                                        ("fab-t", dict(steps=5, n_target_classes=2)), ("square", dict(n_queries=30))])
@pytest.mark.parametrize("norm, eps", [("Linf", {"visual": 0.05, "audio": 0.05}),
                                       ({"visual": "L2", "audio": "snr"}, {"visual": 0.8, "audio": 20.0}),
                                       ("L2", {"visual": 0.8, "audio": 0.5})])
def test_budgets_hold_per_sample_for_every_norm(name, opts, norm, eps):
    model = TwoModal().eval()
    x = data(12)
    y = model(**x).argmax(1)
    adv = create_attack(name, model, eps=eps, norm=norm, **opts)(x, y)
    norms = parse_norm(norm)
    for m in ("visual", "audio"):
        d = (adv[m] - x[m]).flatten(1).double()
        if norms[m] == "Linf":
            assert d.abs().amax(1).max() <= eps[m] + 1e-6
        elif norms[m] == "L2":
            assert d.norm(dim=1).max() <= eps[m] * (1 + 1e-5)
        else:
            assert snr_db(x[m], adv[m]).min() >= eps[m] - 1e-4
        lo = 0.0 if m == "visual" else -1.0
        assert adv[m].min() >= lo and adv[m].max() <= 1.0
    assert acc(model, adv, y) < 12 or name == "fgsm"


def test_fgsm_under_l2_is_fgm():
    model = AudioNet().eval()
    a = data(8)["audio"]
    y = model(audio=a).argmax(1)
    leaf = a.clone().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(model(audio=leaf), y, reduction="sum"), leaf)
    expected = (a + 0.3 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1)).clamp(-1, 1)
    adv = create_attack("fgsm", model, eps={"audio": 0.3}, norm="L2")({"audio": a}, y)
    torch.testing.assert_close(adv["audio"], expected)


def test_bad_norms_and_options_raise_clear_errors():
    with pytest.raises(ValueError, match="audio only"):
        parse_norm("visual=snr")
    with pytest.raises(ValueError, match="valid form"):
        parse_norm("L3")
    assert parse_norm("visual=L2,audio=snr") == {"audio": "snr", "visual": "L2"}
    with pytest.raises(TypeError, match="its options: .*n_queries"):
        create_attack("square", VisualNet(), eps={"visual": 0.1}, steps=3)
    with pytest.raises(ValueError, match="normalized"):
        create_attack("pgd", VisualNet(), eps={"visual": 0.1}, norm="L2", eps_unit="normalized")


def test_apgd_is_batch_independent_without_random_start():
    model = TwoModal().eval()
    x = data(10)
    y = model(**x).argmax(1)
    kw = dict(eps={"visual": 0.03, "audio": 0.03}, steps=8, random_start=False)
    full = create_attack("apgd-ce", model, **kw)(x, y)
    part = create_attack("apgd-ce", model, **kw)({m: v[3:7] for m, v in x.items()}, y[3:7])
    for m in x:
        torch.testing.assert_close(full[m][3:7], part[m], atol=1e-6, rtol=0)


# --- autoattack: any model, report, flags ----------------------------------------------------------------

def test_autoattack_on_a_users_model_reports_the_per_sample_worst_case():
    model = VisualNet().eval()
    x = data(16)["visual"]
    y = model(visual=x).argmax(1)
    aa = create_attack("autoattack", model, eps={"visual": 2 / 255}, steps=10, n_queries=50, n_target_classes=3)
    adv = aa({"visual": x}, y)
    rep = aa.report
    assert rep["n"] == 16 and rep["clean_acc"] == 1.0
    assert math.isclose(rep["robust_acc"], acc(model, adv, y) / 16)
    stages = list(rep["per_attack"].values())
    assert stages == sorted(stages, reverse=True)  # robust accuracy never rises along the ensemble
    assert rep["flags"] == [] and rep["square_queries"] is not None


def test_leave_out_runs_the_other_stages_and_names_the_left_out_ones():
    """leave_out=fab-t: the same stages as the whole ensemble but FAB-T, each with the same result on the same
    clips (every stage is seeded and runs on the clips the ones before it left), and the report says what was
    left out; a name outside the version, or every stage, is refused."""
    model = VisualNet().eval()
    x = data(16)["visual"]
    y = model(visual=x).argmax(1)
    opts = dict(eps={"visual": 2 / 255}, steps=5, n_queries=20, n_target_classes=2)
    whole = create_attack("autoattack", model, **opts)
    whole({"visual": x}, y)
    cut = create_attack("autoattack", model, leave_out="fab-t", **opts)
    cut({"visual": x}, y)
    assert [s.name for s in cut.stages] == ["apgd-ce", "apgd-t", "square"]
    assert cut.report["missing"] == ["fab-t (left out)"] and whole.report["missing"] == []
    full, part = whole.report["per_attack"], cut.report["per_attack"]
    assert set(part) == set(full) - {"fab-t"}
    assert part["apgd-ce"] == full["apgd-ce"] and part["apgd-t"] == full["apgd-t"]
    assert part["square"] >= full["square"]  # FAB-T's finds are not there to remove
    with pytest.raises(ValueError, match="fab-x not a stage of version 'standard'.*apgd-ce, apgd-t, fab-t, square"):
        create_attack("autoattack", model, leave_out="fab-x", **opts)
    with pytest.raises(ValueError, match="every stage"):
        create_attack("autoattack", model, leave_out="apgd-ce+apgd-t+fab-t+square", **opts)


class Quantised(nn.Module):
    """Rounds its input to 8 levels: zero input gradient almost everywhere (gradient masking)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = VisualNet()

    def forward(self, visual: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(visual * 7) / 7)


def test_a_quantising_model_is_flagged_by_autoattack_and_the_grid():
    model = Quantised().eval()
    x = data(16)["visual"]
    y = model(visual=x).argmax(1)
    aa = create_attack("autoattack", model, eps={"visual": 0.1}, steps=5, n_queries=100, n_target_classes=2)
    aa({"visual": x}, y)
    flags = " | ".join(aa.report["flags"])
    assert "zero input gradient on visual for 16/16" in flags
    assert "black box beats white box" in flags  # square fools it, the gradient attacks cannot
    loader = [{"visual": x, "label": y}]
    rows = evaluate_attack_grid(model, loader, ["pgd", "autoattack"], [{"visual": 0.1}], "cpu", steps=2,
                                attack_options={"autoattack": dict(steps=5, n_queries=100, n_target_classes=2)},
                                progress=False)
    assert all("zero input gradient on visual" in r["flags"] for r in rows)
    aa_row = rows[1]
    assert aa_row["queries"] > 1 and "square" in aa_row["per_attack"] and aa_row["norm_visual"] == "Linf"


def test_grid_flags_catch_rising_accuracy_and_weak_joint_attacks():
    def row(a, v, acc_):
        return {"attack": "pgd", "eps_audio": a, "eps_visual": v, "adv_acc": acc_, "n_samples": 100, "flags": "none"}
    rows = [row(0, 0, 0.9), row(0.01, 0, 0.5), row(0, 0.01, 0.4), row(0.01, 0.01, 0.6), row(0.02, 0, 0.7)]
    grid_flags(rows)
    assert "both-modalities attack weaker" in rows[3]["flags"]
    assert "rises with eps" in rows[4]["flags"]
    assert rows[1]["flags"] == "none" and rows[2]["flags"] == "none"


def test_probabilities_are_flagged_and_randomness_asks_for_eot():
    class Soft(VisualNet):
        def forward(self, visual):
            return super().forward(visual).softmax(1)

    class Noisy(VisualNet):
        def forward(self, visual):
            return super().forward(visual) + torch.randn(visual.shape[0], 10)

    x = data(8)["visual"]
    grid = dict(attack_names=["fgsm"], eps_grid=[{"visual": 0.01}], device="cpu", progress=False)
    soft = Soft().eval()
    rows = evaluate_attack_grid(soft, [{"visual": x, "label": soft(visual=x).argmax(1)}], **grid)
    assert "probabilities" in rows[0]["flags"]
    noisy = Noisy().eval()
    loader = [{"visual": x, "label": noisy(visual=x).argmax(1)}]
    with pytest.raises(UsageError, match="--eot: .*stochastic"):  # randomness asks for EOT, not a mere flag
        evaluate_attack_grid(noisy, loader, **grid)
    rows = evaluate_attack_grid(noisy, loader, **grid, attack_options={"fgsm": {"eot_iter": 3}})
    assert "randomness" in rows[0]["flags"]
    with pytest.raises(UsageError, match="--eot: 3 passes .* deterministic"):
        evaluate_attack_grid(soft, [{"visual": x, "label": soft(visual=x).argmax(1)}], **grid,
                             attack_options={"fgsm": {"eot_iter": 3}})
