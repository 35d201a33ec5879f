"""Certified accuracy from main_certify.py's per-clip certificates: the curve (accuracy vs radius per modality),
the table at the report's radii, and the plot with its sample counts and confidence level.

Certified accuracy at radius r (Cohen et al., ICML 2019, Section 4): the fraction of clips whose smoothed
prediction is certified, equals the label, and whose certified radius reaches r. Smoothing's certificate is an open
ball (``||d|| < R``), so r > 0 counts when ``R > r``; at r = 0 every certified correct clip counts. MMCert's counts
are integers that hold as stated (r modified elements), so ``count >= r``.

A curve is keyed ``(setting, modality)``: the setting says what was randomised (audio, visual or both), the modality
which radius is read (its own, holding the other input fixed); ``joint`` is the setting's joint certificate
(smoothing: R in the sigma-normalised space; MMCert: r elements of every modality at once).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

from reporting.plots import _new_figure, _save_figure
from reporting.tables import Column, Table, fmt_int, fmt_percent
from utils.errors import MalformedFileError
from utils.rundir import eval_file

log = logging.getLogger(__name__)

Curve = List[Tuple[float, float]]


RECORD_KEYS = ("method", "params", "report_radii", "settings")  # what main_certify.py's certify.json holds


def read_certify(eval_dir: Union[str, Path]) -> Dict[str, Any]:
    """The certify record (certify.json) of a main_certify.py evaluation folder; a missing file or one without the
    record's keys raises MalformedFileError naming the file."""
    path = eval_file(eval_dir, "certify")
    if not path.is_file():
        raise MalformedFileError(path, "missing: not an evaluation folder of main_certify.py")
    try:
        record = json.loads(path.read_text())
    except ValueError as e:
        raise MalformedFileError(path, f"not JSON: {e}") from None
    missing = [k for k in RECORD_KEYS if not isinstance(record, dict) or k not in record]
    if missing:
        raise MalformedFileError(path, f"not a certify record: no {', '.join(missing)}")
    return record


def _reaches(radius: float, r: float, method: str) -> bool:
    if method == "smoothing":
        return r == 0 or radius > r  # an open ball: ||d|| < R
    return radius >= r


def _radius_of(clip: Mapping[str, Any], modality: str) -> float:
    return float(clip["radius"] if modality == "joint" else clip["radii"].get(modality, 0.0))


def certified_accuracy(clips: Sequence[Mapping[str, Any]], modality: str, radii: Sequence[float],
                       method: str) -> List[float]:
    """Certified accuracy of ``clips`` (each: ``label``, ``prediction`` (-1 abstains), ``radius``, ``radii``) at
    each of ``radii`` for ``modality`` (``audio``, ``visual`` or ``joint``)."""
    if not clips:
        return [float("nan")] * len(radii)
    out = []
    for r in radii:
        ok = sum(1 for c in clips if c["prediction"] == c["label"] and c["prediction"] >= 0
                 and _reaches(_radius_of(c, modality), r, method))
        out.append(ok / len(clips))
    return out


def curve_keys(record: Mapping[str, Any]) -> List[Tuple[str, str]]:
    """The (setting, modality) curves of a certify record: each randomised modality, and the joint one of a
    setting that randomises both."""
    keys = []
    for setting, block in record["settings"].items():
        keys += [(setting, m) for m in block["modalities"]]
        if len(block["modalities"]) > 1:
            keys.append((setting, "joint"))
    return keys


def curves(record: Mapping[str, Any]) -> Dict[Tuple[str, str], Curve]:
    """Each curve's (radius, certified accuracy) at every radius where it changes (and 0), for plotting."""
    out: Dict[Tuple[str, str], Curve] = {}
    method = record["method"]
    for setting, modality in curve_keys(record):
        clips = record["settings"][setting]["clips"]
        rs = sorted({0.0, *(_radius_of(c, modality) for c in clips if c["prediction"] >= 0)})
        acc = certified_accuracy(clips, modality, rs, method)
        out[(setting, modality)] = list(zip(rs, acc))
    return out


