"""Robustness surface: accuracy over a grid of (eps_audio x eps_visual), as a table and a heat map.

``surface_matrix(rows, eps_audio, eps_visual, reads)`` arranges the result rows of one model and one attack
into a matrix (rows: eps_audio, columns: eps_visual). A unimodal model does not read the other modality,
so its accuracy cannot depend on that budget: its evaluation covers only its own axis and the matrix
repeats those values along the other one (``reads`` names the modalities the model reads). A grid point
with no row is NaN (shown as "—"), never guessed.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from reporting.stats import wilson_interval
from reporting.tables import Column, Table
from utils.fileio import atomic_write_bytes

Row = Mapping[str, Any]
PathLike = Union[str, os.PathLike]


def surface_matrix(rows: Sequence[Row], eps_audio: Sequence[float], eps_visual: Sequence[float],
                   reads: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """(accuracy, n) matrices of shape (len(eps_audio), len(eps_visual)); accuracy NaN where no row."""
    acc = np.full((len(eps_audio), len(eps_visual)), np.nan)
    n = np.zeros_like(acc, dtype=np.int64)
    found: Dict[Tuple[float, float], Row] = {}
    for r in rows:
        ea = float(r["eps_audio"]) if "audio" in reads else 0.0
        ev = float(r["eps_visual"]) if "visual" in reads else 0.0
        found[(round(ea, 9), round(ev, 9))] = r
    for i, ea in enumerate(eps_audio):
        for j, ev in enumerate(eps_visual):
            key = (round(float(ea) if "audio" in reads else 0.0, 9), round(float(ev) if "visual" in reads else 0.0, 9))
            r = found.get(key)
            if r is not None:
                acc[i, j] = float(r["adv_acc"])
                n[i, j] = int(r["n_samples"])
    return acc, n


def _ci_cell(acc: np.ndarray, n: np.ndarray, i: int, j: int) -> Optional[str]:
    """One run's cell: 'acc% [95% CI]' (None where the point was not evaluated)."""
    if math.isnan(acc[i, j]):
        return None
    k, m = int(round(acc[i, j] * n[i, j])), int(n[i, j])
    lo, hi = wilson_interval(k, m)
    return f"{100 * acc[i, j]:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def surface_table(acc: np.ndarray, n: np.ndarray, eps_audio: Sequence[float], eps_visual: Sequence[float],
                  cell: Optional[Callable[[int, int], Optional[str]]] = None) -> Table:
    """The surface as a table: one row per eps_audio, one column per eps_visual; ``cell(i, j)`` gives a cell's
    text (default: one run's 'acc% [95% CI]' from ``acc`` and ``n``)."""
    cell = cell or (lambda i, j: _ci_cell(acc, n, i, j))
    cols = [Column("eps_audio", "eps audio (rows) / eps visual (columns)")]
    cols += [Column(f"v{j}", f"visual {ev:g}", numeric=True) for j, ev in enumerate(eps_visual)]
    body: List[Dict[str, Any]] = [{"eps_audio": f"audio {ea:g}", **{f"v{j}": cell(i, j) for j in range(len(eps_visual))}}
                                  for i, ea in enumerate(eps_audio)]
    return Table(cols, body)


def plot_surface(acc: np.ndarray, eps_audio: Sequence[float], eps_visual: Sequence[float], out_png: PathLike,
                 title: str) -> Path:
    """A heat map of the accuracy matrix (percent in each cell; colour scale fixed to 0-100%)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import io

    fig = Figure(figsize=(5.2, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(100 * acc, origin="lower", cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(eps_visual)), [f"{e:g}" for e in eps_visual])
    ax.set_yticks(range(len(eps_audio)), [f"{e:g}" for e in eps_audio])
    ax.set_xlabel("eps visual (L-inf, pixels in [0,1])")
    ax.set_ylabel("eps audio (L-inf, waveform in [-1,1])")
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            text = "—" if math.isnan(acc[i, j]) else f"{100 * acc[i, j]:.0f}"
            ax.text(j, i, text, ha="center", va="center", color="white" if (math.isnan(acc[i, j]) or acc[i, j] < 0.6) else "black")
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    ax.set_title(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return atomic_write_bytes(Path(out_png), buf.getvalue())


__all__ = ["surface_matrix", "surface_table", "plot_surface"]
