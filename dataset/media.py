"""ffmpeg helpers for one file: locate ffmpeg, probe a video's streams, extract its frames or its audio, and
check an extracted frame folder or WAV. The run over a folder of videos is dataset/extraction.py; downloads
are dataset/download.py.

Every output is completed atomically: frames are written into a hidden ``.<name>.partial`` folder that is
renamed to its final name when ffmpeg is done, audio into a hidden temporary file that ``os.replace`` moves
into place. So a final name on disk always means a complete output, and a run killed mid-video leaves only
a partial folder/file that the next run deletes and redoes. Nothing is ever replaced by silence or blank
frames: a video that cannot give its frames or audio raises :class:`dataset.errors.MediaError` with the
reason.

Layout (docs/paper.md, Preprocessing and layout): ``<ROOT>/data/frames/<class>/<vid>.mp4/000001.jpg`` (8 fps
JPEG, numbered from 1) and ``<ROOT>/data/audio/<class>/<vid>.wav`` (mono 16-bit PCM, 11025 Hz).
"""
from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from dataset.errors import MediaError

logger = logging.getLogger(__name__)

FPS = 8  # frames are extracted at 8 fps (docs/paper.md, Preprocessing and layout)
SAMPLE_RATE = 11025  # audio is mono WAV at 11025 Hz (docs/paper.md, Preprocessing and layout)
FRAME_PATTERN = "%06d.jpg"  # 000001.jpg, 000002.jpg, ... (reference layout)
FRAME_NAME_RE = re.compile(r"^(\d{6})\.jpg$")
PARTIAL_SUFFIX = ".partial"  # temporary outputs are named ".<final name>.partial"
JPEG_QUALITY = 2  # ffmpeg -q:v for mjpeg: 2 is near-lossless (scale 2..31, lower is better)
# ffmpeg's mov demuxer prints this when the file ends before the data its index points to (truncated download)
TRUNCATION_MARKER = "partial file"


@dataclass(frozen=True)
class StreamInfo:
    """What ``ffmpeg -i`` says about a file's streams (fields are None when ffmpeg did not print them)."""

    has_video: bool
    has_audio: bool
    duration: Optional[float]  # container duration in seconds
    video_fps: Optional[float]
    audio_rate: Optional[int]
    width: Optional[int]
    height: Optional[int]


def find_ffmpeg() -> str:
    """Path of an ffmpeg binary: the one bundled with imageio-ffmpeg, else ``ffmpeg`` on PATH."""
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        if exe and Path(exe).is_file():
            return exe
    except (ImportError, RuntimeError) as err:  # imageio-ffmpeg missing or shipped without a binary
        logger.debug("imageio-ffmpeg gave no binary (%s); looking on PATH", err)
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise FileNotFoundError("no ffmpeg found: install imageio-ffmpeg (requirements.txt) or put ffmpeg on PATH")
    return exe


_PR_SET_PDEATHSIG = 1  # prctl option number (linux/prctl.h)
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when the thread that started it dies (Linux prctl
    PR_SET_PDEATHSIG; inherited through exec), so nothing of a killed extraction keeps running: neither its
    pool workers (which would hold the output folder's lock) nor their ffmpeg (which would write into a
    partial folder that the next run reuses). Does nothing where prctl does not exist."""
    if _PRCTL is not None and _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")


def _run_ffmpeg(args: List[str]) -> subprocess.CompletedProcess:
    """Run ffmpeg with ``args`` (no stdin, stderr captured as text); it dies with the process that runs it."""
    cmd = [find_ffmpeg(), "-hide_banner", "-nostdin", *args]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                          preexec_fn=die_with_parent if _PRCTL is not None else None)


def last_error_line(stderr: str) -> str:
    """The last non-empty line of a tool's stderr (its error message), or "no message"."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO_RE = re.compile(r"Stream #\S+.*?: Video: (.*)")
_AUDIO_RE = re.compile(r"Stream #\S+.*?: Audio: (.*)")
_SIZE_RE = re.compile(r"(?:^|[ ,])(\d{2,5})x(\d{2,5})(?:[ ,\[]|$)")
_FPS_RE = re.compile(r"([\d.]+) fps")
_RATE_RE = re.compile(r"(\d+) Hz")


def parse_probe(text: str) -> StreamInfo:
    """Parse the stream summary that ``ffmpeg -i FILE`` prints to stderr."""
    duration = None
    m = _DURATION_RE.search(text)
    if m:
        duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    video = _VIDEO_RE.search(text)
    audio = _AUDIO_RE.search(text)
    fps = width = height = rate = None
    if video:
        size = _SIZE_RE.search(video.group(1))
        if size:
            width, height = int(size.group(1)), int(size.group(2))
        f = _FPS_RE.search(video.group(1))
        fps = float(f.group(1)) if f else None
    if audio:
        r = _RATE_RE.search(audio.group(1))
        rate = int(r.group(1)) if r else None
    return StreamInfo(bool(video), bool(audio), duration, fps, rate, width, height)


