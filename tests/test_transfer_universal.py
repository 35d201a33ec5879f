"""Transfer attacks (--transfer_from) and universal perturbations (attacks/universal.py, pipeline/universal.py):
transfer from a model to itself equals the white-box rows bit for bit, transfer from an unrelated model is
weaker, the universal delta is one tensor within budget that fools a model vulnerable to a fixed direction (as
ART's UniversalPerturbation does, within a tolerance), the fitted delta is saved and reused, and bad
--transfer_from sources exit 2 naming the flag."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
import torch.nn as nn

import main_attack
from attacks import create_attack
from attacks.evaluate import evaluate_attack_grid
from pipeline.universal import DeltaStore
from tests.conftest import ToyAV
from tests.fake_media import make_fake_media
from tests.test_attacks import make_batch
from utils.errors import run_cli
from utils.rundir import RunDir

CATS = ["alpha", "beta", "gamma"]


def toy_loader(n_batches: int = 2, b: int = 4, dtype=torch.float64) -> List[Dict[str, torch.Tensor]]:
    return [make_batch(b=b, length=48, frames=1, size=8, seed=i, dtype=dtype) for i in range(n_batches)]


# --- transfer ---------------------------------------------------------------------------------------------

def test_transfer_from_a_copy_equals_the_white_box_rows_bit_for_bit():
    model = ToyAV(num_classes=4, dtype=torch.float64).eval()
    source = copy.deepcopy(model)  # another object with the same weights, as a source run's checkpoint is
    grid = ["visual=0,audio=0.05", "visual=0.03,audio=0", "visual=0.03,audio=0.05"]
    advs: Dict[str, list] = {"white": [], "transfer": []}

    def keep(kind):
        return lambda info: advs[kind].append({m: info["adv"][m].clone() for m in ("audio", "visual")})

    white = evaluate_attack_grid(model, toy_loader(), ["fgsm", "pgd"], grid, "cpu", steps=3, progress=False,
                                 on_batch=keep("white"))
    moved = evaluate_attack_grid(model, toy_loader(), ["fgsm", "pgd"], grid, "cpu", steps=3, progress=False,
                                 on_batch=keep("transfer"), source=source)
    assert len(advs["white"]) == len(advs["transfer"]) == 2 * 3 * 2
    for a, b in zip(advs["white"], advs["transfer"]):
        assert all(torch.equal(a[m], b[m]) for m in a)
    for r, t in zip(white, moved):
        assert {k: v for k, v in r.items() if k != "seconds"} == {k: v for k, v in t.items() if k != "seconds"}


class LinearVisual(nn.Module):
    """A visual-only linear classifier with weights drawn from ``seed`` (no BatchNorm: an exact toy)."""

    modalities = ("visual",)

    def __init__(self, seed: int, classes: int = 3, dim: int = 3 * 8 * 8) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(dim, classes, generator=gen, dtype=torch.float64))

    def forward(self, visual: torch.Tensor, audio=None) -> torch.Tensor:
        return 4.0 * (visual.flatten(1) - 0.5) @ self.w


def test_transfer_from_an_unrelated_model_is_weaker_than_white_box():
    target, unrelated = LinearVisual(seed=0), LinearVisual(seed=1)
    gen = torch.Generator().manual_seed(5)
    v = 0.5 + 0.1 * (torch.rand(24, 3, 8, 8, generator=gen, dtype=torch.float64) - 0.5)
    with torch.no_grad():
        labels = target(visual=v).argmax(1)  # clean accuracy 100% by construction
    loader = [{"visual": v, "label": labels}]
    grid = ["visual=0.01,audio=0"]
    white = evaluate_attack_grid(target, loader, ["pgd"], grid, "cpu", progress=False)[0]
    moved = evaluate_attack_grid(target, loader, ["pgd"], grid, "cpu", progress=False, source=unrelated)[0]
    itself = evaluate_attack_grid(unrelated, loader, ["pgd"], grid, "cpu", progress=False)[0]
    assert white["clean_acc"] == moved["clean_acc"] == 1.0
    assert white["adv_acc"] <= 0.2 and itself["success_rate"] is not None
    assert moved["adv_acc"] >= white["adv_acc"] + 0.4, (white["adv_acc"], moved["adv_acc"])


# --- universal ----------------------------------------------------------------------------------------------

class SinkDirection(nn.Module):
    """Three classes; class 2 is a 'sink' whose logit rises along one fixed sign pattern per modality, so one
    delta of L-inf budget 0.05 sends every clip there while a random-sign delta of that budget does not."""

    def __init__(self, modalities=("audio", "visual"), dtype=torch.float32) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        gen = torch.Generator().manual_seed(11)
        self.d_a = nn.Parameter(torch.randint(0, 2, (1, 48), generator=gen).to(dtype) * 2 - 1, requires_grad=False)
        self.d_v = nn.Parameter(torch.randint(0, 2, (3, 6, 6), generator=gen).to(dtype) * 2 - 1, requires_grad=False)
        self.w = nn.Parameter(torch.randn(3 * 6 * 6, 2, generator=gen).to(dtype), requires_grad=False)

    def forward(self, audio=None, visual=None) -> torch.Tensor:
        v = visual - 0.5
        base = v.flatten(1) @ self.w  # classes 0 and 1 from the frame content
        sink = 60.0 * (v * self.d_v).flatten(1).mean(1) - 1.5
        if "audio" in self.modalities:
            sink = sink + 60.0 * (audio * self.d_a).flatten(1).mean(1)
        return torch.cat([base, sink[:, None]], dim=1)


def sink_data(n: int, seed: int, modalities=("audio", "visual")):
    gen = torch.Generator().manual_seed(seed)
    x = {"visual": 0.5 + 0.1 * (torch.rand(n, 3, 6, 6, generator=gen) - 0.5)}
    if "audio" in modalities:
        x["audio"] = 0.1 * (torch.rand(n, 1, 48, generator=gen) - 0.5)
    return x


def fooling_rate(model, clean, adv) -> float:
    with torch.no_grad():
        return float((model(**clean).argmax(1) != model(**adv).argmax(1)).float().mean())


def test_universal_delta_is_one_tensor_within_budget_and_fools_a_model_with_a_weak_direction():
    model = SinkDirection()
    train, test = sink_data(64, seed=1), sink_data(32, seed=2)
    with torch.no_grad():
        y_train, y_test = model(**train).argmax(1), model(**test).argmax(1)
    assert not bool((y_test == 2).any())  # nothing is in the sink class before the attack
    eps = {"audio": 0.05, "visual": 0.05}
    fit_data = [{**{m: x[i:i + 10] for m, x in train.items()}, "label": y_train[i:i + 10]} for i in range(0, 64, 10)]
    uap = create_attack("universal", model, eps=eps, epochs=3, fit_batch=16, fit_data=fit_data)
    adv = uap(test, y_test)
    for m in ("audio", "visual"):
        delta = adv[m] - test[m]
        assert uap.delta[m].shape == test[m].shape[1:]  # one clip's shape: one tensor for every clip
        torch.testing.assert_close(delta, uap.delta[m].expand_as(delta), atol=1e-6, rtol=0)  # no clip at the bounds
        assert float(uap.delta[m].abs().max()) <= eps[m] + 1e-7
    gen = torch.Generator().manual_seed(3)
    rand = {m: (test[m] + eps[m] * (torch.randint(0, 2, test[m].shape[1:], generator=gen) * 2 - 1))
            for m in test}
    fooled, baseline = fooling_rate(model, test, adv), fooling_rate(model, test, rand)
    assert fooled >= 0.9 and baseline <= 0.2, (fooled, baseline)
    # fitting on batches of another size gives the same delta (it is re-batched to fit_batch clips)
    other = [{**{m: x[i:i + 7] for m, x in train.items()}, "label": y_train[i:i + 7]} for i in range(0, 64, 7)]
    again = create_attack("universal", model, eps=eps, epochs=3, fit_batch=16, fit_data=other)
    again(test, y_test)
    assert all(torch.allclose(again.delta[m], uap.delta[m], atol=1e-6, rtol=0) for m in eps)


def test_universal_matches_art_universal_perturbation_on_a_unimodal_model():
    art_evasion = pytest.importorskip("art.attacks.evasion")
    art_classifiers = pytest.importorskip("art.estimators.classification")
    model = SinkDirection(modalities=("visual",))
    train, test = sink_data(64, seed=1, modalities=("visual",)), sink_data(32, seed=2, modalities=("visual",))
    eps = 0.05
    with torch.no_grad():
        y_train, y_test = model(**train).argmax(1), model(**test).argmax(1)

    class Frames(nn.Module):  # ART calls model(x)
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(visual=x)

    clf = art_classifiers.PyTorchClassifier(model=Frames(model), loss=nn.CrossEntropyLoss(), input_shape=(3, 6, 6),
                                            nb_classes=3, clip_values=(0.0, 1.0), device_type="cpu")
    peer = art_evasion.UniversalPerturbation(clf, attacker="fgsm", attacker_params={"eps": eps, "norm": np.inf},
                                             delta=0.2, max_iter=10, eps=eps, norm=np.inf, batch_size=16,
                                             verbose=False)
    peer.generate(train["visual"].numpy())
    art_adv = np.clip(test["visual"].numpy() + peer.noise, 0.0, 1.0)
    art_rate = fooling_rate(model, test, {"visual": torch.from_numpy(art_adv).float()})
    ours = create_attack("universal", model, eps={"visual": eps}, epochs=3, fit_batch=16,
                         fit_data=[{"visual": train["visual"], "label": y_train}])
    our_rate = fooling_rate(model, test, ours(test, y_test))
    assert float(np.abs(peer.noise).max()) <= eps + 1e-6
    assert our_rate >= 0.9 and abs(our_rate - art_rate) <= 0.1, (our_rate, art_rate)


class CountingData:
    """A fit_data iterable that counts the passes made over it."""

    def __init__(self, batches) -> None:
        self.batches, self.passes = batches, 0

    def __iter__(self):
        self.passes += 1
        return iter(self.batches)


def test_delta_store_saves_the_fit_and_reuses_it_only_when_settings_match(tmp_path):
    model = SinkDirection()
    train, test = sink_data(32, seed=1), sink_data(8, seed=2)
    with torch.no_grad():
        y_train, y_test = model(**train).argmax(1), model(**test).argmax(1)
    run = RunDir(tmp_path / "run")
    first = run.evals / "e1"
    first.mkdir(parents=True)
    context = {"checkpoint_sha256": "abc", "list": "train.csv"}
    data = CountingData([{**train, "label": y_train}])
    eps = {"audio": 0.05, "visual": 0.05}
    store = DeltaStore(run, first, context)
    a = create_attack("universal", model, eps=eps, epochs=2, fit_data=data, store=store)
    a(test, y_test)
    assert data.passes == 2 and len(list(first.glob("universal_*.pt"))) == 1
    (first / "eval.json").write_text("{}")  # the evaluation finished
    second = run.evals / ".e2.partial"
    second.mkdir()
    store2 = DeltaStore(run, second, context)
    b = create_attack("universal", model, eps=eps, epochs=2, fit_data=data, store=store2)
    b(test, y_test)
    assert data.passes == 2 and b.fit_info == {"source": "reused"}  # no new pass over the data
    assert all(torch.equal(a.delta[m], b.delta[m]) for m in eps)
    assert len(list(second.glob("universal_*.pt"))) == 1 and list(store2.used.values())[0]["reused"]
    c = create_attack("universal", model, eps=eps, epochs=1, fit_data=data, store=DeltaStore(run, second, context))
    c(test, y_test)
    assert data.passes == 3  # other settings: fitted again
    d = create_attack("universal", model, eps=eps, epochs=2, fit_data=data,
                      store=DeltaStore(run, second, {**context, "checkpoint_sha256": "other"}))
    d(test, y_test)
    assert data.passes == 5  # another model: fitted again


def test_universal_refuses_snr_and_a_delta_outside_the_ball():
    model = SinkDirection()
    with pytest.raises(ValueError, match="snr"):
        create_attack("universal", model, eps={"audio": 30.0}, norm={"audio": "snr", "visual": "Linf"})
    with pytest.raises(ValueError, match="outside"):
        create_attack("universal", model, eps={"visual": 0.01}, delta={"visual": torch.full((3, 6, 6), 0.02)})


# --- the command line ------------------------------------------------------------------------------------------

def _args(media, ckpt: Path, run_id: str, *extra: str) -> List[str]:
    return ["--dataset", "synthetic", "--categories", ",".join(CATS),
            "--list_train", str(media["train"]), "--list_val", str(media["val"]), "--list_test", str(media["test"]),
            "--audio_path", str(media["audio_path"]), "--frame_path", str(media["frame_path"]),
            "--audLen", "4096", "--imgSize", "16", "--batch_size_per_gpu", "3", "--workers", "0",
            "--arch_sound", "anet_lite", "--arch_frame", "resnet10",
            "--ckpt", str(ckpt), "--id", run_id, "--no_progress", "--disp_iter", "0", "--seed", "1", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Fake media and one tiny concat run trained for one epoch."""
    root = tmp_path_factory.mktemp("transfer")
    media = make_fake_media(root / "media", CATS, clips_per_class=3, num_frames=2, seconds=0.5, img_hw=(24, 24),
                            seed=0)
    ckpt = root / "runs"
    assert main_attack.main(_args(media, ckpt, "a", "--num_epoch", "1", "--mode", "train")) == 0
    return media, ckpt