def table_radii(record: Mapping[str, Any]) -> List[float]:
    """The radii of the table: the report's (--cert_radii) for smoothing; 0 .. the largest count for MMCert."""
    if record["method"] == "smoothing":
        return [float(r) for r in record["report_radii"]]
    top = max([0.0] + [max([c["radius"], *c["radii"].values()]) for b in record["settings"].values()
                       for c in b["clips"]])
    return [float(r) for r in range(int(top) + 1)]


def certified_table(record: Mapping[str, Any]) -> Tuple[Table, List[Dict[str, Any]]]:
    """The table of certified accuracy at ``table_radii`` per (setting, modality), and its rows (for CSV and the
    study's defence table: keys ``setting``, ``modality``, ``n``, ``clean`` (smoothed accuracy), ``r=<radius>``)."""
    radii = table_radii(record)
    unit = "L2" if record["method"] == "smoothing" else "modified"
    rows = []
    for setting, modality in curve_keys(record):
        clips = record["settings"][setting]["clips"]
        acc = certified_accuracy(clips, modality, radii, record["method"])
        row: Dict[str, Any] = {"setting": setting, "modality": modality, "n": len(clips)}
        row.update({f"r={r:g}": a for r, a in zip(radii, acc)})
        rows.append(row)
    cols = [Column("setting", "randomised"), Column("modality", "radius of"), Column("n", "clips", fmt_int, True)]
    cols += [Column(f"r={r:g}", f"{unit} {r:g}", fmt_percent, True) for r in radii]
    return Table(cols, rows), rows


def caption(record: Mapping[str, Any]) -> str:
    """What the numbers rest on: method, noise or sub-sampling sizes, draws, confidence, clips."""
    p = record["params"]
    n_clips = max((len(b["clips"]) for b in record["settings"].values()), default=0)
    if record["method"] == "smoothing":
        how = f"Gaussian smoothing, sigma_audio {p['sigma_audio']:g}, sigma_visual {p['sigma_visual']:g}"
        unit = "L2 radius in input units (audio waveform, visual pixels in [0, 1]); joint: sigma-normalised"
    else:
        how = (f"MMCert sub-sampling, {p['keep_frames']} of {p['num_frames']} frames, {p['keep_segments']} of "
               f"{p['audio_segments']} audio segments")
        unit = "modified frames / audio segments; joint: as many in each"
    return (f"Certified accuracy vs radius ({unit}). {how}; n0 = {p['n0']}, n = {p['n']} draws per clip, each "
            f"certificate at confidence {1 - p['alpha']:.4g} (alpha {p['alpha']:g}); {n_clips} clips.")


_STYLES = {"audio": "-", "visual": "--", "joint": ":"}
_COLORS = {"audio": "tab:blue", "visual": "tab:orange", "both": "tab:green"}


def plot_certified_accuracy(record: Mapping[str, Any], out_png: Union[str, Path], title: str) -> Path:
    """Certified accuracy vs radius, one step curve per (setting, modality), the caption under the axes."""
    fig, ax = _new_figure((7.0, 4.8))
    for (setting, modality), pts in curves(record).items():
        xs, ys = [x for x, _ in pts], [100 * y for _, y in pts]
        ax.step(xs, ys, where="post", linestyle=_STYLES.get(modality, "-"), color=_COLORS.get(setting),
                label=f"randomised {setting}: radius of {modality}")
    ax.set_xlabel("radius" if record["method"] == "smoothing" else "modified elements")
    ax.set_ylabel("certified accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, parse_math=False)  # user text (run ids): never mathtext
    ax.legend(fontsize=8)
    fig.text(0.01, -0.08, caption(record), fontsize=7, wrap=True, ha="left", va="top", parse_math=False)
    return _save_figure(fig, out_png)

