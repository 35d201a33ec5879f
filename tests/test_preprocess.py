"""ffmpeg preprocessing: probing, frame/audio extraction layout and counts, resume, the skip report, and the
output folder's lock (a second concurrent run is refused, the first one's output stays complete)."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest

from dataset import extraction, media
from dataset.errors import ExtractionBusyError, MediaError

REPO = Path(__file__).resolve().parents[1]
FPS, RATE = 8, 11025

# name -> reason fragment expected in the skip report (frames / audio); None = extracted
BAD_FOR_FRAMES = {"cat/zero": "zero-length", "cat/text": "not a readable media file",
                  "dog/trunc": "moov atom not found", "dog/trunc_fs": "truncated", "cat/sound": "no video stream"}
BAD_FOR_AUDIO = {"cat/zero": "zero-length", "cat/text": "not a readable media file",
                 "dog/trunc": "moov atom not found", "dog/trunc_fs": "truncated", "dog/silent": "no audio stream"}


def _ffmpeg(*args: str) -> None:
    subprocess.run([media.find_ffmpeg(), "-v", "error", "-y", *args], check=True)


def _make_video(path: Path, seconds: float, audio: bool = True, video: bool = True, faststart: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    args = []
    if video:
        args += ["-f", "lavfi", "-i", f"testsrc=size=32x24:rate=25:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=22050:duration={seconds}"]
    if video:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac"]
    if faststart:
        args += ["-movflags", "+faststart"]
    _ffmpeg(*args, str(path))


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """A class-folder tree with good and bad videos (read-only for the tests)."""
    root = tmp_path_factory.mktemp("videos")
    _make_video(root / "dog" / "a1.mp4", 2.0)
    _make_video(root / "cat" / "c1.mp4", 1.0)
    _make_video(root / "dog" / "silent.mp4", 1.0, audio=False)
    _make_video(root / "cat" / "sound.mp4", 1.0, video=False)
    (root / "cat" / "zero.mp4").write_bytes(b"")
    (root / "cat" / "text.mp4").write_text("this is not a video\n")
    _make_video(root / "full.mp4", 2.0)  # moov at the end: cutting the file loses the index
    (root / "dog" / "trunc.mp4").write_bytes((root / "full.mp4").read_bytes()[:3000])
    _make_video(root / "fs.mp4", 2.0, faststart=True)  # moov first: cutting the file loses half the data
    data = (root / "fs.mp4").read_bytes()
    (root / "dog" / "trunc_fs.mp4").write_bytes(data[: len(data) // 2])
    return root


def _report(path: Path) -> dict:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {r["clip_id"]: r["reason"] for r in rows}


def test_parse_probe_reads_streams() -> None:
    text = ("Input #0, mov,mp4, from 'x.mp4':\n  Duration: 00:01:02.50, start: 0.000000, bitrate: 134 kb/s\n"
            "  Stream #0:0[0x1](und): Video: h264 (avc1), yuv420p(progressive), 640x360 [SAR 1:1], 29.97 fps\n"
            "  Stream #0:1[0x2](und): Audio: aac (LC), 44100 Hz, stereo, fltp, 128 kb/s (default)\n")
    info = media.parse_probe(text)
    assert (info.has_video, info.has_audio) == (True, True)
    assert info.duration == pytest.approx(62.5)
    assert (info.width, info.height, info.video_fps, info.audio_rate) == (640, 360, 29.97, 44100)
    assert media.parse_probe(text.split("  Stream #0:1")[0]).has_audio is False


def test_probe_real_files(videos: Path) -> None:
    info = media.probe(videos / "dog" / "a1.mp4")
    assert info.has_video and info.has_audio and info.duration == pytest.approx(2.0, abs=0.1)
    assert not media.probe(videos / "dog" / "silent.mp4").has_audio
    for name, reason in [("cat/zero.mp4", "zero-length"), ("cat/text.mp4", "not a readable media file"),
                         ("dog/trunc.mp4", "moov atom not found"), ("dog/missing.mp4", "file not found")]:
        with pytest.raises(MediaError, match=reason):
            media.probe(videos / name)


def test_one_ffmpeg_run_per_video_reads_what_probe_reads(videos: Path, tmp_path: Path, monkeypatch) -> None:
    """An extraction probes and decodes in the same ffmpeg run (one process per video, not two): the streams it
    reads from that run's messages are probe's, and its warnings/errors are kept apart from the summary."""
    for clip in ("dog/a1", "dog/silent", "cat/sound"):
        run = media.decode(videos / f"{clip}.mp4", ["-f", "null", "-"])
        assert run.info == media.probe(videos / f"{clip}.mp4") and run.returncode == 0, clip
        assert "Input #0" not in run.problems
    failed = media.decode(videos / "dog" / "silent.mp4", ["-map", "0:a:0", "-f", "null", "-"])
    assert failed.returncode != 0 and "matches no streams" in failed.problems and not failed.info.has_audio
    calls = []
    real = media._run_ffmpeg
    monkeypatch.setattr(media, "_run_ffmpeg", lambda args: calls.append(args) or real(args))
    src = tmp_path / "videos" / "dog"
    src.mkdir(parents=True)
    for name in ("a1", "silent"):
        shutil.copy(videos / "dog" / f"{name}.mp4", src / f"{name}.mp4")
    extraction.run_extraction("frames", src.parent, tmp_path / "frames", FPS, workers=1, progress=False)
    extraction.run_extraction("audio", src.parent, tmp_path / "audio", RATE, workers=1, progress=False)
    assert len(calls) == 4  # two videos, frames and audio: one run each (silent.mp4's audio run names the error)
    assert "no audio stream" in _report(tmp_path / "skipped_audio.csv")["dog/silent"]


def test_extract_frames_layout_counts_and_skip_report(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "root"
    summary = extraction.run_extraction("frames", videos, out / "data" / "frames", FPS, workers=2, progress=False)
    for clip, seconds in [("dog/a1", 2.0), ("cat/c1", 1.0), ("dog/silent", 1.0)]:
        folder = out / "data" / "frames" / f"{clip}.mp4"
        n = media.check_frame_dir(folder)  # also asserts 000001..N numbering
        assert abs(n - FPS * seconds) <= 1, (clip, n)
    report = _report(out / "data" / "skipped_frames.csv")
    assert set(report) == set(BAD_FOR_FRAMES)
    for clip, fragment in BAD_FOR_FRAMES.items():
        assert fragment in report[clip]
        assert not (out / "data" / "frames" / f"{clip}.mp4").exists()  # nothing blank stands in for it
    assert (summary.extracted, summary.already_complete, len(summary.skipped)) == (3, 0, 5)
    leftovers = [p for p in (out / "data" / "frames").rglob("*") if p.name.endswith(media.PARTIAL_SUFFIX)]
    assert leftovers == []


def test_extract_audio_counts_and_skip_report(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "root"
    summary = extraction.run_extraction("audio", videos, out / "data" / "audio", RATE, workers=2, progress=False)
    for clip, seconds in [("dog/a1", 2.0), ("cat/c1", 1.0), ("cat/sound", 1.0)]:
        with wave.open(str(out / "data" / "audio" / f"{clip}.wav")) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE)
            assert abs(w.getnframes() - RATE * seconds) <= 0.03 * RATE, (clip, w.getnframes())
    report = _report(out / "data" / "skipped_audio.csv")
    assert set(report) == set(BAD_FOR_AUDIO)
    for clip, fragment in BAD_FOR_AUDIO.items():
        assert fragment in report[clip]
        assert not (out / "data" / "audio" / f"{clip}.wav").exists()  # never replaced by silence
    assert summary.extracted == 3


def test_resume_redoes_only_interrupted_outputs(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "root"
    src = tmp_path / "videos"
    for clip in ("dog/a1", "cat/c1"):
        (src / clip).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(videos / f"{clip}.mp4", src / f"{clip}.mp4")
    extraction.run_extraction("frames", src, out / "data" / "frames", FPS, workers=1, progress=False)
    extraction.run_extraction("audio", src, out / "data" / "audio", RATE, workers=1, progress=False)
    done_frames = out / "data" / "frames" / "dog" / "a1.mp4"
    done_wav = out / "data" / "audio" / "dog" / "a1.wav"
    before = {p: p.stat().st_mtime_ns for p in [done_frames, done_wav, *done_frames.iterdir()]}
    # simulate a kill mid-video for cat/c1: no final output, a half-written temporary one
    frames_c1 = out / "data" / "frames" / "cat" / "c1.mp4"
    wav_c1 = out / "data" / "audio" / "cat" / "c1.wav"
    shutil.rmtree(frames_c1)
    wav_c1.unlink()
    partial_dir = media.partial_path(frames_c1)
    partial_dir.mkdir()
    (partial_dir / "000001.jpg").write_bytes(b"half")
    (partial_dir / "000050.jpg").write_bytes(b"stale")
    media.partial_path(wav_c1).write_bytes(b"RIFF")

    s_frames = extraction.run_extraction("frames", src, out / "data" / "frames", FPS, workers=2, progress=False)
    s_audio = extraction.run_extraction("audio", src, out / "data" / "audio", RATE, workers=2, progress=False)
    assert (s_frames.extracted, s_frames.already_complete) == (1, 1)
    assert (s_audio.extracted, s_audio.already_complete) == (1, 1)
    assert abs(media.check_frame_dir(frames_c1) - FPS) <= 1  # redone from scratch: no stale 000050.jpg
    assert media.check_wav(wav_c1) > 0.9 * RATE
    assert not partial_dir.exists() and not media.partial_path(wav_c1).exists()
    assert {p: p.stat().st_mtime_ns for p in before} == before  # complete outputs untouched


def test_scripts_exit_zero_and_print_summary(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "root"
    for script, kind, bad in [("extract_frames.py", "frames", BAD_FOR_FRAMES), ("extract_audio.py", "audio",
                                                                                 BAD_FOR_AUDIO)]:
        proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), "--video_path", str(videos),
                               "--out_dir", str(out / "data" / kind), "--workers", "2", "--no_progress"],
                              capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert f"{kind}: 8 videos: 3 extracted, 0 already complete, 5 skipped" in proc.stdout
        assert set(_report(out / "data" / f"skipped_{kind}.csv")) == set(bad)  # beside the output folder
        assert not (out / "data" / kind / "data").exists()  # the reference's --out_dir: never nested
        assert not list((out / "data" / kind).rglob("*.csv"))  # no report inside the class tree


def test_script_rejects_missing_input_folder(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "extract_frames.py"), "--video_path",
                           str(tmp_path / "nope"), "--out_dir", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2 and "nope" in proc.stderr and "not a directory" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --video_path")
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ extraction lock

def _gated_ffmpeg(tmp_path: Path, gate: Path) -> dict:
    """Environment whose ffmpeg (IMAGEIO_FFMPEG_EXE) waits until ``gate`` exists, then runs the real one:
    a run started with it stays in the middle of its work, holding its lock, until the test opens the gate."""
    wrapper = tmp_path / "gated_ffmpeg"
    wrapper.write_text(f"#!/bin/sh\nwhile [ ! -e '{gate}' ]; do sleep 0.05; done\n"
                       f"exec '{media.find_ffmpeg()}' \"$@\"\n")
    wrapper.chmod(0o755)
    return {**os.environ, "IMAGEIO_FFMPEG_EXE": str(wrapper)}


def _extract_cmd(script: str, videos: Path, out: Path) -> list:
    return [sys.executable, str(REPO / "scripts" / script), "--video_path", str(videos), "--media_root", str(out),
            "--workers", "1", "--no_progress"]


def test_concurrent_extraction_into_one_folder_is_refused(videos: Path, tmp_path: Path) -> None:
    """Two real processes: the first holds the lock mid-run; the second exits 2 at once naming the folder
    and the first one's pid; the first then finishes with complete, uncorrupted output."""
    out, gate = tmp_path / "root", tmp_path / "gate"
    lock = out / "data" / "frames" / extraction.LOCK_NAME
    first = subprocess.Popen(_extract_cmd("extract_frames.py", videos, out), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_gated_ffmpeg(tmp_path, gate))
    try:
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        second = subprocess.run(_extract_cmd("extract_frames.py", videos, out), capture_output=True, text=True,
                                timeout=120)  # the first is blocked on the gate: waiting for it would hang
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr
        assert "another extraction is running into" in lines[0] and str(out / "data" / "frames") in lines[0]
        assert f"(pid {first.pid})" in lines[0]
        assert first.poll() is None  # refused without disturbing the running one
    finally:
        gate.touch()
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert "frames: 8 videos: 3 extracted, 0 already complete, 5 skipped" in stdout
    for clip, seconds in [("dog/a1", 2.0), ("cat/c1", 1.0), ("dog/silent", 1.0)]:
        n = media.check_frame_dir(out / "data" / "frames" / f"{clip}.mp4")  # numbered 000001..N, no gap
        assert abs(n - FPS * seconds) <= 1, (clip, n)
    assert set(_report(out / "data" / "skipped_frames.csv")) == set(BAD_FOR_FRAMES)
    assert not [p for p in out.rglob("*") if p.name.endswith(media.PARTIAL_SUFFIX)]
    assert lock.read_text() == ""  # released: no pid left behind
    again = subprocess.run(_extract_cmd("extract_frames.py", videos, out), capture_output=True, text=True)
    assert again.returncode == 0 and "0 extracted, 3 already complete" in again.stdout  # lock free again


