"""The results schema: result rows, their files (JSON/CSV/markdown), and the tables built from them.

A *result row* is one attack setting evaluated on one model, as produced by ``attacks/evaluate.py``::

    {"attack": "pgd", "eps_audio": 0.006, "eps_visual": 0.006, "eps_unit": "input", "steps": 10,
     "clean_acc": 0.91, "adv_acc": 0.12, "success_rate": 0.87,          # fractions in [0, 1]
     "max_delta_audio": 0.006, "max_delta_visual": 0.0235,               # largest |x_adv - x| used
     "snr_db_audio": 31.2, "psnr_db_visual": 40.1,                       # over changed clips; None if none
     "n_samples": 104, "seconds": 12.3,
     "model": "concat", "run": "music_av", "fusion": "concat"}          # optional

Accuracies and success rates are *fractions*; tables print them in percent. A value outside [0, 1]
raises instead of being guessed at (a row already in percent would otherwise print as 9135 %).

Tables are :class:`reporting.tables.Table` objects: :func:`results_table` (any rows) and
:func:`comparison_table` (the paper's clean / audio / visual / both table); :func:`markdown_table` and
:func:`pivot_table` are their markdown renderings. Files are written atomically with
:mod:`utils.fileio`; nothing else in the output folder is touched.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from reporting.tables import (MISSING, Column, Formatter, Table, as_fraction, fmt_db, fmt_eps, fmt_generic,
                              fmt_int, fmt_percent, fmt_seconds, is_missing, plain_scalar)
from utils.fileio import atomic_write_text

logger = logging.getLogger(__name__)

Row = Mapping[str, Any]
PathLike = Union[str, os.PathLike]

RESULT_SUFFIXES = ("json", "csv", "md")

# Known columns: name -> (table header, formatter). Unknown columns use ``fmt_generic`` (``fmt_percent``
# for ``*_acc`` / ``acc[...]`` keys) and their key as header.
COLUMNS: Dict[str, Tuple[str, Formatter]] = {
    "model": ("model", fmt_generic),
    "run": ("run", fmt_generic),
    "fusion": ("fusion", fmt_generic),
    "attack": ("attack", fmt_generic),
    "eps_audio": ("ε audio", fmt_eps),
    "eps_visual": ("ε visual", fmt_eps),
    "eps_unit": ("ε unit", fmt_generic),
    "steps": ("steps", fmt_int),
    "clean_acc": ("clean acc (%)", fmt_percent),
    "adv_acc": ("adv acc (%)", fmt_percent),
    "success_rate": ("success (%)", fmt_percent),
    "max_delta_audio": ("max |δ| audio", fmt_generic),
    "max_delta_visual": ("max |δ| visual", fmt_generic),
    "snr_db_audio": ("SNR audio (dB)", fmt_db),
    "psnr_db_visual": ("PSNR visual (dB)", fmt_db),
    "n_samples": ("n", fmt_int),
    "seconds": ("time (s)", fmt_seconds),
    "norm_audio": ("norm audio", fmt_generic),
    "norm_visual": ("norm visual", fmt_generic),
    "queries": ("queries", fmt_generic),
    "per_attack": ("robust after each stage", fmt_generic),
    "missing": ("ensemble parts not run", fmt_generic),
    "flags": ("flags", fmt_generic),
    "missing_input": ("input missing", fmt_generic),
    "missing_fill": ("filled with", fmt_generic),
    "missing_acc": ("acc, input missing (%)", fmt_percent),
    "mean_abs_shift_s": ("mean |shift| (s)", fmt_generic),  # desync (reporting/attack_choices.py)
    "shifted_share": ("clips shifted (%)", fmt_percent),
    "segments_chosen": ("clips per perturbed segment", fmt_generic),  # sparse_time
}


def result_column(key: str) -> Column:
    """The :class:`Column` of a result key: its header, formatter and alignment."""
    header, formatter = COLUMNS.get(key, (key, fmt_generic))
    if key not in COLUMNS and (key.endswith("_acc") or key.startswith("acc[")):
        formatter = fmt_percent
    numeric = (key in COLUMNS and formatter is not fmt_generic) or key.startswith("max_delta")
    return Column(key, header, formatter, numeric)


def format_value(column: str, value: Any) -> str:
    """Format one row value for a table according to its column (see ``COLUMNS``)."""
    return Table([result_column(column)], [{column: value}]).cells()[0][0]


def _columns_of(rows: Sequence[Row]) -> List[str]:
    """Known columns present in any row (in ``COLUMNS`` order), then other keys by first appearance."""
    present: List[str] = []
    for row in rows:
        for key in row:
            if key not in present:
                present.append(key)
    known = [c for c in COLUMNS if c in present]
    return known + [c for c in present if c not in COLUMNS]


def results_table(rows: Sequence[Row], columns: Optional[Sequence[str]] = None) -> Table:
    """A :class:`Table` of result rows.

    Args:
        rows: result rows (see the module docstring); may carry extra keys; may be empty.
        columns: keys to show, in order; default: the known columns present in any row, then extra keys.
            A requested column that a row lacks shows as "—", as do None and NaN.
    """
    rows = list(rows)
    cols = list(columns) if columns is not None else _columns_of(rows)
    return Table([result_column(c) for c in cols], rows)


def markdown_table(rows: Sequence[Row], columns: Optional[Sequence[str]] = None) -> str:
    """A GitHub-markdown table of result rows: ``results_table(rows, columns).to_markdown()``.

    Accuracies and success rates print in percent (2 decimals), dB values with 1 decimal, eps with
    ``%g``. Pipes in strings are escaped. Raises on no rows or no columns.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("markdown_table needs at least one row")
    table = results_table(rows, columns)
    if not table.columns:
        raise ValueError("markdown_table: no columns to show")
    return table.to_markdown()