def _open_failure_reason(path: Path, stderr: str) -> str:
    """Why ffmpeg could not open ``path``: an MP4 that lost its index (truncated) or not media at all."""
    with open(path, "rb") as f:
        head = f.read(12)
    is_mp4 = head[4:8] == b"ftyp"  # ISO base media files start with a 'ftyp' box
    if is_mp4 and "moov atom not found" in stderr:
        return "truncated or corrupt MP4 (moov atom not found)"
    return f"not a readable media file (ffmpeg: {last_error_line(stderr)})"


def check_input_file(path: Path) -> None:
    """Raise :class:`MediaError` for a missing, broken-link, non-regular or empty input file."""
    path = Path(path)
    if not path.exists():
        reason = "broken symlink" if path.is_symlink() else "file not found"
        raise MediaError(path, reason)
    if not path.is_file():
        raise MediaError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise MediaError(path, "zero-length file")


def _checked_summary(path: Path, stderr: str, summary: str) -> StreamInfo:
    """The streams of an input summary, or :class:`MediaError` when ffmpeg could not open the file or it has
    neither video nor audio."""
    if "Input #0" not in summary:
        raise MediaError(path, _open_failure_reason(path, stderr))
    info = parse_probe(summary)
    if not info.has_video and not info.has_audio:
        raise MediaError(path, "no video or audio stream")
    return info


def probe(path: Path) -> StreamInfo:
    """Streams of ``path``; raises :class:`MediaError` for a missing, empty or unreadable (non-media) file."""
    path = Path(path)
    check_input_file(path)
    # with no output file ffmpeg exits 1 after printing the input summary; only the summary matters
    proc = _run_ffmpeg(["-i", str(path)])
    return _checked_summary(path, proc.stderr, proc.stderr)


_TAG_RE = re.compile(r"^(?:\[[^\]]*\] )*\[(info|warning|error|fatal|panic)\] ?(.*)$")


@dataclass(frozen=True)
class Decoded:
    """One ffmpeg run that read a file (``-loglevel level+info``): its streams, exit status and messages."""

    info: StreamInfo
    returncode: int
    problems: str  # the run's warning, error and fatal lines, tags removed ("" when there were none)

    def error(self) -> str:
        """The run's last error message (for a failed run)."""
        return last_error_line(self.problems)

    def check(self, video: Path, stream: str) -> StreamInfo:
        """The streams, once the run is known to have decoded ``stream`` ("video" or "audio") of ``video`` whole;
        :class:`MediaError` naming ``video`` for no such stream, a failed run or a truncated file."""
        if not getattr(self.info, f"has_{stream}"):
            raise MediaError(video, f"no {stream} stream")
        if self.returncode != 0:
            raise MediaError(video, f"ffmpeg failed decoding {stream} ({self.error()})")
        if TRUNCATION_MARKER in self.problems:
            raise MediaError(video, f"truncated file (ffmpeg: {TRUNCATION_MARKER})")
        return self.info


def decode(video: Path, args: List[str]) -> Decoded:
    """Run ffmpeg on ``video`` with output ``args`` and read the input's streams from the same run: at
    ``-loglevel level+info`` ffmpeg prints the input summary that :func:`probe` reads, every line tagged with
    its level, so one process both probes and decodes (an extraction used to start two per video). Raises
    :class:`MediaError` as :func:`probe` does for a file that is missing, empty, unreadable or has no stream."""
    video = Path(video)
    check_input_file(video)
    proc = _run_ffmpeg(["-nostats", "-loglevel", "level+info", "-i", str(video), *args])
    summary: List[str] = []  # the input's summary: the info lines before the output's part
    problems: List[str] = []  # warning, error and fatal lines, and the untagged lines that continue them
    level, in_input = "info", True
    for line in proc.stderr.splitlines():
        m = _TAG_RE.match(line)
        if m is not None:
            level, line = m.group(1), m.group(2)
        if level != "info":
            problems.append(line)
        elif in_input and line.startswith(("Stream mapping:", "Output #0")):
            in_input = False  # the output's streams follow: they are not the file's
        elif in_input:
            summary.append(line)
    head, text = "\n".join(summary), "\n".join(problems)
    return Decoded(_checked_summary(video, text, head), proc.returncode, text)


def partial_path(final: Path) -> Path:
    """The temporary sibling of ``final`` used while it is being written (hidden, so never listed)."""
    final = Path(final)
    return final.with_name(f".{final.name}{PARTIAL_SUFFIX}")


def is_partial_name(name: str) -> bool:
    """True for names of temporary outputs (and any hidden file), which readers must ignore."""
    return name.startswith(".")


def remove_partial(final: Path) -> bool:
    """Delete a leftover temporary output of ``final`` (from a killed run); True if there was one."""
    tmp = partial_path(final)
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp)
        return True
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
        return True
    return False


def list_frames(frame_dir: Path) -> List[str]:
    """Sorted JPEG names in ``frame_dir`` that follow the ``000001.jpg`` pattern."""
    return sorted(n for n in os.listdir(frame_dir) if FRAME_NAME_RE.match(n))


