"""CPU tests for models/: registries, fusion heads, audio/visual nets, weight loading, localization."""
from __future__ import annotations

import urllib.error

import librosa
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

import models
from models.audio_net import AUDIO_NETS, ANet, VGGish
from models.fusion import FUSIONS

FUSION_NAMES = models.list_fusions()
BIMODAL = [n for n in FUSION_NAMES if FUSIONS.get(n).modalities == ("audio", "visual")]
UNIMODAL = [n for n in FUSION_NAMES if len(FUSIONS.get(n).modalities) == 1]
AUDIO_LEN = 4096  # > ANet.min_length (2341) and VGGish's (2162 at 11025 Hz)
K = 3


def _inputs(batch: int = 2, frames: int = 2, size: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    audio = torch.rand(batch, 1, AUDIO_LEN, generator=g) * 2 - 1
    visual = torch.rand(batch, 3, frames, size, size, generator=g)
    return audio, visual


def _model(head: str, seed: int = 0, **kw) -> models.AVModel:
    torch.manual_seed(seed)
    return models.create_model(arch_sound=kw.pop("arch_sound", "anet"), arch_frame="resnet18",
                               arch_classifier=head, num_classes=K, **kw)


def test_registries_cover_the_required_names():
    assert {"anet", "vggish"} <= set(models.list_audio_nets())
    assert {"resnet18", "resnet34", "resnet50"} <= set(models.list_visual_nets())
    assert {"audio", "visual", "sum", "concat", "film_av", "film_va", "gated_av", "gated_va",
            "attention", "late"} <= set(FUSION_NAMES)


@pytest.mark.parametrize("head", FUSION_NAMES)
def test_fusion_shapes_and_loss_decreases(head):
    model = _model(head)
    audio, visual = _inputs(batch=4, frames=1)
    labels = torch.tensor([0, 1, 2, 0])
    feats = model.features(audio=audio, visual=visual)
    assert set(feats) == set(model.modalities) == set(FUSIONS.get(head).modalities)
    for mod, f in feats.items():
        net = model.audio_net if mod == "audio" else model.visual_net
        assert f.shape == (4, net.out_dim)
    assert torch.allclose(model.classify(feats), model(audio=audio, visual=visual), atol=1e-6)

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(10):
        logits = model(audio=audio, visual=visual)
        assert logits.shape == (4, K)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.8 * losses[0], f"{head}: loss did not decrease: {losses}"


@pytest.mark.parametrize("head", BIMODAL)
def test_gradients_reach_both_inputs(head):
    model = _model(head).eval()
    audio, visual = _inputs()
    audio.requires_grad_(True)
    visual.requires_grad_(True)
    F.cross_entropy(model(audio=audio, visual=visual), torch.tensor([0, 1])).backward()
    for name, x in (("audio", audio), ("visual", visual)):
        assert x.grad is not None and torch.isfinite(x.grad).all(), f"{head}: no finite grad for {name}"
        assert x.grad.abs().sum() > 0, f"{head}: zero gradient reaches the {name} input"


@pytest.mark.parametrize("head", UNIMODAL)
def test_unimodal_heads_ignore_the_other_input(head):
    model = _model(head).eval()
    audio, visual = _inputs()
    used = FUSIONS.get(head).modalities[0]
    other_net = model.visual_net if used == "audio" else model.audio_net
    assert other_net is None, "a unimodal model must not instantiate the other net"
    audio2, visual2 = _inputs(seed=1)
    with torch.no_grad():
        if used == "audio":
            outs = [model(audio=audio, visual=v) for v in (visual, visual2, None)]
        else:
            outs = [model(audio=a, visual=visual) for a in (audio, audio2, None)]
    for out in outs[1:]:
        assert torch.equal(out, outs[0])
    with pytest.raises(ValueError, match=used):
        model(audio=None, visual=None)


def test_missing_required_input_raises():
    model = _model("concat").eval()
    audio, visual = _inputs()
    with pytest.raises(ValueError, match="audio"):
        model(audio=None, visual=visual)
    with pytest.raises(ValueError, match="visual"):
        model(audio=audio, visual=None)


def test_img_pool_is_applied_over_time_and_space():
    audio, visual = _inputs(size=64)  # map (B, 512, 2, 2, 2)
    outs, feats = {}, {}
    for pool in ("avgpool", "maxpool"):
        model = _model("visual", img_pool=pool).eval()
        with torch.no_grad():
            fmap = model.visual_net(visual)
            feats[pool] = model.features(visual=visual)["visual"]
            outs[pool] = model(visual=visual)
        assert fmap.shape == (2, 512, 2, 2, 2)
        expected = fmap.amax(dim=(2, 3, 4)) if pool == "maxpool" else fmap.mean(dim=(2, 3, 4))
        assert torch.allclose(feats[pool], expected)
    assert not torch.allclose(outs["avgpool"], outs["maxpool"])
    assert not torch.allclose(feats["avgpool"], feats["maxpool"])


def test_visual_accepts_single_frame_4d_input():
    model = _model("visual").eval()
    _, visual = _inputs(frames=1)
    with torch.no_grad():
        assert torch.allclose(model(visual=visual[:, :, 0]), model(visual=visual))
    with pytest.raises(ValueError, match="shape"):
        model(visual=visual[:, :2])


@pytest.mark.parametrize("rate", [11025, 16000])
def test_vggish_logmel_matches_librosa_and_grad_reaches_waveform(rate):
    torch.manual_seed(0)
    net = VGGish(rate).eval()
    lm = net.logmel
    assert lm.win_length == round(0.025 * rate) and lm.hop_length == round(0.010 * rate)
    fb = librosa.filters.mel(sr=rate, n_fft=lm.n_fft, n_mels=64, fmin=125.0, fmax=min(7500.0, rate / 2), htk=True)
    np.testing.assert_allclose(lm.mel_fb.numpy(), fb, rtol=1e-5, atol=1e-7)

    wave = torch.rand(2, 1, AUDIO_LEN, generator=torch.Generator().manual_seed(3)) * 2 - 1
    spec = np.abs(librosa.stft(wave[0, 0].double().numpy(), n_fft=lm.n_fft, hop_length=lm.hop_length,
                               win_length=lm.win_length, window="hann", center=False))
    ref = np.log(fb @ spec + 0.01).T  # (frames, n_mels)
    got = lm(wave)[0, 0].numpy()
    assert got.shape == ref.shape == (lm.num_frames(AUDIO_LEN), 64)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)

    wave.requires_grad_(True)
    out = net(wave)
    assert out.shape == (2, 512)
    out.sum().backward()
    assert wave.grad is not None and wave.grad.abs().sum() > 0


