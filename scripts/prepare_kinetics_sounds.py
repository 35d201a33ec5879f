"""Kinetics-Sounds: filter the Kinetics-400 annotation CSVs to the 27 classes, write a download list and the
clips of each split, and download them or ingest clips already downloaded.

    python scripts/prepare_kinetics_sounds.py --csv train.csv validate.csv test.csv --out media/kinetics_sounds/raw \
        [--ingest FOLDER [--copy]] [--download [--max_height 480]] [--overwrite]

Input header: ``label,youtube_id,time_start,time_end,split[,is_cc]``; Kinetics labels use spaces and may be
quoted ("playing clarinet"), the spec's classes underscores (``playing_clarinet``). Several CSVs are read in
one run; each clip keeps the split of its row, and a YouTube id listed twice is kept once (its first row) and
reported.

Output under --out (videos in ``<out>/<class>/<id>.mp4``, the layout the extractors read; the lists beside
them, where the extractors ignore them):
- ``download_list.csv`` (class,id,url,time_start,time_end,split);
- ``train.txt``, ``val.txt``, ``test.txt``: the clips of each split (``<class>/<id>``), for
  ``make_index.py --splits_from <out>`` when you want Kinetics-400's own split instead of the paper's;
- with ``--ingest FOLDER``: the clips of FOLDER (flat ``<id>_<start:06d>_<end:06d>.mp4`` or per-class
  ``<label>/<id>_<start>_<end>.mp4``) hard-linked (``--copy``: copied) into ``<out>/<class>/``, and
  ``ingest_report.csv`` with every listed clip matched or missing and every file in no list;
- with ``--download`` (yt-dlp on PATH): the clips not yet there, each cut exactly to its segment
  (``--download-sections`` with ``--force-keyframes-at-cuts``), at most --max_height pixels tall;
  failures in ``download_failures.csv``.

An earlier run's lists are never replaced silently: a run whose clips differ from an existing
``download_list.csv`` stops (exit 2) unless ``--overwrite`` is given; pass all CSVs in one run.
"""
from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path
from typing import List, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.download import Download, add_download_args, download_and_report, youtube_url  # noqa: E402
from dataset.index import SPLITS  # noqa: E402
from dataset.kinetics import IngestReport, KineticsClip, ingest, read_kinetics_csvs  # noqa: E402
from dataset.specs import get_spec  # noqa: E402
from utils.errors import UsageError, run_cli  # noqa: E402
from utils.fileio import atomic_write_csv, atomic_write_text  # noqa: E402

LIST_HEADER = ["class", "id", "url", "time_start", "time_end", "split"]


def list_rows(clips: Sequence[KineticsClip]) -> List[List[str]]:
    """download_list.csv rows of ``clips``, as text (what an earlier run wrote is compared with these)."""
    return [[c.label, c.vid, youtube_url(c.vid), str(c.start), str(c.end), c.split] for c in clips]


def check_earlier_list(path: Path, rows: List[List[str]], overwrite: bool) -> str:
    """``"new"``, ``"unchanged"`` or ``"replaced"`` for the list at ``path``; raises :class:`UsageError`
    (``--overwrite``) when an earlier run wrote other clips there and ``overwrite`` is not set."""
    if not path.is_file():
        return "new"
    with open(path, newline="", encoding="utf-8") as f:
        old = list(csv.reader(f))
    if old == [LIST_HEADER, *rows]:
        return "unchanged"
    if not overwrite:
        old_ids = {r[1] for r in old[1:] if len(r) > 1}
        new_ids = {r[1] for r in rows}
        raise UsageError("--overwrite", f"{path} exists from an earlier run with other clips ({len(old) - 1} "
                         f"rows, {len(old_ids - new_ids)} of them not in this run; this run: {len(rows)}); pass "
                         "every CSV in one run (--csv train.csv validate.csv test.csv), another --out, or "
                         "--overwrite to replace the lists")
    return "replaced"


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of the Kinetics-Sounds preparation."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", type=Path, nargs="+", required=True,
                   help="Kinetics-400 annotation CSVs (train, validate, test: one run, each clip keeps its split)")
    p.add_argument("--out", type=Path, required=True, help="output folder (lists, <class>/<id>.mp4)")
    p.add_argument("--ingest", type=Path, default=None,
                   help="folder of clips already downloaded (flat <id>_<start>_<end>.mp4 or <label>/...)")
    p.add_argument("--copy", action="store_true", help="with --ingest: copy the clips instead of hard-linking")
    p.add_argument("--overwrite", action="store_true", help="replace the lists of an earlier run with other clips")
    add_download_args(p, "clips' segments")
    return p


def _print_counts(clips: Sequence[KineticsClip], classes: Sequence[str]) -> None:
    per_split = {s: sum(1 for c in clips if c.split == s) for s in SPLITS}
    empty = [c for c in classes if not any(k.label == c for k in clips)]
    print(f"Kinetics-Sounds: {len(clips)} clips in {len(classes) - len(empty)} of {len(classes)} classes "
          f"({', '.join(f'{s} {n}' for s, n in per_split.items())})")
    if empty:
        print(f"classes with no rows ({len(empty)}): {', '.join(empty)}")


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.copy and args.ingest is None:
        raise UsageError("--copy", "only applies with --ingest FOLDER")
    classes = get_spec("kinetics_sounds").categories
    try:
        clips, notes = read_kinetics_csvs(args.csv, classes)
    except FileNotFoundError as err:  # malformed files reach run_cli, which exits 2 as well
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"  {note}")
    _print_counts(clips, classes)
    if not clips:
        raise UsageError("--csv", f"{', '.join(map(str, args.csv))}: no row of a Kinetics-Sounds class")
    rows = list_rows(clips)
    out_list = args.out / "download_list.csv"
    state = check_earlier_list(out_list, rows, args.overwrite)
    if state != "unchanged":
        atomic_write_csv(out_list, LIST_HEADER, rows)
        for split in SPLITS:
            ids = [c.clip_id for c in clips if c.split == split]
            atomic_write_text(args.out / f"{split}.txt", "".join(f"{i}\n" for i in ids))
    print(f"lists {state}: {out_list}, {', '.join(str(args.out / f'{s}.txt') for s in SPLITS)}")
    if args.ingest is not None:
        report: IngestReport = ingest(clips, args.ingest, args.out, copy=args.copy)
        atomic_write_csv(args.out / "ingest_report.csv", list(IngestReport.header), report.rows)
        print(f"{report.summary(args.ingest, args.out)} (see {args.out / 'ingest_report.csv'})")
    if args.download:
        items = [Download(c.label, c.vid, youtube_url(c.vid), (c.start, c.end)) for c in clips]
        print(download_and_report(items, args.out, args.workers, args.max_height))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
