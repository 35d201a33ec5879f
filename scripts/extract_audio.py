"""Extract mono 16-bit 11025 Hz WAV audio from every video under --video_path/<class>/ (layout: docs/paper.md,
Preprocessing and layout).

    python scripts/extract_audio.py --video_path videos/ --out_dir media/ave/data/audio --workers 2

writes ``<out_dir>/<class>/<vid>.wav``: ``--out_dir`` is the audio folder itself, as in the reference
(``--media_root ROOT`` is the same as ``--out_dir ROOT/data/audio``). Complete outputs are kept, so the
command resumes after a kill; videos without usable audio are listed beside the output folder
(``media/ave/data/skipped_audio.csv``) with the
reason and left out (never replaced by silence). Exits 0 when the run finished, whatever was skipped;
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
    return extract_cli.main("audio", __doc__, argv)


if __name__ == "__main__":
    sys.exit(run_cli(main))
