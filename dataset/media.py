"""ffmpeg helpers for preprocessing real videos: locate ffmpeg, probe streams, extract frames and audio.

Every output is completed atomically: frames are written into a hidden ``.<name>.partial`` folder that is
renamed to its final name when ffmpeg is done, audio into a hidden temporary file that ``os.replace`` moves
into place. So a final name on disk always means a complete output, and a run killed mid-video leaves only
a partial folder/file that the next run deletes and redoes. Nothing is ever replaced by silence or blank
frames: a video that cannot give its frames or audio raises :class:`MediaError` with the reason.

Layout (PAPER.md): ``<ROOT>/data/frames/<class>/<vid>.mp4/000001.jpg`` (8 fps JPEG, numbered from 1) and
``<ROOT>/data/audio/<class>/<vid>.wav`` (mono 16-bit PCM, 11025 Hz).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

FPS = 8  # frames are extracted at 8 fps (paper, preprocessing)
SAMPLE_RATE = 11025  # audio is mono WAV at 11025 Hz (paper, preprocessing)
FRAME_PATTERN = "%06d.jpg"  # 000001.jpg, 000002.jpg, ... (reference layout)
FRAME_NAME_RE = re.compile(r"^(\d{6})\.jpg$")
PARTIAL_SUFFIX = ".partial"  # temporary outputs are named ".<final name>.partial"
JPEG_QUALITY = 2  # ffmpeg -q:v for mjpeg: 2 is near-lossless (scale 2..31, lower is better)
# ffmpeg's mov demuxer prints this when the file ends before the data its index points to (truncated download)
TRUNCATION_MARKER = "partial file"


class MediaError(RuntimeError):
    """A video that cannot give the requested output; ``reason`` is a short human-readable cause."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


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


def _run_ffmpeg(args: List[str]) -> subprocess.CompletedProcess:
    """Run ffmpeg with ``args`` (no stdin, stderr captured as text)."""
    cmd = [find_ffmpeg(), "-hide_banner", "-nostdin", *args]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")


def _last_error_line(stderr: str) -> str:
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
    return f"not a readable media file (ffmpeg: {_last_error_line(stderr)})"


def probe(path: Path) -> StreamInfo:
    """Streams of ``path``; raises :class:`MediaError` for a missing, empty or unreadable (non-media) file."""
    path = Path(path)
    if not path.exists():
        reason = "broken symlink" if path.is_symlink() else "file not found"
        raise MediaError(path, reason)
    if not path.is_file():
        raise MediaError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise MediaError(path, "zero-length file")
    # with no output file ffmpeg exits 1 after printing the input summary; only the summary matters
    proc = _run_ffmpeg(["-i", str(path)])
    if "Input #0" not in proc.stderr:
        raise MediaError(path, _open_failure_reason(path, proc.stderr))
    info = parse_probe(proc.stderr)
    if not info.has_video and not info.has_audio:
        raise MediaError(path, "no video or audio stream")
    return info


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


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace`` (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def write_csv_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write a CSV with a header row atomically (through :func:`atomic_write_text`)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(header))
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


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


