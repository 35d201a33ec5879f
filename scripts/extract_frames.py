"""Extract 8 fps JPEG frames from every video under --video_path/<class>/ (layout: docs/paper.md,
Preprocessing and layout).

    python scripts/extract_frames.py --video_path videos/ --out_dir media/ave/data/frames --short_side 256

writes ``<out_dir>/<class>/<vid>.mp4/000001.jpg...``: ``--out_dir`` is the frames folder itself, as in the
reference (``--media_root ROOT`` is the same as ``--out_dir ROOT/data/frames``). ``--short_side 256`` keeps
frames at most 256 px on their short side (the loader's largest crop is 224 x 1.1 = 246 px); without it,
frames keep the video's size. Complete outputs are kept, so the command resumes after a kill; videos that
give no frames are listed beside the output folder (``media/ave/data/skipped_frames.csv``) with the
reason and left out (never replaced by blank frames). Exits 0 when the run finished, whatever was skipped;
exits 2 with one line for a bad flag, a missing --video_path, no ffmpeg, or another extraction already
running into the same --out_dir (the run holds a lock there).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset import extract_cli  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def main(argv=None) -> int:
    return extract_cli.main("frames", __doc__, argv)


if __name__ == "__main__":
    sys.exit(run_cli(main))
