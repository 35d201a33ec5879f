"""Training and evaluation through main_attack.py: run folder, checkpoints, resume after kill -9,
DDP (gloo, 2 processes) evaluation equal to one process, and the bad-input errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import main_attack
from tests.conftest import run_argv
from utils.errors import UsageError
from utils.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
CATS = ["alpha", "beta", "gamma"]


MEDIA = dict(clips_per_class=6, num_frames=6, seconds=1.0, img_hw=(40, 40), seed=0)  # the `media` fixture's


def base_args(media, ckpt: Path, run_id: str, *extra: str):
    return run_argv(media, ckpt, run_id, *extra, cats=CATS, imgSize=32, batch_size_per_gpu=4, seed=3)


def read_metrics(run: Path, tag: str):
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if json.loads(l)["tag"] == tag]


def eval_metrics(run: Path, tag: str, which: int = -1):
    """Metrics of the run's ``which``-th finished evaluation (oldest first)."""
    rd = RunDir(run)
    return read_metrics(rd.eval_dir(rd.eval_ids()[which]), tag)


def test_train_then_eval_writes_run_folder(media, tmp_path):
    args = base_args(media, tmp_path, "r", "--arch_classifier", "concat", "--num_epoch", "2", "--lr_steps", "1")
    assert main_attack.main(args + ["--mode", "train", "--save_features"]) == 0
    run = tmp_path / "r"
    for f in ("args.json", "metrics.jsonl", "checkpoint_last.pth", "checkpoint_best.pth", "features_train.pt"):
        assert (run / f).is_file(), f
    ck = torch.load(run / "checkpoint_last.pth", weights_only=True)
    assert set(ck) >= {"model", "optimizer", "scheduler", "epoch", "best_acc", "args", "rng_state", "arch"}
    assert ck["epoch"] == 2
    feats = torch.load(run / "features_train.pt", weights_only=True)
    assert feats["audio"].shape[0] == feats["visual"].shape[0] == len(feats["ids"]) == 12
    assert len(feats["checkpoint_sha256"]) == 64
    ck = torch.load(run / "checkpoint_best.pth", weights_only=True)
    assert ck["categories"] == CATS
    assert (run / "done_train.json").is_file()
    assert main_attack.main(args + ["--mode", "eval"]) == 0
    test = eval_metrics(run, "test")
    assert len(test) == 1 and 0.0 <= test[-1]["acc"] <= 1.0 and test[-1]["n"] == 6
    assert read_metrics(run, "test")[-1]["acc"] == test[-1]["acc"]  # the training run's own test pass
    # the run folder is never overwritten by a second training run
    with pytest.raises(UsageError, match="--resume"):
        main_attack.main(args + ["--mode", "train"])


def test_lr_steps_scale_learning_rates():
    from pipeline.build import set_epoch_lr

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 1e-3, "initial_lr": 1e-3}], lr=1e-3)
    assert set_epoch_lr(opt, [2, 4], 1) == 1.0
    set_epoch_lr(opt, [2, 4], 4)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)