def extract_frames(video: Path, out_dir: Path, fps: int = FPS, min_coverage: float = 0.5) -> int:
    """Extract ``video`` to ``out_dir/000001.jpg...`` at ``fps``; returns the frame count.

    Writes into ``partial_path(out_dir)`` and renames it to ``out_dir`` when done. Raises
    :class:`MediaError` (and leaves no output) for a file without video, a truncated file, or no frames.
    """
    video, out_dir = Path(video), Path(out_dir)
    info = probe(video)
    if not info.has_video:
        raise MediaError(video, "no video stream")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_partial(out_dir)
    tmp = partial_path(out_dir)
    tmp.mkdir()
    try:
        proc = _run_ffmpeg(["-v", "error", "-i", str(video), "-map", "0:v:0", "-vf", f"fps={fps}",
                            "-q:v", str(JPEG_QUALITY), "-start_number", "1", str(tmp / FRAME_PATTERN)])
        if proc.returncode != 0:
            raise MediaError(video, f"ffmpeg failed decoding video ({_last_error_line(proc.stderr)})")
        if TRUNCATION_MARKER in proc.stderr:
            raise MediaError(video, f"truncated file (ffmpeg: {TRUNCATION_MARKER})")
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
    info = probe(video)
    if not info.has_audio:
        raise MediaError(video, "no audio stream")
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    remove_partial(out_wav)
    tmp = partial_path(out_wav)
    try:
        proc = _run_ffmpeg(["-v", "error", "-i", str(video), "-map", "0:a:0", "-vn", "-ac", "1",
                            "-ar", str(sample_rate), "-c:a", "pcm_s16le", "-f", "wav", str(tmp)])
        if proc.returncode != 0:
            raise MediaError(video, f"ffmpeg failed decoding audio ({_last_error_line(proc.stderr)})")
        if TRUNCATION_MARKER in proc.stderr:
            raise MediaError(video, f"truncated file (ffmpeg: {TRUNCATION_MARKER})")
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


# --------------------------------------------------------------------------------------------------------------
# Batch extraction over a folder of class subfolders (used by scripts/extract_frames.py and extract_audio.py)

@dataclass(frozen=True)
class VideoJob:
    """One input video: ``<video_root>/<label>/<vid>.<ext>``; its clip id is ``<label>/<vid>``."""

    label: str
    vid: str
    video: Path

    @property
    def clip_id(self) -> str:
        return f"{self.label}/{self.vid}"


@dataclass(frozen=True)
class Skip:
    """A video left out of a run, with the reason."""

    video: str
    clip_id: str
    reason: str


@dataclass
class ExtractionSummary:
    """Counts of one extraction run (``skipped`` holds the reasons)."""

    kind: str
    total: int = 0
    extracted: int = 0
    already_complete: int = 0
    skipped: List[Skip] = field(default_factory=list)

    def line(self) -> str:
        """One-line human summary."""
        return (f"{self.kind}: {self.total} videos: {self.extracted} extracted, {self.already_complete} already "
                f"complete, {len(self.skipped)} skipped")


def discover_videos(video_root: Path) -> Tuple[List[VideoJob], List[Skip]]:
    """Every file under ``video_root/<class>/``; returns the jobs and the entries that cannot be jobs.

    Hidden names (temporaries, ``.DS_Store``) are ignored; files directly in ``video_root`` are not in a class
    folder and are ignored with a log line (download lists live there). A sub-folder inside a class folder
    and a second file with the same clip id (``a.mp4`` and ``a.mkv``) are reported as skipped.
    """
    video_root = Path(video_root)
    if not video_root.is_dir():
        raise NotADirectoryError(f"--video_path {video_root}: not a directory")
    jobs: List[VideoJob] = []
    skipped: List[Skip] = []
    top_files = 0
    for class_dir in sorted(video_root.iterdir()):
        if is_partial_name(class_dir.name):
            continue
        if not class_dir.is_dir():
            top_files += 1
            continue
        seen: dict = {}
        for entry in sorted(class_dir.iterdir()):
            if is_partial_name(entry.name):
                continue
            vid = entry.stem if not entry.is_dir() else entry.name
            clip_id = f"{class_dir.name}/{vid}"
            if entry.is_dir():
                skipped.append(Skip(str(entry), clip_id, "a folder inside a class folder, not a video"))
            elif vid in seen:
                skipped.append(Skip(str(entry), clip_id, f"duplicate clip id (also {seen[vid].name})"))
            else:
                seen[vid] = entry
                jobs.append(VideoJob(class_dir.name, vid, entry))
    if top_files:
        logger.info("ignored %d file(s) directly in %s (videos must be in class folders)", top_files, video_root)
    if not jobs and not skipped:
        logger.warning("no videos found under %s/<class>/", video_root)
    return jobs, skipped


def frames_output(out_root: Path, job: VideoJob) -> Path:
    """``<ROOT>/data/frames/<class>/<vid>.mp4`` (the reference names frame folders after the .mp4)."""
    return Path(out_root) / "data" / "frames" / job.label / f"{job.vid}.mp4"


