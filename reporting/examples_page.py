"""The HTML examples page: a self-contained page to see and hear adversarial examples.

``write_examples_page(examples, out_dir, title)`` writes ``out_dir/index.html`` and ``out_dir/assets/``
(PNG frames, difference images, heat-map overlays and 16-bit PCM WAV files); the folder can be copied
or zipped and opened offline: the page loads nothing from the network.

Each example is a dict with these keys (a pair is optional as a whole, but at least one of the
frame and audio pairs must be given):

==================  ==================================================================================
``id``              str, shown as the example's heading and used (sanitised) in asset file names;
                    default ``"example <i>"``.
``label``           the true class (str or int; shown with ``str``).            required
``pred_clean``      the model's prediction on the clean input.                  required
``pred_adv``        the model's prediction on the adversarial input.            required
``frame_clean``     the clean frame: uint8 array (H, W, 3), or float array/tensor (3, H, W) in [0, 1].
``frame_adv``       the adversarial frame, same form and shape as ``frame_clean``.
``audio_clean``     clean waveform: float array/tensor (L,) or (1, L) in [-1, 1].
``audio_adv``       adversarial waveform, same length.
``sample_rate``     int, Hz; required with the audio pair.
``loc_clean``       optional (h, w) float localization map on the clean input (e.g. ``model.localize``);
``loc_adv``         optional map on the adversarial input; both need the frame pair. The two maps share
                    one min-max scale, are upsampled bilinearly to the frame size and overlaid as a
                    heat map (jet, alpha 0.5).
``metrics``         optional ``{name: value}`` shown in the example's table (e.g. the clip-level SNR).
``frame_index``     optional int: which of the clip's ``num_frames`` frames the frame pair is (captions say
                    "frame t of T"; frames are numbered from 0).
``segments``        optional ``{modality: [t, ...]}``: the time segments the attack perturbed (sparse_time:
                    frame t; the audio's t-th of T parts), with ``num_segments`` (T); shown as a row naming
                    them and a strip of the T segments with the perturbed ones marked.
``shift_s``         optional float: the shift applied to the audio against the frames (desync), in seconds,
                    positive when the audio comes early; the audio pair is then the unshifted and the shifted
                    (and perturbed) waveform, to listen to.
==================  ==================================================================================

For every example the page shows the true and predicted classes (red when wrong), the audio SNR
``10 log10(sum x^2 / sum delta^2)`` and the frame PSNR ``10 log10(1 / mse)`` (pixels in [0, 1]) computed
from the arrays shown with :func:`attacks.metrics.snr_db` / :func:`attacks.metrics.psnr_db` (the same
functions as the evaluation's result rows), the clean and adversarial frames, ``|delta|`` magnified so that its max maps to
255 (the factor is printed and stored in the image's ``data-scale`` attribute), and ``<audio controls>``
players. Every string from the data is HTML-escaped; file names are sanitised and numbered.
"""
from __future__ import annotations

import html
import io
import logging
import math
import os
import re
import wave
from pathlib import Path
from typing import Any, List, Mapping, Sequence, Tuple, Union
from urllib.parse import quote

import numpy as np
import torch
from PIL import Image

from attacks.metrics import linf, psnr_db, snr_db
from reporting.tables import Column, Table, fmt_db
from utils.fileio import atomic_write_bytes, atomic_write_text

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

ASSETS = "assets"
HEATMAP_ALPHA = 0.5  # weight of the heat map in the overlay
PCM_MAX = 32767  # int16 full scale used for the WAV files
_RANGE_TOL = 1e-6  # float inputs may overshoot [0, 1] / [-1, 1] by rounding only


def safe_filename(name: str, max_len: int = 60) -> str:
    """A file-name-safe stem of ``name``: runs of characters outside ``[A-Za-z0-9-]`` (dots and slashes
    included, so no ``..`` or hidden files) become one ``_``; at most ``max_len`` characters; "item" if empty.
    """
    safe = re.sub(r"[^A-Za-z0-9-]+", "_", str(name)).strip("_")[:max_len].strip("_")
    return safe or "item"


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _numpy(x: Any, what: str) -> np.ndarray:
    """An array from a numpy array, list or torch tensor (without importing torch)."""
    if x is None:
        raise ValueError(f"{what} is missing")
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def frame_to_float_hwc(x: Any, what: str = "frame") -> np.ndarray:
    """Accept a uint8 (H, W, 3) frame or a float (3, H, W) frame in [0, 1]; return float64 (H, W, 3) in [0, 1]."""
    arr = _numpy(x, what)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:
        return arr.astype(np.float64) / 255.0
    if np.issubdtype(arr.dtype, np.floating) and arr.ndim == 3 and arr.shape[0] == 3:
        out = arr.astype(np.float64).transpose(1, 2, 0)
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{what} has non-finite values")
        if out.min() < -_RANGE_TOL or out.max() > 1 + _RANGE_TOL:
            raise ValueError(f"{what} is outside [0, 1]: range [{out.min():.4g}, {out.max():.4g}]")
        return np.clip(out, 0.0, 1.0)
    raise ValueError(
        f"{what}: expected a uint8 array (H, W, 3) or a float array/tensor (3, H, W) in [0, 1], "
        f"got dtype {arr.dtype} shape {arr.shape}"
    )