def _eval(runs, *extra: str) -> Path:
    media, ckpt = runs
    before = set(RunDir(ckpt / "a").eval_ids())
    assert main_attack.main(_args(media, ckpt, "a", "--mode", "eval", *extra)) == 0
    (new,) = set(RunDir(ckpt / "a").eval_ids()) - before
    return RunDir(ckpt / "a").eval_dir(new)


def test_cli_transfer_from_itself_equals_white_box_and_rows_name_the_source(runs):
    _, ckpt = runs
    grid = ["--eps", "visual=0.03,audio=0", "visual=0.03,audio=0.05", "--attack_steps", "2"]
    white = _eval(runs, "--attack_type", "pgd", *grid)
    moved = _eval(runs, "--attack_type", "pgd", *grid, "--transfer_from", str(ckpt / "a"))
    rw = json.loads((white / "results.json").read_text())
    rt = json.loads((moved / "results.json").read_text())
    assert [r["adv_acc"] for r in rw] == [r["adv_acc"] for r in rt]
    assert all(r["transfer_from"] == str(ckpt / "a") for r in rt) and "transfer_from" not in rw[0]
    rec = json.loads((moved / "eval.json").read_text())
    assert rec["transfer_from"]["checkpoint_sha256"] == rec["checkpoint_sha256"]