def test_lock_is_per_output_folder_and_released(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "root"
    with extraction.extraction_lock(extraction.output_folder(out, "audio")):
        busy = rf"another extraction is running into .*audio \(pid {os.getpid()}\)"
        with pytest.raises(ExtractionBusyError, match=busy):
            extraction.run_extraction("audio", videos, out / "data" / "audio", RATE, progress=False)
        assert not (out / "data" / "audio" / "dog").exists()  # refused before writing anything
        # another output folder: runs
        summary = extraction.run_extraction("frames", videos, out / "data" / "frames", FPS, progress=False)
        assert summary.extracted == 3
    assert extraction.run_extraction("audio", videos, out / "data" / "audio", RATE, progress=False).extracted == 3


# ------------------------------------------------------------------------------------------ frame size

@pytest.mark.parametrize("size,short_side,expected", [("48x20", 16, (16, 38)), ("20x48", 16, (38, 16)),
                                                      ("32x24", 64, (24, 32)), ("32x24", None, (24, 32))])
def test_short_side_caps_frames_and_never_enlarges(tmp_path: Path, size, short_side, expected) -> None:
    import cv2

    video = tmp_path / "v" / "c" / "a.mp4"
    video.parent.mkdir(parents=True)
    _ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate=25:duration=0.5", "-c:v", "libx264", "-preset",
            "ultrafast", "-pix_fmt", "yuv444p", str(video))
    out = tmp_path / "frames"
    extraction.run_extraction("frames", tmp_path / "v", out, FPS, progress=False, short_side=short_side)
    img = cv2.imread(str(out / "c" / "a.mp4" / "000001.jpg"))
    assert img.shape[:2] == expected


def test_short_side_must_be_positive(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "extract_frames.py"), "--video_path", str(tmp_path),
                           "--out_dir", str(tmp_path / "f"), "--short_side", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: --short_side")
