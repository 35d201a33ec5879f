"""A missing input (models/missing.py, --missing_modality, --missing_fill, --modality_dropout): each fill
checked by hand, the attention head's fill path, modality dropout's rate with a seeded generator, an
audio-only model unaffected by a missing visual input, bad flags refused with exit 2 naming the flag, and
one small train + evaluate through main_attack.py."""
from __future__ import annotations

import json

import pytest
import torch

import main_attack
from models.missing import MISSING_FILLS, dropout_mask, training_means
from pipeline import config as config_mod
from pipeline.config import get_args_parser
from pipeline.preflight import check_missing_fill
from reporting.attack_choices import read_choices
from reporting.per_sample import MISSING_KEYS, read_per_clip
from reporting.results import read_results
from tests.conftest import run_argv
from tests.test_heads_contract import _model as stub_model
from utils.errors import UsageError, run_cli
from utils.rundir import RunDir

CATS = ["alpha", "beta", "gamma"]
MEDIA = dict(clips_per_class=4, num_frames=6, seconds=1.0, img_hw=(32, 32), seed=1)


def batch(b: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, 32, generator=gen) * 2 - 1, torch.rand(b, 3, 2, 4, 4, generator=gen)


def test_zero_and_mean_fills_by_hand_on_the_concat_head():
    torch.manual_seed(0)
    model = stub_model("concat").eval()
    a, v = batch()
    f_a = model.audio_net(a)
    fc = model.head.fc  # concat reads [f_visual; f_audio]
    with torch.no_grad():
        zeros = model.classify(model.features_absent(a, None, absent={"visual": torch.ones(4, dtype=torch.bool)}))
        expect = f_a @ fc.weight[:, 5:].T + fc.bias  # the visual columns multiply 0
        torch.testing.assert_close(zeros, expect)
        mean_v = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0])
        mean = model.classify(model.features_absent(a, None, absent={"visual": torch.ones(4, dtype=torch.bool)},
                                                    fill="mean", train_mean={"visual": mean_v}))
        torch.testing.assert_close(mean, expect + fc.weight[:, :5] @ mean_v)
        # per sample: only the marked samples lose their input
        mask = torch.tensor([True, False, False, True])
        mixed = model.classify(model.features_absent(a, v, absent={"visual": mask}))
        full = model(audio=a, visual=v)
        torch.testing.assert_close(mixed[~mask], full[~mask])
        torch.testing.assert_close(mixed[mask], expect[mask])


def test_training_mean_and_batch_mean():
    feats = {"audio": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "visual": torch.tensor([[0.0], [1.0], [5.0]])}
    means = training_means(feats, ("audio", "visual"))
    assert means["audio"].tolist() == [2.0, 3.0] and means["visual"].tolist() == [2.0]
    batch_feats = torch.tensor([[1.0, -1.0], [3.0, 1.0]])
    assert MISSING_FILLS.get("mean")(batch_feats).tolist() == [2.0, 0.0]  # training: the batch's mean
    assert MISSING_FILLS.get("zeros")(batch_feats).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="no \\(N, D\\) visual"):
        training_means({"audio": feats["audio"]}, ("audio", "visual"))


def test_attention_head_attends_with_the_filled_audio_feature():
    torch.manual_seed(0)
    model = stub_model("attention").eval()
    a, v = batch()
    with torch.no_grad():
        got = model.classify(model.features_absent(None, v, absent={"audio": torch.ones(4, dtype=torch.bool)}))
        f_audio = torch.zeros(4, 6)
        att, _ = model.head.attend(f_audio, model.visual_net(v))
        torch.testing.assert_close(got, model.classify({"audio": f_audio, "visual": att}))
        no_visual = model.classify(model.features_absent(a, None, absent={"visual": torch.ones(4, dtype=torch.bool)}))
        torch.testing.assert_close(no_visual, model.classify({"audio": model.audio_net(a), "visual": torch.zeros(4, 5)}))


def test_an_audio_only_model_is_unaffected_by_a_missing_visual_input():
    torch.manual_seed(0)
    model = stub_model("audio").eval()
    a, _ = batch()
    with torch.no_grad():
        out = model.classify(model.features_absent(a, None, absent={"visual": torch.ones(4, dtype=torch.bool)}))
        assert torch.equal(out, model(audio=a))


