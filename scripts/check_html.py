#!/usr/bin/env python
"""Render an HTML file in headless Chromium to a PNG screenshot and check that it is not blank.

    python scripts/check_html.py runs/x/examples/index.html /tmp/page.png [--size 1200,900]

Exits 0 and prints the screenshot's statistics when the page rendered with visible content, 1 when the
screenshot is blank (one flat colour or almost so), 2 when Chromium is missing or fails. Chromium runs
with a throw-away profile and every network-related feature off; it only reads the file:// page.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

logger = logging.getLogger("check_html")

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
# A screenshot counts as blank when fewer than this fraction of pixels differ from the most common colour.
MIN_CONTENT_FRACTION = 0.01


def find_chromium() -> Optional[str]:
    """The first installed Chromium binary of ``CHROMIUM_CANDIDATES`` (or on PATH), else None."""
    for path in CHROMIUM_CANDIDATES:
        if Path(path).is_file():
            return path
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render_html(html_path: Path, png_path: Path, chromium: str, size: Tuple[int, int] = (1200, 900),
                timeout_s: float = 90.0) -> Path:
    """Screenshot ``html_path`` with headless ``chromium`` into ``png_path``; raise on failure."""
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise FileNotFoundError(f"no such HTML file: {html_path}")
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}",
               f"--screenshot={png_path}", f"--window-size={size[0]},{size[1]}", html_path.as_uri()]
        logger.info("running %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0 or not png_path.is_file():
        raise RuntimeError(f"chromium failed (rc={proc.returncode}); stderr tail:\n{proc.stderr[-2000:]}")
    return png_path


def screenshot_stats(png_path: Path) -> Dict[str, float]:
    """Size, pixel standard deviation, and the fraction of pixels that differ from the dominant colour."""
    img = np.asarray(Image.open(png_path).convert("RGB"))
    flat = img.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    dominant = colours[counts.argmax()]
    content = float(np.any(flat != dominant, axis=1).mean())
    return {"width": float(img.shape[1]), "height": float(img.shape[0]), "std": float(img.std()),
            "content_fraction": content, "n_colours": float(len(colours))}


def is_blank(stats: Dict[str, float]) -> bool:
    """True when the screenshot shows (almost) nothing but one colour."""
    return stats["content_fraction"] < MIN_CONTENT_FRACTION


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; see the module docstring for the exit codes."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--size", default="1200,900", help="window size W,H (default 1200,900)")
    parser.add_argument("--chromium", default=None, help="Chromium binary (default: found automatically)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds before Chromium is killed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    chromium = args.chromium or find_chromium()
    if chromium is None:
        print(f"chromium not found (looked at {', '.join(CHROMIUM_CANDIDATES)} and PATH)", file=sys.stderr)
        return 2
    width, height = (int(v) for v in args.size.split(","))
    try:
        render_html(args.html, args.png, chromium, (width, height), args.timeout)
    except (RuntimeError, subprocess.TimeoutExpired, FileNotFoundError) as e:
        print(f"render failed: {e}", file=sys.stderr)
        return 2
    stats = screenshot_stats(args.png)
    print(" ".join(f"{k}={v:.4g}" for k, v in stats.items()))
    if is_blank(stats):
        print(f"BLANK: fewer than {MIN_CONTENT_FRACTION:.0%} of pixels differ from the background", file=sys.stderr)
        return 1
    print(f"OK: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