# --------------------------------------------------------------------------------------------------
# result files
# --------------------------------------------------------------------------------------------------
def _json_value(value: Any) -> Any:
    """Strict JSON: NaN -> null, +-inf -> the strings "inf" / "-inf" (restored by ``read_results``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision; 'nan' / 'inf' for non-finite values
    return str(value)


def clean_rows(rows: Iterable[Row]) -> List[Dict[str, Any]]:
    """Validate result rows (each a mapping) and convert numpy / torch scalars to Python scalars."""
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"result row {i} is a {type(row).__name__}, expected a dict")
        out.append({str(k): plain_scalar(v, str(k)) for k, v in row.items()})
    return out


def write_results(rows: Sequence[Row], out_dir: PathLike, name: str = "results") -> Dict[str, Path]:
    """Write ``<name>.json``, ``<name>.csv`` and ``<name>.md`` into ``out_dir``.

    JSON holds the list of rows (strict JSON: NaN as null, infinities as "inf"/"-inf"); CSV has one
    column per key in order of first appearance (missing values empty, floats at full precision); the
    markdown file holds :func:`markdown_table`. Each file is written atomically; nothing else in
    ``out_dir`` is touched. Returns ``{"json": path, "csv": path, "md": path}``.
    """
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"name must be a plain file stem without folders, got {name!r}")
    clean = clean_rows(rows)
    if not clean:
        raise ValueError("write_results needs at least one row")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    json_text = json.dumps([{k: _json_value(v) for k, v in r.items()} for r in clean],
                           indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    fields: List[str] = []
    for r in clean:
        fields.extend(k for k in r if k not in fields)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in clean:
        writer.writerow({k: _csv_value(r.get(k)) for k in fields})

    paths = {
        "json": atomic_write_text(out_dir / f"{name}.json", json_text),
        "csv": atomic_write_text(out_dir / f"{name}.csv", buf.getvalue()),
        "md": atomic_write_text(out_dir / f"{name}.md", markdown_table(clean)),
    }
    logger.info("wrote %d result rows to %s.{json,csv,md}", len(clean), out_dir / name)
    return paths


def read_results(path: PathLike) -> List[Dict[str, Any]]:
    """Read a ``results.json`` written by :func:`write_results` (null -> NaN, "inf" -> inf for numbers)."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of rows")
    numeric = {k for k, (_, f) in COLUMNS.items() if f is not fmt_generic} | {"max_delta_audio", "max_delta_visual"}
    out = []
    for row in rows:
        fixed = dict(row)
        for k, v in row.items():
            if v in ("inf", "-inf"):
                fixed[k] = float(v)
            elif v is None and k in numeric:
                fixed[k] = float("nan")
        out.append(fixed)
    return out


# --------------------------------------------------------------------------------------------------
# the paper's comparison table
# --------------------------------------------------------------------------------------------------
PIVOT_COLUMNS = ("clean", "audio", "visual", "both")


def attacked_modalities(row: Row) -> str:
    """Map a row's eps pattern to "clean" (no eps), "audio", "visual" or "both" (nonzero eps)."""
    try:
        ea, ev = float(row["eps_audio"]), float(row["eps_visual"])
    except KeyError as e:
        raise KeyError(f"result row lacks {e.args[0]!r}: {dict(row)}") from None
    if ea < 0 or ev < 0 or math.isnan(ea) or math.isnan(ev):
        raise ValueError(f"invalid eps in row: eps_audio={ea}, eps_visual={ev}")
    return {(False, False): "clean", (True, False): "audio", (False, True): "visual", (True, True): "both"}[
        (ea > 0, ev > 0)
    ]


