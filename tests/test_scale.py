"""The GPU-scale path on CPU stand-ins (issue: real scale): a failing rank ends a torchrun job, attacks stay
fp32 under autocast, channels_last and eval batch size in evaluation, the fast loader's exact inputs, and
the CPU-runnable part of benchmarks/gpu_check.sh."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fake_media import make_fake_media

REPO = Path(__file__).resolve().parents[1]
CATS = ["alpha", "beta", "gamma"]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    return make_fake_media(root, CATS, clips_per_class=6, num_frames=6, seconds=1.0, img_hw=(40, 40), seed=0)


def _args(media, ckpt: Path, run_id: str, *extra: str):
    return ["--dataset", "synthetic", "--categories", ",".join(CATS),
            "--list_train", str(media["train"]), "--list_val", str(media["val"]), "--list_test", str(media["test"]),
            "--audio_path", str(media["audio_path"]), "--frame_path", str(media["frame_path"]),
            "--audLen", "4096", "--imgSize", "32", "--batch_size_per_gpu", "2", "--workers", "0",
            "--ckpt", str(ckpt), "--id", run_id, "--no_progress", "--disp_iter", "0", "--seed", "3", *extra]


def test_corrupt_frame_on_one_rank_ends_the_torchrun_job(media, tmp_path):
    # Every frame of one training clip is corrupt: the rank that draws it raises while the other rank waits
    # in DDP's gradient all-reduce. Before the fix, cleanup() ran a barrier and the job hung for ever.
    first = Path(media["train"]).read_text().splitlines()[0].split(",")[1]
    folder = Path(str(media["frame_path"]) + first)
    for f in folder.glob("*.jpg"):
        f.write_bytes(b"not a jpeg")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(31500 + os.getpid() % 1000), str(REPO / "main_attack.py"),
                           *_args(media, tmp_path, "corrupt", "--arch_classifier", "concat", "--num_epoch", "2",
                                  "--mode", "train")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    took = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert took < 60, f"the job took {took:.0f} s to end\n{out[-3000:]}"
    assert str(folder) in out  # the failing file is named
    assert "without a barrier" in out
