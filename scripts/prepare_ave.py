"""Turn the AVE archive into class folders of videos and the official split as clip lists.

    python scripts/prepare_ave.py --ave_root AVE_Dataset --out media/ave/raw [--copy]
    python scripts/extract_frames.py --video_path media/ave/raw/videos --out_dir media/ave/data/frames --short_side 256
    python scripts/extract_audio.py  --video_path media/ave/raw/videos --out_dir media/ave/data/audio
    python scripts/make_index.py --root media/ave --out data/ave --splits_from media/ave/raw/splits

Input (the authors' archive): ``AVE_Dataset/AVE/<VideoID>.mp4`` and ``Annotations.txt``, ``trainSet.txt``,
``valSet.txt``, ``testSet.txt`` with lines ``Category&VideoID&Quality&StartTime&EndTime`` (a header line
``Category&VideoID&...`` is skipped where present). AVE category names ("Church bell", "Frying (food)",
"Fixed-wing aircraft, airplane") are mapped to the spec's class names (Church_bell, Frying, airplane).

Output under --out: ``videos/<class>/<VideoID>.mp4`` (symlinks, or copies with --copy),
``splits/{train,val,test}.txt`` (``<class>/<VideoID>`` per line), ``missing_videos.csv`` (listed but not in
the archive) and ``split_issues.csv``. The official lists repeat some videos within a split and across
splits, some under two classes; each video is kept once, in the first of test, val, train that lists it,
under the class of its first line there, and every change is reported (a video annotated under two classes
with both labels and the rule). Every text file may start with a UTF-8 BOM. A VideoID that is not one file
name (``..``, a path, empty) is refused naming the file and row, and a class folder under ``--out/videos``
that is a symlink leading out of it is refused (utils/safepath.py), before anything is written.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.index import read_text_lines  # noqa: E402
from dataset.media import partial_path  # noqa: E402
from dataset.specs import get_spec  # noqa: E402
from utils.errors import MalformedFileError, run_cli  # noqa: E402
from utils.fileio import atomic_write_csv, atomic_write_text, atomic_write_with  # noqa: E402
from utils.safepath import check_name, safe_join  # noqa: E402

SPLIT_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
PRIORITY = ("test", "val", "train")  # a video listed in several splits stays in the first of these
HEADER_PREFIX = "Category&VideoID"


@dataclass(frozen=True)
class AveEntry:
    """One annotation line: the spec class name, the YouTube id and where it came from."""

    label: str
    vid: str
    where: str

    @property
    def clip_id(self) -> str:
        return f"{self.label}/{self.vid}"


def _normalise(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", re.sub(r"\(.*?\)", "", name).strip()).lower()


def category_to_class(category: str, classes: Sequence[str], path: Path, row: int) -> str:
    """Map an AVE category ("Race car, auto racing") to a spec class ("Race_car"); unknown names raise
    :class:`MalformedFileError` naming ``path`` and ``row``."""
    lookup = {c.lower(): c for c in classes}
    for part in category.split(","):
        key = _normalise(part)
        if key in lookup:
            return lookup[key]
    raise MalformedFileError(path, f"category {category!r} matches no AVE class; valid: {', '.join(classes)}", row)


def read_ave_list(path: Path, classes: Sequence[str]) -> List[AveEntry]:
    """Entries of an AVE list file; malformed or undecodable lines raise :class:`MalformedFileError` naming
    the file and the row."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (expected in the AVE archive)")
    entries = []
    for lineno, line in read_text_lines(path):
        line = line.strip()
        if not line or (lineno == 1 and line.startswith(HEADER_PREFIX)):
            continue
        parts = line.split("&")
        if len(parts) != 5:
            raise MalformedFileError(path, f"expected Category&VideoID&Quality&StartTime&EndTime, got {line!r}",
                                     lineno)
        where = f"{path}, row {lineno}"
        vid = check_name(parts[1].strip(), where, "VideoID")  # it becomes AVE/<vid>.mp4 and videos/<class>/...
        entries.append(AveEntry(category_to_class(parts[0], classes, path, lineno), vid, where))
    return entries


def resolve_splits(lists: Dict[str, List[AveEntry]]) -> Tuple[Dict[str, List[AveEntry]], List[Tuple[str, str]]]:
    """Keep each video once: first occurrence within a split, first split in ``PRIORITY`` across splits.

    Returns the cleaned lists and ``(clip_id, issue)`` pairs describing every dropped line.
    """
    owner: Dict[str, Tuple[str, AveEntry]] = {}
    issues: List[Tuple[str, str]] = []
    for split in PRIORITY:
        for e in lists.get(split, []):
            owner.setdefault(e.vid, (split, e))
    clean: Dict[str, List[AveEntry]] = {}
    for split in SPLIT_FILES:
        seen: Dict[str, AveEntry] = {}
        clean[split] = []
        for e in lists.get(split, []):
            kept_split, kept = owner[e.vid]
            if kept_split != split:
                two = "" if kept.label == e.label else f" (annotated as {e.label} there, {kept.label} in {kept_split})"
                issues.append((e.clip_id, f"in {split} and {kept_split}{two}: kept in {kept_split} only ({e.where}; "
                                          "rule: test, then val, then train)"))
            elif e.vid in seen and seen[e.vid].label != e.label:
                first = seen[e.vid]
                issues.append((e.clip_id, f"annotated under two classes in {split}: {first.label} ({first.where}) and "
                                          f"{e.label} ({e.where}); kept {first.label} (rule: the first line wins)"))
            elif e.vid in seen:
                issues.append((e.clip_id, f"repeated in {split} (first at {seen[e.vid].where}; dropped {e.where})"))
            else:
                seen[e.vid] = e
                clean[split].append(e)
    return clean, issues


