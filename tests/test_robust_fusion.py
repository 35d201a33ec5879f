"""Robust fusion (models/robust_fusion.py, pipeline/procedures.py): on a constructed case where one modality's
feature is made inconsistent (pointing to another class, with the off-distribution trace an attack leaves),
the trained head names that modality and classifies from the other, where a concat head is fooled; the
single-source procedure perturbs only the modality drawn for each example and labels it."""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from models.fusion import create_fusion
from models.robust_fusion import ODD_CLASSES, odd_one_out_loss
from pipeline.procedures import SingleSourceProcedure

K, D = 4, 8  # classes; feature size (the first K coordinates carry the class, the rest are the off-trace)


def _features(labels: torch.Tensor, odd: torch.Tensor, gen: torch.Generator) -> Dict[str, torch.Tensor]:
    """Clean features: 2 e_y plus small noise in the first K coordinates, zero elsewhere. A modality made
    inconsistent (odd == its index in ODD_CLASSES) points to another class with a larger norm and carries
    energy in the last D - K coordinates."""
    n = labels.numel()
    feats = {}
    for i, m in enumerate(("audio", "visual")):
        f = torch.zeros(n, D)
        f[torch.arange(n), labels] = 2.0
        f[:, :K] += 0.1 * torch.randn(n, K, generator=gen)
        bad = odd == i
        wrong = (labels[bad] + 1 + torch.randint(K - 1, (int(bad.sum()),), generator=gen)) % K
        g = torch.zeros(int(bad.sum()), D)
        g[torch.arange(len(wrong)), wrong] = 4.0
        g[:, K:] = 1.0 + 0.2 * torch.randn(len(wrong), D - K, generator=gen)
        f[bad] = g
        feats[m] = f
    return feats


def _train(head: nn.Module, odd_weight: float, inconsistent: bool, steps: int = 300) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(steps):
        labels = torch.randint(K, (64,), generator=gen)
        odd = (torch.randint(3, (64,), generator=gen) if inconsistent else torch.full((64,), 2))
        feats = _features(labels, odd, gen)
        loss = nn.functional.cross_entropy(head(feats), labels)
        if odd_weight:
            loss = loss + odd_weight * odd_one_out_loss(head.aux["odd_logits"], odd)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


def test_robust_head_discounts_the_inconsistent_modality():
    torch.manual_seed(0)
    robust = _train(create_fusion("robust_fusion", K, D, D, fusion_args={"hidden": 32}), 1.0, inconsistent=True)
    concat = _train(create_fusion("concat", K, D, D), 0.0, inconsistent=False)
    gen = torch.Generator().manual_seed(1)
    labels = torch.randint(K, (200,), generator=gen)
    with torch.no_grad():
        for i, m in enumerate(("audio", "visual")):
            feats = _features(labels, torch.full((200,), i), gen)
            acc_robust = (robust(feats).argmax(1) == labels).float().mean()
            p = robust.aux["odd_logits"].softmax(1)
            assert p[:, ODD_CLASSES.index(m)].mean() > 0.9, f"{m} made inconsistent is not named the odd one"
            acc_concat = (concat(feats).argmax(1) == labels).float().mean()
            assert acc_robust > 0.95 and acc_concat < 0.2, (m, acc_robust, acc_concat)
        clean = _features(labels, torch.full((200,), 2), gen)
        assert (robust(clean).argmax(1) == labels).float().mean() > 0.95
        assert robust.aux["odd_logits"].softmax(1)[:, ODD_CLASSES.index("none")].mean() > 0.9


def test_without_the_odd_one_out_loss_the_detector_learns_nothing_to_name():
    """The detector's outputs mean "which modality" only through its loss: trained on the task alone it does
    not name the inconsistent modality (so the test above can fail)."""
    torch.manual_seed(0)
    head = _train(create_fusion("robust_fusion", K, D, D, fusion_args={"hidden": 32}), 0.0, inconsistent=True,
                  steps=100)
    gen = torch.Generator().manual_seed(1)
    labels = torch.randint(K, (200,), generator=gen)
    with torch.no_grad():
        head(_features(labels, torch.full((200,), 0), gen))
        named = head.aux["odd_logits"].argmax(1) == ODD_CLASSES.index("audio")
    assert named.float().mean() < 0.9


class TinyAV(nn.Module):
    """Linear encoders into a robust_fusion head (the model contract of attacks: audio (B,1,L), visual (B,3,H,W))."""

    modalities = ("audio", "visual")

    def __init__(self) -> None:
        super().__init__()
        self.enc_a = nn.Linear(16, 6)
        self.enc_v = nn.Linear(3, 5)
        self.head = create_fusion("robust_fusion", 3, 6, 5, fusion_args={"hidden": 8})

    def features(self, audio, visual):
        return {"audio": self.enc_a(audio.flatten(1)), "visual": self.enc_v(visual.mean(dim=(2, 3)))}

    def forward(self, audio=None, visual=None):
        return self.head(self.features(audio, visual))


def test_single_source_procedure_perturbs_only_the_drawn_modality():
    torch.manual_seed(0)
    model = TinyAV()
    proc = SingleSourceProcedure(model, "pgd", {"audio": 0.05, "visual": 0.05}, weight=0.5, steps=3,
                                 eps_unit="input", seed=0)
    inputs = {"audio": torch.rand(30, 1, 16) * 2 - 1, "visual": torch.rand(30, 3, 4, 4)}
    labels = torch.randint(3, (30,))
    out, targets = proc.prepare(inputs, labels)
    odd = targets["odd"]
    assert set(odd.tolist()) == {0, 1, 2}
    for i, m in enumerate(("audio", "visual")):
        changed = (out[m] != inputs[m]).flatten(1).any(1)
        assert torch.equal(changed, odd == i), m  # every example drawn for m perturbed, no other
        assert (out[m] - inputs[m]).abs().max() <= 0.05 + 1e-6
    logits = model(**out)
    loss = proc.loss(model.head, labels, targets)
    assert torch.allclose(loss, 0.5 * nn.functional.cross_entropy(model.head.aux["odd_logits"], odd))
    assert logits.shape == (30, 3)
