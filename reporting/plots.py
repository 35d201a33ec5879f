"""Plots of results: accuracy against eps for a sweep, and the audio-visual cosine-similarity histogram.

Titles are plain text (``parse_math=False``: a run id with ``$`` is not mathtext). Plots use matplotlib's Agg
canvas directly (no pyplot, no global backend switch); matplotlib is imported when a plot is drawn. The PNG
is rendered into memory and written atomically with :mod:`utils.fileio`.
"""
from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from reporting.results import attacked_modalities
from reporting.tables import as_fraction, is_missing, plain_scalar
from utils.fileio import atomic_write_bytes

logger = logging.getLogger(__name__)

Row = Mapping[str, Any]
PathLike = Union[str, os.PathLike]


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
        acc = as_fraction(plain_scalar(row["adv_acc"], "adv_acc"), "adv_acc")
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
    cleans = [as_fraction(plain_scalar(r["clean_acc"], "clean_acc"), "clean_acc") for r in rows if not is_missing(r.get("clean_acc"))]
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
    ax.set_title(title, parse_math=False)  # user text (run ids, labels): never mathtext
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
    ax.set_title(title, parse_math=False)  # user text (run ids, labels): never mathtext
    ax.legend(fontsize=8)
    return _save_figure(fig, out_png)


__all__ = ["sweep_curves", "plot_accuracy_vs_eps", "plot_cosine_hist"]
