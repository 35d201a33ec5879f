"""Index CSVs: the one reader/writer, clip-length checks, stratified splits from extracted media, and the
leakage check.

Row format (docs/paper.md, Preprocessing and layout; no header): ``/<class>/<vid>.wav,/<class>/<vid>.mp4,
<num_frames>``. The class is the first path component and the clip id is ``<class>/<vid>``. Leakage means a
clip listed twice in one file or in more than one split; a YouTube id filed under two classes is reported
too.

:func:`read_index` is the only parser of index files: the loader (dataset/av_dataset.py), ``make_index.py
--check`` and the pre-flight checks all read through it, so they accept and reject the same files. Files are
read as bytes and decoded row by row, so an undecodable or binary file is an :class:`IndexFormatError`
naming the file and the row, never a ``UnicodeDecodeError``. Blank (whitespace-only) lines are skipped; a
file without rows is an error.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from dataset.errors import IndexFormatError, MediaError
from dataset.media import SAMPLE_RATE, check_frame_dir, check_wav, is_partial_name
from dataset.windows import centre_range, frames_needed
from utils.fileio import atomic_write_csv, atomic_write_text

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
SPLITS = ("train", "val", "test")
_AUDIO_RE = re.compile(r"^/([^/]+)/([^/]+)\.wav$")
_FRAMES_RE = re.compile(r"^/([^/]+)/([^/]+)\.mp4$")
_COUNT_RE = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also accepts '²', '٣', ...
_BOM = "\ufeff"


@dataclass(frozen=True)
class IndexRow:
    """One clip of an index CSV: ``label`` is the class name. ``line`` (1-based row in the file) and
    ``source`` (the file's path) say where it was read; they are 0 and "" for rows built in memory and take
    no part in equality or hashing (a row is its clip and frame count, wherever it was read)."""

    label: str
    vid: str
    num_frames: int
    line: int = field(default=0, compare=False)
    source: str = field(default="", compare=False)

    @property
    def clip_id(self) -> str:
        return f"{self.label}/{self.vid}"

    @property
    def audio(self) -> str:
        return f"/{self.label}/{self.vid}.wav"

    @property
    def frames(self) -> str:
        return f"/{self.label}/{self.vid}.mp4"

    def fields(self) -> List[str]:
        """The three CSV fields of this row."""
        return [self.audio, self.frames, str(self.num_frames)]

    def where(self) -> str:
        """Location used in error messages: ``<file>, row <n>`` (the form of :class:`IndexFormatError`)."""
        return f"{self.source}, row {self.line}"


def read_text_lines(path: PathLike) -> List[Tuple[int, str]]:
    """``(row number from 1, text)`` of every line of a UTF-8 text file (a leading BOM is dropped; line ends
    are stripped). A NUL byte (binary data) or bytes that are not UTF-8 raise :class:`IndexFormatError`
    naming the file and the row; a missing path raises ``FileNotFoundError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last row
    out: List[Tuple[int, str]] = []
    for number, raw in enumerate(lines, start=1):
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        if b"\x00" in raw:
            raise IndexFormatError(path, "binary data (NUL byte), not a text file", row=number)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise IndexFormatError(path, f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1})",
                                   row=number) from None
        if number == 1 and text.startswith(_BOM):
            text = text[1:]
        out.append((number, text))
    return out


def parse_row(fields: Sequence[str], source: PathLike, line: int) -> IndexRow:
    """Parse the fields of one CSV row (``line``: its 1-based row in ``source``); a malformed row raises
    :class:`IndexFormatError` naming the file and the row."""
    def bad(reason: str) -> IndexFormatError:
        return IndexFormatError(source, reason, row=line)

    if len(fields) != 3:
        raise bad(f"expected 3 fields (audio,frames,num_frames), got {len(fields)}: {','.join(fields)!r}")
    audio, frames, count = (f.strip() for f in fields)
    a, v = _AUDIO_RE.match(audio), _FRAMES_RE.match(frames)
    if a is None:
        raise bad(f"audio path {audio!r} is not /<class>/<vid>.wav")
    if v is None:
        raise bad(f"frame path {frames!r} is not /<class>/<vid>.mp4")
    if a.groups() != v.groups():
        raise bad(f"audio {audio!r} and frames {frames!r} name different clips")
    if not _COUNT_RE.fullmatch(count) or int(count) <= 0:
        raise bad(f"num_frames {count!r} is not a positive integer")
    return IndexRow(a.group(1), a.group(2), int(count), line, str(source))


