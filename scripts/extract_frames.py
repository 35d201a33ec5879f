"""Extract 8 fps JPEG frames from every video under --video_path/<class>/ (PAPER.md layout).

    python scripts/extract_frames.py --video_path videos/ --out_dir media/ave --workers 2

writes ``<out_dir>/data/frames/<class>/<vid>.mp4/000001.jpg...``. Complete outputs are kept, so the command
resumes after a kill; videos that give no frames are listed in ``<out_dir>/skipped_frames.csv`` with the
reason and left out (never replaced by blank frames). Exits 0 when the run finished, whatever was skipped.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.media import FPS, run_extraction  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of the frame extractor."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video_path", type=Path, required=True, help="folder of <class>/<vid>.mp4 videos")
    p.add_argument("--out_dir", type=Path, required=True, help="media root; frames go to <out_dir>/data/frames")
    p.add_argument("--fps", type=int, default=FPS, help="frames per second (paper: 8)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="parallel ffmpeg processes")
    p.add_argument("--min_coverage", type=float, default=0.5,
                   help="skip a video as truncated when fewer than this fraction of the frames its container "
                        "duration implies are decoded (0 disables)")
    p.add_argument("--no_progress", action="store_true", help="hide the tqdm bar")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.fps <= 0:
        raise SystemExit(f"--fps must be positive, got {args.fps}")
    if args.workers < 1:
        raise SystemExit(f"--workers must be >= 1, got {args.workers}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = args.out_dir / "skipped_frames.csv"
    try:
        summary = run_extraction("frames", args.video_path, args.out_dir, args.fps, workers=args.workers,
                                 min_coverage=args.min_coverage, report_path=report, progress=not args.no_progress)
    except (NotADirectoryError, FileNotFoundError) as err:  # no input folder or no ffmpeg: nothing to run
        raise SystemExit(f"error: {err}") from None
    print(summary.line())
    for s in summary.skipped:
        print(f"  skipped {s.clip_id}: {s.reason}")
    print(f"skip report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