def test_an_unsupported_fill_is_refused_by_the_head(monkeypatch):
    torch.manual_seed(0)
    model = stub_model("concat")
    monkeypatch.setattr(type(model.head), "missing_fills", ("zeros",))
    a, _ = batch()
    with pytest.raises(ValueError, match="supports the missing-input fills zeros, not 'mean'"):
        model.features_absent(a, None, absent={"visual": torch.ones(4, dtype=torch.bool)}, fill="mean")


def test_modality_dropout_rate_with_a_seeded_generator():
    n, p = 40000, 0.3
    mask = dropout_mask(n, ("audio", "visual"), p, torch.Generator().manual_seed(7))
    again = dropout_mask(n, ("audio", "visual"), p, torch.Generator().manual_seed(7))
    assert all(torch.equal(mask[m], again[m]) for m in mask)
    assert not bool((mask["audio"] & mask["visual"]).any())  # never both
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(float((mask["audio"] | mask["visual"]).double().mean()) - p) < 4 * sd
    for m in mask:  # each modality half of the drops
        assert abs(float(mask[m].double().mean()) - p / 2) < 4 * (p / 2 * (1 - p / 2) / n) ** 0.5
    assert not any(v.any() for v in dropout_mask(100, ("audio", "visual"), 0.0, torch.Generator()).values())
    assert dropout_mask(10, ("audio",), 0.5, torch.Generator()) == {}
    with pytest.raises(ValueError, match="\\[0, 1\\)"):
        dropout_mask(10, ("audio", "visual"), 1.0, torch.Generator())


BASE = ["--dataset", "synthetic", "--categories", "alpha,beta,gamma", "--list_train", "a.csv", "--list_val",
        "b.csv", "--list_test", "c.csv"]


@pytest.mark.parametrize("extra,needle", [
    (["--mode", "eval", "--missing_modality", "sound"], "--missing_modality"),
    (["--mode", "eval", "--missing_modality", "audio", "audio"], "--missing_modality"),
    (["--mode", "train", "--missing_modality", "audio"], "--missing_modality"),
    (["--mode", "eval", "--missing_modality", "audio", "--missing_fill", "median"], "--missing_fill"),
    (["--mode", "eval", "--missing_fill", "mean"], "--missing_fill"),
    (["--mode", "train", "--modality_dropout", "1.5"], "--modality_dropout"),
    (["--mode", "train", "--modality_dropout", "0.3", "--arch_classifier", "audio"], "--modality_dropout"),
    (["--mode", "eval", "--modality_dropout", "0.3"], "--modality_dropout"),
])
def test_bad_missing_flags_exit_2_naming_the_flag(tmp_path, capsys, extra, needle):
    try:
        code = run_cli(main_attack.main, BASE + ["--ckpt", str(tmp_path), "--id", "r"] + extra)
    except SystemExit as e:  # argparse's own choices check exits 2 with its usage line
        code = e.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and needle in err[-1], err
    assert not (tmp_path / "r").exists()


def test_mean_fill_needs_this_checkpoints_training_features(tmp_path):
    cfg = config_mod.parse_config(get_args_parser(), BASE + ["--ckpt", str(tmp_path), "--id", "r", "--mode", "eval",
                                                            "--missing_modality", "visual", "--missing_fill", "mean"])
    rd = RunDir(tmp_path / "r")
    rd.root.mkdir()
    rd.checkpoint_best.write_bytes(b"weights")
    with pytest.raises(UsageError, match="does not exist: train with --save_features"):
        check_missing_fill(cfg)
    torch.save({"audio": torch.ones(2, 3), "visual": torch.ones(2, 3), "labels": torch.zeros(2),
                "checkpoint_sha256": "0" * 64}, rd.features)
    with pytest.raises(UsageError, match="another checkpoint"):
        check_missing_fill(cfg)


