"""Official splits reconciled with local media, and the cheap media check of the training pre-flight.

A split source (``make_index.py --splits_from SRC``) is either a folder of clip lists ``{train,val,test}.txt``
(``<class>/<vid>`` per line, as prepare_ave.py writes) or a folder of reference index CSVs
``{train,val,test}.csv`` (as shipped in ``data/music``, ``data/kinetics_sounds``, ``data/ave``). Their rows
carry the authors' frame counts (82 for a 10-s clip where the extractor here writes 80) and list videos that
are gone; :func:`reconcile` keeps every listed clip present on disk with its recounted frames and checked
audio, in its official split, and reports every other listed clip with the reason.

:func:`check_media` is what training runs before any step: each listed clip's WAV exists and its frame
folder holds exactly the listed number of frames (a directory listing, no decoding).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from dataset.index import SPLITS, Excluded, IndexRow, read_clip_list, read_index
from utils.errors import UsageError


@dataclass(frozen=True)
class SplitSource:
    """The clip ids of each split of a source, their listed frame counts (CSV sources) and the source kind."""

    kind: str  # "csv" or "txt"
    ids: Dict[str, List[str]]
    listed_frames: Dict[str, int]


def read_split_source(folder: Path, flag: str = "--splits_from") -> SplitSource:
    """The splits of ``folder``: reference index CSVs when ``train.csv`` is there, else ``train.txt`` lists.

    Every split file of the chosen kind must exist (``UsageError`` naming ``flag`` and the missing file);
    malformed files raise :class:`IndexFormatError` naming the file and the row.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(flag, f"{folder} is not a folder (expected train/val/test .csv index files or .txt lists)")
    kind = "csv" if (folder / "train.csv").is_file() else "txt" if (folder / "train.txt").is_file() else ""
    if not kind:
        raise UsageError(flag, f"{folder} holds neither train.csv (reference index CSVs) nor train.txt (clip lists)")
    missing = [f"{s}.{kind}" for s in SPLITS if not (folder / f"{s}.{kind}").is_file()]
    if missing:
        raise UsageError(flag, f"{folder} has train.{kind} but not {', '.join(missing)}")
    ids: Dict[str, List[str]] = {}
    frames: Dict[str, int] = {}
    for split in SPLITS:
        path = folder / f"{split}.{kind}"
        if kind == "csv":
            rows = read_index(path)
            ids[split] = [r.clip_id for r in rows]
            frames.update({r.clip_id: r.num_frames for r in rows})
        else:
            ids[split] = read_clip_list(path)
    return SplitSource(kind, ids, frames)


def resolve_overlaps(ids: Mapping[str, Sequence[str]]) -> Tuple[Dict[str, List[str]], List[Excluded]]:
    """Rule for leaking reference CSVs: a clip listed twice in one split is kept once; a clip in several
    splits is kept in its held-out split (test before val) and dropped from the others. Returns the lists
    and what was dropped, with the rule."""
    order = ("test", "val", "train")
    owner: Dict[str, str] = {}
    for split in order:
        for c in ids.get(split, ()):
            owner.setdefault(c, split)
    out: Dict[str, List[str]] = {}
    dropped: List[Excluded] = []
    for split in SPLITS:
        seen = set()
        out[split] = []
        for c in ids.get(split, ()):
            if c in seen:
                dropped.append(Excluded(c, f"listed twice in {split}: kept once"))
            elif owner[c] != split:
                dropped.append(Excluded(c, f"in {split} and {owner[c]}: kept in {owner[c]} (held-out split wins)"))
            else:
                out[split].append(c)
            seen.add(c)
    return out, dropped


def reconcile(rows: Mapping[str, IndexRow], incomplete: Sequence[Excluded], ids: Mapping[str, Sequence[str]],
              listed_frames: Mapping[str, int]) -> Tuple[Dict[str, List[IndexRow]], List[Excluded], int]:
    """The official splits ``ids`` restricted to complete local clips (``rows``, recounted by ``scan_media``).

    Returns the splits, every listed clip left out with its reason (why the scan left it out, or that it is
    not on disk) plus complete clips in no list, and how many kept clips have a frame count that differs
    from the source's.
    """
    why = {e.clip_id: e.reason for e in incomplete}
    splits: Dict[str, List[IndexRow]] = {}
    excluded: List[Excluded] = []
    listed = set()
    for split, clip_ids in ids.items():
        splits[split] = []
        for clip_id in clip_ids:
            listed.add(clip_id)
            if clip_id in rows:
                splits[split].append(rows[clip_id])
            else:
                reason = why.get(clip_id, "no audio and no frames on disk (video missing or not extracted)")
                excluded.append(Excluded(clip_id, f"{split}: {reason}"))
    excluded += [Excluded(c, "complete but in no split list") for c in sorted(set(rows) - listed)]
    recounted = sum(1 for s in splits.values() for r in s
                    if listed_frames.get(r.clip_id, r.num_frames) != r.num_frames)
    return splits, excluded, recounted


def _count_frames(folder: Path) -> Optional[int]:
    """JPEG files in a frame folder (a listing, no decoding); None when the folder does not exist."""
    try:
        with os.scandir(folder) as it:
            return sum(1 for e in it if e.name.endswith(".jpg"))
    except (FileNotFoundError, NotADirectoryError):
        return None


def check_media(rows: Sequence[IndexRow], audio_path: Path, frame_path: Path, limit: int = 3) -> List[str]:
    """Up to ``limit`` clips whose media do not match their index row, described (``[]`` when all match).

    Cheap by design: a WAV must exist and the frame folder must hold exactly ``num_frames`` JPEGs.
    """
    problems: List[str] = []
    for r in rows:
        n = _count_frames(Path(frame_path) / r.label / f"{r.vid}.mp4")
        if n is None:
            problems.append(f"{r.clip_id} (row {r.line}): no frame folder")
        elif n != r.num_frames:
            problems.append(f"{r.clip_id} (row {r.line}): {n} frames on disk, the index says {r.num_frames}")
        elif not (Path(audio_path) / r.label / f"{r.vid}.wav").is_file():
            problems.append(f"{r.clip_id} (row {r.line}): no audio file")
        if len(problems) >= limit:
            break
    return problems


def rebuild_command(list_path: str, frame_path: str) -> str:
    """The make_index.py command that rebuilds a list's folder from the media under ``frame_path``."""
    frames = Path(frame_path)
    root = frames.parent.parent if frames.parent.name == "data" else frames.parent
    folder = Path(list_path).parent
    return (f"python scripts/make_index.py --root {root} --out <new folder> --splits_from {folder}"
            + ("" if frames.name == "frames" and frames.parent.name == "data" else
               "  (media must be laid out as <root>/data/{frames,audio})"))