def audio_output(out_root: Path, job: VideoJob) -> Path:
    """``<ROOT>/data/audio/<class>/<vid>.wav``."""
    return Path(out_root) / "data" / "audio" / job.label / f"{job.vid}.wav"


def _frames_worker(job: VideoJob, out: Path, rate: int, min_coverage: float) -> int:
    return extract_frames(job.video, out, fps=rate, min_coverage=min_coverage)


def _audio_worker(job: VideoJob, out: Path, rate: int, min_coverage: float) -> int:
    return extract_audio(job.video, out, sample_rate=rate, min_coverage=min_coverage)


# kind -> (output path, worker, completeness test). The final name only ever appears through an atomic
# rename/replace, so an existing output is a complete one.
EXTRACTORS = {"frames": (frames_output, _frames_worker, Path.is_dir),
              "audio": (audio_output, _audio_worker, Path.is_file)}


def _run_one(kind: str, job: VideoJob, out: Path, rate: int,
             min_coverage: float) -> Tuple[VideoJob, Optional[str]]:
    """Worker body: extract one video; returns the job and None, or the skip reason."""
    _, worker, _ = EXTRACTORS[kind]
    try:
        worker(job, out, rate, min_coverage)
    except MediaError as err:
        return job, err.reason
    except OSError as err:  # e.g. permission denied on the input: report it, keep the run going
        return job, f"I/O error: {err}"
    return job, None


def write_skip_report(path: Path, skipped: List[Skip]) -> None:
    """Write ``video,clip_id,reason`` rows (with a header) atomically; an empty report is still written."""
    write_csv_atomic(path, ["video", "clip_id", "reason"], [(s.video, s.clip_id, s.reason) for s in skipped])