def audio_to_1d(x: Any, what: str = "audio") -> np.ndarray:
    """Accept a float waveform (L,) or (1, L) in [-1, 1]; return float64 (L,)."""
    arr = _numpy(x, what)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{what}: expected a float waveform in [-1, 1], got dtype {arr.dtype}")
    while arr.ndim > 1 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what}: expected shape (L,) or (1, L), got {_numpy(x, what).shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} has non-finite values")
    if np.abs(arr).max() > 1 + _RANGE_TOL:
        raise ValueError(f"{what} is outside [-1, 1]: max |x| = {np.abs(arr).max():.4g}")
    return np.clip(arr, -1.0, 1.0)


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """Mono 16-bit PCM WAV (stdlib ``wave``) of a waveform in [-1, 1]; samples are round(x * 32767)."""
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    pcm = np.round(np.clip(audio, -1.0, 1.0) * PCM_MAX).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def png_bytes(image_hwc: np.ndarray) -> bytes:
    """PNG of a float (H, W, 3) image in [0, 1] (rounded to 8 bits) or a uint8 image."""
    if image_hwc.dtype != np.uint8:
        image_hwc = np.round(np.clip(image_hwc, 0.0, 1.0) * 255.0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image_hwc, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def difference_image(clean: np.ndarray, adv: np.ndarray) -> Tuple[np.ndarray, float, float]:
    """|adv - clean| scaled so its max maps to 255.

    Returns ``(uint8 image, scale, max_abs)`` where ``image = round(|delta| * scale * 255)`` and
    ``scale = 1 / max|delta|`` (delta in [0, 1] pixel units), i.e. the difference is magnified
    ``scale`` times. For identical frames the image is black and ``scale`` is NaN.
    """
    delta = np.abs(adv - clean)
    max_abs = float(delta.max())
    if max_abs == 0.0:
        return np.zeros(delta.shape, dtype=np.uint8), float("nan"), 0.0
    scale = 1.0 / max_abs
    return np.round(delta * scale * 255.0).astype(np.uint8), scale, max_abs


def _one_sample(x: np.ndarray) -> torch.Tensor:
    """A float64 array as a batch of one sample for :mod:`attacks.metrics`."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))[None]


def clip_snr_db(clean: np.ndarray, adv: np.ndarray) -> float:
    """Audio SNR of one clip, :func:`attacks.metrics.snr_db` (inf for a zero perturbation)."""
    return float(snr_db(_one_sample(clean), _one_sample(adv))[0])


def frame_psnr_db(clean: np.ndarray, adv: np.ndarray) -> float:
    """PSNR of one frame in [0, 1], :func:`attacks.metrics.psnr_db` (inf for identical frames)."""
    return float(psnr_db(_one_sample(clean), _one_sample(adv))[0])


def clip_max_delta(clean: np.ndarray, adv: np.ndarray) -> float:
    """Largest |adv - clean| of one clip, :func:`attacks.metrics.linf`."""
    return float(linf(_one_sample(clean), _one_sample(adv))[0])


def clip_l2_delta(clean: np.ndarray, adv: np.ndarray) -> float:
    """||adv - clean||_2 of one clip or frame."""
    return float(np.linalg.norm((np.asarray(adv, dtype=np.float64) - np.asarray(clean, dtype=np.float64)).ravel()))


def heatmap_overlay(frame: np.ndarray, loc: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Overlay ``loc`` (h, w), min-max scaled with ``lo``/``hi`` and upsampled to the frame, as a jet heat map."""
    from matplotlib import colormaps

    height, width = frame.shape[:2]
    norm = (loc - lo) / (hi - lo) if hi > lo else np.zeros_like(loc)
    up = Image.fromarray(norm.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR)
    heat = colormaps["jet"](np.clip(np.asarray(up, dtype=np.float64), 0.0, 1.0))[..., :3]
    return (1.0 - HEATMAP_ALPHA) * frame + HEATMAP_ALPHA * heat


def _loc_map(x: Any, what: str) -> np.ndarray:
    arr = _numpy(x, what).astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected an (h, w) map, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} has non-finite values")
    return arr


