"""Kinetics-Sounds from Kinetics-400: annotation CSVs read into clips with their split, and clips already
downloaded (by anyone's downloader) ingested into the class folders the extractors read.

Annotation CSVs (train/val/test of Kinetics-400): header ``label,youtube_id,time_start,time_end,split`` and
sometimes ``is_cc``; labels use spaces and may be quoted ("playing bass guitar"), the spec's classes use
underscores (``playing_bass_guitar``).

Downloaded clips come in two common layouts, both read here:
- flat: ``<folder>/<youtube_id>_<start:06d>_<end:06d>.mp4`` (the usual source now that many videos are gone
  from YouTube);
- per class: ``<folder>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4`` (or ``<label>/<youtube_id>.mp4``),
  the label spelled with spaces or underscores.
A clip is matched by its YouTube id (11 characters, possibly with ``_`` and ``-``, so names are parsed from
the right); a file whose times differ from the CSV's is still matched and the difference is reported.
"""
from __future__ import annotations

import csv
import errno
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from dataset.download import YOUTUBE_ID_RE
from dataset.index import read_text_lines
from utils.errors import MalformedFileError, UsageError
from utils.safepath import safe_join

REQUIRED = ("label", "youtube_id", "time_start", "time_end", "split")
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
               "validation": "val", "test": "test", "testing": "test"}
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm")
_CLIP_NAME_RE = re.compile(r"^(?P<vid>[A-Za-z0-9_-]{11})(?:_(?P<start>\d+)_(?P<end>\d+))?$")


@dataclass(frozen=True)
class KineticsClip:
    """One annotated clip of a Kinetics-Sounds class: where it comes from and which split it belongs to."""

    label: str
    vid: str
    start: float
    end: float
    split: str
    where: str  # "<csv>, row N"

    @property
    def clip_id(self) -> str:
        return f"{self.label}/{self.vid}"


def class_name(label: str) -> str:
    """Kinetics label -> spec class name ("playing bass guitar" -> ``playing_bass_guitar``)."""
    return "_".join(label.strip().split())


