"""Tests of the reporting package: the table model, result files, tables, plots, the examples page and the
study report."""
from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from attacks.metrics import psnr_db, snr_db
from reporting import examples_page, plots, results, study_report, tables
from reporting.examples_page import PCM_MAX, difference_image
from reporting.study_report import Block
from reporting.tables import Column, Table

ROOT = Path(__file__).resolve().parents[1]
NASTY = "<b>&\"x'"  # a class name that breaks a page that forgets to escape


def _row(attack: str, ea: float, ev: float, adv: float, clean: float = 0.9135, **extra: Any) -> Dict[str, Any]:
    row = {"attack": attack, "eps_audio": ea, "eps_visual": ev, "eps_unit": "input", "steps": 10,
           "clean_acc": clean, "adv_acc": adv, "success_rate": 1 - adv / clean,
           "max_delta_audio": ea, "max_delta_visual": ev, "snr_db_audio": 31.234 if ea else float("inf"),
           "psnr_db_visual": 40.06 if ev else float("inf"), "n_samples": 104, "seconds": 12.34}
    row.update(extra)
    return row


@pytest.fixture
def rows() -> List[Dict[str, Any]]:
    return [
        _row("pgd", 0.0, 0.012, 0.25),
        _row("pgd", 0.012, 0.0, 0.5),
        _row("pgd", 0.006, 0.006, 0.125, model="concat"),
        _row("fgsm", 0.006, 0.006, float("nan"), snr_db_audio=None, model="a|b"),
    ]


def _md_cells(md: str) -> List[List[str]]:
    lines = [ln for ln in md.strip().splitlines() if ln.startswith("|")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]


def _strict_json(text: str) -> Any:
    def bad(const: str) -> None:
        raise ValueError(f"non-standard JSON constant {const}")
    return json.loads(text, parse_constant=bad)