def _check_categories(categories: Sequence[str]) -> List[str]:
    cats = list(categories)
    if not cats or len(set(cats)) != len(cats):
        raise ValueError(f"categories must be non-empty and unique, got {cats}")
    return cats


def read_index(path: PathLike, categories: Optional[Sequence[str]] = None) -> List[IndexRow]:
    """Rows of an index CSV (no header), in file order; blank lines are skipped.

    Raises :class:`IndexFormatError` naming the file and the row for an undecodable or malformed row, a
    class not in ``categories`` (when given), or a file with no rows; ``FileNotFoundError`` for a missing
    file.
    """
    source = str(path)
    cats = _check_categories(categories) if categories is not None else None
    rows: List[IndexRow] = []
    for line, text in read_text_lines(path):
        if not text.strip():
            continue
        try:
            fields = next(csv.reader([text], strict=True))
        except csv.Error as err:
            raise IndexFormatError(source, f"not a CSV row ({err}): {text!r}", row=line) from None
        row = parse_row(fields, source, line)
        if cats is not None and row.label not in cats:
            raise IndexFormatError(source, f"class {row.label!r} is not one of the {len(cats)} categories "
                                           f"({', '.join(cats)})", row=line)
        rows.append(row)
    if not rows:
        raise IndexFormatError(source, "the index has no rows")
    return rows


def check_clip_lengths(rows: Iterable[IndexRow], num_frames: int, stride_frames: int) -> None:
    """Raise :class:`IndexFormatError` naming the file and row of the first clip with too few frames for a
    window of ``num_frames`` frames at stride ``stride_frames`` (the window the loader reads, see
    dataset/windows.py); such a clip would otherwise fail in the middle of training."""
    if num_frames < 1 or stride_frames < 1:
        raise ValueError(f"num_frames and stride_frames must be >= 1, got {num_frames}, {stride_frames}")
    for row in rows:
        lo, hi = centre_range(row.num_frames, num_frames, stride_frames)
        if lo > hi:
            raise IndexFormatError(row.source or "<rows>", f"clip {row.clip_id} has {row.num_frames} frames; a "
                                   f"window of {num_frames} frames at stride {stride_frames} needs "
                                   f"{frames_needed(num_frames, stride_frames)}", row=row.line or None)


def write_index(path: PathLike, rows: Iterable[IndexRow]) -> None:
    """Write rows (no header) atomically: a reader sees the old file or the complete new one."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow(row.fields())
    atomic_write_text(Path(path), buf.getvalue())


# --------------------------------------------------------------------------------------------------------------
# Leakage

@dataclass
class LeakageReport:
    """Duplicates within each split and clips shared between splits (split name -> clip ids)."""

    sizes: Dict[str, int] = field(default_factory=dict)
    duplicates: Dict[str, Dict[str, int]] = field(default_factory=dict)  # split -> clip id -> times listed
    overlaps: Dict[Tuple[str, str], List[str]] = field(default_factory=dict)  # (split a, split b) -> clip ids
    cross_class: Dict[str, List[str]] = field(default_factory=dict)  # vid -> clip ids with different classes

    @property
    def clean(self) -> bool:
        return not (any(self.duplicates.values()) or any(self.overlaps.values()) or self.cross_class)

    def duplicate_rows(self, split: str) -> int:
        """Rows of ``split`` that repeat an earlier row's clip."""
        return sum(n - 1 for n in self.duplicates.get(split, {}).values())

    def lines(self) -> List[str]:
        """Human-readable report naming every offending clip."""
        out = [f"{name}: {n} rows" for name, n in self.sizes.items()]
        for name, dups in self.duplicates.items():
            if dups:
                out.append(f"DUPLICATES in {name}: {self.duplicate_rows(name)} duplicate rows "
                           f"({len(dups)} clips): " + ", ".join(f"{c} x{n}" for c, n in sorted(dups.items())))
        for (a, b), clips in self.overlaps.items():
            if clips:
                out.append(f"OVERLAP {a}/{b}: {len(clips)} clips in both: " + ", ".join(clips))
        for vid, clips in sorted(self.cross_class.items()):
            out.append(f"CROSS-CLASS: video {vid} is listed under several classes: " + ", ".join(clips))
        out.append("no leakage found" if self.clean else "LEAKAGE FOUND")
        return out


