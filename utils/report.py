"""Results reporting: result files (JSON/CSV/markdown), the paper's comparison table, and plots.

A *result row* is one attack setting evaluated on one model, as produced by ``attacks/evaluate.py``::

    {"attack": "pgd", "eps_audio": 0.006, "eps_visual": 0.006, "eps_unit": "input", "steps": 10,
     "clean_acc": 0.91, "adv_acc": 0.12, "success_rate": 0.87,          # fractions in [0, 1]
     "max_delta_audio": 0.006, "max_delta_visual": 0.0235,               # largest |x_adv - x| used
     "snr_db_audio": 31.2, "psnr_db_visual": 40.1,                       # may be inf (no perturbation)
     "n_samples": 104, "seconds": 12.3,
     "model": "concat", "run": "music_av", "fusion": "concat"}          # optional

Accuracies and success rates are *fractions*; tables print them in percent. A value outside [0, 1]
raises instead of being guessed at (a row already in percent would otherwise print as 9135 %).

Every file is written atomically (a temporary file in the same folder, then ``os.replace``) and nothing
else in the output folder is touched. Plots use matplotlib's Agg canvas directly (no pyplot, no global
backend switch). The HTML page of adversarial examples lives in :mod:`utils.html_page` and is re-exported
here as :func:`write_examples_page`.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

logger = logging.getLogger(__name__)

Row = Mapping[str, Any]
PathLike = Union[str, os.PathLike]

MISSING = "—"  # shown for None / NaN / absent values
RESULT_SUFFIXES = ("json", "csv", "md")


# --------------------------------------------------------------------------------------------------
# atomic file output
# --------------------------------------------------------------------------------------------------
def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, fsync, then ``os.replace``.

    The parent folder is created if needed. Nothing but ``path`` (and the temp file, removed on
    failure) is ever touched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------------------------------
# value conversion and formatting
# --------------------------------------------------------------------------------------------------
def _plain(value: Any, key: str) -> Any:
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


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fraction(value: Any, key: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{key}={value!r} is not a fraction in [0, 1]; report.py expects accuracies and rates as "
            "fractions (it prints them in percent)"
        )
    return value


def fmt_percent(value: Any, key: str = "value") -> str:
    """A fraction in [0, 1] as a percentage with 2 decimals (``0.9135 -> '91.35'``)."""
    if _is_missing(value):
        return MISSING
    return f"{100.0 * _fraction(value, key):.2f}"


def fmt_db(value: Any, key: str = "value") -> str:
    """Decibels with 1 decimal; +-inf (e.g. SNR of a zero perturbation) as '∞' / '-∞'."""
    if _is_missing(value):
        return MISSING
    value = float(value)
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.1f}"


def fmt_eps(value: Any, key: str = "value") -> str:
    """A budget in the shortest exact-looking form (``0.006``, ``0.012``, ``0``)."""
    if _is_missing(value):
        return MISSING
    return f"{float(value):g}"


def fmt_int(value: Any, key: str = "value") -> str:
    """An integer count."""
    if _is_missing(value):
        return MISSING
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{key}={value!r} should be an integer")
    return str(int(value))


def fmt_seconds(value: Any, key: str = "value") -> str:
    """Seconds with 1 decimal."""
    if _is_missing(value):
        return MISSING
    return f"{float(value):.1f}"


def fmt_generic(value: Any, key: str = "value") -> str:
    """Anything else: floats with 4 significant digits, strings as they are."""
    if _is_missing(value):
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.4g}"
    return str(value)


# Known columns: name -> (markdown header, formatter). Unknown columns use ``fmt_generic``.
COLUMNS: Dict[str, Tuple[str, Callable[[Any, str], str]]] = {
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
}


def _md_cell(text: str) -> str:
    """Make a string safe inside a markdown table cell (pipes escaped, no line breaks)."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def format_value(column: str, value: Any) -> str:
    """Format one row value for a table according to its column (see ``COLUMNS``)."""
    default = fmt_percent if (column.endswith("_acc") or column.startswith("acc[")) else fmt_generic
    formatter = COLUMNS.get(column, (column, default))[1]
    return formatter(_plain(value, column), column)


def _columns_of(rows: Sequence[Row]) -> List[str]:
    """Known columns present in any row (in ``COLUMNS`` order), then other keys by first appearance."""
    present: List[str] = []
    for row in rows:
        for key in row:
            if key not in present:
                present.append(key)
    known = [c for c in COLUMNS if c in present]
    return known + [c for c in present if c not in COLUMNS]