def _seconds(value: str, path: Path, row: int, column: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise MalformedFileError(path, f"{column} {value!r} is not a number of seconds", row) from None


def read_kinetics_csv(path: Path, classes: Sequence[str]) -> List[KineticsClip]:
    """The rows of ``classes`` in one annotation CSV; a bad header, row or encoding raises
    :class:`MalformedFileError` naming the file and the row; a missing file raises ``FileNotFoundError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--csv {path} not found")
    wanted = set(classes)
    clips: List[KineticsClip] = []
    reader = csv.DictReader(text for _, text in read_text_lines(path))  # one string per physical line
    try:
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise MalformedFileError(path, f"header lacks {', '.join(missing)} (expected {','.join(REQUIRED)}"
                                           "[,is_cc])", 1)
        for row in reader:
            rowno = reader.line_num
            if None in row or any(row[c] is None for c in REQUIRED):
                raise MalformedFileError(path, f"expected {len(reader.fieldnames)} fields", rowno)
            label = class_name(row["label"])
            if label not in wanted:
                continue
            vid = row["youtube_id"].strip()
            if not YOUTUBE_ID_RE.match(vid):
                raise MalformedFileError(path, f"youtube_id {vid!r} is not an 11-character YouTube id", rowno)
            start = _seconds(row["time_start"], path, rowno, "time_start")
            end = _seconds(row["time_end"], path, rowno, "time_end")
            if not 0 <= start < end:
                raise MalformedFileError(path, f"time_start {start} / time_end {end} is not 0 <= start < end", rowno)
            split = SPLIT_NAMES.get(row["split"].strip().lower())
            if split is None:
                raise MalformedFileError(path, f"split {row['split']!r} is not train, val(idate) or test", rowno)
            clips.append(KineticsClip(label, vid, start, end, split, f"{path}, row {rowno}"))
    except csv.Error as err:
        raise MalformedFileError(path, f"not a CSV row ({err})", reader.line_num) from None
    return clips


def read_kinetics_csvs(paths: Sequence[Path], classes: Sequence[str]) -> Tuple[List[KineticsClip], List[str]]:
    """The clips of several CSVs (train, val, test) in one list, each YouTube id once (its first row, which
    keeps its split), and notes on the repeated ids (with both places and splits)."""
    first: Dict[str, KineticsClip] = {}
    notes: List[str] = []
    for path in paths:
        for clip in read_kinetics_csv(path, classes):
            seen = first.get(clip.vid)
            if seen is None:
                first[clip.vid] = clip
                continue
            other = "" if seen.split == clip.split else f" (there in {seen.split}, here in {clip.split})"
            notes.append(f"id {clip.vid} repeated at {clip.where}{other}: kept once, as at {seen.where}")
    return list(first.values()), notes


@dataclass(frozen=True)
class FoundFile:
    """A downloaded clip file: its YouTube id, the times in its name (None when absent) and its path."""

    vid: str
    start: Optional[int]
    end: Optional[int]
    path: Path


def parse_clip_name(path: Path) -> Optional[FoundFile]:
    """``<id>_<start>_<end>.<ext>`` or ``<id>.<ext>`` -> :class:`FoundFile`; None for other names."""
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        return None
    m = _CLIP_NAME_RE.match(path.stem)
    if m is None:
        return None
    start, end = m.group("start"), m.group("end")
    return FoundFile(m.group("vid"), int(start) if start else None, int(end) if end else None, path)


def scan_downloaded(folder: Path) -> Tuple[Dict[str, List[FoundFile]], List[Path]]:
    """Video files in ``folder`` (flat) and in its sub-folders (per class), by YouTube id, and the video files
    whose names are not ``<id>[_<start>_<end>]``. Hidden names (partial downloads) are ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError("--ingest", f"{folder} is not a folder of downloaded clips")
    found: Dict[str, List[FoundFile]] = {}
    unnamed: List[Path] = []
    entries = sorted(folder.iterdir())
    files = [e for e in entries if e.is_file()]
    for sub in (e for e in entries if e.is_dir() and not e.name.startswith(".")):
        files += sorted(f for f in sub.iterdir() if f.is_file())
    for path in files:
        if path.name.startswith(".") or path.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        parsed = parse_clip_name(path)
        if parsed is None:
            unnamed.append(path)
        else:
            found.setdefault(parsed.vid, []).append(parsed)
    return found, unnamed


def _pick(files: List[FoundFile], clip: KineticsClip) -> Tuple[FoundFile, str]:
    """The file of ``clip`` among those with its id (the one with the CSV's times first), and a note."""
    exact = [f for f in files if f.start == int(clip.start) and f.end == int(clip.end)]
    chosen = exact[0] if exact else files[0]
    notes = []
    if not exact and chosen.start is not None:
        notes.append(f"file times {chosen.start}-{chosen.end} s, CSV {clip.start:g}-{clip.end:g} s")
    if len(files) > 1:
        notes.append(f"{len(files)} files with this id, used {chosen.path.name}")
    return chosen, "; ".join(notes)


def _place(src: Path, dest: Path, copy: bool) -> bool:
    """Hard-link (or copy) ``src`` to ``dest``; False when the clip is already there under any video suffix
    (it is kept: a second file with the same clip id would be skipped by the extractors)."""
    if any(dest.with_suffix(s).exists() for s in VIDEO_SUFFIXES):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.ingest")
    if tmp.exists():
        tmp.unlink()
    if copy:
        shutil.copyfile(src, tmp)
    else:
        try:
            os.link(src, tmp)
        except OSError as err:
            if err.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise UsageError("--ingest", f"cannot hard-link {src} into {dest.parent} ({err.strerror}): "
                                 "pass --copy to copy the clips instead") from None
            raise
    os.replace(tmp, dest)
    return True


@dataclass
class IngestReport:
    """What an ingest did: one row per listed clip (matched or missing) and per file in no list."""

    rows: List[Tuple[str, str, str, str, str, str]] = field(default_factory=list)
    placed: int = 0
    present: int = 0
    missing: int = 0
    unlisted: int = 0

    header = ("class", "id", "split", "status", "source", "note")

    def summary(self, folder: Path, dest: Path) -> str:
        matched = self.placed + self.present
        return (f"ingest {folder}: {matched} clips matched ({self.placed} placed, {self.present} already in "
                f"{dest}), {self.missing} missing, {self.unlisted} files not in the lists")


def ingest(clips: Iterable[KineticsClip], folder: Path, out: Path, copy: bool = False) -> IngestReport:
    """Place the downloaded clips of ``folder`` that ``clips`` list into ``out/<class>/<id><ext>``; a class
    folder that is a symlink leading out of ``out`` is refused (:class:`UnsafePathError`) before any clip is
    placed."""
    found, unnamed = scan_downloaded(folder)
    report = IngestReport()
    listed = set()
    matched = []  # every destination checked (utils/safepath.py) before the first clip is placed
    for clip in clips:
        listed.add(clip.vid)
        files = found.get(clip.vid)
        if not files:
            report.missing += 1
            report.rows.append((clip.label, clip.vid, clip.split, "missing", "", f"listed at {clip.where}"))
            continue
        chosen, note = _pick(files, clip)
        dest = safe_join(out, clip.label, f"{clip.vid}{chosen.path.suffix.lower()}", where=clip.where,
                         what="clip", write=True)
        matched.append((clip, chosen, note, dest))
    for clip, chosen, note, dest in matched:
        placed = _place(chosen.path, dest, copy)
        report.placed += placed
        report.present += not placed
        report.rows.append((clip.label, clip.vid, clip.split, "matched", str(chosen.path), note))
    for vid in sorted(set(found) - listed):
        for f in found[vid]:
            report.unlisted += 1
            report.rows.append(("", vid, "", "not in the lists", str(f.path), "not a listed Kinetics-Sounds clip"))
    for path in unnamed:
        report.unlisted += 1
        report.rows.append(("", "", "", "not in the lists", str(path), "name is not <youtube_id>_<start>_<end>"))
    return report
