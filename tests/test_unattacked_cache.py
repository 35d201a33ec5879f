"""Issue 18, item 5: a modality the attack leaves unchanged is encoded once per batch, not once per step,
with results bitwise equal to the uncached path (every registered attack, audio-only and visual-only,
plain and defended models, a head with independent features and one attending across modalities)."""
from __future__ import annotations

from typing import Dict, Tuple

import pytest
import torch
from torch import nn

from attacks import ATTACKS, create_attack, list_attacks
from attacks.base import Frozen, forward
from models.av_model import create_model
from models.defense import DefendedModel, MemoryBank

B, L, T, S, K = 3, 2400, 2, 32, 4  # batch, audio samples, frames, frame size, classes: small and fast
# Options that make every attack short; the subset paths (restarts, apgd-t targets, square queries,
# autoattack stages) still run.
OPTIONS = {"fgsm": {}, "pgd": {"steps": 3, "random_start": True, "restarts": 2},
           "mim": {"steps": 3}, "apgd-ce": {"steps": 4, "restarts": 2}, "apgd-dlr": {"steps": 4},
           "apgd-t": {"steps": 4, "n_target_classes": 2}, "square": {"n_queries": 12},
           "autoattack": {"steps": 4, "n_queries": 12, "n_target_classes": 2}, "universal": {"epochs": 2},
           "sparse_time": {"steps": 1, "frames": 1}, "time_shared": {"steps": 1}, "tia": {"steps": 1},  # one step: the paths
           "mma": {"steps": 2}, "desync": {"steps": 2}, "fab": {"steps": 2}, "fab-t": {"steps": 2, "n_target_classes": 2}}
EPS = {"audio": {"audio": 0.05}, "visual": {"visual": 0.1}}


class Uncached(nn.Module):
    """The same model without ``encode``: attacks take the plain path, every input at every step."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.modalities = model.modalities

    def forward(self, audio=None, visual=None):  # type: ignore[no-untyped-def]
        return self.model(audio=audio, visual=visual)

    def features(self, audio=None, visual=None):  # type: ignore[no-untyped-def]  (mma reads f_a, f_v)
        return self.model.features(audio=audio, visual=visual)


def _model(head: str, defended: bool) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("anet_lite", "resnet10", head, num_classes=K)
    # a trained model's head separates the classes; a random one leaves logits near tied: scale it up so
    # that attacks flip some samples and not others (the subset paths need both)
    with torch.no_grad():
        for p in model.head.parameters():
            p.mul_(20)
    if not defended:
        return model.eval()
    gen = torch.Generator().manual_seed(1)
    dims = {"audio": model.audio_net.out_dim, "visual": model.visual_net.out_dim}
    banks = {m: MemoryBank(torch.randn(16, d, generator=gen), "h", modality=m) for m, d in dims.items()}
    return DefendedModel(model, banks, max_iter=200, grad_max_iter=5).eval()


def _batch() -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    inputs = {"audio": torch.rand(B, 1, L, generator=gen) * 2 - 1, "visual": torch.rand(B, 3, T, S, S, generator=gen)}
    return inputs, torch.tensor([0, 1, 2])


@pytest.mark.parametrize("head,defended", [("concat", False), ("concat", True), ("attention", False),
                                           ("attention", True)])
@pytest.mark.parametrize("attacked", ["audio", "visual"])
def test_every_attack_is_bitwise_equal_to_the_uncached_path(head: str, defended: bool, attacked: str) -> None:
    model = _model(head, defended)
    inputs, labels = _batch()
    names = list_attacks()  # every registered attack, autoattack included
    if head == "attention" and defended:  # the slow pair (sparse codes at every step): two attacks suffice
        names = ["pgd", "autoattack"]
    assert set(OPTIONS) >= set(names), f"give the new attack(s) {sorted(set(names) - set(OPTIONS))} short options"
    for name in names:
        adv = {}
        for variant, m in (("cached", model), ("uncached", Uncached(model))):
            seed = {"seed": 0} if ATTACKS.get(name).takes("seed") else {}  # fgsm draws nothing
            attack = create_attack(name, m, eps=EPS[attacked], **seed, **OPTIONS[name])
            adv[variant] = attack(inputs, labels)
        for mod in ("audio", "visual"):
            assert torch.equal(adv["cached"][mod], adv["uncached"][mod]), (name, mod)
        assert adv["cached"][{"audio": "visual", "visual": "audio"}[attacked]] is inputs[
            {"audio": "visual", "visual": "audio"}[attacked]]
        with torch.no_grad():
            frozen = {m: (Frozen(x) if m != attacked else x) for m, x in adv["cached"].items()}
            assert torch.equal(forward(model, frozen), model(**adv["uncached"])), name


@pytest.mark.parametrize("defended", [False, True])
@pytest.mark.parametrize("attacked", ["audio", "visual"])
def test_the_unattacked_net_and_sparse_code_run_once_per_batch(defended: bool, attacked: str) -> None:
    model = _model("concat", defended)
    av = model.model if defended else model
    other = {"audio": "visual", "visual": "audio"}[attacked]
    calls = {"audio": 0, "visual": 0}
    for m, net in (("audio", av.audio_net), ("visual", av.visual_net)):
        net.register_forward_hook(lambda *_, m=m: calls.__setitem__(m, calls[m] + 1))
    inputs, labels = _batch()
    steps = 5
    create_attack("pgd", model, eps=EPS[attacked], steps=steps)(inputs, labels)
    assert calls[other] == 1 and calls[attacked] == steps
    if defended:
        rows = {m: r["rows"] for m, r in model.solver_report().items()}
        assert rows[other] == B and rows[attacked] == steps * B


def test_subsets_follow_the_index_and_reuse_a_repeated_one() -> None:
    model = _model("concat", False)
    inputs, _ = _batch()
    calls = []
    model.visual_net.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[0]))
    frozen = Frozen(inputs["visual"])
    idx = torch.tensor([2, 0])
    sub = frozen[idx]
    assert torch.equal(sub.x, inputs["visual"][idx]) and frozen[idx.clone()] is sub
    with torch.no_grad():
        got = forward(model, {"audio": inputs["audio"][idx], "visual": sub})
        again = forward(model, {"audio": inputs["audio"][idx], "visual": frozen[torch.tensor([2, 0])]})
        want = model(audio=inputs["audio"][idx], visual=inputs["visual"][idx])
    assert torch.equal(got, want) and torch.equal(again, want)
    assert calls == [2, 2]  # once for the subset (cached on the second call), once for the reference


def test_training_mode_takes_the_plain_path() -> None:
    # a training-mode BatchNorm reads the batch and updates its statistics at every forward
    model = _model("concat", False).train()
    inputs, _ = _batch()
    calls = []
    model.visual_net.register_forward_hook(lambda *_: calls.append(1))
    frozen = Frozen(inputs["visual"])
    for _ in range(2):
        with torch.no_grad():
            forward(model, {"audio": inputs["audio"], "visual": frozen})
    assert len(calls) == 2
