"""Kinetics-Sounds: filter a Kinetics-400 annotation CSV to the 27 classes and write a download list.

    python scripts/prepare_kinetics_sounds.py --csv kinetics400_train.csv --out media/kinetics_sounds/raw \
        [--download]

Input header: ``label,youtube_id,time_start,time_end,split``; Kinetics labels use spaces ("playing
clarinet"), the spec's classes underscores ("playing_clarinet"). Writes ``<out>/download_list.csv``
(class,id,url,time_start,time_end,split) and reports the classes with no rows. A YouTube id listed twice in
the subset is kept once (first row) and reported. With --download (yt-dlp on PATH) each clip's segment is
fetched to ``<out>/<class>/<id>.mp4`` (resumable; failures in ``<out>/download_failures.csv``).
"""
from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.download import (YOUTUBE_ID_RE, Download, add_download_args, download_and_report,  # noqa: E402
                              youtube_url)
from dataset.index import read_text_lines  # noqa: E402
from dataset.specs import get_spec  # noqa: E402
from utils.errors import MalformedFileError, run_cli  # noqa: E402
from utils.fileio import atomic_write_csv  # noqa: E402

REQUIRED = ("label", "youtube_id", "time_start", "time_end", "split")


def _seconds(value: str, path: Path, row: int, column: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise MalformedFileError(path, f"{column} {value!r} is not a number of seconds", row) from None


def read_kinetics_csv(path: Path, classes: Sequence[str]) -> Tuple[List[Tuple[Download, str]], List[str]]:
    """(download item, split) for the rows of ``classes``, and notes on repeated ids; bad or undecodable rows
    raise :class:`MalformedFileError` naming the file and the row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--csv {path} not found")
    items: List[Tuple[Download, str]] = []
    notes: List[str] = []
    first_row: Dict[str, int] = {}
    reader = csv.DictReader(text for _, text in read_text_lines(path))  # one string per physical line
    try:
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise MalformedFileError(path, f"header lacks {', '.join(missing)} (expected {','.join(REQUIRED)})", 1)
        for row in reader:
            rowno = reader.line_num
            if None in row or any(row[c] is None for c in REQUIRED):
                raise MalformedFileError(path, f"expected {len(reader.fieldnames)} fields", rowno)
            label = row["label"].strip().replace(" ", "_")
            if label not in classes:
                continue
            vid = row["youtube_id"].strip()
            if not YOUTUBE_ID_RE.match(vid):
                raise MalformedFileError(path, f"youtube_id {vid!r} is not an 11-character YouTube id", rowno)
            start = _seconds(row["time_start"], path, rowno, "time_start")
            end = _seconds(row["time_end"], path, rowno, "time_end")
            if not 0 <= start < end:
                raise MalformedFileError(path, f"time_start {start} / time_end {end} is not 0 <= start < end", rowno)
            if vid in first_row:
                notes.append(f"id {vid} repeated at row {rowno} (first at row {first_row[vid]}): kept once")
                continue
            first_row[vid] = rowno
            items.append((Download(label, vid, youtube_url(vid), (start, end)), row["split"].strip()))
    except csv.Error as err:
        raise MalformedFileError(path, f"not a CSV row ({err})", reader.line_num) from None
    return items, notes


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of the Kinetics-Sounds preparation."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", type=Path, required=True, help="Kinetics-400 annotation CSV")
    p.add_argument("--out", type=Path, required=True, help="output folder (download list, <class>/<id>.mp4)")
    add_download_args(p, "clips' segments")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    classes = get_spec("kinetics_sounds").categories
    try:
        items, notes = read_kinetics_csv(args.csv, classes)
    except FileNotFoundError as err:  # malformed files reach run_cli, which exits 2 as well
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"  {note}")
    counts = {c: sum(1 for d, _ in items if d.label == c) for c in classes}
    empty = [c for c, n in counts.items() if n == 0]
    out_list = args.out / "download_list.csv"
    atomic_write_csv(out_list, ["class", "id", "url", "time_start", "time_end", "split"],
                     [(d.label, d.vid, d.url, d.section[0], d.section[1], split) for d, split in items])
    print(f"Kinetics-Sounds: {len(items)} clips in {len(classes) - len(empty)} of {len(classes)} classes -> {out_list}")
    if empty:
        print(f"classes with no rows ({len(empty)}): {', '.join(empty)}")
    if not args.download:
        return 0
    print(download_and_report([d for d, _ in items], args.out, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
