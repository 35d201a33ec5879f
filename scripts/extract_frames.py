"""Extract 8 fps JPEG frames from every video under --video_path/<class>/ (PAPER.md layout).

    python scripts/extract_frames.py --video_path videos/ --out_dir media/ave --workers 2

writes ``<out_dir>/data/frames/<class>/<vid>.mp4/000001.jpg...``. Complete outputs are kept, so the command
resumes after a kill; videos that give no frames are listed in ``<out_dir>/skipped_frames.csv`` with the
reason and left out (never replaced by blank frames). Exits 0 when the run finished, whatever was skipped.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset import extract_cli  # noqa: E402


def main(argv=None) -> int:
    return extract_cli.main("frames", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