@pytest.mark.parametrize("net", [ANet(), AUDIO_NETS.get("anet_lite")(), VGGish(11025)],
                         ids=["anet", "anet_lite", "vggish"])
def test_audio_min_length_enforced(net):
    net.eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 1, net.min_length)).shape == (1, net.out_dim)
        with pytest.raises(ValueError, match="minimum"):
            net(torch.zeros(1, 1, net.min_length - 1))
        with pytest.raises(ValueError, match=r"\(B, 1, L\)"):
            net(torch.zeros(1, 2, net.min_length))


def test_anet_lite_is_anet_with_narrow_early_blocks():
    full, lite = ANet(), AUDIO_NETS.get("anet_lite")()
    convs = [[m for m in net.modules() if isinstance(m, torch.nn.Conv1d)] for net in (full, lite)]
    assert [c.out_channels for c in convs[0]] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.out_channels for c in convs[1]] == [16, 16, 32, 32, 64, 64, 512, 512]
    assert [c.stride for c in convs[0]] == [c.stride for c in convs[1]]  # same time resolution everywhere
    assert lite.out_dim == full.out_dim == 512 and lite.min_length == full.min_length  # MinSim needs equal dims
    n_full, n_lite = (sum(p.numel() for p in net.parameters()) for net in (full, lite))
    assert n_lite < n_full
    with pytest.raises(ValueError, match="4 positive block widths"):
        ANet((16, 32, 64))


def test_unknown_names_list_valid_ones():
    with pytest.raises(KeyError, match="film_av.*gated_va|concat"):
        models.create_model(arch_classifier="nope", num_classes=K)
    with pytest.raises(KeyError, match="anet.*vggish"):
        models.create_model(arch_sound="nope", arch_classifier="audio", num_classes=K)
    with pytest.raises(KeyError, match="resnet18.*resnet50"):
        models.create_model(arch_frame="nope", arch_classifier="audio", num_classes=K)
    with pytest.raises(ValueError, match="img_pool"):
        models.create_model(arch_classifier="visual", num_classes=K, img_pool="minpool")


def test_pretrained_download_failure_is_a_clear_error(monkeypatch):
    def no_network(self, *a, **kw):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", no_network)
    with pytest.raises(RuntimeError, match="could not download.*weights_frame"):
        models.create_model(arch_classifier="visual", num_classes=K, pretrained="imagenet")


