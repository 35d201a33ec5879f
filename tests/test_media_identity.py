"""Media and evaluation identity (issue 21): broken media are found in pre-flight or exit 2 with one line;
an evaluation is reused only for the same media; banks and features are checked before anything is written;
an audio budget in dB is validated for what it means.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import soundfile as sf
import torch

import main_attack
import main_defense
from dataset.av_dataset import AVDataset
from dataset.errors import MediaError
from models.defense import MemoryBank, build_banks
from pipeline.config import get_args_parser, parse_config
from tests.conftest import run_argv
from utils.errors import UsageError, run_cli
from utils.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
CATS = ["alpha", "beta", "gamma"]


MEDIA = dict(clips_per_class=4, num_frames=6, seconds=1.0, img_hw=(48, 48), seed=3)  # the `media` fixture's


@pytest.fixture
def own_media(media, tmp_path) -> Dict[str, Path]:
    """A private copy of the media (the tests below break or replace files)."""
    root = tmp_path / "m"
    shutil.copytree(media["root"], root)
    return {k: root / Path(v).relative_to(media["root"]) if k != "root" else root for k, v in media.items()}


def argv(media, ckpt: Path, run_id: str, *extra: str):
    return run_argv(media, ckpt, run_id, *extra, cats=CATS, imgSize=16, arch_frame="resnet10", batch_size_per_gpu=3)


@pytest.fixture(scope="module")
def trained(media, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("runs")
    assert main_attack.main(argv(media, ckpt, "base", "--num_epoch", "1", "--lr_steps", "5", "--save_features",
                                 "--mode", "train")) == 0
    return ckpt


def cli(main, args, capsys):
    """Exit code and the "error:" lines of stderr (a handler of an earlier run's logging may write there too)."""
    code = run_cli(main, args)
    return code, [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def first_clip(media, split: str = "train"):
    """(wav path, frame folder) of the first clip of a list."""
    wav, frames, _ = Path(media[split]).read_text().splitlines()[0].split(",")
    return Path(f"{media['audio_path']}{wav}"), Path(f"{media['frame_path']}{frames}")


def write_wav_header(path: Path, channels: int, rate: int, data: bytes) -> None:
    """A PCM 16-bit RIFF/WAVE file with ``data`` as its sample bytes."""
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


# ------------------------------------------------------------------------------------------ case 4: truncated JPEG

def test_truncated_jpeg_is_a_media_error_naming_the_frame(own_media):
    _, folder = first_clip(own_media, "test")
    frame = folder / "000003.jpg"
    data = frame.read_bytes()
    frame.write_bytes(data[: len(data) * 2 // 3])  # libjpeg decodes this with a warning and grey rows
    ds = AVDataset(own_media["test"], own_media["audio_path"], own_media["frame_path"], CATS, split_train=False,
                   num_frames=6, aud_len=4096, img_size=16)
    with pytest.raises(MediaError, match="truncated JPEG") as info:
        ds[0]
    assert info.value.path == frame


def test_media_error_from_a_loader_worker_keeps_its_path_and_reason():
    from torch._utils import ExceptionWrapper

    try:
        raise MediaError("/x/a.mp4/000002.jpg", "truncated JPEG (10 bytes, no FF D9 end-of-image marker)")
    except MediaError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(MediaError) as info:
        wrapped.reraise()
    assert str(info.value.path) == "/x/a.mp4/000002.jpg" and info.value.reason.startswith("truncated JPEG")


# --------------------------------------------------------------------------------- case 14: pre-flight media checks

def _zero_jpeg(wav, frame):
    frame.write_bytes(b"")


def _not_jpeg(wav, frame):
    frame.write_bytes(b"GIF89a" + bytes(200))


def _truncated_jpeg(wav, frame):
    frame.write_bytes(frame.read_bytes()[:300])


def _stereo_wav(wav, frame):
    sf.write(str(wav), np.zeros((11025, 2), np.float32), 11025, subtype="PCM_16")


def _48k_wav(wav, frame):
    sf.write(str(wav), np.zeros(48000, np.float32), 48000, subtype="PCM_16")


def _empty_wav(wav, frame):
    write_wav_header(wav, 1, 11025, b"")


def _zero_wav(wav, frame):
    wav.write_bytes(b"")


@pytest.mark.parametrize("breaker,needle", [
    (_zero_jpeg, "empty file"), (_not_jpeg, "not a JPEG"), (_truncated_jpeg, "truncated JPEG"),
    (_stereo_wav, "2 channels"), (_48k_wav, "48000 Hz"), (_empty_wav, "no samples"), (_zero_wav, "unreadable audio"),
])
def test_broken_media_are_refused_in_preflight(own_media, tmp_path, capsys, breaker, needle):
    wav, folder = first_clip(own_media, "train")
    breaker(wav, folder / "000004.jpg")
    code, err = cli(main_attack.main, argv(own_media, tmp_path / "runs", "r", "--num_epoch", "1", "--mode", "train"),
                    capsys)
    assert code == 2 and len(err) == 1 and needle in err[0] and "--list_train" in err[0], err
    assert not (tmp_path / "runs" / "r").exists()


def test_media_error_at_load_time_is_one_line_exit_2_and_no_partial(own_media, trained):
    _, folder = first_clip(own_media, "test")
    (folder / "000003.jpg").write_bytes(b"\xff\xd8" + bytes(500) + b"\xff\xd9")  # passes pre-flight, cannot decode
    rd = RunDir(trained / "base")
    before = sorted(os.listdir(rd.evals)) if rd.evals.is_dir() else []
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(REPO / "main_attack.py"),
                           *argv(own_media, trained, "base", "--mode", "eval")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "000003.jpg" in err[0] and "unreadable image" in err[0]
    after = sorted(os.listdir(rd.evals)) if rd.evals.is_dir() else []
    assert after == before  # the staging folder is gone


# ------------------------------------------------------------------------------------ case 3: evaluation identity

def test_reuse_eval_and_crop_cache_follow_the_media(own_media, trained, capsys):
    base = argv(own_media, trained, "base", "--mode", "eval", "--reuse_eval")
    rd = RunDir(trained / "base")
    assert main_attack.main(base) == 0
    first = rd.eval_ids()
    capsys.readouterr()
    assert main_attack.main(base) == 0  # nothing changed: reused
    assert rd.eval_ids() == first and "same media fingerprint" in capsys.readouterr().err
    _, folder = first_clip(own_media, "test")
    frame = folder / "000003.jpg"
    frame.write_bytes((folder / "000001.jpg").read_bytes())  # another picture under the same name and list
    assert main_attack.main(base) == 0
    assert len(rd.eval_ids()) == len(first) + 1  # evaluated again
    rec = json.loads((rd.eval_dir(rd.eval_ids()[-1]) / "eval.json").read_text())
    assert rec["media"]["files"] == 3 * 7 and "mtime_ns" in rec["media"]["method"]

    from dataset.crop_cache import open_crop_cache

    def ds():
        return AVDataset(own_media["test"], own_media["audio_path"], own_media["frame_path"], CATS,
                         split_train=False, num_frames=6, aud_len=4096, img_size=16).set_transport(raw=True)

    cache_dir = trained / "crops"
    open_crop_cache(ds(), cache_dir)
    frame.write_bytes((folder / "000002.jpg").read_bytes())
    fresh = ds()[0]["visual"]
    cached = open_crop_cache(ds(), cache_dir)
    assert torch.equal(torch.from_numpy(cached[0]), fresh)


# ----------------------------------------------------------------------------- case 15: banks and features

@pytest.fixture
def bank_folder(trained, tmp_path) -> Path:
    banks = build_banks(RunDir(trained / "base").features, size=8)
    folder = tmp_path / "banks"
    folder.mkdir()
    for m, b in banks.items():
        b.save(RunDir(folder).bank(m))
    return folder


def _defense_args(media, trained, *extra):
    return argv(media, trained, "def", "--base_weights", str(RunDir(trained / "base").checkpoint_best), *extra)


def test_truncated_bank_is_refused_before_anything_is_written(media, trained, bank_folder, capsys):
    path = RunDir(bank_folder).bank("visual")
    path.write_bytes(path.read_bytes()[:200])
    code, err = cli(main_defense.main, _defense_args(media, trained, "--bank", str(bank_folder), "--mode", "eval"),
                    capsys)
    assert code == 2 and len(err) == 1 and "--bank" in err[0] and str(path) in err[0], err
    assert not (trained / "def").exists()


def test_bank_of_another_checkpoint_is_refused_before_anything_is_written(media, trained, bank_folder, capsys):
    path = RunDir(bank_folder).bank("audio")
    MemoryBank(torch.randn(8, 4), "0" * 64, modality="audio").save(path)
    code, err = cli(main_defense.main, _defense_args(media, trained, "--bank", str(bank_folder), "--mode", "eval"),
                    capsys)
    assert code == 2 and len(err) == 1 and "--bank" in err[0] and "0" * 64 in err[0], err
    assert not (trained / "def").exists()


def test_features_of_another_checkpoint_are_refused_before_anything_is_written(media, trained, tmp_path, capsys):
    blob = torch.load(RunDir(trained / "base").features, weights_only=True)
    blob["checkpoint_sha256"] = "f" * 64
    feats = tmp_path / "features.pt"
    torch.save(blob, feats)
    code, err = cli(main_defense.main, _defense_args(media, trained, "--features", str(feats), "--num_epoch", "1",
                                                     "--mode", "train"), capsys)
    assert code == 2 and len(err) == 1 and "--features" in err[0], err
    assert not (trained / "def").exists()  # no args.json, log.txt or tb/


def test_late_failure_in_defense_setup_removes_its_staging_folder(media, trained, bank_folder, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("defend failed")

    monkeypatch.setattr(main_defense, "defend", broken)
    with pytest.raises(RuntimeError, match="defend failed"):
        main_defense.main(_defense_args(media, trained, "--bank", str(bank_folder), "--mode", "eval"))
    evals = RunDir(trained / "def").evals
    assert not evals.exists() or os.listdir(evals) == []


# ------------------------------------------------------------------------------------- case 5: budgets in dB

def _cfg(media, tmp_path, *extra):
    return parse_config(get_args_parser(), argv(media, tmp_path, "r", "--mode", "eval", "--attack_type", "pgd",
                                                *extra))


@pytest.mark.parametrize("extra,flag", [
    (["--norm", "visual=Linf,audio=snr", "--eps", "visual=0.01,audio=0"], "--eps"),  # 0 dB is not "untouched"
    (["--norm", "visual=Linf,audio=snr", "--eps", "audio=30", "--sweep"], "--sweep"),  # dB on the eps axis
    (["--norm", "visual=Linf,audio=snr"], "--eps"),  # the default grid is in amplitude units
])
def test_snr_budgets_are_checked_for_what_they_mean(media, tmp_path, extra, flag):
    with pytest.raises(UsageError) as info:
        _cfg(media, tmp_path, *extra)
    assert info.value.flag == flag


def test_none_leaves_a_modality_untouched(media, tmp_path):
    cfg = _cfg(media, tmp_path, "--norm", "visual=Linf,audio=snr", "--eps", "visual=0.01,audio=none", "audio=20")
    assert cfg.eps_grid == ({"audio": 0.0, "visual": 0.01}, {"audio": 20.0, "visual": 0.0})