def _eps_label(row: Row, modality: str) -> str:
    unit = row.get("eps_unit")
    unit_txt = f" {unit}" if unit not in (None, "") else ""
    if modality == "audio":
        return f"ε={fmt_eps(row['eps_audio'])}{unit_txt}"
    if modality == "visual":
        return f"ε={fmt_eps(row['eps_visual'])}{unit_txt}"
    if float(row["eps_audio"]) == float(row["eps_visual"]):
        return f"ε={fmt_eps(row['eps_audio'])}{unit_txt}"
    return f"ε_a={fmt_eps(row['eps_audio'])}, ε_v={fmt_eps(row['eps_visual'])}{unit_txt}"


def _same_clean(values: List[float], where: str) -> float:
    if max(values) - min(values) > 1e-9:
        raise ValueError(
            f"{where}: rows disagree on clean_acc ({sorted(set(values))}); were they evaluated on "
            "different samples? Filter the rows before building the table"
        )
    return values[0]


def comparison_table(rows_by_model: Mapping[str, Sequence[Row]], attack: str) -> Table:
    """The paper's main comparison table: one row per model, columns clean / audio / visual / both.

    For each model the rows of ``attack`` are mapped by their eps pattern (only audio nonzero ->
    "audio", only visual -> "visual", both -> "both"); each cell is that row's adversarial accuracy in
    percent, "clean" is the clean accuracy. A column's eps goes into its header when every model used
    the same eps, otherwise into each cell. Missing cells show "—". Two rows of one model that map to
    the same column (e.g. a whole sweep) are ambiguous and raise: filter the rows to one grid first.
    """
    if not rows_by_model:
        raise ValueError("pivot_table needs at least one model")
    cells: Dict[str, Dict[str, Row]] = {}
    clean: Dict[str, Optional[float]] = {}
    seen_attacks = set()
    for model, rows in rows_by_model.items():
        per_col: Dict[str, Row] = {}
        cleans: List[float] = []
        for row in rows:
            seen_attacks.add(row.get("attack"))
            if row.get("attack") != attack:
                continue
            if not is_missing(row.get("clean_acc")):
                cleans.append(as_fraction(plain_scalar(row["clean_acc"], "clean_acc"), "clean_acc"))
            col = attacked_modalities(row)
            if col == "clean":
                continue
            if col in per_col:
                raise ValueError(
                    f"model {model!r}, attack {attack!r}: several rows map to column {col!r} "
                    f"({_eps_label(per_col[col], col)} and {_eps_label(row, col)}); filter to one grid first"
                )
            per_col[col] = row
        if not per_col and not cleans:
            logger.warning("pivot_table: model %r has no rows for attack %r", model, attack)
        cells[model] = per_col
        clean[model] = _same_clean(cleans, f"model {model!r}") if cleans else None
    if not any(cells.values()):
        raise ValueError(
            f"no rows for attack {attack!r}; attacks present: {sorted(str(a) for a in seen_attacks)}"
        )

    columns = [Column("model", "model"), Column("clean", "clean (%)", fmt_percent, numeric=True)]
    eps_in_header: Dict[str, bool] = {}
    for col in PIVOT_COLUMNS[1:]:
        labels = {_eps_label(c[col], col) for c in cells.values() if col in c}
        eps_in_header[col] = len(labels) == 1
        header = f"{col}, {labels.pop()} (%)" if len(labels) == 1 else f"{col} (%)"
        columns.append(Column(col, header, numeric=True))  # cells below are preformatted strings
    body: List[Dict[str, Any]] = []
    for model, per_col in cells.items():
        line: Dict[str, Any] = {"model": str(model), "clean": clean[model]}
        for col in PIVOT_COLUMNS[1:]:
            if col not in per_col:
                line[col] = MISSING
                continue
            text = fmt_percent(plain_scalar(per_col[col].get("adv_acc"), "adv_acc"), "adv_acc")
            line[col] = text if eps_in_header[col] else f"{text} ({_eps_label(per_col[col], col)})"
        body.append(line)
    return Table(columns, body)


def pivot_table(rows_by_model: Mapping[str, Sequence[Row]], attack: str) -> str:
    """:func:`comparison_table` as markdown."""
    return comparison_table(rows_by_model, attack).to_markdown()


__all__ = ["COLUMNS", "RESULT_SUFFIXES", "PIVOT_COLUMNS", "result_column", "format_value", "results_table",
           "markdown_table", "clean_rows", "write_results", "read_results", "attacked_modalities",
           "comparison_table", "pivot_table"]