def test_pretrained_uses_the_torchvision_weights_api(monkeypatch):
    torch.manual_seed(123)
    ref = torchvision.models.resnet18()
    calls = []

    def fake_download(self, *a, **kw):
        calls.append(self)
        return ref.state_dict()

    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", fake_download)
    model = models.create_model(arch_classifier="visual", num_classes=K, pretrained="imagenet")
    assert calls == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1]
    assert torch.equal(model.visual_net.trunk.conv1.weight, ref.conv1.weight)


def test_weights_frame_round_trip_and_errors(tmp_path):
    torch.manual_seed(7)
    ref = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)  # includes fc.*, which is dropped
    model = models.create_model(arch_classifier="visual", num_classes=K, weights_frame=str(path))
    loaded = model.visual_net.trunk.state_dict()
    for key, val in ref.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(loaded[key], val), key

    with pytest.raises(FileNotFoundError, match="missing.pth"):
        models.create_model(arch_classifier="visual", num_classes=K, weights_frame=str(tmp_path / "missing.pth"))
    bad_keys = dict(ref.state_dict())
    bad_keys["layer5.weight"] = bad_keys.pop("layer4.1.bn2.bias")
    torch.save(bad_keys, tmp_path / "bad_keys.pth")
    with pytest.raises(RuntimeError, match="bad_keys.pth.*missing keys.*layer4.1.bn2.bias.*layer5.weight"):
        models.create_model(arch_classifier="visual", num_classes=K, weights_frame=str(tmp_path / "bad_keys.pth"))
    bad_shape = dict(ref.state_dict())
    bad_shape["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    torch.save(bad_shape, tmp_path / "bad_shape.pth")
    with pytest.raises(RuntimeError, match="bad_shape.pth"):
        models.create_model(arch_classifier="visual", num_classes=K, weights_frame=str(tmp_path / "bad_shape.pth"))
    with pytest.raises(ValueError, match="weights_frame.*audio"):
        models.create_model(arch_classifier="audio", num_classes=K, weights_frame=str(path))


def test_weights_sound_round_trip(tmp_path):
    src = _model("audio", seed=5).eval()
    path = tmp_path / "anet.pth"
    torch.save(src.audio_net.state_dict(), path)
    dst = _model("audio", seed=6, weights_sound=str(path)).eval()
    audio, _ = _inputs()
    with torch.no_grad():
        assert torch.allclose(src.features(audio=audio)["audio"], dst.features(audio=audio)["audio"])
    with pytest.raises(RuntimeError, match="anet.pth.*vggish"):
        _model("audio", arch_sound="vggish", weights_sound=str(path))


def test_localize_attention_map():
    model = _model("attention").eval()
    audio, visual = _inputs(size=64)  # map (2, 512, 2, 2, 2)
    with torch.no_grad():
        att = model.localize(audio=audio, visual=visual)
        fmap = model.visual_net(visual)
        f_vis = model.features(audio=audio, visual=visual)["visual"]
    assert att.shape == (2, 2, 2, 2)
    assert torch.allclose(att.flatten(1).sum(1), torch.ones(2), atol=1e-5)
    expected = torch.einsum("bcn,bn->bc", fmap.flatten(2), att.flatten(1))  # attention-weighted visual feature
    assert torch.allclose(f_vis, expected, atol=1e-5)
    with pytest.raises(ValueError, match="attention"):
        _model("concat").localize(audio=audio, visual=visual)


def test_feature_dims_and_arch_for_resnet50():
    torch.manual_seed(0)
    model = models.create_model(arch_sound="anet", arch_frame="resnet50", arch_classifier="visual", num_classes=K)
    assert model.arch == {"arch_sound": "anet", "arch_frame": "resnet50", "arch_classifier": "visual",
                          "fusion_args": {}}
    assert model.modalities == ("visual",) and model.audio_net is None
    _, visual = _inputs(batch=1, frames=1)
    model.eval()
    with torch.no_grad():
        assert model.features(visual=visual)["visual"].shape == (1, 2048)


@pytest.mark.parametrize("arch", ["resnet10", "resnet34"])
def test_other_visual_nets_forward_and_pool(arch):
    m = models.create_model(arch_frame=arch, arch_classifier="visual", num_classes=K)
    out = m(visual=torch.rand(2, 3, 2, 32, 32))
    assert out.shape == (2, K) and torch.isfinite(out).all()
    assert m.features(visual=torch.rand(2, 3, 32, 32))["visual"].shape == (2, 512)


def test_resnet10_has_no_imagenet_weights():
    with pytest.raises(RuntimeError, match="no ImageNet weights for resnet10"):
        models.create_model(arch_frame="resnet10", arch_classifier="visual", num_classes=K, pretrained="imagenet")
