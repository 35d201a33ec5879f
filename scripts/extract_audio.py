"""Extract mono 16-bit 11025 Hz WAV audio from every video under --video_path/<class>/ (PAPER.md layout).

    python scripts/extract_audio.py --video_path videos/ --out_dir media/ave --workers 2

writes ``<out_dir>/data/audio/<class>/<vid>.wav``. Complete outputs are kept, so the command
resumes after a kill; videos without usable audio are listed in ``<out_dir>/skipped_audio.csv`` with the
reason and left out (never replaced by silence). Exits 0 when the run finished, whatever was skipped.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.media import SAMPLE_RATE, run_extraction  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of the audio extractor."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video_path", type=Path, required=True, help="folder of <class>/<vid>.mp4 videos")
    p.add_argument("--out_dir", type=Path, required=True, help="media root; audio goes to <out_dir>/data/audio")
    p.add_argument("--sample_rate", type=int, default=SAMPLE_RATE, help="audio rate in Hz (paper: 11025)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="parallel ffmpeg processes")
    p.add_argument("--min_coverage", type=float, default=0.5,
                   help="skip a video as truncated when fewer than this fraction of the samples its container "
                        "duration implies are decoded (0 disables)")
    p.add_argument("--no_progress", action="store_true", help="hide the tqdm bar")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.sample_rate <= 0:
        raise SystemExit(f"--sample_rate must be positive, got {args.sample_rate}")
    if args.workers < 1:
        raise SystemExit(f"--workers must be >= 1, got {args.workers}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = args.out_dir / "skipped_audio.csv"
    try:
        summary = run_extraction("audio", args.video_path, args.out_dir, args.sample_rate, workers=args.workers,
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
