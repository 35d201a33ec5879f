"""The study report (report.md + report.html) assembled from the run folders of a study.

A report is a list of blocks (headings, paragraphs, tables, images, links, code); ``render_markdown`` and
``render_html`` turn the same blocks into both formats, so the two never disagree. Every number comes
from a results.json written by an evaluation; the reading ("what the numbers say") is computed from those
numbers with the comparison stated, never written in advance.
"""
from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from utils.report import atomic_write_text, format_value, markdown_table


@dataclass
class Block:
    kind: str  # h1 h2 p table img link code
    text: str = ""
    rows: List[Dict[str, Any]] = field(default_factory=list)
    columns: Optional[List[str]] = None
    path: str = ""


def _table_cells(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> List[List[str]]:
    return [[format_value(c, r.get(c)) for c in columns] for r in rows]


def render_markdown(blocks: Sequence[Block]) -> str:
    out: List[str] = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}")
        elif b.kind == "h2":
            out.append(f"## {b.text}")
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "table":
            out.append(markdown_table(b.rows, b.columns) if b.rows else "(no rows)")
        elif b.kind == "mdtable":
            out.append(b.text)
        elif b.kind == "img":
            out.append(f"![{b.text}]({b.path})")
        elif b.kind == "link":
            out.append(f"[{b.text}]({b.path})")
        elif b.kind == "code":
            out.append("```\n" + b.text + "\n```")
        else:
            raise ValueError(f"unknown block kind {b.kind!r}")
        out.append("")
    return "\n".join(out)


def render_html(blocks: Sequence[Block], title: str) -> str:
    e = html.escape
    out = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{e(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
           "text-align:right}th{background:#f0f0f0}td:first-child{text-align:left}img{max-width:560px;"
           "margin:4px}pre{background:#f6f6f6;padding:8px;overflow-x:auto;white-space:pre-wrap}</style>",
           "</head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2"):
            out.append(f"<{b.kind}>{e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{e(b.text)}</p>")
        elif b.kind == "table":
            cols = b.columns or (list(b.rows[0]) if b.rows else [])
            out.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>")
            for cells in _table_cells(b.rows, cols):
                out.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
            out.append("</table>")
        elif b.kind == "mdtable":
            out.append(md_table_to_html(b.text))
        elif b.kind == "img":
            out.append(f"<figure><img src='{e(b.path)}' alt='{e(b.text)}'><figcaption>{e(b.text)}</figcaption></figure>")
        elif b.kind == "link":
            out.append(f"<p><a href='{e(b.path)}'>{e(b.text)}</a></p>")
        elif b.kind == "code":
            out.append(f"<pre>{e(b.text)}</pre>")
    out.append("</body></html>")
    return "\n".join(out)


def _md_cells(line: str) -> List[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    cells, cur, i = [], "", 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line) and line[i + 1] == "|":
            cur += "|"
            i += 2
            continue
        if line[i] == "|":
            cells.append(cur.strip())
            cur = ""
        else:
            cur += line[i]
        i += 1
    cells.append(cur.strip())
    return cells


def md_table_to_html(text: str) -> str:
    """A pipe table (header, separator, rows) as an escaped HTML table."""
    lines = [l for l in text.strip().splitlines() if l.strip()]
    if len(lines) < 2:
        raise ValueError(f"not a markdown table: {text[:80]!r}")
    e = html.escape
    out = ["<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in _md_cells(lines[0])) + "</tr>"]
    for l in lines[2:]:
        out.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in _md_cells(l)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def write_report(blocks: Sequence[Block], out_dir: Path, title: str) -> Dict[str, Path]:
    """report.md and report.html in ``out_dir`` (atomic writes)."""
    md = atomic_write_text(out_dir / "report.md", render_markdown(blocks))
    page = atomic_write_text(out_dir / "report.html", render_html(blocks, title))
    return {"md": md, "html": page}


def rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


# ------------------------------------------------------------------------------------------------------
# Readings computed from the numbers


def se(acc: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on n samples."""
    return math.sqrt(max(acc * (1 - acc), 1e-12) / max(n, 1))


def compare(a: float, b: float, n: int) -> str:
    """'higher'/'lower'/'about the same' for a vs b, 'about the same' when within 2 standard errors."""
    margin = 2 * math.sqrt(se(a, n) ** 2 + se(b, n) ** 2)
    if abs(a - b) <= margin:
        return "about the same as"
    return "higher than" if a > b else "lower than"


def pct(x: Optional[float]) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"