# --------------------------------------------------------------------------------------------------
# result files and tables
# --------------------------------------------------------------------------------------------------
def test_write_results_files_parse_and_keep_other_files(tmp_path: Path, rows: List[Dict[str, Any]]) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ckpt.pth").write_bytes(b"x")
    paths = results.write_results(rows, tmp_path, name="results")
    assert set(paths) == {"json", "csv", "md"}
    assert (tmp_path / "keep.txt").read_text() == "mine" and (tmp_path / "sub" / "ckpt.pth").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "results.csv", "results.json",
                                                          "results.md", "sub"]  # no temp files left

    loaded = _strict_json(paths["json"].read_text())
    assert len(loaded) == len(rows)
    assert loaded[0]["adv_acc"] == 0.25 and loaded[0]["snr_db_audio"] == "inf"
    assert loaded[3]["adv_acc"] is None and loaded[3]["model"] == "a|b"
    back = results.read_results(paths["json"])
    assert back[0]["snr_db_audio"] == math.inf and math.isnan(back[3]["adv_acc"])

    with open(paths["csv"], newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(rows)
    for got, want in zip(csv_rows, rows):
        assert got["attack"] == want["attack"]
        assert float(got["eps_audio"]) == want["eps_audio"] and float(got["clean_acc"]) == want["clean_acc"]
    assert csv_rows[0]["model"] == "" and csv_rows[2]["model"] == "concat" and csv_rows[3]["snr_db_audio"] == ""

    md = paths["md"].read_text()
    assert md == results.markdown_table(rows)

    # rewriting replaces the files in place, still leaving the rest alone
    results.write_results(rows[:1], tmp_path, name="results")
    assert len(_strict_json(paths["json"].read_text())) == 1 and (tmp_path / "keep.txt").exists()
    with pytest.raises(ValueError, match="plain file stem"):
        results.write_results(rows, tmp_path, name="../escape")


def test_markdown_table_content(rows: List[Dict[str, Any]]) -> None:
    cells = _md_cells(results.markdown_table(rows))
    header, body = cells[0], cells[2:]
    assert len(body) == len(rows)
    col = {h: i for i, h in enumerate(header)}
    assert header[:4] == ["model", "attack", "ε audio", "ε visual"]
    assert body[0][col["model"]] == "—"  # absent key
    assert body[3][col["model"]] == "a\\|b"  # pipe escaped, still one cell
    assert body[0][col["clean acc (%)"]] == "91.35"
    assert body[0][col["adv acc (%)"]] == "25.00" and body[2][col["adv acc (%)"]] == "12.50"
    assert body[3][col["adv acc (%)"]] == "—"  # NaN
    assert body[1][col["SNR audio (dB)"]] == "31.2" and body[0][col["SNR audio (dB)"]] == "∞"
    assert body[3][col["SNR audio (dB)"]] == "—"  # None
    assert body[0][col["PSNR visual (dB)"]] == "40.1"
    assert body[0][col["ε visual"]] == "0.012" and body[0][col["ε audio"]] == "0"
    assert body[0][col["n"]] == "104" and body[0][col["time (s)"]] == "12.3"

    only = _md_cells(results.markdown_table(rows, columns=["attack", "adv_acc", "extra"]))
    assert only[0] == ["attack", "adv acc (%)", "extra"] and only[2] == ["pgd", "25.00", "—"]


def test_markdown_table_rejects_percent_accuracies() -> None:
    with pytest.raises(ValueError, match="fraction"):
        results.markdown_table([_row("pgd", 0.0, 0.012, adv=25.0, clean=91.35)])


def test_numpy_and_tensor_values_are_accepted(tmp_path: Path) -> None:
    row = _row("pgd", 0.0, 0.012, 0.25)
    row["adv_acc"], row["n_samples"] = torch.tensor(0.25), np.int64(104)
    paths = results.write_results([row], tmp_path)
    assert _strict_json(paths["json"].read_text())[0]["adv_acc"] == 0.25
    with pytest.raises(TypeError, match="unsupported type"):
        results.write_results([{"attack": object()}], tmp_path)


def test_pivot_table_maps_eps_patterns() -> None:
    by_model = {
        "concat": [_row("pgd", 0.006, 0.006, 0.10), _row("pgd", 0.0, 0.012, 0.30),
                   _row("pgd", 0.012, 0.0, 0.20), _row("pgd", 0.0, 0.0, 0.9135),
                   _row("fgsm", 0.012, 0.0, 0.77)],
        "audio|only": [_row("pgd", 0.012, 0.0, 0.05, clean=0.6)],
    }
    cells = _md_cells(results.pivot_table(by_model, "pgd"))
    header, body = cells[0], cells[2:]
    assert header == ["model", "clean (%)", "audio, ε=0.012 input (%)", "visual, ε=0.012 input (%)",
                      "both, ε=0.006 input (%)"]
    assert body[0] == ["concat", "91.35", "20.00", "30.00", "10.00"]
    assert body[1] == ["audio\\|only", "60.00", "5.00", "—", "—"]
    assert results.attacked_modalities(_row("x", 0, 0.1, 0.5)) == "visual"

    # a column whose eps differs between models carries the eps in each cell
    by_model["audio|only"] = [_row("pgd", 0.024, 0.0, 0.05, clean=0.6)]
    cells = _md_cells(results.pivot_table(by_model, "pgd"))
    assert cells[0][2] == "audio (%)" and cells[2][2] == "20.00 (ε=0.012 input)"
    assert cells[3][2] == "5.00 (ε=0.024 input)"

    with pytest.raises(ValueError, match="several rows map to column 'audio'"):
        results.pivot_table({"m": [_row("pgd", 0.012, 0, 0.2), _row("pgd", 0.024, 0, 0.1)]}, "pgd")
    with pytest.raises(ValueError, match="attacks present"):
        results.pivot_table(by_model, "cw")
    with pytest.raises(ValueError, match="disagree on clean_acc"):
        results.pivot_table({"m": [_row("pgd", 0.012, 0, 0.2, clean=0.9), _row("pgd", 0, 0.012, 0.1, clean=0.8)]}, "pgd")


# --------------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------------
def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 100
        assert np.asarray(im.convert("L")).std() > 5  # something was drawn


def test_sweep_curves_and_accuracy_plot(tmp_path: Path) -> None:
    sweep = [_row("pgd", 0.0, 0.0, 0.9135)]
    for k, eps in enumerate([0.002, 0.004, 0.008]):
        sweep += [_row("pgd", eps, 0.0, 0.8 - 0.2 * k), _row("pgd", 0.0, eps, 0.7 - 0.2 * k),
                  _row("pgd", eps, eps, 0.5 - 0.2 * k), _row("fgsm", eps, eps, 0.6 - 0.2 * k),
                  _row("pgd", 2 * eps, eps, 0.4 - 0.1 * k)]
    curves = plots.sweep_curves(sweep)
    assert set(curves) == {("pgd", "audio"), ("pgd", "visual"), ("pgd", "both"), ("fgsm", "both"),
                           ("pgd", "both (ε_audio = 2·ε_visual)")}
    np.testing.assert_allclose(curves[("pgd", "visual")], [(0.002, 0.7), (0.004, 0.5), (0.008, 0.3)])
    np.testing.assert_allclose(curves[("pgd", "both (ε_audio = 2·ε_visual)")], [(0.002, 0.4), (0.004, 0.3), (0.008, 0.2)])
    out = plots.plot_accuracy_vs_eps(sweep, tmp_path / "plots" / "acc.png", "PGD sweep")
    _assert_png(out)
    with pytest.raises(ValueError, match="several models"):
        plots.plot_accuracy_vs_eps([_row("pgd", 0.1, 0, 0.5, model="a"), _row("pgd", 0.1, 0, 0.5, model="b")],
                                    tmp_path / "x.png", "t")
    with pytest.raises(ValueError, match="two rows"):
        plots.sweep_curves([_row("pgd", 0.1, 0, 0.5, steps=10), _row("pgd", 0.1, 0, 0.4, steps=20)])


def test_cosine_hist(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    out = plots.plot_cosine_hist(rng.uniform(0.2, 0.9, 200), torch.empty(200).uniform_(-0.5, 0.3),
                                  tmp_path / "cos.png", "cos(audio, visual)")
    _assert_png(out)
    with pytest.raises(ValueError, match="not a cosine"):
        plots.plot_cosine_hist(np.array([0.5, 1.5]), np.array([0.1]), tmp_path / "bad.png", "t")


# --------------------------------------------------------------------------------------------------
# the examples page
# --------------------------------------------------------------------------------------------------
class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: List[str] = []
        self.srcs: List[str] = []
        self.diff_attrs: List[Dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: List[Any]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if "src" in a:
            self.srcs.append(a["src"])
        if a.get("class") == "diff":
            self.diff_attrs.append(a)


def _examples() -> List[Dict[str, Any]]:
    rng = np.random.default_rng(1)
    sr = 11025
    t = np.arange(sr // 2) / sr
    a_clean = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    a_adv = np.clip(a_clean + rng.uniform(-0.006, 0.006, a_clean.shape), -1, 1).astype(np.float32)
    f_clean_u8 = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    f_adv_u8 = np.clip(f_clean_u8.astype(int) + rng.integers(-3, 4, f_clean_u8.shape), 0, 255).astype(np.uint8)
    gen = torch.Generator().manual_seed(1)  # the same examples whatever ran before
    f_clean = torch.rand(3, 32, 32, generator=gen)
    f_adv = (f_clean + 0.02 * torch.rand(f_clean.shape, generator=gen) - 0.01).clamp(0, 1)
    yy, xx = np.mgrid[0:7, 0:7]
    return [
        {"id": "../../etc/passwd <script>", "label": NASTY, "pred_clean": NASTY, "pred_adv": "tuba",
         "frame_clean": f_clean_u8, "frame_adv": f_adv_u8, "audio_clean": a_clean, "audio_adv": a_adv,
         "sample_rate": sr, "loc_clean": np.exp(-((yy - 2) ** 2 + (xx - 2) ** 2) / 4.0),
         "loc_adv": torch.tensor(np.exp(-((yy - 5) ** 2 + (xx - 5) ** 2) / 4.0)),
         "metrics": {"clip <i>SNR</i>": 30.5}},
        {"id": "violin/abc", "label": "violin", "pred_clean": "violin", "pred_adv": "erhu",
         "frame_clean": f_clean, "frame_adv": f_adv, "audio_clean": torch.from_numpy(a_clean)[None],
         "audio_adv": torch.from_numpy(a_clean)[None], "sample_rate": sr},
    ]


def test_examples_page_escaping_assets_audio_and_diff(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("[]")
    examples = _examples()
    index = examples_page.write_examples_page(examples, tmp_path, title="Attacks on <MUSIC> & co")
    assert index == tmp_path / "index.html" and (tmp_path / "results.json").read_text() == "[]"
    page = index.read_text(encoding="utf-8")

    # escaping: no markup from the data, the escaped forms are there
    assert "<b>" not in page and "<script>" not in page and "<i>" not in page and "<MUSIC>" not in page
    assert "&lt;b&gt;&amp;&quot;x&#x27;" in page and "&lt;script&gt;" in page
    parser = _Collector()
    parser.feed(page)
    assert not {"b", "script", "i", "music"} & set(parser.tags)
    assert parser.tags.count("audio") == 4 and parser.tags.count("section") == 2

    # every referenced asset exists inside assets/, with a sanitised name
    assets = sorted(p.name for p in (tmp_path / "assets").iterdir())
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) and not n.startswith(".") for n in assets)
    assert all(src.startswith("assets/") and (tmp_path / src).is_file() for src in parser.srcs)
    assert len(parser.srcs) == 2 * 3 + 2 + 2 * 2  # frames + diffs, 2 loc overlays, 4 wavs
    assert any(n.startswith("000_etc_passwd_script") for n in assets)

    # audio decodes back to the same samples within 16-bit quantisation
    for key in ("audio_clean", "audio_adv"):
        decoded, sr = sf.read(tmp_path / "assets" / f"000_etc_passwd_script_{key}.wav", dtype="float64")
        assert sr == 11025 and decoded.shape == examples[0][key].shape
        np.testing.assert_allclose(decoded * 32768 / PCM_MAX, examples[0][key], atol=0.5 / PCM_MAX + 1e-7)

    # difference image: |delta| scaled so that its max maps to 255, factor stated
    clean = examples[0]["frame_clean"].astype(float) / 255
    delta = np.abs(examples[0]["frame_adv"].astype(float) / 255 - clean)
    diff = np.asarray(Image.open(tmp_path / "assets" / "000_etc_passwd_script_diff.png").convert("RGB"))
    assert diff.max() == 255
    np.testing.assert_array_equal(diff, np.round(delta / delta.max() * 255).astype(np.uint8))
    assert float(parser.diff_attrs[0]["data-scale"]) == pytest.approx(1 / delta.max())
    assert f"× {1 / delta.max():.1f}" in page
    # the float CHW tensor frame was accepted and transposed to HxWx3
    with Image.open(tmp_path / "assets" / "001_violin_abc_frame_clean.png") as im:
        assert im.size == (32, 32)
    saved = np.asarray(Image.open(tmp_path / "assets" / "001_violin_abc_frame_clean.png"))
    np.testing.assert_array_equal(saved, np.round(examples[1]["frame_clean"].permute(1, 2, 0).double().numpy() * 255))
    assert "∞" in page  # identical audio in example 1: SNR inf
    # the two localization overlays differ (hot spot moved)
    loc = [np.asarray(Image.open(tmp_path / "assets" / f"000_etc_passwd_script_{k}.png")) for k in ("loc_clean", "loc_adv")]
    assert loc[0].shape == (48, 64, 3) and np.abs(loc[0].astype(int) - loc[1]).mean() > 10


def test_difference_image_scale() -> None:
    clean = np.zeros((2, 2, 3))
    adv = clean.copy()
    adv[0, 0, 0], adv[1, 1, 2] = 0.02, 0.01
    img, scale, max_abs = difference_image(clean, adv)
    assert max_abs == 0.02 and scale == pytest.approx(50.0)
    assert img[0, 0, 0] == 255 and img[1, 1, 2] == 128 and img.sum() == 255 + 128
    img, scale, max_abs = difference_image(clean, clean)
    assert max_abs == 0 and math.isnan(scale) and img.max() == 0


def test_examples_page_rejects_bad_inputs(tmp_path: Path) -> None:
    good = _examples()[1]
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        examples_page.write_examples_page([{**good, "frame_adv": good["frame_adv"] * 2}], tmp_path, "t")
    with pytest.raises(ValueError, match=r"outside \[-1, 1\]"):
        examples_page.write_examples_page([{**good, "audio_adv": good["audio_adv"] * 3}], tmp_path, "t")
    with pytest.raises(ValueError, match="uint8 array"):
        examples_page.write_examples_page([{**good, "frame_clean": np.zeros((8, 8, 3), np.float32)}], tmp_path, "t")
    with pytest.raises(KeyError, match="pred_adv"):
        examples_page.write_examples_page([{k: v for k, v in good.items() if k != "pred_adv"}], tmp_path, "t")
    with pytest.raises(ValueError, match="given together"):
        examples_page.write_examples_page([{**good, "frame_adv": None}], tmp_path, "t")
    assert not (tmp_path / "index.html").exists()


# --------------------------------------------------------------------------------------------------
# the one table model, and everything that renders a table going through it
# --------------------------------------------------------------------------------------------------
class _HtmlTable(HTMLParser):
    """The text of every <th>/<td> of a page, row by row (entities decoded)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: List[List[str]] = []
        self.row_classes: List[str] = []
        self._cell: Any = None

    def handle_starttag(self, tag: str, attrs: List[Any]) -> None:
        if tag == "tr":
            self.rows.append([])
            self.row_classes.append(dict(attrs).get("class", ""))
        elif tag in ("th", "td"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td"):
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _html_cells(page: str) -> List[List[str]]:
    parser = _HtmlTable()
    parser.feed(page)
    return parser.rows


def _unescape_md(cell: str) -> str:
    return cell.replace("\\|", "|").replace("\\\\", "\\")


def test_one_table_renders_the_same_cells_to_markdown_and_html() -> None:
    cols = [Column("name", "name <th>"), Column("acc", "acc (%)", tables.fmt_percent, numeric=True),
            Column("snr", "SNR | dB", tables.fmt_db, numeric=True)]
    rows = [{"name": NASTY, "acc": 0.5, "snr": float("inf")}, {"name": "a|b\\c", "acc": None, "snr": 31.25},
            {"name": "line\nbreak", "acc": np.float32(0.125)}]
    table = Table(cols, rows)
    want = table.cells()
    assert want == [[NASTY, "50.00", "∞"], ["a|b\\c", "—", "31.2"], ["line\nbreak", "12.50", "—"]]

    md = _md_cells(table.to_markdown())
    assert [_unescape_md(h) for h in md[0]] == table.headers == ["name <th>", "acc (%)", "SNR | dB"]
    assert md[1] == [":---", "---:", "---:"]
    assert [[_unescape_md(c) for c in r] for r in md[2:]] == [[c.replace("\n", " ") for c in r] for r in want]

    page = table.to_html()
    assert "<th>" not in page.replace("<th>", "", 4)  # header row + no stray markup from the data
    assert _html_cells(page) == [table.headers] + want
    kv = Table(cols[:2], rows[:2], row_classes=["ok", "wrong"]).to_html(css_class="meta", header=False,
                                                                        row_headers=True, sep="")
    assert kv.startswith('<table class="meta"><tr class="ok"><th>') and "\n" not in kv
    assert _html_cells(kv) == [r[:2] for r in want[:2]]
    with pytest.raises(ValueError, match="duplicate"):
        Table([Column("a", "a"), Column("a", "b")])


def test_results_tables_and_the_study_report_go_through_table(tmp_path: Path, rows: List[Dict[str, Any]],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cols = ["model", "attack", "eps_visual", "clean_acc", "adv_acc", "snr_db_audio"]
    by_model = {"concat": [_row("pgd", 0.006, 0.006, 0.1), _row("pgd", 0.0, 0.012, 0.3)],
                "a|b": [_row("pgd", 0.012, 0.0, 0.05, clean=0.6)]}
    blocks = [Block("h1", "Study"), Block("table", table=results.results_table(rows, cols)),
              Block("table", table=results.comparison_table(by_model, "pgd")), Block("p", "done")]
    out = study_report.write_report(blocks, tmp_path, "t <x>")
    md_tables = [_md_cells(t) for t in out["md"].read_text().split("\n\n") if t.strip().startswith("|")]
    html_cells = _html_cells(out["html"].read_text())
    assert len(md_tables) == 2
    md_rows = [[_unescape_md(c) for c in r] for t in md_tables for r in (t[:1] + t[2:])]
    assert md_rows == html_cells  # the two formats show the same headers and cells
    assert html_cells[0] == ["model", "attack", "ε visual", "clean acc (%)", "adv acc (%)", "SNR audio (dB)"]
    assert results.markdown_table(rows, cols) == results.results_table(rows, cols).to_markdown()
    assert results.pivot_table(by_model, "pgd") == results.comparison_table(by_model, "pgd").to_markdown()

    # every renderer delegates to Table: a change of Table's cells shows up in all of them
    monkeypatch.setattr(Table, "cells", lambda self: [["CELL"] * len(self.columns) for _ in self.rows])
    assert _md_cells(results.markdown_table(rows, cols))[2] == ["CELL"] * len(cols)
    assert _md_cells(results.pivot_table(by_model, "pgd"))[2] == ["CELL"] * 5
    assert results.format_value("adv_acc", 0.25) == "CELL"
    assert "| CELL |" in study_report.render_markdown(blocks)
    assert "<td>CELL</td>" in study_report.render_html(blocks, "t")


def test_block_api() -> None:
    table = results.results_table([], ["attack"])
    assert study_report.render_markdown([Block("table", table=table)]) == "(no rows)\n"
    assert "<p>(no rows)</p>" in study_report.render_html([Block("table", table=table)], "t")
    with pytest.raises(ValueError, match="needs table"):
        Block("table")
    with pytest.raises(ValueError, match="unknown block kind 'mdtable'"):
        Block("mdtable", "| a |\n|---|\n")
    with pytest.raises(ValueError, match="only a table block"):
        Block("p", "x", table=table)
    assert study_report.pct(0.1234) == "12.3%" and study_report.pct(None) == "—"
    assert not hasattr(study_report, "compare")  # the 2-SE rule is gone: comparisons are paired tests


def test_examples_page_uses_the_evaluation_metrics(tmp_path: Path) -> None:
    ex = _examples()[0]
    examples_page.write_examples_page([ex], tmp_path, "t")
    meta = {r[0]: r[1] for r in _html_cells((tmp_path / "index.html").read_text(encoding="utf-8")) if len(r) == 2}
    a_clean, a_adv = (torch.from_numpy(ex[k].astype(np.float64))[None] for k in ("audio_clean", "audio_adv"))
    f_clean, f_adv = (torch.from_numpy(ex[k].astype(np.float64) / 255)[None] for k in ("frame_clean", "frame_adv"))
    assert meta["audio SNR (dB)"] == tables.fmt_db(float(snr_db(a_clean, a_adv)[0]))
    assert meta["frame PSNR (dB)"] == tables.fmt_db(float(psnr_db(f_clean, f_adv)[0]))
    assert meta["prediction (adversarial)"] == "tuba"
    # one SNR: a silent, unperturbed clip is +inf (not NaN), as documented
    silent = torch.zeros(2, 5)
    assert snr_db(silent, silent).tolist() == [math.inf, math.inf]
    assert snr_db(silent, silent + 0.1).tolist() == [-math.inf, -math.inf]
    assert examples_page.clip_snr_db(np.zeros(4), np.zeros(4)) == math.inf


def test_reporting_layer_structure() -> None:
    """Old modules gone, modules under 500 lines, only allowed imports, utils/ never imports reporting."""
    import ast

    for old in ("utils/report.py", "utils/html_page.py", "utils/study_report.py"):
        assert not (ROOT / old).exists(), old
    assert "def format_markdown" not in (ROOT / "attacks" / "evaluate.py").read_text()
    project = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}

    def imports(path: Path) -> List[str]:
        names = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # function-level imports too
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.append(node.module)
        return [n for n in names if n.split(".")[0] in project]

    modules = sorted((ROOT / "reporting").glob("*.py"))
    assert {p.stem for p in modules} >= {"tables", "results", "plots", "examples_page", "study_report"}
    graph = {}
    for path in modules:
        assert len(path.read_text().splitlines()) <= 500, path
        deps = imports(path)
        bad = [d for d in deps if not (d.startswith(("reporting.", "utils.")) or d == "attacks.metrics")]
        assert not bad, f"{path.name} imports {bad}"
        graph[f"reporting.{path.stem}"] = [d for d in deps if d.startswith("reporting.")]
    for path in (ROOT / "utils").glob("*.py"):
        assert not [d for d in imports(path) if d.split(".")[0] == "reporting"], path
    assert not [d for d in imports(ROOT / "attacks" / "metrics.py") if d.split(".")[0] == "reporting"]

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(d == goal or (d not in seen and not seen.add(d) and reaches(d, goal, seen))
                   for d in graph.get(start, []))

    assert not [m for m in graph if reaches(m, m, set())], "import cycle inside reporting/"