def check_leakage(splits: Mapping[str, Sequence[IndexRow]]) -> LeakageReport:
    """Find duplicate clips within each split, clips shared by two splits, and videos under two classes."""
    report = LeakageReport()
    ids: Dict[str, set] = {}
    classes_of_vid: Dict[str, set] = defaultdict(set)
    for name, rows in splits.items():
        counts = Counter(r.clip_id for r in rows)
        report.sizes[name] = len(rows)
        report.duplicates[name] = {c: n for c, n in counts.items() if n > 1}
        ids[name] = set(counts)
        for r in rows:
            classes_of_vid[r.vid].add(r.clip_id)
    for a, b in combinations(splits, 2):
        report.overlaps[(a, b)] = sorted(ids[a] & ids[b])
    report.cross_class = {v: sorted(c) for v, c in classes_of_vid.items() if len(c) > 1}
    return report


def check_files(paths: Sequence[PathLike]) -> LeakageReport:
    """Read index files (named by file name) and check them together for leakage."""
    names = [Path(p).name for p in paths]
    if len(set(names)) != len(names):
        names = [str(p) for p in paths]
    return check_leakage({n: read_index(p) for n, p in zip(names, paths)})


# --------------------------------------------------------------------------------------------------------------
# Building splits from extracted media

@dataclass(frozen=True)
class Excluded:
    """A clip left out of the index, with the reason."""

    clip_id: str
    reason: str


def _list_clips(folder: Path, suffix: str) -> Dict[str, Path]:
    """``<class>/<vid>`` -> path for entries ``folder/<class>/<vid><suffix>`` (hidden/partial names ignored)."""
    found: Dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for class_dir in sorted(folder.iterdir()):
        if is_partial_name(class_dir.name) or not class_dir.is_dir():
            continue
        for entry in sorted(class_dir.iterdir()):
            if not is_partial_name(entry.name) and entry.name.endswith(suffix):
                found[f"{class_dir.name}/{entry.name[:-len(suffix)]}"] = entry
    return found


def scan_media(root: Path, sample_rate: Optional[int] = SAMPLE_RATE) -> Tuple[Dict[str, IndexRow], List[Excluded]]:
    """Clips under ``root/data/{audio,frames}`` with both a complete WAV and complete frames.

    Returns clip id -> row (num_frames counted on disk) and the clips left out with the reason (audio only,
    frames only, unreadable WAV, wrong sample rate, frames missing or not numbered 1..N).
    """
    root = Path(root)
    audio_dir, frame_dir = root / "data" / "audio", root / "data" / "frames"
    if not audio_dir.is_dir() and not frame_dir.is_dir():
        raise FileNotFoundError(f"--root {root}: neither {audio_dir} nor {frame_dir} exists")
    audio, frames = _list_clips(audio_dir, ".wav"), _list_clips(frame_dir, ".mp4")
    rows: Dict[str, IndexRow] = {}
    excluded: List[Excluded] = []
    for clip_id in sorted(set(audio) | set(frames)):
        if clip_id not in frames:
            excluded.append(Excluded(clip_id, "audio but no frames"))
            continue
        if clip_id not in audio:
            excluded.append(Excluded(clip_id, "frames but no audio"))
            continue
        try:
            check_wav(audio[clip_id], sample_rate)
            n = check_frame_dir(frames[clip_id])
        except MediaError as err:
            excluded.append(Excluded(clip_id, f"{err.path.name}: {err.reason}"))
            continue
        label, vid = clip_id.split("/", 1)
        rows[clip_id] = IndexRow(label, vid, n)
    return rows, excluded


