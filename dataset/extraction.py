"""The extraction run over a folder of class sub-folders (scripts/extract_frames.py, extract_audio.py):
find the videos, extract each one (dataset/media.py) in a process pool, collect the skipped ones with their
reason, and hold the output folder's lock for the whole run.

Layout (docs/paper.md, Preprocessing and layout): ``<ROOT>/data/frames/<class>/<vid>.mp4/000001.jpg`` and
``<ROOT>/data/audio/<class>/<vid>.wav``. As in the reference's extractors, a run is given the frames (or
audio) folder itself (``<ROOT>/data/frames``) and writes ``<class>/...`` directly under it; its skip report
goes beside that folder (``<ROOT>/data/skipped_frames.csv``; for another folder name ``X/frames_a``,
``X/skipped_frames_frames_a.csv``), never inside the class tree. Complete outputs
are kept, so a killed run resumes; a second run into the same output folder while one is running is
refused (:class:`ExtractionBusyError`), since two runs would delete each other's temporaries.
"""
from __future__ import annotations

import fcntl
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from dataset.errors import ExtractionBusyError, MediaError
from dataset.media import die_with_parent, extract_audio, extract_frames, find_ffmpeg, is_partial_name
from utils.errors import UsageError
from utils.fileio import atomic_write_csv

logger = logging.getLogger(__name__)

LOCK_NAME = ".extract.lock"  # hidden, so index building and discovery never list it


def output_folder(out_root: Path, kind: str) -> Path:
    """``<out_root>/data/<kind>``: the ``kind`` folder of a media root (``--media_root``)."""
    return Path(out_root) / "data" / kind


def default_report(out_dir: Path, kind: str) -> Path:
    """The skip report beside the output folder ``out_dir`` (outside its class tree), named after it:
    ``skipped_<kind>.csv`` for the usual ``.../data/<kind>``, else ``skipped_<kind>_<folder name>.csv``, so
    two runs into sibling folders (``X/frames_a``, ``X/frames_b``) never overwrite each other's record."""
    out_dir = Path(out_dir).absolute()
    name = f"skipped_{kind}.csv" if out_dir.name == kind else f"skipped_{kind}_{out_dir.name}.csv"
    return out_dir.parent / name