def _figure(src: str, caption: str, extra_attrs: str = "") -> str:
    return (f'<figure><img src="{_esc(src)}" alt="{_esc(caption)}"{extra_attrs}>'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _asset_src(name: str) -> str:
    return f"{ASSETS}/{quote(name)}"


def _fmt_metric(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return fmt_db(float(value)) if math.isinf(value) or math.isnan(value) else f"{float(value):.4g}"
    return str(value)


def _require_pair(ex: Mapping[str, Any], a: str, b: str, i: int) -> bool:
    has_a, has_b = ex.get(a) is not None, ex.get(b) is not None
    if has_a != has_b:
        raise ValueError(f"example {i}: {a!r} and {b!r} must be given together")
    return has_a


SEGMENT_WORDS = {"visual": "perturbed frames", "audio": "perturbed audio segments"}


def _frame_words(i: int, ex: Mapping[str, Any]) -> str:
    """' (frame t of T)' for a frame pair taken from a multi-frame clip, else ''."""
    if ex.get("frame_index") is None:
        return ""
    t, n = ex["frame_index"], ex.get("num_frames")
    if not isinstance(t, (int, np.integer)) or not isinstance(n, (int, np.integer)) or not 0 <= t < n:
        raise ValueError(f"example {i}: frame_index {t!r} needs num_frames (an int above it), got {n!r}")
    return f" (frame {int(t)} of {int(n)})"


def _segments(i: int, ex: Mapping[str, Any]) -> Tuple[int, dict]:
    """The checked ``num_segments`` and ``segments`` of an example ((0, {}) without them)."""
    segs = ex.get("segments")
    if not segs:
        return 0, {}
    n = ex.get("num_segments")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"example {i}: 'segments' needs 'num_segments' (T >= 1), got {n!r}")
    out = {}
    for m, ts in dict(segs).items():
        ts = [int(t) for t in ts]
        if any(not 0 <= t < n for t in ts):
            raise ValueError(f"example {i}: {m} segments {ts} outside 0..{n - 1}")
        out[str(m)] = sorted(ts)
    return int(n), out


def _time_rows(i: int, ex: Mapping[str, Any]) -> List[Tuple[str, str, str]]:
    """The table rows of the temporal and misalignment attacks: perturbed segments, audio shift."""
    rows: List[Tuple[str, str, str]] = []
    n, segs = _segments(i, ex)
    for m, ts in segs.items():
        rows.append((SEGMENT_WORDS.get(m, f"perturbed {m} segments"),
                     f"{', '.join(map(str, ts)) or 'none'} of {n} (numbered from 0)", ""))
    if ex.get("shift_s") is not None:
        s = float(ex["shift_s"])
        if not math.isfinite(s):
            raise ValueError(f"example {i}: shift_s is {s}")
        side = ("audio ahead of the frames" if s > 0 else "audio behind the frames" if s < 0 else "not shifted")
        rows.append(("audio shift", f"{s:+.3f} s ({side})", ""))
    return rows


def _timelines(i: int, ex: Mapping[str, Any]) -> str:
    """A strip of the clip's T segments per modality, the perturbed ones marked (class ``seg hit``)."""
    n, segs = _segments(i, ex)
    strips = []
    for m, ts in segs.items():
        cells = "".join(f'<span class="seg{" hit" if t in ts else ""}" title="{_esc(m)} segment {t}">{t}</span>'
                        for t in range(n))
        strips.append(f'<div class="timeline" data-modality="{_esc(m)}"><span class="what">'
                      f'{_esc(SEGMENT_WORDS.get(m, m))}</span>{cells}</div>')
    return "".join(strips)


# The per-example key/value table: names as row headers, values (preformatted text) as cells; a row's
# class ("ok" / "wrong") colours a prediction.
_META_COLUMNS = (Column("name", "name"), Column("value", "value"))


def _render_example(i: int, ex: Mapping[str, Any], asset_dir: Path) -> str:
    """Write one example's assets and return its HTML section."""
    for key in ("label", "pred_clean", "pred_adv"):
        if key not in ex:
            raise KeyError(f"example {i} lacks {key!r} (has {sorted(ex)})")
    ex_id = str(ex.get("id", f"example {i}"))
    stem = f"{i:03d}_{safe_filename(ex_id)}"
    has_frame = _require_pair(ex, "frame_clean", "frame_adv", i)
    has_audio = _require_pair(ex, "audio_clean", "audio_adv", i)
    has_loc = _require_pair(ex, "loc_clean", "loc_adv", i)
    if not (has_frame or has_audio):
        raise ValueError(f"example {i} ({ex_id!r}) has neither a frame pair nor an audio pair")
    if has_loc and not has_frame:
        raise ValueError(f"example {i}: localization maps need the frame pair to be drawn on")

    rows: List[Tuple[str, str, str]] = [("true class", str(ex["label"]), "")]
    for key, name in (("pred_clean", "prediction (clean)"), ("pred_adv", "prediction (adversarial)")):
        ok = str(ex[key]) == str(ex["label"])
        rows.append((name, str(ex[key]), "ok" if ok else "wrong"))
    figures: List[str] = []
    players: List[str] = []
    scale_attr = ""

    if has_frame:
        clean = frame_to_float_hwc(ex["frame_clean"], f"example {i} frame_clean")
        adv = frame_to_float_hwc(ex["frame_adv"], f"example {i} frame_adv")
        if clean.shape != adv.shape:
            raise ValueError(f"example {i}: frame shapes differ: {clean.shape} vs {adv.shape}")
        diff, scale, max_abs = difference_image(clean, adv)
        names = {k: f"{stem}_{k}.png" for k in ("frame_clean", "frame_adv", "diff")}
        atomic_write_bytes(asset_dir / names["frame_clean"], png_bytes(clean))
        atomic_write_bytes(asset_dir / names["frame_adv"], png_bytes(adv))
        atomic_write_bytes(asset_dir / names["diff"], png_bytes(diff))
        rows.append(("frame PSNR (dB)", fmt_db(frame_psnr_db(clean, adv)), ""))
        if max_abs > 0:
            diff_caption = f"|δ| × {scale:.1f} (max |δ| = {255 * max_abs:.2f}/255)"
        else:
            diff_caption = "|δ| = 0 (frames identical)"
        rows.append(("frame max |δ|", f"{255 * max_abs:.2f}/255", ""))
        rows.append(("frame ||δ||₂", f"{clip_l2_delta(clean, adv):.4g}", f"threat model: {ex['norm_visual']}"
                     if ex.get("norm_visual") else ""))
        scale_attr = f' data-scale="{scale!r}" data-max-abs="{max_abs!r}"'
        which = _frame_words(i, ex)
        figures += [_figure(_asset_src(names["frame_clean"]), f"clean frame{which}"),
                    _figure(_asset_src(names["frame_adv"]), f"adversarial frame{which}"),
                    _figure(_asset_src(names["diff"]), diff_caption, f' class="diff"{scale_attr}')]
        if has_loc:
            maps = {k: _loc_map(ex[k], f"example {i} {k}") for k in ("loc_clean", "loc_adv")}
            lo = min(float(m.min()) for m in maps.values())
            hi = max(float(m.max()) for m in maps.values())
            for key, base, caption in (("loc_clean", clean, "localization (clean)"),
                                       ("loc_adv", adv, "localization (adversarial)")):
                name = f"{stem}_{key}.png"
                atomic_write_bytes(asset_dir / name, png_bytes(heatmap_overlay(base, maps[key], lo, hi)))
                figures.append(_figure(_asset_src(name), caption))

    if has_audio:
        if "sample_rate" not in ex:
            raise KeyError(f"example {i} has audio but no 'sample_rate'")
        a_clean = audio_to_1d(ex["audio_clean"], f"example {i} audio_clean")
        a_adv = audio_to_1d(ex["audio_adv"], f"example {i} audio_adv")
        if a_clean.shape != a_adv.shape:
            raise ValueError(f"example {i}: audio lengths differ: {a_clean.size} vs {a_adv.size}")
        rows.append(("audio SNR (dB)", fmt_db(clip_snr_db(a_clean, a_adv)), ""))
        rows.append(("audio max |δ|", f"{clip_max_delta(a_clean, a_adv):.4g}", ""))
        rows.append(("audio ||δ||₂", f"{clip_l2_delta(a_clean, a_adv):.4g}", f"threat model: {ex['norm_audio']}"
                     if ex.get("norm_audio") else ""))
        for key, audio, caption in (("audio_clean", a_clean, "clean audio"),
                                    ("audio_adv", a_adv, "adversarial audio")):
            name = f"{stem}_{key}.wav"
            atomic_write_bytes(asset_dir / name, wav_bytes(audio, ex["sample_rate"]))
            players.append(f'<div class="player"><span>{_esc(caption)}</span>'
                           f'<audio controls preload="metadata" src="{_esc(_asset_src(name))}"></audio></div>')

    rows += _time_rows(i, ex)
    for key, value in dict(ex.get("metrics") or {}).items():
        rows.append((str(key), _fmt_metric(value), ""))

    table = Table(_META_COLUMNS, [{"name": k, "value": v} for k, v, _ in rows], row_classes=[c for _, _, c in rows])
    return (f'<section class="example" id="ex-{i:03d}"><h2>#{i} {_esc(ex_id)}</h2>'
            + table.to_html(css_class="meta", header=False, row_headers=True, sep="")
            + _timelines(i, ex)
            + f'<div class="figures">{"".join(figures)}</div>'
            f'<div class="audio">{"".join(players)}</div></section>')


_CSS = """
body { font-family: sans-serif; margin: 16px; background: #fafafa; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 16px; margin: 0 0 6px 0; }
p.note { font-size: 13px; color: #555; max-width: 1000px; }
section.example { background: #fff; border: 1px solid #ccc; border-radius: 6px; padding: 10px;
                  margin-bottom: 14px; }
table.meta { border-collapse: collapse; font-size: 13px; margin-bottom: 8px; }
table.meta th { text-align: left; padding: 2px 10px 2px 0; font-weight: normal; color: #555; }
table.meta td { padding: 2px 6px; font-family: monospace; }
tr.ok td { color: #11772d; font-weight: bold; } tr.wrong td { color: #c0161c; font-weight: bold; }
div.figures { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; } figcaption { font-size: 12px; color: #444; max-width: 200px; }
figure img { width: 200px; height: auto; image-rendering: pixelated; border: 1px solid #ddd; }
div.audio { display: flex; flex-wrap: wrap; gap: 16px; margin-top: 8px; font-size: 12px; }
div.player { display: flex; flex-direction: column; }
div.timeline { display: flex; align-items: center; gap: 3px; margin: 4px 0; font-size: 12px; }
div.timeline span.what { color: #555; min-width: 170px; }
div.timeline span.seg { display: inline-block; width: 22px; text-align: center; border: 1px solid #bbb;
                        background: #eee; font-family: monospace; }
div.timeline span.seg.hit { background: #c0161c; color: #fff; border-color: #c0161c; font-weight: bold; }
"""


def write_examples_page(examples: Sequence[Mapping[str, Any]], out_dir: PathLike, title: str,
                        selection: str = "") -> Path:
    """Write ``out_dir/index.html`` and ``out_dir/assets/*`` for ``examples`` (keys: see the module docstring).
    ``selection``: how the examples were chosen, shown under the title.

    Assets are named ``<index>_<sanitised id>_<kind>.{png,wav}``; files are written atomically and
    nothing else in ``out_dir`` is deleted (a re-run overwrites its own asset names). Returns the path
    of ``index.html``.
    """
    examples = list(examples)
    if not examples:
        raise ValueError("write_examples_page needs at least one example")
    out_dir = Path(out_dir)
    asset_dir = out_dir / ASSETS
    asset_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for i, ex in enumerate(examples):
        if not isinstance(ex, Mapping):
            raise TypeError(f"example {i} is a {type(ex).__name__}, expected a dict")
        sections.append(_render_example(i, ex, asset_dir))
    note = ("Difference images show |adversarial − clean| per pixel and channel, magnified so that the "
            "largest difference maps to 255 (factor in each caption). PSNR uses pixels in [0, 1]; SNR is "
            "10·log10(Σx² / Σδ²) on the waveform. Localization maps of one example share one colour scale "
            "(jet: blue low, red high). Audio is 16-bit PCM.")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_esc(title)}</h1>"
            + (f"<p class=\"note selection\">{_esc(selection)}</p>" if selection else "")
            + f"<p class=\"note\">{_esc(note)}</p>"
            + "\n".join(sections) + "</body></html>\n")
    index = atomic_write_text(out_dir / "index.html", page)
    logger.info("wrote examples page %s (%d examples)", index, len(examples))
    return index
