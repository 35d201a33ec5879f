"""The generated pages in a real browser (headless Chromium): screenshots are not blank, every image loads,
every audio element has a duration > 0, no console errors, tables render. scripts/test.sh installs Chromium
when it is missing and it may (root with apt-get); elsewhere these tests skip and say why."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
from PIL import Image

from reporting import examples_page, plots, results, study_report
from reporting.study_report import Block
from tests.test_report import _examples

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_html.py"
sys.path.insert(0, str(ROOT / "scripts"))
from check_html import find_chromium  # noqa: E402

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: scripts/test.sh installs "
                                    "it through apt-get when run as root; else apt-get install chromium")


def check(*pages: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--check", *map(str, pages)], capture_output=True, text=True,
                          timeout=180)


def _report(tmp_path: Path, examples_index: Path) -> Path:
    rows = [{"attack": "pgd", "eps_audio": 0.0, "eps_visual": 0.0, "clean_acc": 0.5, "adv_acc": 0.5},
            {"attack": "pgd", "eps_audio": 0.0, "eps_visual": 0.012, "clean_acc": 0.5, "adv_acc": 0.25}]
    plots.plot_accuracy_vs_eps(rows, tmp_path / "acc.png", "t")
    blocks = [Block("h1", "Study"), Block("table", table=results.results_table(rows)), Block("img", "acc", path="acc.png"),
              Block("link", "examples", path=study_report.rel(examples_index, tmp_path))]
    return study_report.write_report(blocks, tmp_path, "report")["html"]


@needs_chromium
def test_report_and_examples_page_pass_the_browser_check(tmp_path: Path) -> None:
    index = examples_page.write_examples_page(_examples(), tmp_path / "examples", title="Check", selection="rule")
    report = _report(tmp_path, index)
    proc = check(report, index)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 audio" not in proc.stdout  # the examples page has 4 players (2 examples x clean/adversarial)
    assert "4 audio" in proc.stdout and "1 tables" in proc.stdout
    assert not list(tmp_path.rglob(".*.check.html"))  # the probe copy is removed


@needs_chromium
def test_the_browser_check_fails_broken_pages(tmp_path: Path) -> None:
    index = examples_page.write_examples_page(_examples(), tmp_path / "examples", title="Check")
    wavs: List[Path] = sorted((tmp_path / "examples" / "assets").glob("*.wav"))
    wavs[0].write_bytes(b"")  # an audio file that cannot be decoded
    pngs = sorted((tmp_path / "examples" / "assets").glob("*.png"))
    pngs[0].unlink()  # an image that does not load
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><html><head></head><body><table></table>"
                   "<script>console.error('boom'); undefined_fn();</script></body></html>")
    proc = check(index, bad)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr
    assert f"image assets/{pngs[0].name} did not load" in err
    assert f"audio assets/{wavs[0].name} has duration" in err
    assert "console.error: boom" in err and "uncaught" in err and "table 0 does not render" in err


@needs_chromium
def test_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    index = examples_page.write_examples_page(_examples(), tmp_path / "page", title="Render check")
    shot = tmp_path / "shot.png"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(index), str(shot)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with Image.open(shot) as im:
        assert im.size == (1200, 900)
        pixels = np.asarray(im.convert("RGB"))
    packed = pixels[..., 0].astype(np.int64) * 65536 + pixels[..., 1].astype(np.int64) * 256 + pixels[..., 2]
    assert pixels.std() > 20 and len(np.unique(packed)) > 500  # images drawn

    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(blank), str(tmp_path / "blank.png")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "BLANK" in proc.stderr  # the check itself can fail
