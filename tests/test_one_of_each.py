"""One implementation per concept (issue 18, item 4): the audio-visual cosine, the architecture check, the
weight loader, the grid's reuse of the clean pass's predictions, DDP's ignored buffers declared by their
owner."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from attacks.evaluate import evaluate_attack_grid
from models.av_model import av_cosine
from models.defense import DefendedModel, MemoryBank
from pipeline.engine import LogitsAndFeatures, evaluate, minsim_loss
from tests.conftest import ToyAV, ToyFeaturesAV
from utils import distributed as du
from utils.checkpoint import check_arch, load_weights
from utils.errors import UsageError


def test_av_cosine_is_the_one_cosine(monkeypatch):
    torch.manual_seed(0)
    feats = {"audio": torch.randn(5, 4), "visual": torch.randn(5, 4)}
    want = F.cosine_similarity(feats["audio"], feats["visual"], dim=1)
    assert torch.equal(av_cosine(feats), want)
    assert torch.equal(minsim_loss(feats), want.mean())
    assert av_cosine({"audio": feats["audio"]}) is None
    assert av_cosine({"audio": feats["audio"], "visual": torch.randn(5, 3)}) is None
    with pytest.raises(ValueError, match="--minsim_weight.*equal size"):
        minsim_loss({"audio": feats["audio"], "visual": torch.randn(5, 3)})
    # the clean evaluation's cosine is this one (counted through the engine's reference)
    import pipeline.engine as engine
    calls = []
    monkeypatch.setattr(engine, "av_cosine", lambda f, **k: calls.append(1) or av_cosine(f, **k))
    model = ToyFeaturesAV(da=5, dv=5).eval()
    batch = {"audio": torch.rand(4, 1, 32) * 2 - 1, "visual": torch.rand(4, 3, 8, 8),
             "label": torch.tensor([0, 1, 2, 0]), "index": torch.arange(4)}
    res = evaluate(model, [batch], torch.device("cpu"), progress=False)
    with torch.no_grad():
        f = model.features(audio=batch["audio"], visual=batch["visual"])
    assert calls and res["cos"] == pytest.approx(float(av_cosine(f).sum() / 4))


def test_one_architecture_check_for_preflight_and_loading(tmp_path):
    ck = {"arch": {"arch_sound": "anet", "num_classes": 3}}
    want = {"arch_sound": "anet", "num_classes": 4}
    with pytest.raises(RuntimeError, match="different model.*num_classes: checkpoint 3 vs this run 4"):
        check_arch(ck, want, tmp_path / "c.pth")
    with pytest.raises(UsageError, match="different model.*num_classes") as e:
        check_arch(ck, want, tmp_path / "c.pth", flag="--weights")
    assert e.value.flag == "--weights"
    check_arch(ck, {"arch_sound": "anet", "num_classes": 3}, tmp_path / "c.pth")  # equal: no error


def test_one_weight_loader_whole_or_part():
    src, dst = ToyFeaturesAV(), ToyFeaturesAV()
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    load_weights(dst, src.state_dict(), "src", prefix="enc_a.")  # only that part
    for k, v in dst.state_dict().items():
        assert torch.equal(v, (src if k.startswith("enc_a.") else dst).state_dict()[k])
        if not k.startswith("enc_a."):
            assert torch.equal(v, before[k])
    bad = {**src.state_dict(), "head.weight": torch.zeros(2, 2)}
    with pytest.raises(UsageError, match="--weights_x.*head.weight has shape"):
        load_weights(dst, bad, "src", flag="--weights_x")
    assert torch.equal(dst.state_dict()["head.weight"], before["head.weight"])  # nothing copied
    with pytest.raises(RuntimeError, match="src.*1 missing"):
        load_weights(dst, {k: v for k, v in src.state_dict().items() if k != "head.bias"}, "src")
    load_weights(dst, src.state_dict(), "src")
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in dst.state_dict().items())


def test_head_weights_errors_name_the_flag(tmp_path):
    from models import create_model
    from pipeline.build import load_head_weights

    model = create_model(arch_classifier="concat", num_classes=3)
    path = tmp_path / "head.pth"
    torch.save({"fc.weight": torch.zeros(1)}, path)
    with pytest.raises(UsageError, match="head.pth") as e:
        load_head_weights(model, str(path))
    assert e.value.flag == "--weights_classifier"


def test_grid_reuses_the_clean_predictions():
    torch.manual_seed(0)
    model = ToyAV(num_classes=3).eval()
    batches = [{"audio": torch.rand(4, 1, 48) * 2 - 1, "visual": torch.rand(4, 3, 8, 8),
                "label": torch.randint(0, 3, (4,)), "index": torch.arange(4 * i, 4 * i + 4)} for i in range(2)]
    forwards = []
    model.register_forward_hook(lambda *a: forwards.append(1))
    plain = evaluate_attack_grid(model, batches, ["fgsm"], [{"audio": 0.0, "visual": 0.0}], "cpu", progress=False)
    assert len(forwards) == 2  # its own clean forward per batch

    class Clean(torch.nn.Module):  # the engine's features/classify view of the same model
        modalities = ("audio", "visual")

        def features(self, audio=None, visual=None):
            return {"logits": model(audio=audio, visual=visual)}

        def classify(self, feats):
            return feats["logits"]

    preds = evaluate(Clean(), batches, torch.device("cpu"), progress=False, keep_preds=True)["preds"]
    assert preds.tolist() == [int(p) for b in batches for p in model(audio=b["audio"], visual=b["visual"]).argmax(1)]
    forwards.clear()
    reused = evaluate_attack_grid(model, batches, ["fgsm"], [{"audio": 0.0, "visual": 0.0}], "cpu", progress=False,
                                  clean_preds=preds)
    assert not forwards and reused[0]["clean_acc"] == plain[0]["clean_acc"]
    with pytest.raises(ValueError, match="clean_preds"):
        evaluate_attack_grid(model, batches, ["fgsm"], [{}], "cpu", progress=False, clean_preds=preds[:4])


def test_ddp_ignored_buffers_are_declared_by_the_defense():
    torch.manual_seed(0)
    base = ToyFeaturesAV()
    banks = {m: MemoryBank(torch.randn(8, d), "h", modality=m) for m, d in (("audio", 6), ("visual", 5))}
    net = LogitsAndFeatures(DefendedModel(base, banks))
    assert du.ddp_ignored_buffers(net) == ["model.dict_audio", "model.dict_visual"]
    assert all(n in dict(net.named_buffers()) for n in du.ddp_ignored_buffers(net))
    assert du.ddp_ignored_buffers(LogitsAndFeatures(base)) == []


def test_loading_weights_leaves_the_model_where_it_is(tmp_path):
    """The mains place the model once (place_model); loading a checkpoint must not move it again."""
    import types

    from models import create_model
    from pipeline.train import load_for_eval
    from utils.checkpoint import model_arch

    torch.manual_seed(0)
    src = create_model(arch_frame="resnet10", arch_classifier="concat", num_classes=3)
    path = tmp_path / "ck.pth"
    torch.save({"model": src.state_dict(), "arch": model_arch(src, 3), "epoch": 1}, path)
    model = create_model(arch_frame="resnet10", arch_classifier="concat", num_classes=3)
    cfg = types.SimpleNamespace(cls_num=3, channels_last=True)
    load_for_eval(model, cfg, types.SimpleNamespace(device=torch.device("meta")), Path(path))
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in model.state_dict().items())
