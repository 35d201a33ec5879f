"""The contract of every registered fusion head (a new head is tested without a test of its own): built with
its defaults it maps the features of its ``modalities`` to (B, K) logits, gradients reach every feature it
reads, its declared ``uses_visual_map`` is what the model does, and its ``fusion_args`` round trip through the
model's architecture record; bad arguments are refused naming the key and the accepted ones."""
from __future__ import annotations

from typing import Any, Dict

import pytest
import torch
from torch import nn

from models.av_model import AVModel, create_model
from models.fusion import FUSIONS, create_fusion, head_arg_spec, head_args
from utils.errors import UsageError

DIMS = {"audio": 6, "visual": 5}
K, B = 3, 4


class StubNet(nn.Module):
    """A tiny stand-in for an audio/visual net: a linear map to ``dim`` (a (B, dim, T, h, w) map for visual)."""

    def __init__(self, dim: int, visual: bool) -> None:
        super().__init__()
        self.out_dim, self.visual = dim, visual
        self.lin = nn.Linear(3 if visual else 1, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.visual:  # (B, 1, L) -> (B, dim)
            return self.lin(x.mean(-1))
        return self.lin(x.movedim(1, -1)).movedim(-1, 1)  # (B, 3, T, h, w) -> (B, dim, T, h, w)

    def pool(self, vmap: torch.Tensor) -> torch.Tensor:
        return vmap.flatten(2).mean(-1)


def _model(name: str, **args: Any) -> AVModel:
    mods = FUSIONS.get(name).modalities
    head = create_fusion(name, K, DIMS["audio"] if "audio" in mods else None,
                         DIMS["visual"] if "visual" in mods else None, fusion_args=args)
    nets = {m: StubNet(DIMS[m], m == "visual") if m in mods else None for m in DIMS}
    return AVModel(nets["audio"], nets["visual"], head, {"arch_classifier": name, "fusion_args": head.fusion_args})


def _other_values(name: str) -> Dict[str, Any]:
    """A value different from the default for every hyperparameter of ``name``."""
    bump = {bool: lambda d: not d, int: lambda d: d // 2 + 1, float: lambda d: d / 2 + 0.25, str: lambda d: d + "x"}
    return {k: bump[t](d) for k, (t, d) in head_arg_spec(name).items()}


@pytest.mark.parametrize("name", FUSIONS.names())
def test_head_contract(name):
    torch.manual_seed(0)
    model = _model(name)
    mods = FUSIONS.get(name).modalities
    assert mods and set(mods) <= {"audio", "visual"} and model.modalities == tuple(mods)
    feats = {m: torch.randn(B, DIMS[m], requires_grad=True) for m in mods}
    logits = model.head(feats)
    assert logits.shape == (B, K)
    logits.square().sum().backward()
    for m in mods:
        assert feats[m].grad is not None and feats[m].grad.abs().sum() > 0, f"no gradient reaches {m}"
    assert model.head.fusion_args == head_args(name)  # built with every default, recorded


@pytest.mark.parametrize("name", FUSIONS.names())
def test_head_uses_visual_map_as_declared(name):
    """A head declaring ``uses_visual_map`` gets the attended map feature and localizes; no other head does."""
    torch.manual_seed(0)
    model = _model(name)
    inputs = {"audio": torch.randn(2, 1, 16), "visual": torch.rand(2, 3, 2, 3, 3)}
    inputs = {m: inputs[m] for m in model.modalities}
    assert model.uses_visual_map == FUSIONS.get(name).uses_visual_map
    if not model.uses_visual_map:
        with pytest.raises(ValueError, match="uses_visual_map"):
            model.localize(**inputs)
        if "visual" in model.modalities:  # the pooled map
            assert torch.equal(model.features(**inputs)["visual"], model.visual_net.pool(model.visual_net(inputs["visual"])))
        return
    alpha = model.localize(**inputs)
    assert alpha.shape == (2, 2, 3, 3) and torch.allclose(alpha.flatten(1).sum(1), torch.ones(2), atol=1e-5)
    vmap = model.visual_net(inputs["visual"])
    expected = torch.einsum("bcn,bn->bc", vmap.flatten(2), alpha.flatten(1))
    assert torch.allclose(model.features(**inputs)["visual"], expected, atol=1e-5)


@pytest.mark.parametrize("name", FUSIONS.names())
def test_fusion_args_round_trip_through_arch_record(name):
    """Non-default arguments are recorded (defaults filled in) and a head rebuilt from the record loads the
    trained state strictly; the text form of the command line gives the same head."""
    args = _other_values(name)
    model = _model(name, **args)
    assert model.arch["fusion_args"] == {**head_args(name), **args}
    rebuilt = _model(name, **model.arch["fusion_args"])
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    text = ",".join(f"{k}={v}" for k, v in args.items())
    assert head_args(name, text) == model.arch["fusion_args"]


def test_create_model_records_and_passes_fusion_args():
    model = create_model(arch_sound="anet", arch_frame="resnet18", arch_classifier="sum", num_classes=K,
                         fusion_args={"hidden": 8})
    assert model.arch["fusion_args"] == {"hidden": 8} and model.head.fc.in_features == 8
    again = create_model(arch_classifier="sum", num_classes=K, fusion_args=model.arch["fusion_args"])
    again.load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize("args, words", [
    ({"hiden": 8}, ["'hiden'", "hidden: int = 512"]),
    ({"hidden": "wide"}, ["hidden='wide'", "int", "hidden: int = 512"]),
    ({"hidden": 2.5}, ["hidden=2.5", "int"]),
    ("hidden", ["key=value"]),
])
def test_bad_fusion_args_name_the_key_and_the_accepted_arguments(args, words):
    with pytest.raises(UsageError) as err:
        create_model(arch_classifier="sum", num_classes=K, fusion_args=args)
    assert err.value.flag == "--fusion_args"
    for w in words:
        assert w in str(err.value)


def test_create_fusion_passes_only_what_the_constructor_takes():
    """A head whose constructor takes neither dim nor hyperparameters is built (no fixed argument list)."""
    from models.fusion import FusionHead, register_fusion

    @register_fusion("test_constant_audio")
    class ConstantAudio(FusionHead):
        modalities = ("audio",)

        def __init__(self, num_classes: int, dim_audio: int, bias: float = 1.0) -> None:
            super().__init__(num_classes, dim_audio, None)
            self.fc = nn.Linear(dim_audio, num_classes)
            self.bias = bias

        def forward(self, feats):
            return self.fc(self._get(feats, "audio")) + self.bias

    try:
        head = create_fusion("test_constant_audio", K, 4, 7, fusion_args="bias=2")
        assert head.bias == 2.0 and isinstance(head.bias, float) and head.fusion_args == {"bias": 2.0}
    finally:
        FUSIONS._items.pop("test_constant_audio")


def test_examples_localize_by_declaration_not_by_name():
    """The examples page's localization maps follow ``uses_visual_map``, whatever the head is called."""
    from models.fusion import AttentionFusion, register_fusion
    from pipeline.attack_eval import ExampleCollector

    @register_fusion("test_attention_renamed")
    class Renamed(AttentionFusion):
        pass

    try:
        model = create_model(arch_classifier="test_attention_renamed", num_classes=K, fusion_args={"hidden": 8})
        assert ExampleCollector(model, ["a", "b", "c"], 2, "pgd", ("audio",), 11025).localize
        plain = create_model(arch_classifier="concat", num_classes=K)
        assert not ExampleCollector(plain, ["a", "b", "c"], 2, "pgd", ("audio",), 11025).localize
    finally:
        FUSIONS._items.pop("test_attention_renamed")


def test_checkpoint_from_before_the_record_still_loads():
    """A checkpoint whose arch predates fusion_args (a built-in head with its defaults) matches the default
    model; any recorded difference is still an error naming it."""
    from pathlib import Path

    from utils.checkpoint import check_arch, model_arch

    model = create_model(arch_classifier="sum", num_classes=K)
    expected = model_arch(model, K)
    old = {k: v for k, v in expected.items() if k != "fusion_args"}
    check_arch({"arch": old}, expected, Path("old.pth"))
    with pytest.raises(RuntimeError, match="fusion_args"):
        check_arch({"arch": {**old, "fusion_args": {"hidden": 8}}}, expected, Path("new.pth"))
