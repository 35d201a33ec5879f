"""Extraction with awkward paths and a killed run (issue 21): each run's skip report is its own, names with
'%' give frames, and a run killed with SIGKILL leaves neither workers nor a held lock behind."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from dataset import extraction, media
from dataset.errors import ExtractionBusyError

REPO = Path(__file__).resolve().parents[1]
FPS = 8  # docs/paper.md, Preprocessing and layout


def _make_video(path: Path, seconds: float = 1.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([media.find_ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=size=32x24:rate=25:duration={seconds}", "-f", "lavfi", "-i",
                    f"sine=frequency=440:sample_rate=22050:duration={seconds}", "-c:v", "libx264", "-preset",
                    "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)], check=True)


def _extract(script: str, *args: str, env: dict = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *args, "--workers", "1",
                           "--no_progress"], capture_output=True, text=True, env=env)


def _report(path: Path) -> dict:
    with open(path, newline="") as f:
        return {r["clip_id"]: r["reason"] for r in csv.DictReader(f)}


def test_percent_in_video_and_class_names_gives_frames(tmp_path: Path) -> None:
    """'50%done.mp4' was skipped as 'ffmpeg failed decoding video (No such file...)' while its audio was
    extracted: the image2 output pattern read the '%'. Now both outputs exist."""
    videos, root = tmp_path / "videos", tmp_path / "root"
    _make_video(videos / "a%d" / "50%done.mp4")
    for script in ("extract_frames.py", "extract_audio.py"):
        proc = _extract(script, "--video_path", str(videos), "--media_root", str(root))
        assert proc.returncode == 0 and "1 extracted" in proc.stdout, proc.stdout + proc.stderr
    n = media.check_frame_dir(root / "data" / "frames" / "a%d" / "50%done.mp4")
    assert abs(n - FPS) <= 1
    assert (root / "data" / "audio" / "a%d" / "50%done.wav").is_file()
    assert _report(root / "data" / "skipped_frames.csv") == {}


def test_sibling_output_folders_keep_their_own_skip_reports(tmp_path: Path) -> None:
    """--out_dir X/frames_a and X/frames_b both wrote X/skipped_frames.csv; the second overwrote the first."""
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "X"
    _make_video(a / "cls" / "good.mp4")
    (a / "cls" / "bad_a.mp4").write_text("not a video\n")
    _make_video(b / "cls" / "good.mp4")
    (b / "cls" / "bad_b.mp4").write_bytes(b"")
    for videos, name in ((a, "frames_a"), (b, "frames_b")):
        proc = _extract("extract_frames.py", "--video_path", str(videos), "--out_dir", str(out / name))
        assert proc.returncode == 0, proc.stderr
        assert f"skip report: {out / f'skipped_frames_{name}.csv'}" in proc.stdout
    assert set(_report(out / "skipped_frames_frames_a.csv")) == {"cls/bad_a"}
    assert set(_report(out / "skipped_frames_frames_b.csv")) == {"cls/bad_b"}
    assert extraction.default_report(tmp_path / "data" / "frames", "frames") == tmp_path / "data" / "skipped_frames.csv"


def _children(pid: int) -> List[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_a_pool_run_leaves_no_worker_and_no_held_lock(tmp_path: Path) -> None:
    """kill -9 of extract_frames.py --workers 2 left its pool workers running (holding .extract.lock), so every
    new run said 'another extraction is running' for a dead pid. Now the workers (and their ffmpeg) die with
    the run and the lock is free at once."""
    videos, out, gate = tmp_path / "videos", tmp_path / "frames", tmp_path / "gate"
    _make_video(videos / "cls" / "v1.mp4")
    _make_video(videos / "cls" / "v2.mp4")
    wrapper = tmp_path / "gated_ffmpeg"  # ffmpeg that waits for the gate: the run stays mid-work
    wrapper.write_text(f"#!/bin/sh\nwhile [ ! -e '{gate}' ]; do sleep 0.05; done\nexec '{media.find_ffmpeg()}' \"$@\"\n")
    wrapper.chmod(0o755)
    env = {**os.environ, "IMAGEIO_FFMPEG_EXE": str(wrapper)}
    run = subprocess.Popen([sys.executable, str(REPO / "scripts" / "extract_frames.py"), "--video_path", str(videos),
                            "--out_dir", str(out), "--workers", "2", "--no_progress"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    workers: List[int] = []
    try:
        deadline = time.monotonic() + 60
        while True:  # both workers started and each inside its (gated) ffmpeg probe
            workers = _children(run.pid)
            if len(workers) >= 2 and all(_children(w) for w in workers):
                break
            assert run.poll() is None and time.monotonic() < deadline, "the pool never started"
            time.sleep(0.05)
        run.kill()
        run.wait()
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers), "pool workers outlived the killed run"
        try:
            with extraction.extraction_lock(out):
                pass
        except ExtractionBusyError as err:
            pytest.fail(f"the lock is still held after the run was killed: {err}")
    finally:
        gate.touch()
        for pid in workers:  # only on failure: the workers this test's run started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
