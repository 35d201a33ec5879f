"""Square Attack (Andriushchenko et al., ECCV 2020): score-based black box, per-modality budgets.

Written from the paper (Algorithms 1-3, Sec. 3): random squares on frames, contiguous segments on the
waveform; no gradients are used.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

from attacks.base import ATTACKS, Attack
from utils.registry import Registry

logger = logging.getLogger(__name__)

# Sec. 3 and fra31/auto-attack's ``p_selection``: the fraction p of the input changed per query starts at
# p_init and is halved after these iterations of a 10 000-iteration run. AutoAttack builds Square with
# ``resc_schedule=False`` (the breakpoints stay in iterations whatever n_queries is); the Square authors' own
# code and fra31's ``SquareAttack`` class default to rescaling them to n_queries (``resc_schedule=True``).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_SCHEDULE_LENGTH = 10000


def p_schedule(p_init: float, it: int, n_queries: int, rescale: bool = False) -> float:
    """The piecewise-constant window fraction ``p`` at proposal ``it`` (0-based, as fra31's ``i_iter``):
    ``p_init / 2^k``, k the number of breakpoints below ``it``; with ``rescale`` the breakpoints are
    fractions of ``n_queries`` instead of iterations."""
    if rescale:
        it = int(it / n_queries * _SCHEDULE_LENGTH)
    return p_init / 2 ** sum(it > h for h in _HALVINGS)


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample margin ``z_y - max_{k != y} z_k`` (minimised; < 0 means misclassified)."""
    other = logits.clone()
    other.scatter_(1, labels[:, None], -math.inf)
    return logits.gather(1, labels[:, None]).squeeze(1) - other.amax(dim=1)


def _meta_pattern(shape: Tuple[int, ...], device, dtype) -> torch.Tensor:
    """Alg. 3's pattern on a window: concentric squares (segments in 1-D) weighted 1/(k+1)^2, one half
    positive and the other negative."""
    coords = torch.meshgrid(*[torch.arange(n, device=device, dtype=dtype) for n in shape], indexing="ij")
    half = tuple(max(n // 2, 1) for n in shape)
    out = torch.zeros(shape, device=device, dtype=dtype)
    split = shape[-1] // 2 or 1
    for sign, lo, hi in ((1.0, 0, split), (-1.0, split, shape[-1])):
        if hi <= lo:
            continue
        width = hi - lo
        centre = [(n - 1) / 2 for n in shape[:-1]] + [lo + (width - 1) / 2]
        dist = torch.stack([(c - ctr).abs() for c, ctr in zip(coords, centre)]).amax(dim=0).floor()
        levels = int(max(half)) + 1
        weight = torch.zeros_like(dist)
        for k in range(levels):
            weight += (dist <= k).to(dtype) / (k + 1) ** 2
        inside = (coords[-1] >= lo) & (coords[-1] < hi)
        out = torch.where(inside, sign * weight, out)
    return out


# What a Linf proposal writes into a waveform window, by name (``audio_proposal``): a pattern of the window's
# shape with values in [-1, 1] (scaled by eps). Visual windows always take Square's constant +-1 per channel.
AudioProposal = Callable[[torch.Tensor, Tuple[slice, ...], Tuple[int, ...], torch.Generator, torch.Tensor],
                         torch.Tensor]
AUDIO_PROPOSALS: "Registry[AudioProposal]" = Registry("audio proposal")
# VGGish's mel range (models/audio_net.py: VGGISH_FMIN, VGGISH_FMAX), the band the "band" proposals fill.
DEFAULT_AUDIO_BAND = (125.0, 7500.0)
DEFAULT_AUDIO_RATE = 11025  # dataset/specs.py: mono WAV at 11025 Hz


@AUDIO_PROPOSALS.register("constant")
def _constant(sign, idx, shape, gen, band) -> torch.Tensor:
    """Square's Alg. 2: the whole segment at +eps or -eps (a DC step)."""
    return sign


@AUDIO_PROPOSALS.register("random_sign")
def _random_sign(sign, idx, shape, gen, band) -> torch.Tensor:
    """An independent +-eps per waveform sample inside the segment (white)."""
    n = shape[:2] + (idx[-1].stop - idx[-1].start,)
    return torch.randint(0, 2, n, generator=gen, device=gen.device).to(sign.dtype) * 2 - 1


def _band_noise(sign, idx, shape, gen, band) -> torch.Tensor:
    """Random signs over the whole waveform with the frequency bins outside ``band`` removed, cut to the
    segment and scaled to peak 1 per sample and channel."""
    full = torch.randint(0, 2, shape, generator=gen, device=gen.device).to(sign.dtype) * 2 - 1
    spec = torch.fft.rfft(full, dim=-1) * band.to(sign.dtype)
    seg = torch.fft.irfft(spec, n=shape[-1], dim=-1)[..., idx[-1]]
    return seg / seg.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)


@AUDIO_PROPOSALS.register("band")
def _band(sign, idx, shape, gen, band) -> torch.Tensor:
    """Band-limited noise in ``audio_band`` (the mel range), peak eps."""
    return _band_noise(sign, idx, shape, gen, band)


@AUDIO_PROPOSALS.register("band_sign")
def _band_sign(sign, idx, shape, gen, band) -> torch.Tensor:
    """The signs of band-limited noise: +-eps everywhere, switching at the band's zero crossings."""
    return torch.sign(_band_noise(sign, idx, shape, gen, band))


def band_mask(length: int, rate: float, band: Tuple[float, float], device) -> torch.Tensor:
    """The rfft bins of a ``length``-sample waveform at ``rate`` Hz whose frequency lies in ``band`` (Hz)."""
    freqs = torch.fft.rfftfreq(length, d=1.0 / rate, device=device)
    mask = (freqs >= band[0]) & (freqs <= band[1])
    if not bool(mask.any()):
        raise ValueError(f"audio_band {band} Hz holds no frequency bin of a {length}-sample waveform at {rate} Hz")
    return mask


class _Windows:
    """Where Square may write in one modality: (B, C, T, H, W) or (B, C, H, W) frames get an s x s square
    on one frame; (B, C, L) waveforms get a segment of length round(p L)."""

    def __init__(self, x: torch.Tensor, modality: str) -> None:
        self.spatial = modality == "visual" and x.dim() in (4, 5)
        if not self.spatial and x.dim() != 3:
            raise ValueError(f"square expects {modality} shaped (B, C, L) for audio or (B, C[, T], H, W) for "
                             f"visual, got {tuple(x.shape)}")
        self.shape = tuple(x.shape)

    def size(self, p: float) -> int:
        if self.spatial:
            h, w = self.shape[-2:]
            return int(min(max(round(math.sqrt(p * h * w)), 1), h, w))
        return int(min(max(round(p * self.shape[-1]), 1), self.shape[-1]))

    def draw(self, s: int, gen: torch.Generator) -> Tuple[slice, ...]:
        def r(n: int) -> int:  # drawn on the generator's device: torch rejects a CUDA generator for a CPU draw
            return int(torch.randint(0, n, (1,), generator=gen, device=gen.device))
        if self.spatial:
            h, w = self.shape[-2:]
            lead = (slice(None), slice(None)) + ((r(self.shape[2]),) if len(self.shape) == 5 else ())
            i, j = r(h - s + 1), r(w - s + 1)
            return lead + (slice(i, i + s), slice(j, j + s))
        a = r(self.shape[-1] - s + 1)
        return (slice(None), slice(None), slice(a, a + s))

    def stripes(self, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
        """Random +-1 vertical stripes (per column on frames, per sample of the waveform)."""
        shape = list(like.shape)
        if self.spatial:
            shape[2:-1] = [1] * (len(shape) - 3)
        return torch.randint(0, 2, shape, generator=gen, device=like.device).to(like.dtype) * 2 - 1


@ATTACKS.register("square")
class Square(Attack):
    """Square Attack, "Square Attack: a query-efficient black-box adversarial attack via random search"
    (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020, arXiv 1912.00049), over dicts of modalities.

    Threat model: per modality ``Linf``, ``L2`` or (audio) ``snr``; budgets and valid ranges as for every
    attack (``attacks.threats``). Only the model's logits are read (no gradients). The margin loss
    ``z_y - max_{k!=y} z_k`` is minimised by random search: per query, each attacked modality gets a new
    window (an s x s square on one frame, s = round(sqrt(p H W)); on the waveform a segment of length
    round(p L)) and the proposal is kept per sample if the margin decreases. Linf (Alg. 2): the window is
    set to +-eps per channel (on the waveform: ``audio_proposal``), starting from vertical stripes. L2 (Alg. 3): the mass of a second window and
    the unused budget move into the first window along the concentric-squares pattern. Samples already
    misclassified are no longer queried; ``last_queries`` holds the queries per sample of the last call and
    ``query_stats`` (sum, count) accumulates over calls.

    Arguments (``attacks.create_attack("square", model, eps=..., ...)``):
        eps (dict), norm (str | dict): as for every attack ("Linf" default).
        n_queries (int): 5000 (AutoAttack); p_init (float): 0.8 (AutoAttack's setting for Square);
        restarts (int): 1; seed (int): 0; eps_unit (str): "input" or "normalized".
        rescale_schedule (bool): False (AutoAttack's ``resc_schedule=False``): p halves after 10, 50, 200,
            500, 1000, 2000, 4000, 6000, 8000 proposals whatever ``n_queries`` is; True rescales those
            breakpoints to ``n_queries`` (the default of fra31's standalone ``SquareAttack`` and of the
            Square authors' code; at 5000 queries p then halves twice as fast).
        audio_proposal (str): what a Linf proposal writes into a waveform segment (``AUDIO_PROPOSALS``):
            "constant" (Square's +-eps step), "random_sign" (+-eps per sample), "band" (noise band-passed to
            ``audio_band``, peak eps), "band_sign" (its signs times eps). Default "band_sign", measured the
            strongest (``benchmarks/bench_square_audio.py``, eps 0.012 Linf on audio only, 300 queries, seed 0,
            the clips each model classifies correctly; robust accuracy / margin left as a fraction of the clean
            margin): anet_lite audio model (quick data, 42 clips): constant 0.500 / 0.575, random_sign
            0.429 / 0.494, band 0.524 / 0.551, band_sign 0.381 / 0.490. A constant segment is a DC step that
            a front end (or a mel filterbank from 125 Hz) barely sees; +-eps switching at the band's zero
            crossings keeps the full Linf budget and puts its energy where the model listens. Frames keep
            Square's own proposal; L2/snr budgets keep Alg. 3's pattern.
        audio_band (tuple): (125, 7500) Hz, VGGish's mel range; audio_rate (int): 11025 Hz (the datasets').

    Batch independence: does not hold; window positions are drawn once per query for the whole batch.

    Example::

        >>> attack = create_attack("square", model, eps={"visual": 8 / 255}, n_queries=1000)
        >>> adv = attack({"audio": a, "visual": v}, labels)
    """

    name = "square"
    flag_args = {"n_queries": "square_queries"}
    batch_dependent = "its windows and signs are drawn for the whole batch from one generator"
    gradient_loss = None  # reads logits only

    def __init__(self, model: nn.Module, eps: Mapping[str, float], n_queries: int = 5000, p_init: float = 0.8,
                 restarts: int = 1, seed: int = 0, eps_unit: str = "input",
                 norm: Union[str, Mapping[str, str], None] = "Linf", rescale_schedule: bool = False,
                 audio_proposal: str = "band_sign", audio_band: Tuple[float, float] = DEFAULT_AUDIO_BAND,
                 audio_rate: int = DEFAULT_AUDIO_RATE) -> None:
        super().__init__(model, eps, random_start=restarts > 1, restarts=restarts, seed=seed,
                         eps_unit=eps_unit, norm=norm)
        if not isinstance(rescale_schedule, bool):
            raise TypeError(f"rescale_schedule must be a bool, got {rescale_schedule!r}")
        self.rescale_schedule = rescale_schedule
        self._audio_proposal = AUDIO_PROPOSALS.get(audio_proposal)
        self.audio_proposal = audio_proposal
        if isinstance(audio_rate, bool) or not isinstance(audio_rate, int) or audio_rate < 1:
            raise ValueError(f"audio_rate must be an int >= 1 (Hz), got {audio_rate!r}")
        lo, hi = (float(f) for f in audio_band)
        if not 0 <= lo < hi:
            raise ValueError(f"audio_band must be (low, high) Hz with 0 <= low < high, got {audio_band!r}")
        self.audio_band, self.audio_rate = (lo, hi), audio_rate
        self._bands: Dict[Tuple[int, torch.device], torch.Tensor] = {}
        if isinstance(n_queries, bool) or not isinstance(n_queries, int) or n_queries < 1:
            raise ValueError(f"n_queries must be an int >= 1, got {n_queries!r}")
        if not 0 < p_init <= 1:
            raise ValueError(f"p_init must be in (0, 1], got {p_init!r}")
        self.n_queries, self.p_init = n_queries, float(p_init)
        self.last_queries: Optional[torch.Tensor] = None
        self.query_stats = [0.0, 0]

    def take_queries(self) -> Optional[torch.Tensor]:
        queries, self.last_queries = self.last_queries, None
        return queries

    @torch.no_grad()
    def _margin(self, adv, fixed, labels) -> torch.Tensor:
        return margin(self._forward({**fixed, **adv}).float(), labels)

    def _propose(self, threat, x_clean, x_best, box, win, s, gen) -> torch.Tensor:
        """One proposal for the samples of ``x_clean`` (Alg. 2 for Linf, Alg. 3 for L2/snr)."""
        new = x_best.clone()
        idx = win.draw(s, gen)
        window = new[idx]
        lead = window.shape[:2] + (1,) * (window.dim() - 2)
        sign = torch.randint(0, 2, lead, generator=gen, device=x_clean.device).to(x_clean.dtype) * 2 - 1
        if threat.norm == "Linf":
            eps = threat.eps
            if isinstance(eps, torch.Tensor):  # a per-channel budget (eps_unit="normalized")
                eps = eps.reshape((1, -1) + (1,) * (window.dim() - 2))
            if not win.spatial:
                key = (new.shape[-1], new.device)
                if key not in self._bands:
                    self._bands[key] = band_mask(new.shape[-1], self.audio_rate, self.audio_band, new.device)
                sign = self._audio_proposal(sign, idx, tuple(new.shape), gen, self._bands[key])
            new[idx] = x_clean[idx] + eps * sign
            return threat.clip(new, box)
        delta = new - x_clean
        eps = threat.eps
        r2 = eps.flatten(1)[:, 0] ** 2 if isinstance(eps, torch.Tensor) else torch.full(
            (x_clean.shape[0],), float(eps) ** 2, dtype=x_clean.dtype, device=x_clean.device)
        spare = (r2 - delta.flatten(1).pow(2).sum(1)).clamp_min(0)
        idx2 = win.draw(s, gen)
        o2 = delta[idx2].flatten(1).pow(2).sum(1)
        delta[idx2] = 0
        o1 = delta[idx].clone()
        pattern = _meta_pattern(tuple(o1.shape[2:]), x_clean.device, x_clean.dtype)
        if pattern.dim() == 2 and bool(torch.randint(0, 2, (1,), generator=gen, device=gen.device)):
            pattern = pattern.t()
        eta = (sign * pattern).expand_as(o1)
        a = eta.flatten(1).pow(2).sum(1).clamp_min(1e-12)
        b = (o1 * eta).flatten(1).sum(1)
        cc = -(o2 + spare)  # ||o1 + c eta||^2 = ||o1||^2 + ||o2||^2 + spare
        c = (-b + (b * b - a * cc).clamp_min(0).sqrt()) / a
        delta[idx] = o1 + c.view((-1,) + (1,) * (o1.dim() - 1)) * eta
        return threat.clip(x_clean + delta, box)

    def _perturb(self, clean, start, fixed, labels, threats) -> Dict[str, torch.Tensor]:
        gen = self._generator(labels.device)
        wins = {m: _Windows(clean[m], m) for m in clean}
        boxes = {m: threats[m].box(clean[m]) for m in clean}
        best = {}
        for m, x in clean.items():
            init = wins[m].stripes(gen, x)
            step = threats[m].eps * init if threats[m].norm == "Linf" else threats[m].eps * threats[m].unit(init)
            best[m] = threats[m].clip(x + step, boxes[m])
        loss = self._margin(best, fixed, labels)
        queries = torch.ones_like(labels)
        for it in range(1, self.n_queries):
            active = (loss > 0).nonzero().flatten()
            if active.numel() == 0:
                break
            p = p_schedule(self.p_init, it - 1, self.n_queries, self.rescale_schedule)  # proposal it - 1
            sub = lambda d: {k: (v[active] if v is not None else None) for k, v in d.items()}  # noqa: E731
            prop = {}
            for m in clean:
                t = threats[m].select(active)
                box = t.box(clean[m][active])
                prop[m] = self._propose(t, clean[m][active], best[m][active], box, wins[m],
                                        wins[m].size(p), gen)
            new_loss = self._margin(prop, sub(fixed), labels[active])
            queries[active] += 1
            better = new_loss < loss[active]
            keep = active[better]
            for m in clean:
                best[m][keep] = prop[m][better]
            loss[keep] = new_loss[better]
        self.last_queries = queries
        self.query_stats[0] += float(queries.sum())
        self.query_stats[1] += int(queries.numel())
        logger.debug("square: %d/%d fooled, mean queries %.1f", int((loss <= 0).sum()), labels.numel(),
                     float(queries.float().mean()) if queries.numel() else 0.0)
        return best