def run_extraction(kind: str, video_root: Path, out_root: Path, rate: int, workers: int = 1,
                   min_coverage: float = 0.5, report_path: Optional[Path] = None,
                   progress: bool = True) -> ExtractionSummary:
    """Extract ``kind`` ("frames" or "audio") for every video under ``video_root/<class>/``.

    Complete outputs are left untouched; everything else is (re)done in a process pool of ``workers``.
    Videos that fail are collected with their reason and written to ``report_path`` (default
    ``<out_root>/skipped_<kind>.csv``); the run itself does not stop for them.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    if kind not in EXTRACTORS:
        raise KeyError(f"unknown extraction kind {kind!r}; valid: {', '.join(sorted(EXTRACTORS))}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    out_fn, _, is_complete = EXTRACTORS[kind]
    find_ffmpeg()  # fail before starting a pool when there is no ffmpeg at all
    jobs, skipped = discover_videos(video_root)
    summary = ExtractionSummary(kind, total=len(jobs) + len(skipped), skipped=list(skipped))
    todo = []
    for job in jobs:
        out = out_fn(out_root, job)
        if is_complete(out):
            summary.already_complete += 1
        else:
            todo.append((job, out))
    bar = tqdm(total=len(todo), desc=f"extract {kind}", unit="video", disable=not progress)
    results = []
    if workers == 1:
        for job, out in todo:
            results.append(_run_one(kind, job, out, rate, min_coverage))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_run_one, kind, job, out, rate, min_coverage) for job, out in todo]
            for fut in as_completed(futures):
                results.append(fut.result())
                bar.update()
    bar.close()
    for job, reason in sorted(results, key=lambda r: r[0].clip_id):
        if reason is None:
            summary.extracted += 1
        else:
            summary.skipped.append(Skip(str(job.video), job.clip_id, reason))
    summary.skipped.sort(key=lambda s: s.clip_id)
    write_skip_report(Path(report_path) if report_path else Path(out_root) / f"skipped_{kind}.csv", summary.skipped)
    return summary


# --------------------------------------------------------------------------------------------------------------
# Download lists (MUSIC, Kinetics-Sounds) and resumable downloads with yt-dlp

YOUTUBE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{11}$")  # YouTube video ids are 11 characters of this alphabet


def youtube_url(vid: str) -> str:
    """Watch URL of a YouTube id (the full URL keeps ids that start with '-' from looking like options)."""
    return f"https://www.youtube.com/watch?v={vid}"


@dataclass(frozen=True)
class Download:
    """One video to fetch into ``<out>/<label>/<vid>.mp4``; ``section`` is ``(start_s, end_s)`` or None."""

    label: str
    vid: str
    url: str
    section: Optional[Tuple[float, float]] = None


def find_yt_dlp() -> str:
    """Path of ``yt-dlp`` on PATH; raises ``FileNotFoundError`` with an install hint when absent."""
    exe = shutil.which("yt-dlp")
    if exe is None:
        raise FileNotFoundError("--download needs yt-dlp on PATH (e.g. `pip install yt-dlp`); "
                                "without --download only the download list is written")
    return exe


def _download_one(exe: str, item: Download, out_root: Path) -> Optional[str]:
    """Fetch one video; returns None on success or the failure reason. Partial files resume on the next run."""
    dest = Path(out_root) / item.label / f"{item.vid}.mp4"
    dest.parent.mkdir(parents=True, exist_ok=True)
    # a fixed hidden name: yt-dlp keeps its own .part file next to it and resumes it on the next run
    template = dest.parent / f".{item.vid}.download.%(ext)s"
    cmd = [exe, "--no-playlist", "--quiet", "--no-progress", "--continue",
           "-f", "bv*[ext=mp4]+ba[ext=m4a]/b[ext=mp4]/bv*+ba/b", "--merge-output-format", "mp4",
           "-o", str(template)]
    if item.section is not None:
        cmd += ["--download-sections", f"*{item.section[0]}-{item.section[1]}"]
    proc = subprocess.run(cmd + [item.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          errors="replace")
    if proc.returncode != 0:
        return f"yt-dlp exit {proc.returncode}: {_last_error_line(proc.stderr)}"
    produced = dest.parent / f".{item.vid}.download.mp4"
    if not produced.is_file() or produced.stat().st_size == 0:
        return "yt-dlp reported success but wrote no .mp4"
    os.replace(produced, dest)
    return None


def download_videos(items: List[Download], out_root: Path, workers: int = 4,
                    progress: bool = True) -> Tuple[int, int, List[Tuple[Download, str]]]:
    """Download ``items`` with yt-dlp into ``out_root/<label>/<vid>.mp4``, skipping complete files.

    Returns (downloaded, already present, failures with reasons). A file appears under its final name only
    once yt-dlp has finished it, so an interrupted run resumes where it stopped.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    exe = find_yt_dlp()
    todo = [it for it in items if not (Path(out_root) / it.label / f"{it.vid}.mp4").is_file()]
    present = len(items) - len(todo)
    failures: List[Tuple[Download, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # threads: the work is in yt-dlp processes
        results = pool.map(lambda it: (it, _download_one(exe, it, out_root)), todo)
        for item, reason in tqdm(results, total=len(todo), desc="download", unit="video", disable=not progress):
            if reason is not None:
                failures.append((item, reason))
    return len(todo) - len(failures), present, failures


def add_download_args(p, what: str) -> None:
    """The --download/--workers flags shared by the prepare_*.py scripts (``what`` names the files)."""
    p.add_argument("--download", action="store_true", help=f"download the {what} with yt-dlp")
    p.add_argument("--workers", type=int, default=4, help="parallel yt-dlp processes")


def download_and_report(items: List[Download], out_root: Path, workers: int) -> int:
    """Download ``items``, write ``download_failures.csv`` and print a summary; returns the exit status
    (2 when yt-dlp is missing)."""
    try:
        done, present, failures = download_videos(items, out_root, workers=workers)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = Path(out_root) / "download_failures.csv"
    write_csv_atomic(report, ["class", "id", "url", "reason"], [(d.label, d.vid, d.url, r) for d, r in failures])
    print(f"downloaded {done}, already present {present}, failed {len(failures)} (see {report})")
    return 0