def _run_cli(args, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(REPO / "main_attack.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def test_resume_after_kill_matches_uninterrupted_run(media, tmp_path):
    common = ["--arch_classifier", "sum", "--num_epoch", "3", "--lr_steps", "2", "--mode", "train"]
    full = _run_cli(base_args(media, tmp_path, "full", *common))
    out = full.communicate(timeout=600)[0].decode()
    assert full.returncode == 0, out

    killed = _run_cli(base_args(media, tmp_path, "killed", *common))
    last = tmp_path / "killed" / "checkpoint_last.pth"
    deadline = time.time() + 600
    while not last.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert killed.poll() is None, "the run ended before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert torch.load(last, weights_only=True)["epoch"] < 3
    resumed = _run_cli(base_args(media, tmp_path, "killed", *common, "--resume"))
    out = resumed.communicate(timeout=600)[0].decode()
    assert resumed.returncode == 0, out

    a = torch.load(tmp_path / "full" / "checkpoint_last.pth", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    va = [r["acc"] for r in read_metrics(tmp_path / "full", "val")]
    vb = [r["acc"] for r in read_metrics(tmp_path / "killed", "val")]
    assert va[-1] == vb[-1]
    assert read_metrics(tmp_path / "full", "test")[-1]["acc"] == read_metrics(tmp_path / "killed", "test")[-1]["acc"]


def test_ddp_two_process_eval_equals_single_process(media, tmp_path):
    train = base_args(media, tmp_path, "ddp", "--arch_classifier", "concat", "--num_epoch", "1", "--mode", "train")
    assert main_attack.main(train) == 0
    ev = base_args(media, tmp_path, "ddp", "--arch_classifier", "concat", "--mode", "eval",
                   "--batch_size_per_gpu", "2", "--attack_type", "fgsm,pgd", "--attack_steps", "2",
                   "--eps", "visual=0,audio=0.01", "visual=0.01,audio=0.01")
    assert main_attack.main(ev) == 0
    single = eval_metrics(tmp_path / "ddp", "test", 0)[-1]
    rows_single = json.loads((RunDir(tmp_path / "ddp").latest_eval() / "results.json").read_text())
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(29500 + os.getpid() % 1000), str(REPO / "main_attack.py"), *ev],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(RunDir(tmp_path / "ddp").eval_ids()) == 2
    multi = eval_metrics(tmp_path / "ddp", "test", 1)[-1]
    assert multi["n"] == single["n"] == 6
    assert multi["acc"] == single["acc"] and multi["loss"] == pytest.approx(single["loss"], rel=1e-6)
    rows_multi = json.loads((RunDir(tmp_path / "ddp").latest_eval() / "results.json").read_text())
    assert len(rows_multi) == len(rows_single) == 4
    for a, b in zip(rows_single, rows_multi):
        for key in ("attack", "eps_audio", "eps_visual", "n_samples", "clean_acc", "adv_acc", "success_rate",
                    "max_delta_audio", "max_delta_visual"):
            assert a[key] == b[key], (key, a, b)


def test_bad_inputs_fail_clearly(media, tmp_path):
    with pytest.raises(UsageError, match="cls_num"):
        main_attack.main(base_args(media, tmp_path, "x", "--cls_num", "5", "--mode", "train"))
    # a category present in the index but not in --categories
    with pytest.raises(Exception, match="gamma"):
        main_attack.main(base_args(media, tmp_path, "y", "--categories", "alpha,beta", "--mode", "train",
                                   "--num_epoch", "1"))
    # a checkpoint from another architecture
    assert main_attack.main(base_args(media, tmp_path, "z", "--arch_classifier", "sum", "--num_epoch", "1",
                                      "--mode", "train")) == 0
    with pytest.raises(UsageError, match="different model"):
        main_attack.main(base_args(media, tmp_path, "z", "--arch_classifier", "concat", "--mode", "eval",
                                   "--weights", str(tmp_path / "z" / "checkpoint_best.pth")))
    with pytest.raises(UsageError, match="GPU"):
        main_attack.main(base_args(media, tmp_path, "w", "--amp", "--device", "cpu", "--mode", "train"))


def test_nan_loss_stops_with_error():
    from pipeline.engine import LogitsAndFeatures, TrainConfig, train_one_epoch

    class NaNModel(torch.nn.Module):
        modalities = ("audio",)

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(4, 2)

        def features(self, audio=None, visual=None):
            return {"audio": self.w(audio.flatten(1)) * float("nan")}

        def classify(self, feats):
            return feats["audio"]

    net = LogitsAndFeatures(NaNModel())
    batch = {"audio": torch.randn(2, 1, 4), "label": torch.tensor([0, 1])}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(FloatingPointError, match="epoch 7, iteration 0"):
        train_one_epoch(net, [batch], opt, torch.device("cpu"), 7, TrainConfig(progress=False))


def test_nan_loss_names_the_step_range_between_reads():
    from pipeline.engine import LogitsAndFeatures, TrainConfig, train_one_epoch

    class LateNaN(torch.nn.Module):
        modalities = ("audio",)

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(4, 2)
            self.calls = 0

        def features(self, audio=None, visual=None):
            self.calls += 1
            return {"audio": self.w(audio.flatten(1)) * (float("nan") if self.calls == 6 else 1.0)}

        def classify(self, feats):
            return feats["audio"]

    net = LogitsAndFeatures(LateNaN())
    batch = {"audio": torch.randn(2, 1, 4), "label": torch.tensor([0, 1])}
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    # metrics are read (one host sync) every --disp_iter = 4 steps: the NaN of step 5 is found at step 8
    with pytest.raises(FloatingPointError, match="epoch 2, iterations 5..8"):
        train_one_epoch(net, [batch] * 10, opt, torch.device("cpu"), 2, TrainConfig(progress=False, disp_iter=4))
