#!/usr/bin/env python
"""Open generated HTML pages in headless Chromium: a screenshot that must not be blank, or a DOM check.

    python scripts/check_html.py runs/x/examples/index.html /tmp/page.png [--size 1200,900]
    python scripts/check_html.py --check runs/demo/report.html runs/x/examples/index.html

Screenshot mode exits 0 and prints the screenshot's statistics when the page rendered with visible content,
1 when the screenshot is blank (one flat colour or almost so), 2 when Chromium is missing or fails.

``--check`` mode loads each page in the browser and checks that every image loaded (decoded, width > 0),
every ``<audio>`` element has a duration > 0 (its file was fetched and decoded), there were no console
errors (uncaught exceptions, failed resource loads, ``console.error``), and every table renders (rows and a
visible height); exit 0 when all pages pass, 1 with one line per problem otherwise, 2 when Chromium is
missing. The check works on a copy of the page next to it (same folder, so relative links resolve) with a
small script added that records errors from the first moment and writes its findings into the DOM,
which ``--dump-dom`` returns; the copy is removed afterwards. Chromium runs with a throw-away profile and
every network-related feature off; it only reads file:// pages.
"""
from __future__ import annotations

import argparse
import html as html_lib
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

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


_BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--mute-audio")
# Added at the top of <head>: records every error from the first moment (capture phase sees failed loads).
_HEAD_PROBE = ("<script>window.__errs=[];addEventListener('error',function(e){var t=e.target;"
               "__errs.push(t&&t!==window&&(t.src||t.currentSrc)?'failed to load '+(t.src||t.currentSrc)"
               ":'uncaught: '+e.message)},true);addEventListener('unhandledrejection',function(e)"
               "{__errs.push('unhandled rejection: '+e.reason)});var __ce=console.error;console.error="
               "function(){__errs.push('console.error: '+[].join.call(arguments,' '));__ce.apply(console,arguments)};"
               "</script>")
# Added before </body>: after load, waits for every audio element's metadata (or error), then reports.
_BODY_PROBE = ("<script>addEventListener('load',function(){var n=0;(function poll(){var au=[].slice.call("
               "document.querySelectorAll('audio'));if(n++<100&&au.some(function(a){return a.readyState<1&&!a.error}))"
               "{setTimeout(poll,50);return}var r={images:[].slice.call(document.images).map(function(i){return "
               "[i.getAttribute('src'),i.complete&&i.naturalWidth>0]}),audio:au.map(function(a){return "
               "[a.getAttribute('src'),a.duration]}),tables:[].slice.call(document.querySelectorAll('table')).map("
               "function(t){return [t.rows.length,t.rows.length?t.rows[0].cells.length:0,"
               "t.getBoundingClientRect().height]}),errors:window.__errs};var p=document.createElement('pre');"
               "p.id='__check';p.textContent=JSON.stringify(r);document.body.appendChild(p)})()});</script>")


def check_page(html_path: Path, chromium: str, timeout_s: float = 90.0) -> Dict[str, Any]:
    """Load ``html_path`` in headless Chromium and return what the page did: ``images`` [[src, loaded]],
    ``audio`` [[src, duration]], ``tables`` [[rows, cells of the first row, height px]], ``errors`` [str]."""
    html_path = Path(html_path).resolve()
    page = html_path.read_text(encoding="utf-8")
    head = re.search(r"<head[^>]*>", page, re.I)
    page = (page[:head.end()] + _HEAD_PROBE + page[head.end():]) if head else _HEAD_PROBE + page
    tail = page.lower().rfind("</body>")
    page = (page[:tail] + _BODY_PROBE + page[tail:]) if tail >= 0 else page + _BODY_PROBE
    probe = html_path.with_name(f".{html_path.stem}.check.html")
    probe.write_text(page, encoding="utf-8")
    try:
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            cmd = [chromium, *_BROWSER_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000",
                   "--dump-dom", probe.as_uri()]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    finally:
        probe.unlink(missing_ok=True)
    found = re.search(r'<pre id="__check">(.*?)</pre>', proc.stdout, re.S)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"chromium did not report on {html_path} (rc={proc.returncode}); stderr tail:\n"
                           f"{proc.stderr[-2000:]}")
    return json.loads(html_lib.unescape(found.group(1)))