def check_frame_dir(frame_dir: Path) -> int:
    """Number of frames in a complete frame folder; raises :class:`MediaError` if empty or not 1..N."""
    frame_dir = Path(frame_dir)
    if not frame_dir.is_dir():
        raise MediaError(frame_dir, "frame folder missing")
    names = list_frames(frame_dir)
    if not names:
        raise MediaError(frame_dir, "frame folder has no NNNNNN.jpg frames")
    expected = [FRAME_PATTERN % i for i in range(1, len(names) + 1)]
    if names != expected:
        first_bad = next(n for n, e in zip(names, expected) if n != e)
        raise MediaError(frame_dir, f"frames are not numbered 000001..{len(names):06d} (first gap at {first_bad})")
    return len(names)


def check_wav(path: Path, sample_rate: Optional[int] = SAMPLE_RATE) -> int:
    """Number of samples of a mono 16-bit WAV; raises :class:`MediaError` if unreadable, empty or off-spec."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            n, rate, channels, width = w.getnframes(), w.getframerate(), w.getnchannels(), w.getsampwidth()
    except (wave.Error, EOFError, OSError) as err:
        raise MediaError(path, f"unreadable WAV ({err})") from None
    if channels != 1 or width != 2:
        raise MediaError(path, f"WAV is {channels} channel(s) of {8 * width}-bit, expected mono 16-bit")
    if sample_rate is not None and rate != sample_rate:
        raise MediaError(path, f"WAV sample rate {rate} Hz, expected {sample_rate} Hz")
    if n == 0:
        raise MediaError(path, "WAV has no samples")
    return n


def _check_coverage(video: Path, got: float, duration: Optional[float], unit_rate: float,
                    min_coverage: float, what: str) -> None:
    """Raise if fewer than ``min_coverage`` of the units the container duration implies were decoded."""
    if duration is None or duration <= 0 or min_coverage <= 0:
        return
    expected = duration * unit_rate
    if got < min_coverage * expected - 1:
        raise MediaError(video, f"truncated: decoded {int(got)} {what}, container duration {duration:.2f} s "
                                f"implies about {int(expected)}")


def scale_filter(short_side: int) -> str:
    """ffmpeg filter shrinking a frame so its short side is at most ``short_side`` (aspect kept, never enlarged;
    the other side rounded to an even number)."""
    s = int(short_side)
    return f"scale='if(lt(iw,ih),min(iw,{s}),-2)':'if(lt(iw,ih),-2,min(ih,{s}))'"


def image2_pattern(folder: Path) -> str:
    """ffmpeg's image2 output pattern for ``folder/000001.jpg...``: a ``%`` in the folder's path (a video or
    class named ``50%done``) is written ``%%``, which image2 reads as a literal ``%``."""
    return str(folder).replace("%", "%%") + os.sep + FRAME_PATTERN


def extract_frames(video: Path, out_dir: Path, fps: int = FPS, min_coverage: float = 0.5,
                   short_side: Optional[int] = None) -> int:
    """Extract ``video`` to ``out_dir/000001.jpg...`` at ``fps``; returns the frame count. With ``short_side``,
    frames are shrunk so their short side is at most that many pixels (None: full size, as the reference).

    Writes into ``partial_path(out_dir)`` and renames it to ``out_dir`` when done. Raises
    :class:`MediaError` (and leaves no output) for a file without video, a truncated file, or no frames.
    """
    video, out_dir = Path(video), Path(out_dir)
    check_input_file(video)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_partial(out_dir)
    tmp = partial_path(out_dir)
    tmp.mkdir()
    try:
        vf = f"fps={fps}" + (f",{scale_filter(short_side)}" if short_side else "")
        info = decode(video, ["-map", "0:v:0", "-vf", vf, "-q:v", str(JPEG_QUALITY), "-start_number", "1",
                              image2_pattern(tmp)]).check(video, "video")
        n = len(list_frames(tmp))
        if n == 0:
            raise MediaError(video, "no frames decoded")
        _check_coverage(video, n, info.duration, fps, min_coverage, "frames")
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n


def extract_audio(video: Path, out_wav: Path, sample_rate: int = SAMPLE_RATE, min_coverage: float = 0.5) -> int:
    """Extract the first audio stream of ``video`` to a mono 16-bit WAV at ``sample_rate``; returns samples.

    Writes a temporary file and ``os.replace``-s it into ``out_wav``. Raises :class:`MediaError` (and leaves
    no output) for a file without an audio stream, a truncated file or no decoded samples.
    """
    video, out_wav = Path(video), Path(out_wav)
    check_input_file(video)
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    remove_partial(out_wav)
    tmp = partial_path(out_wav)
    try:
        info = decode(video, ["-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le",
                              "-f", "wav", str(tmp)]).check(video, "audio")
        try:
            n = check_wav(tmp, sample_rate)
        except MediaError as err:
            raise MediaError(video, f"no audio decoded ({err.reason})") from None
        _check_coverage(video, n, info.duration, sample_rate, min_coverage, "samples")
        os.replace(tmp, out_wav)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return n