def test_cli_universal_saves_its_delta_with_the_list_and_reuses_it(runs):
    media, _ = runs
    flags = ["--attack_type", "universal", "--attack_args", "universal:epochs=1,fit_batch=4",
             "--eps", "visual=0.03,audio=0.05"]
    first = _eval(runs, *flags)
    (saved,) = first.glob("universal_*.pt")
    blob = torch.load(saved, weights_only=True)
    assert blob["key"]["list"] == str(media["train"]) and blob["key"]["media"]["files"] > 0
    assert blob["deltas"]["visual"].shape == (3, 1, 16, 16) and blob["deltas"]["audio"].shape == (1, 4096)
    assert float(blob["deltas"]["visual"].abs().max()) <= 0.03 + 1e-7
    assert list(json.loads((first / "eval.json").read_text())["universal"].values())[0]["reused"] is False
    second = _eval(runs, *flags, "--eval_batch_size", "2")  # result-neutral: the same delta is reused
    used = list(json.loads((second / "eval.json").read_text())["universal"].values())[0]
    assert used["reused"] is True
    rows = [json.loads((d / "results.json").read_text()) for d in (first, second)]
    assert rows[0][0]["adv_acc"] == rows[1][0]["adv_acc"]


def _source(runs, name: str, change) -> Path:
    """A copy of run a's folder under ``name`` whose checkpoint is changed by ``change(ck)``."""
    _, ckpt = runs
    folder = ckpt / name
    folder.mkdir(exist_ok=True)
    ck = torch.load(ckpt / "a" / "checkpoint_best.pth", weights_only=True)
    if change is not None:
        change(ck)
        torch.save(ck, folder / "checkpoint_best.pth")
    return folder