def _render_md(header: Sequence[str], body: Sequence[Sequence[str]], align_right: Sequence[bool]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---:" if r else ":---" for r in align_right) + "|")
    for cells in body:
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_table(rows: Sequence[Row], columns: Optional[Sequence[str]] = None) -> str:
    """A GitHub-markdown table of result rows.

    Args:
        rows: result rows (see the module docstring); may carry extra keys.
        columns: keys to show, in order; default: the known columns present in any row, then extra keys.
            A requested column that a row lacks shows as "—", as do None and NaN.

    Accuracies and success rates print in percent (2 decimals), dB values with 1 decimal, eps with
    ``%g``. Pipes in strings are escaped.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("markdown_table needs at least one row")
    cols = list(columns) if columns is not None else _columns_of(rows)
    if not cols:
        raise ValueError("markdown_table: no columns to show")
    header = [COLUMNS.get(c, (c, fmt_generic))[0] for c in cols]
    body = [[format_value(c, row.get(c)) for c in cols] for row in rows]
    numeric = [COLUMNS.get(c, (c, fmt_generic))[1] is not fmt_generic or c.startswith("max_delta") for c in cols]
    return _render_md(header, body, numeric)


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


def _clean_rows(rows: Iterable[Row]) -> List[Dict[str, Any]]:
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"result row {i} is a {type(row).__name__}, expected a dict")
        out.append({str(k): _plain(v, str(k)) for k, v in row.items()})
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
    clean = _clean_rows(rows)
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


def pivot_table(rows_by_model: Mapping[str, Sequence[Row]], attack: str) -> str:
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
            if not _is_missing(row.get("clean_acc")):
                cleans.append(_fraction(_plain(row["clean_acc"], "clean_acc"), "clean_acc"))
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

    header = ["model", "clean (%)"]
    eps_in_header: Dict[str, bool] = {}
    for col in PIVOT_COLUMNS[1:]:
        labels = {_eps_label(c[col], col) for c in cells.values() if col in c}
        eps_in_header[col] = len(labels) == 1
        header.append(f"{col}, {labels.pop()} (%)" if len(labels) == 1 else f"{col} (%)")
    body = []
    for model, per_col in cells.items():
        line = [str(model), fmt_percent(clean[model], "clean_acc")]
        for col in PIVOT_COLUMNS[1:]:
            if col not in per_col:
                line.append(MISSING)
                continue
            text = fmt_percent(_plain(per_col[col].get("adv_acc"), "adv_acc"), "adv_acc")
            line.append(text if eps_in_header[col] else f"{text} ({_eps_label(per_col[col], col)})")
        body.append(line)
    return _render_md(header, body, [False] + [True] * (len(header) - 1))


# --------------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------------
def _new_figure(size: Tuple[float, float] = (6.4, 4.4)) -> Tuple[Any, Any]:
    """A matplotlib Figure with an Agg canvas (no pyplot state, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save_figure(fig: Any, out_png: PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    path = atomic_write_bytes(out_png, buf.getvalue())
    logger.info("wrote plot %s", path)
    return path


_MODALITY_COLORS = {"audio": "tab:blue", "visual": "tab:orange", "both": "tab:green"}
_ATTACK_STYLES = ("-", "--", ":", "-.")
_ATTACK_MARKERS = ("o", "s", "^", "D", "v")


def sweep_curves(rows: Sequence[Row]) -> Dict[Tuple[str, str], List[Tuple[float, float]]]:
    """Group a sweep's rows into curves ``{(attack, modality label): [(eps, adv_acc), ...]}`` sorted by eps.

    The x value is the nonzero eps of the attacked modality. For "both" rows with eps_audio ==
    eps_visual the label is "both"; with another ratio r = eps_audio / eps_visual the label is
    "both (ε_audio = r·ε_visual)" and x is eps_visual. Rows with no eps (clean) are not curve points.
    Two rows at the same x of the same curve raise (mixed models or step counts in one sweep).
    """
    curves: Dict[Tuple[str, str], Dict[float, float]] = {}
    for row in rows:
        mod = attacked_modalities(row)
        if mod == "clean":
            continue
        ea, ev = float(row["eps_audio"]), float(row["eps_visual"])
        if mod == "audio":
            label, x = "audio", ea
        elif mod == "visual":
            label, x = "visual", ev
        else:
            ratio = ea / ev
            label = "both" if math.isclose(ratio, 1.0) else f"both (ε_audio = {ratio:g}·ε_visual)"
            x = ev
        key = (str(row.get("attack")), label)
        acc = _fraction(_plain(row["adv_acc"], "adv_acc"), "adv_acc")
        points = curves.setdefault(key, {})
        if x in points:
            raise ValueError(
                f"two rows for attack {key[0]!r}, {label}, eps={x:g}: one sweep per plot "
                "(split rows by model / steps first)"
            )
        points[x] = acc
    return {k: sorted(v.items()) for k, v in curves.items()}


def plot_accuracy_vs_eps(rows: Sequence[Row], out_png: PathLike, title: str) -> Path:
    """Accuracy (%) against eps: one line per attacked modality set and attack, from a sweep's rows.

    Each line starts at (0, clean accuracy); the clean accuracy is also drawn as a dashed grey line.
    Colour encodes the modality set (audio / visual / both), line style and marker the attack. The x
    label names the eps unit (``eps_unit`` of the rows; mixed units raise). Rows from several models
    raise: draw one plot per model.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("plot_accuracy_vs_eps needs at least one row")
    models = {str(r["model"]) for r in rows if r.get("model") is not None}
    if len(models) > 1:
        raise ValueError(f"rows from several models {sorted(models)}: draw one plot per model")
    units = {str(r.get("eps_unit")) for r in rows if r.get("eps_unit") is not None}
    if len(units) > 1:
        raise ValueError(f"rows mix eps units {sorted(units)}; they cannot share an x axis")
    unit = units.pop() if units else "unit not given"
    curves = sweep_curves(rows)
    if not curves:
        raise ValueError("no attacked rows (every row has eps_audio = eps_visual = 0)")
    cleans = [_fraction(_plain(r["clean_acc"], "clean_acc"), "clean_acc") for r in rows if not _is_missing(r.get("clean_acc"))]
    clean_acc: Optional[float] = None
    if cleans:
        clean_acc = float(np.mean(cleans))
        if max(cleans) - min(cleans) > 1e-9:
            logger.warning("rows disagree on clean_acc (%s); plotting their mean %.4f",
                           sorted(set(cleans)), clean_acc)

    fig, ax = _new_figure()
    attacks = sorted({a for a, _ in curves})
    for (attack, label), points in sorted(curves.items()):
        i = attacks.index(attack)
        xs = [p[0] for p in points]
        ys = [100.0 * p[1] for p in points]
        if clean_acc is not None:
            xs, ys = [0.0] + xs, [100.0 * clean_acc] + ys
        base = label.split(" ")[0]
        ax.plot(xs, ys, color=_MODALITY_COLORS[base], linestyle=_ATTACK_STYLES[i % len(_ATTACK_STYLES)],
                marker=_ATTACK_MARKERS[i % len(_ATTACK_MARKERS)], markersize=4, label=f"{attack}: {label}")
    if clean_acc is not None:
        ax.axhline(100.0 * clean_acc, color="grey", linestyle="--", linewidth=1,
                   label=f"clean ({100 * clean_acc:.2f} %)")
    ax.set_xlabel(f"ε ({unit})")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_xlim(left=0)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save_figure(fig, out_png)


def _as_1d(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite values")
    if arr.min() < -1 - 1e-5 or arr.max() > 1 + 1e-5:
        raise ValueError(f"{name} is not a cosine similarity: range [{arr.min():.4g}, {arr.max():.4g}]")
    return arr


def plot_cosine_hist(cos_clean: Any, cos_adv: Any, out_png: PathLike, title: str, bins: int = 40) -> Path:
    """Histogram of per-sample cosine similarity between audio and visual features, clean vs attacked.

    ``cos_clean`` / ``cos_adv`` are 1-D arrays or tensors with values in [-1, 1]. Bins span [-1, 1] so
    plots of different models are comparable; the legend gives each distribution's mean.
    """
    clean = _as_1d(cos_clean, "cos_clean")
    adv = _as_1d(cos_adv, "cos_adv")
    edges = np.linspace(-1.0, 1.0, bins + 1)
    fig, ax = _new_figure()
    for arr, label, color in ((clean, "clean", "tab:blue"), (adv, "attacked", "tab:red")):
        ax.hist(arr, bins=edges, alpha=0.5, color=color, label=f"{label} (n={arr.size}, mean {arr.mean():.3f})")
        ax.axvline(arr.mean(), color=color, linestyle="--", linewidth=1)
    ax.set_xlabel("cos(f_audio, f_visual)")
    ax.set_ylabel("samples")
    ax.set_xlim(-1, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save_figure(fig, out_png)


def safe_filename(name: str, max_len: int = 60) -> str:
    """A file-name-safe stem of ``name``: runs of characters outside ``[A-Za-z0-9-]`` (dots and slashes
    included, so no ``..`` or hidden files) become one ``_``; at most ``max_len`` characters; "item" if empty.
    """
    safe = re.sub(r"[^A-Za-z0-9-]+", "_", str(name)).strip("_")[:max_len].strip("_")
    return safe or "item"


def write_examples_page(examples: Sequence[Mapping[str, Any]], out_dir: PathLike, title: str) -> Path:
    """The HTML page of adversarial examples; see :func:`utils.html_page.write_examples_page`.

    Imported lazily because :mod:`utils.html_page` uses the file helpers of this module.
    """
    from utils.html_page import write_examples_page as _write

    return _write(examples, out_dir, title)

__all__ = [
    "write_results", "read_results", "markdown_table", "pivot_table", "attacked_modalities",
    "sweep_curves", "plot_accuracy_vs_eps", "plot_cosine_hist", "write_examples_page",
    "atomic_write_bytes", "atomic_write_text", "safe_filename", "format_value",
]