def place_video(src: Path, dest: Path, copy: bool) -> str:
    """Symlink (or copy) ``src`` to ``dest`` atomically; returns "placed", "updated" or "unchanged"."""
    target = src.resolve()
    if dest.is_symlink() and not copy and Path(os.readlink(dest)) == target:
        return "unchanged"
    if copy and dest.is_file() and not dest.is_symlink() and dest.stat().st_size == target.stat().st_size:
        return "unchanged"
    status = "updated" if (dest.exists() or dest.is_symlink()) else "placed"
    if copy:
        with open(target, "rb") as src_file:
            atomic_write_with(dest, lambda f: shutil.copyfileobj(src_file, f))
        return status
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(dest)  # a symlink cannot go through a temporary file: make it aside, rename it in
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, dest)
    return status


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of the AVE preparation."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ave_root", type=Path, required=True, help="AVE_Dataset folder (AVE/, Annotations.txt, ...)")
    p.add_argument("--out", type=Path, required=True, help="output folder (videos/, splits/, reports)")
    p.add_argument("--copy", action="store_true", help="copy the videos instead of symlinking them")
    return p


def prepare(ave_root: Path, out: Path, copy: bool) -> Dict[str, int]:
    """Do the whole preparation; returns counts for the summary."""
    if not (ave_root / "Annotations.txt").is_file():
        hint = " (did you mean its AVE_Dataset sub-folder?)" if (ave_root / "AVE_Dataset").is_dir() else ""
        raise FileNotFoundError(f"--ave_root {ave_root}: no Annotations.txt{hint}")
    video_dir = ave_root / "AVE"
    if not video_dir.is_dir():
        raise FileNotFoundError(f"--ave_root {ave_root}: no AVE/ folder of videos")
    classes = get_spec("ave").categories
    annotated = read_ave_list(ave_root / "Annotations.txt", classes)
    lists = {s: read_ave_list(ave_root / f, classes) for s, f in SPLIT_FILES.items()}
    clean, issues = resolve_splits(lists)
    missing, counts = [], {"placed": 0, "updated": 0, "unchanged": 0}
    split_ids: Dict[str, List[str]] = {}
    placements = []  # every destination checked before the first video is placed
    for split, entries in clean.items():
        split_ids[split] = []
        for e in entries:
            src = safe_join(video_dir, f"{e.vid}.mp4", where=e.where, what="VideoID")
            if not src.is_file():
                missing.append((e.clip_id, str(src), split))
                continue
            dest = safe_join(out / "videos", e.label, f"{e.vid}.mp4", where=e.where, what="video", write=True)
            placements.append((src, dest))
            split_ids[split].append(e.clip_id)
    for src, dest in placements:
        counts[place_video(src, dest, copy)] += 1
    for split, ids in split_ids.items():
        atomic_write_text(out / "splits" / f"{split}.txt", "".join(f"{c}\n" for c in ids))
    atomic_write_csv(out / "missing_videos.csv", ["clip_id", "video", "split"], missing)
    atomic_write_csv(out / "split_issues.csv", ["clip_id", "issue"], issues)
    listed = {e.vid for entries in lists.values() for e in entries}
    counts.update({f"{s}": len(ids) for s, ids in split_ids.items()})
    labels: Dict[str, List[str]] = {}
    for e in annotated:
        if e.label not in labels.setdefault(e.vid, []):
            labels[e.vid].append(e.label)
    double = {v: ls for v, ls in labels.items() if len(ls) > 1}
    counts.update(missing=len(missing), issues=len(issues), annotated=len(annotated), double=len(double),
                  annotated_not_in_split=len({e.vid for e in annotated} - listed))
    for vid, ls in sorted(double.items()):
        print(f"  annotated under {len(ls)} classes: {vid}: {' and '.join(ls)} (split_issues.csv says which is kept)")
    for clip_id, video, split in missing:
        print(f"  missing ({split}): {clip_id} ({video})")
    for clip_id, issue in issues:
        print(f"  split issue: {clip_id}: {issue}")
    return counts


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        c = prepare(args.ave_root, args.out, args.copy)
    except FileNotFoundError as err:  # malformed files reach run_cli, which exits 2 as well
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"AVE: train {c['train']}, val {c['val']}, test {c['test']} videos; {c['missing']} listed but missing "
          f"from the archive (missing_videos.csv); {c['issues']} split lines dropped as repeats/leakage "
          f"(split_issues.csv); {c['double']} videos annotated under two classes; {c['annotated_not_in_split']} "
          f"annotated videos in no split; videos "
          f"{c['placed']} placed, {c['updated']} updated, {c['unchanged']} unchanged")
    print(f"clip lists: {args.out / 'splits'} (use with make_index.py --splits_from)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