def filter_categories(rows: Dict[str, IndexRow], categories: Sequence[str]) -> Tuple[Dict[str, IndexRow],
                                                                                       List[Excluded]]:
    """Keep clips whose class is in ``categories``; a category without any clip raises ``ValueError``."""
    wanted = list(categories)
    kept = {c: r for c, r in rows.items() if r.label in wanted}
    excluded = [Excluded(c, "class not in --categories") for c, r in rows.items() if r.label not in wanted]
    empty = [c for c in wanted if not any(r.label == c for r in kept.values())]
    if empty:
        raise ValueError(f"--categories: no complete clips for {', '.join(empty)}")
    return kept, excluded


def _split_counts(n: int, val: float, test: float) -> Tuple[int, int]:
    """Val and test sizes of a class of ``n`` clips: rounded fractions, leaving at least one for train."""
    n_val, n_test = round(n * val), round(n * test)
    while n_val + n_test > n - 1 and (n_val or n_test):
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def stratified_split(rows: Iterable[IndexRow], val: float, test: float, seed: int) -> Dict[str, List[IndexRow]]:
    """Split clips per class into train/val/test with the given fractions; deterministic for ``seed``.

    Each class is shuffled with its own generator seeded by ``(seed, class)``, so adding a class never moves
    the clips of another. Rows in each split are sorted by clip id.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"--val {val} and --test {test} must be in [0, 1) with val + test < 1")
    by_class: Dict[str, List[IndexRow]] = defaultdict(list)
    for r in rows:
        by_class[r.label].append(r)
    out: Dict[str, List[IndexRow]] = {s: [] for s in SPLITS}
    for label in sorted(by_class):
        clips = sorted(by_class[label], key=lambda r: r.vid)
        random.Random(f"{seed}/{label}").shuffle(clips)
        n_val, n_test = _split_counts(len(clips), val, test)
        if (val > 0 and n_val == 0) or (test > 0 and n_test == 0):
            logger.warning("class %s has only %d clips: val %d, test %d", label, len(clips), n_val, n_test)
        out["test"] += clips[:n_test]
        out["val"] += clips[n_test:n_test + n_val]
        out["train"] += clips[n_test + n_val:]
    return {s: sorted(r, key=lambda x: x.clip_id) for s, r in out.items()}


def read_clip_list(path: PathLike) -> List[str]:
    """Clip ids ``<class>/<vid>`` one per line (blank lines and ``#`` comments skipped); a malformed or
    undecodable line raises :class:`IndexFormatError` naming the file and the row."""
    ids = []
    for lineno, line in read_text_lines(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("/")
        if len(parts) != 2 or not all(parts):
            raise IndexFormatError(path, f"expected <class>/<vid>, got {line!r}", row=lineno)
        ids.append(line)
    return ids


def write_excluded(path: Path, excluded: Sequence[Excluded]) -> None:
    """Write ``clip_id,reason`` rows (with a header) atomically."""
    atomic_write_csv(Path(path), ["clip_id", "reason"], [(e.clip_id, e.reason) for e in excluded])


def write_splits(out_dir: Path, splits: Mapping[str, Sequence[IndexRow]]) -> List[Path]:
    """Write ``<out_dir>/<split>.csv`` for each split (each atomically); returns the paths."""
    out_dir = Path(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for split, rows in splits.items():
        path = out_dir / f"{split}.csv"
        write_index(path, rows)
        paths.append(path)
    return paths
