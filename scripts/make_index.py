"""Build train/val/test index CSVs from extracted media, or check index CSVs for leakage.

Build (stratified by class, deterministic for --seed, only clips with complete audio AND frames):

    python scripts/make_index.py --root media/music --out data/music --val 0.15 --test 0.15 --seed 0
    python scripts/make_index.py --root media/ave --out data/ave --splits_from media/ave/raw/splits  # official split
    python scripts/make_index.py --root media/music --out media/music/index --splits_from data/music

``--splits_from`` takes a folder of clip lists ``{train,val,test}.txt`` (prepare_ave.py writes the official
AVE split to ``<prepare --out>/splits``) or a folder of reference index CSVs ``{train,val,test}.csv`` (as
shipped in ``data/music``, ``data/kinetics_sounds``, ``data/ave``): every listed clip present on disk is kept
in its official split with its frames recounted and its audio checked (dataset/reconcile.py); reference CSVs
that list a clip twice or in two splits keep it once, in the held-out split, and report it.

Clips left out (missing, unreadable, in no list) are written to ``<out>/excluded.csv`` with the reason; the
counts and the first ones are printed.

Check (format, duplicate rows within a file, clips in more than one file), with the same reader as training
(dataset.index.read_index):

    python scripts/make_index.py --check train.csv val.csv test.csv

Exit status of --check: 0 when the files are well-formed and free of leakage; 1 when leakage is found
(duplicates, a clip in two files, a video under two classes: the report names every clip); 2 when a file is
missing, undecodable (not UTF-8, binary) or malformed (one line naming the file and the row, no traceback),
or when one file is given twice (``test.csv ./test.csv``: one line naming both).
A build exits 0 when the files are written, 1 when a split list leaks, 2 on bad flags or input.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.errors import IndexFormatError  # noqa: E402
from dataset.index import (check_files, check_leakage, filter_categories, scan_media, stratified_split,  # noqa: E402
                           write_excluded, write_splits)
from dataset.media import SAMPLE_RATE  # noqa: E402
from dataset.reconcile import read_split_source, reconcile, resolve_overlaps  # noqa: E402
from dataset.specs import get_spec, named_datasets  # noqa: E402
from utils.errors import UsageError, run_cli  # noqa: E402

EXIT_CLEAN = 0
EXIT_LEAKAGE = 1
EXIT_BAD_INPUT = 2
SHOW = 30  # left-out clips printed (all of them are in excluded.csv)


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of the index builder/checker."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", type=Path, nargs="+", metavar="FILE",
                   help="check these index files and exit: 0 clean, 1 leakage, 2 missing/undecodable/malformed")
    p.add_argument("--root", type=Path, help="media root holding data/audio and data/frames")
    p.add_argument("--out", type=Path, help="folder for train.csv, val.csv, test.csv (e.g. data/NAME)")
    p.add_argument("--val", type=float, default=0.15, help="fraction of each class for val")
    p.add_argument("--test", type=float, default=0.15, help="fraction of each class for test")
    p.add_argument("--seed", type=int, default=0, help="split seed (same seed, same media -> same files)")
    p.add_argument("--categories", type=str, default=None, help="comma-separated classes to keep (default all)")
    p.add_argument("--dataset", type=str, default=None, choices=named_datasets(),
                   help="keep the categories of this dataset spec")
    p.add_argument("--splits_from", type=Path, default=None,
                   help="folder with train/val/test.txt clip lists (<class>/<vid>; prepare_ave.py writes the "
                        "official AVE split) or train/val/test.csv reference index files (data/<dataset>): the "
                        "official split of the clips present on disk, instead of a random split")
    p.add_argument("--sample_rate", type=int, default=SAMPLE_RATE, help="required WAV sample rate")
    return p


def refuse_repeated_files(files: List[Path]) -> None:
    """Raise :class:`UsageError` (``--check``) naming both spellings when one file is given twice
    (``test.csv ./test.csv``, or a link to it): a repeat would otherwise be dropped and its leakage unseen."""
    first = {}
    for f in files:
        key = f.resolve()
        if key in first:
            raise UsageError("--check", f"{first[key]} and {f} are the same file ({key}); give each list once")
        first[key] = f


def run_check(files: List[Path]) -> int:
    """Print a leakage report for ``files``; returns the exit status (0 clean, 1 leakage, 2 bad file)."""
    refuse_repeated_files(files)
    try:
        report = check_files(files)
    except (IndexFormatError, OSError) as err:  # malformed/undecodable, missing or unreadable
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print("\n".join(report.lines()))
    return EXIT_CLEAN if report.clean else EXIT_LEAKAGE


def _categories(args: argparse.Namespace) -> Optional[List[str]]:
    if args.categories and args.dataset:
        raise UsageError("--categories", "give --categories or --dataset, not both")
    if args.categories:
        cats = [c.strip() for c in args.categories.split(",")]
        if not all(cats) or len(set(cats)) != len(cats):
            raise UsageError("--categories", f"{args.categories!r}: empty or repeated names")
        return cats
    if args.dataset:
        return list(get_spec(args.dataset).categories)
    return None


def run_build(args: argparse.Namespace) -> int:
    """Scan media, split, write the CSVs and the excluded report; returns the exit status."""
    if args.root is None or args.out is None:
        raise UsageError("--root", "--root and --out are required unless --check is given")
    categories = _categories(args)
    try:
        rows, excluded = scan_media(args.root, args.sample_rate)
        if not rows:
            raise ValueError(f"--root {args.root}: no clip has both a complete audio file and complete frames "
                             f"({len(excluded)} incomplete)")
        if categories is not None:
            rows, dropped = filter_categories(rows, categories)
            excluded += dropped
        recounted = 0
        if args.splits_from is not None:
            source = read_split_source(args.splits_from)
            ids, dropped = source.ids, []
            if source.kind == "csv":  # reference CSVs: their known leakage is resolved by a stated rule
                ids, dropped = resolve_overlaps(ids)
            listed = {c for v in ids.values() for c in v}
            splits, missing, recounted = reconcile(rows, excluded, ids, source.listed_frames)
            excluded = dropped + missing + [e for e in excluded if e.clip_id not in listed]
        else:
            splits = stratified_split(rows.values(), args.val, args.test, args.seed)
    except (OSError, IndexFormatError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    report = check_leakage(splits)
    if not report.clean:  # a split list with leakage: refuse to write it
        print("\n".join(report.lines()), file=sys.stderr)
        return EXIT_LEAKAGE
    paths = write_splits(args.out, splits)
    write_excluded(args.out / "excluded.csv", excluded)
    for e in excluded[:SHOW]:
        print(f"  left out {e.clip_id}: {e.reason}")
    if len(excluded) > SHOW:
        print(f"  ... and {len(excluded) - SHOW} more")
    classes = len({r.label for s in splits.values() for r in s})
    sizes = ", ".join(f"{s} {len(r)}" for s, r in splits.items())
    print(f"{classes} classes; {sizes}; {len(excluded)} clips left out (see {args.out / 'excluded.csv'})")
    if recounted:
        print(f"{recounted} kept clips have a frame count other than the source's: recounted on disk")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.check:
        return run_check(args.check)
    return run_build(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