def test_train_with_modality_dropout_then_evaluate_without_each_input_and_in_time(media, tmp_path):
    common = dict(cats=CATS, imgSize=16, arch_frame="resnet10", batch_size_per_gpu=3, arch_sound="anet_lite")
    assert main_attack.main(run_argv(media, tmp_path, "r", "--num_epoch", "1", "--lr_steps", "5", "--save_features",
                                     "--modality_dropout", "0.5", "--missing_fill", "mean", "--mode", "train",
                                     **common)) == 0
    assert json.loads((tmp_path / "r" / "args.json").read_text())["modality_dropout"] == 0.5
    # the temporal attacks run from the command line in the same evaluation, on 2-frame clips
    assert main_attack.main(run_argv(media, tmp_path, "r", "--mode", "eval", "--missing_modality", "none", "audio",
                                     "visual", "--missing_fill", "mean", "--num_frames", "2", "--attack_type",
                                     "sparse_time,time_shared,tia", "--eps", "visual=0.006,audio=0.006",
                                     "--attack_steps", "1", "--attack_args", "sparse_time:frames=1", **common)) == 0
    (folder,) = [p for p in (tmp_path / "r" / "evals").iterdir() if p.is_dir()]
    rows = read_results(folder / "missing_results.json")
    assert [(r["missing_input"], r["missing_fill"]) for r in rows] == [("none", "-"), ("audio", "mean"),
                                                                      ("visual", "mean")]
    assert rows[0]["missing_acc"] == rows[0]["clean_acc"] and all(r["n_samples"] == rows[0]["n_samples"] for r in rows)
    assert all(0.0 <= r["missing_acc"] <= 1.0 for r in rows)
    per_clip = read_per_clip(folder / "missing_per_sample.json", MISSING_KEYS)  # every row's clips, for the report
    assert sorted(per_clip) == sorted((r["missing_input"], r["missing_fill"]) for r in rows)
    for r in rows:
        clips = per_clip[(r["missing_input"], r["missing_fill"])]
        assert len(clips) == r["n_samples"] and sum(clips.values()) / len(clips) == pytest.approx(r["missing_acc"])
    attacked = read_results(folder / "results.json")
    assert sorted(r["attack"] for r in attacked) == ["sparse_time", "tia", "time_shared"]
    sparse = next(r for r in attacked if r["attack"] == "sparse_time")  # its chosen frames, per clip and summed
    (chosen,) = [c for k, c in read_choices(folder / "attack_choices.json").items() if k[0] == "sparse_time"]
    assert chosen["segments"] == {"audio": 2, "visual": 2} and len(chosen["support"]) == sparse["n_samples"]
    assert all(len(v) == 1 for c in chosen["support"].values() for v in c.values())  # frames=1
    assert sparse["segments_chosen"].startswith("audio ") and "; visual " in sparse["segments_chosen"]
    assert all(r["max_delta_visual"] <= 0.006 + 1e-6 and r["max_delta_audio"] <= 0.006 + 1e-6 for r in attacked)
    assert json.loads((folder / "eval.json").read_text())["missing"] == {"fill": "mean",
                                                                          "inputs": ["none", "audio", "visual"]}


def test_a_run_recorded_before_these_flags_resumes_at_their_defaults():
    cfg = config_mod.parse_config(get_args_parser(), BASE + ["--mode", "train"])
    recorded = json.loads(json.dumps(cfg.as_dict(), default=str))
    for key in ("modality_dropout", "missing_modality", "missing_fill"):
        del recorded[key]
    assert config_mod.resume_changes(recorded, cfg) == ({}, {})
    changed = config_mod.parse_config(get_args_parser(), BASE + ["--mode", "train", "--modality_dropout", "0.2"])
    assert "--modality_dropout" in config_mod.resume_changes(recorded, changed)[1]


def test_the_eval_hash_is_unchanged_by_these_flags_at_their_defaults():
    plain = config_mod.parse_config(get_args_parser(), BASE + ["--mode", "eval"])
    ident = config_mod.eval_identity(plain)
    assert not {"modality_dropout", "missing_modality", "missing_fill"} & set(ident)
    missing = config_mod.parse_config(get_args_parser(), BASE + ["--mode", "eval", "--missing_modality", "audio"])
    assert list(config_mod.eval_identity(missing)["missing_modality"]) == ["audio"]
