"""The CRMT and robust_fusion heads through main_attack.py on fake media: CRMT's two steps (step two's
epochs after --num_epoch, its Lipschitz estimates recorded in the checkpoint), robust fusion's single-source
training, and their flags refused where they do not apply (exit 2 before any work)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import main_attack
from tests.conftest import run_argv
from utils.errors import run_cli

CATS = ["alpha", "beta", "gamma"]
MEDIA = dict(clips_per_class=3, num_frames=2, seconds=1.0, img_hw=(24, 24), seed=0)  # the `media` fixture's


def _args(media, ckpt: Path, run_id: str, *extra: str):
    return run_argv(media, ckpt, run_id, "--mode", "train", *extra, cats=CATS, imgSize=16, batch_size_per_gpu=6,
                    seed=1, arch_sound="anet_lite", arch_frame="resnet10", audLen=4096, num_epoch=1)


def _metrics(run: Path):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_crmt_two_steps(media, tmp_path):
    assert main_attack.main(_args(media, tmp_path, "crmt", "--arch_classifier", "crmt", "--crmt_rho", "1.0",
                                  "--crmt_step2_epochs", "1")) == 0
    tags = [(r["tag"], r["step"]) for r in _metrics(tmp_path / "crmt")]
    assert ("crmt_step2", 2) in tags, tags
    ck = torch.load(tmp_path / "crmt" / "checkpoint_last.pth", weights_only=False, map_location="cpu")
    assert ck["epoch"] == 2
    tau = ck["model"]["head.lipschitz"]
    assert tau.shape == (2, 3) and torch.isfinite(tau).all() and (tau > 0).all()
    best = torch.load(tmp_path / "crmt" / "checkpoint_best.pth", weights_only=False, map_location="cpu")
    assert best["epoch"] == 2  # step two's epoch is kept at equal validation accuracy


def test_robust_fusion_trains(media, tmp_path):
    assert main_attack.main(_args(media, tmp_path, "rf", "--arch_classifier", "robust_fusion",
                                  "--train_attack_steps", "1", "--robust_odd_weight", "0.5")) == 0
    assert (tmp_path / "rf" / "checkpoint_last.pth").is_file()


@pytest.mark.parametrize("extra, flag", [
    (["--crmt_rho", "1"], "--crmt_rho"),                                          # concat has no CRMT procedure
    (["--arch_classifier", "crmt", "--crmt_step2_epochs", "-1"], "--crmt_step2_epochs"),
    (["--arch_classifier", "robust_fusion", "--train_eps", "visual=0.01"], "--train_eps"),
    (["--arch_classifier", "robust_fusion", "--adv_train", "pgd"], "--adv_train"),
])
def test_bad_procedure_flags_exit_2(media, tmp_path, capsys, extra, flag):
    code = run_cli(main_attack.main, _args(media, tmp_path, "bad", *extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and flag in err[0], err
    assert not (tmp_path / "bad").exists()
