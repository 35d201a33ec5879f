"""The command line shared by scripts/extract_frames.py and scripts/extract_audio.py."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

from dataset.media import FPS, SAMPLE_RATE, run_extraction

# kind -> (rate flag, default, help, output folder, unit of the coverage check)
_KINDS = {
    "frames": ("--fps", FPS, "frames per second (paper: 8)", "frames"),
    "audio": ("--sample_rate", SAMPLE_RATE, "audio rate in Hz (paper: 11025)", "samples"),
}


def get_args_parser(kind: str, description: str) -> argparse.ArgumentParser:
    """Flags of the extractor of ``kind`` (frames or audio)."""
    flag, default, helptext, unit = _KINDS[kind]
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video_path", type=Path, required=True, help="folder of <class>/<vid>.mp4 videos")
    p.add_argument("--out_dir", type=Path, required=True, help=f"media root; output goes to <out_dir>/data/{kind}")
    p.add_argument(flag, dest="rate", type=int, default=default, help=helptext)
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="parallel ffmpeg processes")
    p.add_argument("--min_coverage", type=float, default=0.5,
                   help=f"skip a video as truncated when fewer than this fraction of the {unit} its container "
                        "duration implies are decoded (0 disables)")
    p.add_argument("--no_progress", action="store_true", help="hide the tqdm bar")
    return p


def main(kind: str, description: str, argv: Optional[Sequence[str]] = None) -> int:
    """Run the extractor of ``kind``; prints a summary and the skip report's path; exits 0 unless the
    input folder or ffmpeg is missing."""
    args = get_args_parser(kind, description).parse_args(argv)
    if args.rate <= 0:
        raise SystemExit(f"{_KINDS[kind][0]} must be positive, got {args.rate}")
    if args.workers < 1:
        raise SystemExit(f"--workers must be >= 1, got {args.workers}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = args.out_dir / f"skipped_{kind}.csv"
    try:
        summary = run_extraction(kind, args.video_path, args.out_dir, args.rate, workers=args.workers,
                                 min_coverage=args.min_coverage, report_path=report, progress=not args.no_progress)
    except (NotADirectoryError, FileNotFoundError) as err:  # no input folder or no ffmpeg: nothing to run
        raise SystemExit(f"error: {err}") from None
    print(summary.line())
    for s in summary.skipped:
        print(f"  skipped {s.clip_id}: {s.reason}")
    print(f"skip report: {report}")
    return 0