def _lock_holder(fd: int) -> Optional[int]:
    """The pid recorded in an open lock file, or None when it is empty or unreadable."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isascii() and text.isdigit() else None


@dataclass(frozen=True)
class HeldLock:
    """An extraction lock held by this process: the lock file and the descriptor that holds it."""

    path: Path
    fd: int


@contextmanager
def extraction_lock(folder: Path) -> Iterator[HeldLock]:
    """Hold an exclusive, non-blocking ``flock`` on ``folder/.extract.lock`` (created if needed) for the body,
    with this process's pid written in it. Raises :class:`ExtractionBusyError` at once (naming the holder's
    pid) when another process holds it. The lock goes with the process, so a killed run never leaves a
    stale lock (pool workers close their inherited copy and die with the run: :func:`_init_worker`); the
    file itself stays (removing it would let two runs lock two different files)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExtractionBusyError(folder, _lock_holder(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield HeldLock(path, fd)
        finally:
            os.ftruncate(fd, 0)  # still locked here: nobody reads a pid that is about to be gone
    finally:
        os.close(fd)  # releases the lock


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
        raise UsageError("--video_path", f"{video_root} is not a directory")
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


def frames_output(out_dir: Path, job: VideoJob) -> Path:
    """``<out_dir>/<class>/<vid>.mp4`` (the reference names frame folders after the .mp4)."""
    return Path(out_dir) / job.label / f"{job.vid}.mp4"


def audio_output(out_dir: Path, job: VideoJob) -> Path:
    """``<out_dir>/<class>/<vid>.wav``."""
    return Path(out_dir) / job.label / f"{job.vid}.wav"


def _frames_worker(job: VideoJob, out: Path, rate: int, min_coverage: float, short_side: Optional[int]) -> int:
    return extract_frames(job.video, out, fps=rate, min_coverage=min_coverage, short_side=short_side)


def _audio_worker(job: VideoJob, out: Path, rate: int, min_coverage: float, short_side: Optional[int]) -> int:
    return extract_audio(job.video, out, sample_rate=rate, min_coverage=min_coverage)


# kind -> (output path, worker, completeness test). The final name only ever appears through an atomic
# rename/replace, so an existing output is a complete one.
EXTRACTORS = {"frames": (frames_output, _frames_worker, Path.is_dir),
              "audio": (audio_output, _audio_worker, Path.is_file)}


def _run_one(kind: str, job: VideoJob, out: Path, rate: int, min_coverage: float,
             short_side: Optional[int] = None) -> Tuple[VideoJob, Optional[str]]:
    """Worker body: extract one video; returns the job and None, or the skip reason."""
    _, worker, _ = EXTRACTORS[kind]
    try:
        worker(job, out, rate, min_coverage, short_side)
    except MediaError as err:
        return job, err.reason
    except OSError as err:  # e.g. permission denied on the input: report it, keep the run going
        return job, f"I/O error: {err}"
    return job, None


def write_skip_report(path: Path, skipped: List[Skip]) -> None:
    """Write ``video,clip_id,reason`` rows (with a header) atomically; an empty report is still written."""
    atomic_write_csv(path, ["video", "clip_id", "reason"], [(s.video, s.clip_id, s.reason) for s in skipped])


def run_extraction(kind: str, video_root: Path, out_dir: Path, rate: int, workers: int = 1,
                   min_coverage: float = 0.5, report_path: Optional[Path] = None,
                   progress: bool = True, short_side: Optional[int] = None) -> ExtractionSummary:
    """Extract ``kind`` ("frames" or "audio") for every video under ``video_root/<class>/``.

    ``out_dir`` is the frames (or audio) folder itself: outputs are ``<out_dir>/<class>/<vid>...``. Holds
    :func:`extraction_lock` on ``out_dir`` for the whole run (a concurrent run into the same folder raises
    :class:`ExtractionBusyError` before touching anything). Complete outputs are left untouched; everything
    else is (re)done in a process pool of ``workers``. Videos that fail are collected with their reason and
    written to ``report_path`` (default :func:`default_report`, beside ``out_dir``); the run
    itself does not stop for them. ``short_side`` (frames only) caps the frames' short side in pixels
    (None: full size). A missing ``video_root`` is a :class:`UsageError`; no ffmpeg at all is a
    ``FileNotFoundError``.
    """
    if kind not in EXTRACTORS:
        raise KeyError(f"unknown extraction kind {kind!r}; valid: {', '.join(sorted(EXTRACTORS))}")
    if workers < 1:
        raise UsageError("--workers", f"must be >= 1, got {workers}")
    if not Path(video_root).is_dir():  # before the lock: a typo in --video_path creates nothing
        raise UsageError("--video_path", f"{video_root} is not a directory")
    with extraction_lock(Path(out_dir)) as lock:
        find_ffmpeg()  # fail before starting a pool when there is no ffmpeg at all
        jobs, skipped = discover_videos(video_root)
        summary = _extract_all(kind, jobs, skipped, Path(out_dir), rate, workers, min_coverage, progress,
                               short_side, lock.fd)
        write_skip_report(Path(report_path) if report_path else default_report(out_dir, kind), summary.skipped)
    return summary


def _init_worker(parent: int, lock_fd: Optional[int]) -> None:
    """Pool initializer: close the worker's inherited copy of the lock descriptor (the parent's copy keeps the
    ``flock``; a worker outliving a killed run would otherwise hold it, and every later run would be refused
    naming a dead pid) and make the worker die with the run (:func:`dataset.media.die_with_parent`)."""
    if lock_fd is not None:
        os.close(lock_fd)  # not LOCK_UN: that would release the parent's lock too
    die_with_parent()
    if os.getppid() != parent:  # the run died before the request above took effect
        os._exit(1)


def _extract_all(kind: str, jobs: List[VideoJob], skipped: List[Skip], out_dir: Path, rate: int, workers: int,
                 min_coverage: float, progress: bool, short_side: Optional[int] = None,
                 lock_fd: Optional[int] = None) -> ExtractionSummary:
    """The body of :func:`run_extraction` (called with the lock held)."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    out_fn, _, is_complete = EXTRACTORS[kind]
    summary = ExtractionSummary(kind, total=len(jobs) + len(skipped), skipped=list(skipped))
    todo = []
    for job in jobs:
        out = out_fn(out_dir, job)
        if is_complete(out):
            summary.already_complete += 1
        else:
            todo.append((job, out))
    bar = tqdm(total=len(todo), desc=f"extract {kind}", unit="video", disable=not progress)
    results = []
    if workers == 1:
        for job, out in todo:
            results.append(_run_one(kind, job, out, rate, min_coverage, short_side))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                 initargs=(os.getpid(), lock_fd)) as pool:
            futures = [pool.submit(_run_one, kind, job, out, rate, min_coverage, short_side) for job, out in todo]
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
    return summary