@pytest.mark.parametrize("name, change, words", [
    ("classes", lambda ck: ck.update(categories=["alpha", "gamma", "beta"]), "another order"),
    ("other", lambda ck: ck.update(categories=["alpha", "beta", "delta"]), "other classes"),
    ("audlen", lambda ck: ck["args"].update(audLen=8192), "--audLen 8192"),
    ("frames", lambda ck: ck["args"].update(num_frames=4), "--num_frames 4"),
    ("imgsize", lambda ck: ck["args"].update(imgSize=32), "--imgSize 32"),
    ("empty", None, "holds no checkpoint"),
])
def test_cli_bad_transfer_sources_exit_2_naming_the_flag(runs, capsys, name, change, words):
    media, ckpt = runs
    folder = _source(runs, name, change)
    before = sorted((ckpt / "a" / "evals").iterdir())
    code = run_cli(main_attack.main, _args(media, ckpt, "a", "--mode", "eval", "--attack_type", "pgd",
                                           "--transfer_from", str(folder)))
    err = capsys.readouterr().err
    assert code == 2 and "--transfer_from" in err and words in err, err
    assert sorted((ckpt / "a" / "evals").iterdir()) == before  # nothing written


@pytest.mark.parametrize("extra, words", [
    (["--transfer_from", "a"], "needs --attack_type"),
    (["--attack_type", "pgd", "--transfer_from", "nowhere"], "no run folder"),
])
def test_cli_transfer_from_without_an_attack_or_a_folder_exits_2(runs, capsys, extra, words):
    media, ckpt = runs
    code = run_cli(main_attack.main, _args(media, ckpt, "a", "--mode", "eval", *extra))
    err = capsys.readouterr().err
    assert code == 2 and "--transfer_from" in err and words in err, err