def page_problems(result: Dict[str, Any], name: str = "page") -> List[str]:
    """One line per failed check of :func:`check_page`'s result (empty: the page passed)."""
    out = [f"{name}: image {src} did not load" for src, ok in result["images"] if not ok]
    out += [f"{name}: audio {src} has duration {d}" for src, d in result["audio"] if not (d and d > 0)]
    out += [f"{name}: {e}" for e in result["errors"]]
    out += [f"{name}: table {i} does not render ({r} rows, {c} cells, {h:.0f} px)"
            for i, (r, c, h) in enumerate(result["tables"]) if not (r > 0 and c > 0 and h > 0)]
    return out


def screenshot_stats(png_path: Path) -> Dict[str, float]:
    """Size, pixel standard deviation, and the fraction of pixels that differ from the dominant colour."""
    img = np.asarray(Image.open(png_path).convert("RGB"))
    packed = (img[..., 0].astype(np.int32) << 16 | img[..., 1].astype(np.int32) << 8 | img[..., 2]).ravel()
    colours, counts = np.unique(packed, return_counts=True)  # 1-D: far faster than unique rows
    content = float((packed != colours[counts.argmax()]).mean())
    return {"width": float(img.shape[1]), "height": float(img.shape[0]), "std": float(img.std()),
            "content_fraction": content, "n_colours": float(len(colours))}


def is_blank(stats: Dict[str, float]) -> bool:
    """True when the screenshot shows (almost) nothing but one colour."""
    return stats["content_fraction"] < MIN_CONTENT_FRACTION


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; see the module docstring for the exit codes."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", type=Path, nargs="+", help="HTML PNG (screenshot mode) or HTML... (--check)")
    parser.add_argument("--check", action="store_true", help="check images, audio, console errors and tables")
    parser.add_argument("--size", default="1200,900", help="window size W,H (default 1200,900)")
    parser.add_argument("--chromium", default=None, help="Chromium binary (default: found automatically)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds before Chromium is killed")
    args = parser.parse_args(argv)
    if not args.check and len(args.paths) != 2:
        parser.error("screenshot mode takes HTML PNG (or use --check HTML...)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    chromium = args.chromium or find_chromium()
    if chromium is None:
        print(f"chromium not found (looked at {', '.join(CHROMIUM_CANDIDATES)} and PATH)", file=sys.stderr)
        return 2
    if args.check:
        problems: List[str] = []
        for page in args.paths:
            try:
                res = check_page(page, chromium, args.timeout)
            except (RuntimeError, subprocess.TimeoutExpired, FileNotFoundError, ValueError) as e:
                print(f"check failed: {e}", file=sys.stderr)
                return 2
            problems += page_problems(res, str(page))
            print(f"{page}: {len(res['images'])} images, {len(res['audio'])} audio, {len(res['tables'])} tables, "
                  f"{len(res['errors'])} errors")
        for p in problems:
            print(f"PROBLEM {p}", file=sys.stderr)
        return 1 if problems else 0
    html_path, png_path = args.paths
    width, height = (int(v) for v in args.size.split(","))
    try:
        render_html(html_path, png_path, chromium, (width, height), args.timeout)
    except (RuntimeError, subprocess.TimeoutExpired, FileNotFoundError) as e:
        print(f"render failed: {e}", file=sys.stderr)
        return 2
    stats = screenshot_stats(png_path)
    print(" ".join(f"{k}={v:.4g}" for k, v in stats.items()))
    if is_blank(stats):
        print(f"BLANK: fewer than {MIN_CONTENT_FRACTION:.0%} of pixels differ from the background", file=sys.stderr)
        return 1
    print(f"OK: {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
