"""The study report (report.md + report.html) assembled from the run folders of a study.

A report is a list of :class:`Block` objects (headings, paragraphs, tables, images, links, code);
``render_markdown`` and ``render_html`` turn the same blocks into both formats, so the two never
disagree: a table block carries a :class:`reporting.tables.Table`, rendered directly to each format
from the same formatted cells. Every number comes from a results.json written by an evaluation; the
reading ("what the numbers say") is computed from those numbers, each comparison by a paired test
(reporting/stats.py, reporting/study_readings.py), never written in advance.
"""
from __future__ import annotations

import html
import math
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from reporting.tables import MISSING, Table
from utils.fileio import atomic_write_text

BLOCK_KINDS = ("h1", "h2", "p", "table", "img", "link", "code")
NO_ROWS = "(no rows)"  # what an empty table block shows


@dataclass
class Block:
    """One piece of the report.

    ``kind``: h1 / h2 / p / code (``text``), img / link (``text`` = caption or link text, ``path`` =
    relative target), table (``table`` = a :class:`Table`, e.g. ``reporting.results.results_table(rows,
    columns)`` or ``reporting.results.comparison_table(rows_by_model, attack)``).
    """

    kind: str
    text: str = ""
    table: Optional[Table] = None
    path: str = ""

    def __post_init__(self) -> None:
        if self.kind not in BLOCK_KINDS:
            raise ValueError(f"unknown block kind {self.kind!r}; valid kinds: {', '.join(BLOCK_KINDS)}")
        if (self.kind == "table") != (self.table is not None):
            raise ValueError(f"a 'table' block needs table=Table(...), and only a table block has one "
                             f"(kind {self.kind!r}, table {'given' if self.table is not None else 'missing'})")
        if self.table is not None and not isinstance(self.table, Table):
            raise TypeError(f"Block.table must be a reporting.tables.Table, got {type(self.table).__name__}")


def render_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as one markdown document (blocks separated by blank lines)."""
    out: List[str] = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}")
        elif b.kind == "h2":
            out.append(f"## {b.text}")
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "table":
            out.append(b.table.to_markdown() if b.table.rows else NO_ROWS)
        elif b.kind == "img":
            out.append(f"![{b.text}]({b.path})")
        elif b.kind == "link":
            out.append(f"[{b.text}]({b.path})")
        elif b.kind == "code":
            out.append("```\n" + b.text + "\n```")
        else:  # unreachable: Block validates its kind
            raise ValueError(f"unknown block kind {b.kind!r}")
        out.append("")
    return "\n".join(out)


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}th{background:#f0f0f0}td:first-child{text-align:left}img{max-width:560px;"
        "margin:4px}pre{background:#f6f6f6;padding:8px;overflow-x:auto;white-space:pre-wrap}")


def render_html(blocks: Sequence[Block], title: str) -> str:
    """The blocks as one self-contained HTML page; every string is escaped."""
    e = html.escape
    out = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{e(title)}</title>",
           f"<style>{_CSS}</style>", "</head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2"):
            out.append(f"<{b.kind}>{e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{e(b.text)}</p>")
        elif b.kind == "table":
            out.append(b.table.to_html() if b.table.rows else f"<p>{e(NO_ROWS)}</p>")
        elif b.kind == "img":
            out.append(f"<figure><img src='{e(b.path)}' alt='{e(b.text)}'><figcaption>{e(b.text)}</figcaption></figure>")
        elif b.kind == "link":
            out.append(f"<p><a href='{e(b.path)}'>{e(b.text)}</a></p>")
        elif b.kind == "code":
            out.append(f"<pre>{e(b.text)}</pre>")
        else:  # unreachable: Block validates its kind
            raise ValueError(f"unknown block kind {b.kind!r}")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(blocks: Sequence[Block], out_dir: Path, title: str) -> Dict[str, Path]:
    """report.md and report.html in ``out_dir`` (atomic writes)."""
    md = atomic_write_text(Path(out_dir) / "report.md", render_markdown(blocks))
    page = atomic_write_text(Path(out_dir) / "report.html", render_html(blocks, title))
    return {"md": md, "html": page}


def rel(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` (links in the report are relative to the report's folder)."""
    return os.path.relpath(path, start)


def _flag_groups(argv: Sequence[str]) -> Tuple[List[str], List[Tuple[str, List[str]]]]:
    """The program and its arguments before the first flag, and each ``--flag`` with the values after it."""
    head: List[str] = []
    groups: List[Tuple[str, List[str]]] = []
    for a in argv:
        if a.startswith("--"):
            groups.append((a, []))
        elif groups:
            groups[-1][1].append(a)
        else:
            head.append(a)
    return head, groups


def command_text(argv: Sequence[Union[str, os.PathLike]], repo: Union[str, os.PathLike]) -> str:
    """A step's command as the report shows it: ``python`` and the arguments, every absolute path relative to
    the repository ``repo`` (the command runs from its root; no path of the machine that ran it), each flag once
    (a flag given twice keeps its last values, which is what argparse used: the project's flags have no
    append action)."""
    root = Path(repo).resolve()

    def local(arg: str) -> str:
        return os.path.relpath(arg, root) if os.path.isabs(arg) else arg

    head, groups = _flag_groups([local(str(a)) for a in argv])
    last = {flag: i for i, (flag, _) in enumerate(groups)}
    words = ["python", *head] + [w for i, (flag, values) in enumerate(groups) if last[flag] == i
                                 for w in (flag, *values)]
    return " ".join(shlex.quote(w) for w in words)


def pct(x: Optional[float]) -> str:
    """A fraction as a percentage with 1 decimal ("—" for None / NaN)."""
    return MISSING if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


__all__ = ["BLOCK_KINDS", "Block", "render_markdown", "render_html", "write_report", "rel", "command_text", "pct"]
