"""The synthetic dataset maker: class design, valid mp4 files, determinism, resume and bad arguments.

Runs a few 1 s clips (one per class); decodes them with the ffmpeg binary to raw frames and PCM.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest

from dataset import synthetic as S
from dataset.media import find_ffmpeg, partial_path
from utils.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_synthetic_dataset.py"
SECONDS = 1.0


def _load_script():
    spec = importlib.util.spec_from_file_location("make_synthetic_dataset", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


maker = _load_script()


def generate(out: Path, *extra: str, seed: int = 0, workers: int = 1) -> None:
    """One clip per class of SECONDS into ``out``."""
    maker.main(["--out", str(out), "--clips-per-class", "1", "--seconds", str(SECONDS), "--seed", str(seed),
                "--workers", str(workers), "--no_progress", *extra])


def clips(root: Path) -> Dict[str, Path]:
    """``<class>/<vid>`` -> path of every complete clip under ``root/videos``."""
    return {f"{p.parent.name}/{p.stem}": p for p in sorted((root / "videos").glob("*/*.mp4"))}


def decode(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Decoded (frames uint8 (T,H,W,3), audio int16 (N,)) of an mp4, through the ffmpeg binary."""
    ff = find_ffmpeg()
    run = lambda *a: subprocess.run([ff, "-v", "error", "-i", str(path), *a, "-"], capture_output=True, check=True)
    video = run("-map", "0:v", "-f", "rawvideo", "-pix_fmt", "rgb24").stdout
    audio = run("-map", "0:a", "-f", "s16le", "-ac", "1").stdout
    frames = np.frombuffer(video, np.uint8)
    side = S.VIDEO_SIZE
    assert frames.size % (side * side * 3) == 0, f"{path}: {frames.size} video bytes is not whole {side}px frames"
    return frames.reshape(-1, side, side, 3), np.frombuffer(audio, "<i2")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> Dict[str, Path]:
    """Three generations: seed 0 with 2 workers, seed 0 with 1 worker, seed 1."""
    out = {"a": tmp_path_factory.mktemp("seed0_w2"), "b": tmp_path_factory.mktemp("seed0_w1"),
           "c": tmp_path_factory.mktemp("seed1")}
    generate(out["a"], workers=2)
    generate(out["b"], workers=1)
    generate(out["c"], seed=1)
    return out


# ------------------------------------------------------------------------------------------ class design
def test_each_look_and_sound_in_exactly_two_classes() -> None:
    assert len(S.CLASSES) >= 8
    assert S.SYNTHETIC_CATEGORIES == [c.name for c in S.CLASSES]
    looks = Counter(c.look.name for c in S.CLASSES)
    sounds = Counter(c.sound.name for c in S.CLASSES)
    assert set(looks.values()) == {2} and set(sounds.values()) == {2}
    pairs = [(c.look.name, c.sound.name) for c in S.CLASSES]
    assert len(set(pairs)) == len(pairs)  # only the pair determines the class
    assert S.unimodal_ceiling(S.CLASSES, "look") == 0.5
    assert S.unimodal_ceiling(S.CLASSES, "sound") == 0.5
    assert S.unimodal_ceiling(S.CLASSES, "pair") == 1.0
    assert not {c.look.codepoint for c in S.CLASSES} & set(S.DISTRACTORS)


def test_design_check_rejects_broken_designs() -> None:
    broken = S.CLASSES + (S.SyntheticClass(S.LOOKS[0], S.SOUNDS[2]),)  # keyboard now in 3 classes
    with pytest.raises(ValueError, match="look must be in exactly 2 classes"):
        S.check_design(broken)
    with pytest.raises(ValueError, match="duplicate class names"):
        S.check_design(S.CLASSES + S.CLASSES[:1])
    with pytest.raises(ValueError, match="as many looks as sounds"):
        S.build_cycle(S.LOOKS, S.SOUNDS[:3])


def test_synthetic_spec_uses_these_categories() -> None:
    from dataset.specs import get_spec

    assert list(get_spec("synthetic").categories) == S.SYNTHETIC_CATEGORIES


def test_unknown_class_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="keyboard_piano"):
        S.render_clip("kazoo_solo", 0, 0, SECONDS)


