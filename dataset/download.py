"""Download lists (MUSIC, Kinetics-Sounds) and resumable downloads with yt-dlp, shared by
scripts/prepare_music.py and scripts/prepare_kinetics_sounds.py.

Every yt-dlp call gets the project's ffmpeg (``--ffmpeg-location``, the binary of :func:`find_ffmpeg`, so
merging works where ffmpeg comes only from imageio-ffmpeg), a height cap on the formats it picks
(``--max_height``, default 480: the loader needs a short side of 246 px, and 1080p/4K files are 5-20x larger),
and, for a section (Kinetics clips), ``--download-sections *START-END --force-keyframes-at-cuts`` so the cut
lands on the requested times instead of the nearest keyframes.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from dataset.media import find_ffmpeg, last_error_line
from utils.errors import UsageError
from utils.fileio import atomic_write_csv
from utils.safepath import safe_join

YOUTUBE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{11}$")  # YouTube video ids are 11 characters of this alphabet
DEFAULT_MAX_HEIGHT = 480  # px: frames are cut to a 246-px short side at most (224 x 1.1), so more is waste


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
        raise FileNotFoundError("yt-dlp not found on PATH (install it, e.g. `pip install yt-dlp`); "
                                "without --download only the download list is written")
    return exe


def format_selector(max_height: int) -> str:
    """yt-dlp ``-f`` value: mp4 video + m4a audio (else any merge, else one file) no taller than
    ``max_height``; when a video has no format under the cap, its smallest one (``wv*+ba/w``)."""
    h = f"[height<={int(max_height)}]"
    return f"bv*{h}[ext=mp4]+ba[ext=m4a]/b{h}[ext=mp4]/bv*{h}+ba/b{h}/wv*+ba/w"


def _section_text(seconds: float) -> str:
    """Seconds as yt-dlp reads them in a section: ``10``, ``12.5`` (millisecond precision, no exponent)."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def yt_dlp_command(exe: str, item: Download, template: Path, max_height: int, ffmpeg: str) -> List[str]:
    """The yt-dlp argv that fetches ``item`` to ``template`` (an output template with ``%(ext)s``)."""
    cmd = [exe, "--no-playlist", "--quiet", "--no-progress", "--continue",
           "--ffmpeg-location", ffmpeg,
           "-f", format_selector(max_height), "--merge-output-format", "mp4",
           "-o", str(template)]
    if item.section is not None:
        start, end = item.section
        cmd += ["--download-sections", f"*{_section_text(start)}-{_section_text(end)}", "--force-keyframes-at-cuts"]
    return cmd + [item.url]


def destination(out_root: Path, item: Download) -> Path:
    """``<out_root>/<label>/<vid>.mp4``, its names checked and its folder inside ``out_root`` (no symlink
    leading out; utils/safepath.py)."""
    return safe_join(out_root, item.label, f"{item.vid}.mp4", where=f"download list, {item.label}/{item.vid}",
                     what="clip", write=True)


def _download_one(exe: str, item: Download, dest: Path, max_height: int, ffmpeg: str) -> Optional[str]:
    """Fetch one video to ``dest``; returns None on success or the failure reason. Partial files resume on
    the next run."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    # a fixed hidden name: yt-dlp keeps its own .part file next to it and resumes it on the next run
    template = dest.parent / f".{item.vid}.download.%(ext)s"
    proc = subprocess.run(yt_dlp_command(exe, item, template, max_height, ffmpeg), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, errors="replace")
    if proc.returncode != 0:
        return f"yt-dlp exit {proc.returncode}: {last_error_line(proc.stderr)}"
    produced = dest.parent / f".{item.vid}.download.mp4"
    if not produced.is_file() or produced.stat().st_size == 0:
        return "yt-dlp reported success but wrote no .mp4"
    os.replace(produced, dest)
    return None


def download_videos(items: List[Download], out_root: Path, workers: int = 4, progress: bool = True,
                    max_height: int = DEFAULT_MAX_HEIGHT) -> Tuple[int, int, List[Tuple[Download, str]]]:
    """Download ``items`` with yt-dlp into ``out_root/<label>/<vid>.mp4``, skipping complete files.

    Returns (downloaded, already present, failures with reasons). A file appears under its final name only
    once yt-dlp has finished it, so an interrupted run resumes where it stopped. ``FileNotFoundError`` when
    yt-dlp or ffmpeg is missing; :class:`utils.safepath.UnsafePathError` (before any download) when a
    label or id is not one file name or a class folder is a symlink leading out of ``out_root``.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    exe = find_yt_dlp()
    ffmpeg = find_ffmpeg()
    dests = [destination(Path(out_root), it) for it in items]  # all checked before the first download
    todo = [(it, d) for it, d in zip(items, dests) if not d.is_file()]
    present = len(items) - len(todo)
    failures: List[Tuple[Download, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # threads: the work is in yt-dlp processes
        results = pool.map(lambda job: (job[0], _download_one(exe, job[0], job[1], max_height, ffmpeg)), todo)
        for item, reason in tqdm(results, total=len(todo), desc="download", unit="video", disable=not progress):
            if reason is not None:
                failures.append((item, reason))
    return len(todo) - len(failures), present, failures


def add_download_args(p, what: str) -> None:
    """The --download/--workers flags shared by the prepare_*.py scripts (``what`` names the files)."""
    p.add_argument("--download", action="store_true", help=f"download the {what} with yt-dlp")
    p.add_argument("--workers", type=int, default=4, help="parallel yt-dlp processes")
    p.add_argument("--max_height", type=int, default=DEFAULT_MAX_HEIGHT,
                   help="download formats at most this many pixels tall (the smallest one when a video has none; "
                        f"default {DEFAULT_MAX_HEIGHT}: frames are used at a short side of 246 px at most)")


def download_and_report(items: List[Download], out_root: Path, workers: int,
                        max_height: int = DEFAULT_MAX_HEIGHT) -> str:
    """Download ``items``, write ``<out_root>/download_failures.csv`` and return a one-line summary.
    Raises :class:`UsageError` naming the flag when ``max_height`` is not positive or yt-dlp (``--download``)
    or ffmpeg is not installed."""
    if max_height < 1:
        raise UsageError("--max_height", f"must be a positive number of pixels, got {max_height}")
    try:
        done, present, failures = download_videos(items, out_root, workers=workers, max_height=max_height)
    except FileNotFoundError as err:
        raise UsageError("--download", str(err)) from None
    report = Path(out_root) / "download_failures.csv"
    atomic_write_csv(report, ["class", "id", "url", "reason"], [(d.label, d.vid, d.url, r) for d, r in failures])
    return f"downloaded {done}, already present {present}, failed {len(failures)} (see {report})"
