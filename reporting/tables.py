"""The one table model of the project: columns (key, human header, formatter) and rows, rendered to
markdown and HTML from the same formatted cells.

Every table the code writes (result files, the paper's comparison table, the study report, the meta
table of the examples page) is a :class:`Table`; nothing else renders tables. A cell is formatted once by
its column's formatter (:meth:`Table.cells`), then :meth:`Table.to_markdown` escapes it for a pipe table
and :meth:`Table.to_html` HTML-escapes it, so the two formats always show the same text.

The value formatters below are shared by every table: fractions print in percent (a value outside
[0, 1] raises instead of being guessed at), decibels with one decimal and infinities as "∞", missing
values (None, NaN, an absent key) as "—".
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Callable, List, Mapping, Optional, Sequence

import numpy as np

MISSING = "—"  # shown for None / NaN / absent values

Formatter = Callable[[Any, str], str]


# --------------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------------
def plain_scalar(value: Any, key: str) -> Any:
    """Convert numpy / torch scalars to Python scalars; reject anything that is not a JSON-able scalar."""
    if hasattr(value, "detach"):  # torch tensor, without importing torch here
        value = value.detach().cpu()
        if value.numel() != 1:
            raise TypeError(f"row value {key!r} is a tensor with {value.numel()} elements, expected a scalar")
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"row value {key!r} has unsupported type {type(value).__name__}: {value!r}")


def is_missing(value: Any) -> bool:
    """None or NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def as_fraction(value: Any, key: str) -> float:
    """``float(value)``, which must lie in [0, 1] (accuracies and rates are fractions, never percent)."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{key}={value!r} is not a fraction in [0, 1]; reporting expects accuracies and rates as "
            "fractions (it prints them in percent)"
        )
    return value


def fmt_percent(value: Any, key: str = "value") -> str:
    """A fraction in [0, 1] as a percentage with 2 decimals (``0.9135 -> '91.35'``)."""
    if is_missing(value):
        return MISSING
    return f"{100.0 * as_fraction(value, key):.2f}"


def fmt_db(value: Any, key: str = "value") -> str:
    """Decibels with 1 decimal; +-inf (e.g. SNR of a zero perturbation) as '∞' / '-∞'."""
    if is_missing(value):
        return MISSING
    value = float(value)
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.1f}"


def fmt_eps(value: Any, key: str = "value") -> str:
    """A budget in the shortest exact-looking form (``0.006``, ``0.012``, ``0``)."""
    if is_missing(value):
        return MISSING
    return f"{float(value):g}"


def fmt_int(value: Any, key: str = "value") -> str:
    """An integer count."""
    if is_missing(value):
        return MISSING
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{key}={value!r} should be an integer")
    return str(int(value))


def fmt_seconds(value: Any, key: str = "value") -> str:
    """Seconds with 1 decimal."""
    if is_missing(value):
        return MISSING
    return f"{float(value):.1f}"


def fmt_generic(value: Any, key: str = "value") -> str:
    """Anything else: floats with 4 significant digits, strings (e.g. preformatted cells) as they are."""
    if is_missing(value):
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.4g}"
    return str(value)


# --------------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One column: the row key it reads, the header shown, how values print, and its alignment."""

    key: str
    header: str
    formatter: Formatter = fmt_generic
    numeric: bool = False  # right-aligned in markdown


def md_escape(text: str) -> str:
    """Make a string safe inside a markdown table cell (pipes escaped, no line breaks)."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


@dataclass
class Table:
    """Columns plus rows (mappings from column key to value; an absent key prints as "—").

    ``row_classes`` optionally gives each row a CSS class for :meth:`to_html` (markdown ignores it).
    """

    columns: Sequence[Column]
    rows: Sequence[Mapping[str, Any]] = field(default_factory=list)
    row_classes: Optional[Sequence[str]] = None

    def __post_init__(self) -> None:
        self.columns = list(self.columns)
        self.rows = list(self.rows)
        keys = [c.key for c in self.columns]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate column keys: {keys}")
        if self.row_classes is not None and len(self.row_classes) != len(self.rows):
            raise ValueError(f"{len(self.row_classes)} row classes for {len(self.rows)} rows")

    @property
    def headers(self) -> List[str]:
        return [c.header for c in self.columns]

    def cells(self) -> List[List[str]]:
        """The formatted text of every body cell: the one source of both renderings."""
        return [[c.formatter(plain_scalar(row.get(c.key), c.key), c.key) for c in self.columns]
                for row in self.rows]

    def to_markdown(self) -> str:
        """A GitHub pipe table: header, alignment row (``---:`` numeric, ``:---`` text), body; pipes escaped."""
        if not self.columns:
            raise ValueError("a table needs at least one column")
        lines = ["| " + " | ".join(md_escape(h) for h in self.headers) + " |"]
        lines.append("|" + "|".join("---:" if c.numeric else ":---" for c in self.columns) + "|")
        for cells in self.cells():
            lines.append("| " + " | ".join(md_escape(t) for t in cells) + " |")
        return "\n".join(lines) + "\n"

    def to_html(self, css_class: Optional[str] = None, header: bool = True, row_headers: bool = False,
                sep: str = "\n") -> str:
        """An HTML table of the same cells, every string escaped.

        Args:
            css_class: class attribute of ``<table>``.
            header: emit the header row (``<th>`` of the column headers).
            row_headers: render each row's first cell as ``<th>`` (a key/value table).
            sep: joins the header line, each row line and the closing tag.
        """
        if not self.columns:
            raise ValueError("a table needs at least one column")
        open_tag = "<table>" if css_class is None else f'<table class="{_esc(css_class)}">'
        lines: List[str] = []
        if header:
            lines.append("<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in self.headers) + "</tr>")
        classes = self.row_classes if self.row_classes is not None else [""] * len(self.rows)
        for cells, cls in zip(self.cells(), classes):
            tags = ["th" if (row_headers and j == 0) else "td" for j in range(len(cells))]
            body = "".join(f"<{t}>{_esc(c)}</{t}>" for t, c in zip(tags, cells))
            lines.append((f'<tr class="{_esc(cls)}">' if cls else "<tr>") + body + "</tr>")
        lines.append("</table>")
        lines[0] = open_tag + lines[0]
        return sep.join(lines)


__all__ = ["MISSING", "Column", "Table", "plain_scalar", "is_missing", "as_fraction", "md_escape",
           "fmt_percent", "fmt_db", "fmt_eps", "fmt_int", "fmt_seconds", "fmt_generic"]