# ------------------------------------------------------------------------------------------ files
def test_files_are_mp4_with_one_video_and_one_audio_stream(datasets) -> None:
    found = clips(datasets["a"])
    assert sorted(k.split("/")[0] for k in found) == sorted(S.SYNTHETIC_CATEGORIES)
    ff = find_ffmpeg()
    for clip_id, path in found.items():
        info = subprocess.run([ff, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
        streams = [l for l in info.splitlines() if l.strip().startswith("Stream #")]
        assert len(streams) == 2, f"{clip_id}: {streams}"
        assert sum("Video: h264" in s for s in streams) == 1 and sum("Audio: aac" in s for s in streams) == 1
        frames, audio = decode(path)
        assert frames.shape == (round(SECONDS * S.VIDEO_FPS), S.VIDEO_SIZE, S.VIDEO_SIZE, 3), clip_id
        assert audio.size == round(SECONDS * S.AUDIO_RATE), clip_id
        assert audio.std() > 30, f"{clip_id}: audio is (nearly) silent"
        assert np.abs(frames[1:].astype(int) - frames[:-1]).mean() > 1, f"{clip_id}: frames do not change"
    assert not list((datasets["a"] / "videos").rglob(".*")), "temporary files left behind"
    meta = json.loads((datasets["a"] / maker.META_NAME).read_text())
    assert meta["seed"] == 0 and meta["categories"] == S.SYNTHETIC_CATEGORIES


# ------------------------------------------------------------------------------------------ determinism
def test_same_seed_same_clips_whatever_the_workers(datasets) -> None:
    a, b = clips(datasets["a"]), clips(datasets["b"])
    assert a.keys() == b.keys() and len(a) == len(S.SYNTHETIC_CATEGORIES)
    for clip_id in a:
        fa, aa = decode(a[clip_id])
        fb, ab = decode(b[clip_id])
        assert np.array_equal(fa, fb) and np.array_equal(aa, ab), clip_id
        assert a[clip_id].read_bytes() == b[clip_id].read_bytes(), f"{clip_id}: bytes differ"


def test_other_seed_other_clips(datasets) -> None:
    a, c = clips(datasets["a"]), clips(datasets["c"])
    assert a.keys() == c.keys()
    for clip_id in a:
        fa, aa = decode(a[clip_id])
        fc, ac = decode(c[clip_id])
        assert not np.array_equal(fa, fc), f"{clip_id}: same frames under another seed"
        assert not np.array_equal(aa, ac), f"{clip_id}: same audio under another seed"


def test_classes_sharing_a_sound_are_not_copies(datasets) -> None:
    """Two classes with the same sound family get independent melodies (the class is in the RNG seed)."""
    a = clips(datasets["a"])
    _, x = decode(a["keyboard_strings/keyboard_strings_0000"])
    _, y = decode(a["violin_strings/violin_strings_0000"])
    assert not np.array_equal(x, y)


# ------------------------------------------------------------------------------------------ resume
def test_resume_skips_complete_clips_and_redoes_leftovers(datasets, tmp_path, capsys) -> None:
    out = tmp_path / "resume"
    shutil.copytree(datasets["a"], out)
    paths = clips(out)
    redo_id = "violin_brass/violin_brass_0000"
    redo = paths.pop(redo_id)
    redo.unlink()
    partial_path(redo).write_bytes(b"half-written by a killed run")  # leftover temporary
    before = {k: (p.stat().st_ino, p.stat().st_mtime_ns) for k, p in paths.items()}
    capsys.readouterr()
    generate(out)
    summary = capsys.readouterr().out
    assert "1 clip(s) written, 7 skipped" in summary, summary
    assert "1 leftover temporaries removed" in summary, summary
    after = {k: (p.stat().st_ino, p.stat().st_mtime_ns) for k, p in paths.items()}
    assert after == before, "complete clips were rewritten"
    assert not partial_path(redo).exists()
    assert redo.read_bytes() == clips(datasets["a"])[redo_id].read_bytes()


def test_other_settings_in_the_same_folder_are_refused(datasets, tmp_path) -> None:
    out = tmp_path / "mixed"
    out.mkdir()
    shutil.copy(datasets["a"] / maker.META_NAME, out / maker.META_NAME)
    with pytest.raises(UsageError, match=r"^--out: .*synthetic\.json.*seed: 0 there vs 5 now"):
        generate(out, seed=5)
    assert not (out / "videos").exists()


# ------------------------------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("flag,value,message", [
    ("--clips-per-class", "-3", "--clips-per-class: must be >= 1"),
    ("--clips-per-class", "0", "--clips-per-class: must be >= 1"),
    ("--seconds", "0", "--seconds: must be in"),
    ("--seconds", "0.01", "--seconds: 0.01 gives no video frame"),
    ("--seed", "-1", "--seed: must be >= 0"),
    ("--workers", "0", "--workers: must be >= 1"),
])
def test_bad_arguments_name_the_flag(tmp_path, flag, value, message) -> None:
    with pytest.raises(UsageError, match=message) as err:
        maker.main(["--out", str(tmp_path / "x"), flag, value, "--no_progress"])
    assert err.value.flag == flag
    assert not (tmp_path / "x").exists()


def test_script_reports_user_errors_in_one_line(tmp_path) -> None:
    """The entry point turns a user error into one 'error:' line and exit status 2 (no traceback)."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x"), "--seed", "-1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: --seed: must be >= 0, got -1"]
    meta = tmp_path / "m"
    meta.mkdir()
    (meta / maker.META_NAME).write_bytes(b"\xff\xfe not json")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(meta), "--no_progress"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "synthetic.json" in proc.stderr


def test_cli_negative_clips_exits_nonzero_with_message(tmp_path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x"), "--clips-per-class", "-2"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr == "error: --clips-per-class: must be >= 1, got -2\n"
