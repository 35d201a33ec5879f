"""The command line shared by scripts/extract_frames.py and scripts/extract_audio.py.

User errors (a bad flag value, a missing --video_path, no ffmpeg, another extraction running into the same
output folder) are raised as :class:`utils.errors.UsageError`; the scripts turn them into one ``error:``
line and exit status 2 through :func:`utils.errors.run_cli`.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

from dataset.extraction import default_report, output_folder, run_extraction
from dataset.media import FPS, SAMPLE_RATE
from utils.errors import UsageError

# kind -> (rate flag, default, help, unit of the coverage check)
_KINDS = {
    "frames": ("--fps", FPS, "frames per second (docs/paper.md, Preprocessing and layout: 8)", "frames"),
    "audio": ("--sample_rate", SAMPLE_RATE, "audio rate in Hz (docs/paper.md, Preprocessing and layout: 11025)",
              "samples"),
}


def get_args_parser(kind: str, description: str) -> argparse.ArgumentParser:
    """Flags of the extractor of ``kind`` (frames or audio)."""
    flag, default, helptext, unit = _KINDS[kind]
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video_path", type=Path, required=True, help="folder of <class>/<vid>.mp4 videos")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out_dir", type=Path,
                       help=f"the {kind} folder itself, as in the reference (e.g. <ROOT>/data/{kind}): writes "
                       f"<out_dir>/<class>/...; skip report beside it, skipped_{kind}.csv or skipped_{kind}_<name>.csv "
                       "for another folder name (one run at a time per folder)")
    where.add_argument("--media_root", type=Path,
                       help=f"a media root instead: the same as --out_dir <media_root>/data/{kind}")
    p.add_argument(flag, dest="rate", type=int, default=default, help=helptext)
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="parallel ffmpeg processes")
    p.add_argument("--min_coverage", type=float, default=0.5,
                   help=f"skip a video as truncated when fewer than this fraction of the {unit} its container "
                        "duration implies are decoded (0 disables)")
    p.add_argument("--no_progress", action="store_true", help="hide the tqdm bar")
    if kind == "frames":
        p.add_argument("--short_side", type=int, default=None,
                       help="shrink frames so their short side is at most this many pixels (default: full size, as "
                       "the reference); 256 covers the largest crop the loader takes (224 x 1.1 = 246 px) and "
                       "saves disk and decode time. Complete outputs are kept whatever their size")
    return p


def main(kind: str, description: str, argv: Optional[Sequence[str]] = None) -> int:
    """Run the extractor of ``kind``; prints a summary and the skip report's path and returns 0 when the run
    finished (whatever was skipped). Raises :class:`UsageError` for a bad flag, a missing input folder, no
    ffmpeg, or another run holding the output folder's lock."""
    args = get_args_parser(kind, description).parse_args(argv)
    if args.rate <= 0:
        raise UsageError(_KINDS[kind][0], f"must be positive, got {args.rate}")
    if args.workers < 1:
        raise UsageError("--workers", f"must be >= 1, got {args.workers}")
    if not 0 <= args.min_coverage <= 1:
        raise UsageError("--min_coverage", f"must be in [0, 1], got {args.min_coverage}")
    short_side = getattr(args, "short_side", None)
    if short_side is not None and short_side < 1:
        raise UsageError("--short_side", f"must be >= 1 pixel, got {short_side}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out_dir = args.out_dir if args.out_dir is not None else output_folder(args.media_root, kind)
    report = default_report(out_dir, kind)
    try:
        summary = run_extraction(kind, args.video_path, out_dir, args.rate, workers=args.workers,
                                 min_coverage=args.min_coverage, report_path=report, progress=not args.no_progress,
                                 short_side=short_side)
    except FileNotFoundError as err:  # no ffmpeg at all: nothing can run
        raise UsageError("", str(err)) from None
    print(summary.line())
    for s in summary.skipped:
        print(f"  skipped {s.clip_id}: {s.reason}")
    print(f"skip report: {report}")
    return 0
