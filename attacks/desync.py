"""Desync: a discrete desynchronisation threat, the audio shifted against the frames (issue 19, item 2).

Threat model: per clip, the audio is replaced by the window of the same recording ``k`` samples later
(``k > 0``: the sound comes early, ahead of the frames) or earlier (``k < 0``), for ``k`` on a grid in
``[-S, S]`` with ``S = round(max_shift_s * audio_rate)`` and spacing ``round(shift_step_s * audio_rate)``
(the ends -S and S are always on the grid, as is 0). The attack picks per clip the shift of the grid with the
highest loss (cross-entropy; targeted: the lowest CE of the target), ties to the smallest ``|k|`` and then to
the negative shift: an exhaustive search, so its result is the worst case over the grid.

Optionally combined with the usual per-modality budgets (``eps``): PGD (this project's, ``attacks/pgd.py``
steps) then runs on the attacked modalities with the SHIFTED audio as the clean reference, i.e. the ball is
around the audio the listener would hear after the shift. We chose "shift first, then PGD" over a PGD per
shift (the worst over the grid after each PGD): it costs one forward per grid point plus one PGD, not one
PGD per grid point, and the shift is a property of the recording (a natural, unperturbed window) that the
L-inf budget then perturbs. A desync row's ``max_delta_audio`` in the grid is measured against the
unshifted audio, so it holds the shift's change too; the budget is checked against the shifted window.

Input: the grid passes the batch's ``audio_context`` (B, 1, L + 2S), the loader's window widened by S
samples each side (``AVDataset.set_audio_context``; never zero-padded: a clip without the context is
refused by the loader and by the pre-flight check of ``--max_shift_s``). Its centre crop must equal
``audio`` (checked, bit for bit). The model is still called as ``model(audio=(B, 1, L), visual=...)``.
With ``max_shift_s = 0`` (the default) no context is needed and the attack is PGD on the budgeted modalities.
After a call, ``last_shifts`` (B,) holds each clip's shift in samples (``last_shifts_s`` in seconds).

Arguments (``attacks.create_attack("desync", model, ...)``):
    eps (dict): optional budgets for PGD after the shift; {} = the shift alone. max_shift_s (float): 0.0.
    shift_step_s (float): 0.05 s (grid spacing). audio_rate (int): 11025 (Hz, to convert seconds).
    steps (int): 10 (PGD). alpha, targeted, eps_unit, seed, norm: as PGD.

Example::

    >>> attack = create_attack("desync", model, eps={"audio": 0.006}, max_shift_s=0.5, shift_step_s=0.1)
    >>> adv = attack({"audio": a, "visual": v}, labels, audio_context=ctx)   # ctx: (B, 1, L + 2 * 5512)
    >>> attack.last_shifts_s
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from attacks.base import ATTACKS, Attack, Frozen, _check_scalar, check_int, forward
from utils.modes import model_mode

DEFAULT_STEP_S = 0.05  # grid spacing: 50 ms, below the ~45-200 ms at which people notice AV asynchrony (our choice)


def shift_grid(max_shift: int, step: int) -> List[int]:
    """The shifts (samples) searched, in tie-break order: 0, then by |k|, negative first; multiples of
    ``step`` within ``[-max_shift, max_shift]`` plus both ends."""
    if max_shift < 0 or step < 1:
        raise ValueError(f"need max_shift >= 0 and step >= 1, got {max_shift}, {step}")
    ks = {k * step for k in range(-(max_shift // step), max_shift // step + 1)} | {-max_shift, max_shift}
    return sorted(ks, key=lambda k: (abs(k), k))


def crop_shift(context: torch.Tensor, max_shift: int, length: int, shift: Union[int, torch.Tensor]) -> torch.Tensor:
    """The ``length``-sample window of ``context`` (B, 1, length + 2 * max_shift) shifted by ``shift`` samples
    (an int for all clips, or a (B,) tensor per clip); shift 0 is the centre crop."""
    if isinstance(shift, int):
        return context[..., max_shift + shift:max_shift + shift + length]
    idx = (max_shift + shift.view(-1, 1, 1)) + torch.arange(length, device=context.device).view(1, 1, -1)
    return torch.gather(context, 2, idx.expand(context.shape[0], context.shape[1], length))


@ATTACKS.register("desync")
class Desync(Attack):
    """Audio shifted against the frames, worst shift per clip over a grid, then optional PGD; see the
    module docstring."""

    name = "desync"
    in_all = False  # needs the loader's audio context (and --max_shift_s): run it by name
    acts_without_budget = True  # the grid runs it on rows with eps 0 (the shift alone)
    batch_keys = ("audio_context",)  # batch entries the grid passes to __call__ as keyword arguments
    flag_args = {"steps": "attack_steps", "max_shift_s": "max_shift_s", "shift_step_s": "shift_step_s",
                 "audio_rate": "audRate"}

    def __init__(self, model: nn.Module, eps: Mapping[str, float], max_shift_s: float = 0.0,
                 shift_step_s: float = DEFAULT_STEP_S, audio_rate: int = 11025, steps: int = 10,
                 alpha: Union[None, float, Mapping[str, float]] = None, targeted: bool = False,
                 eps_unit: str = "input", seed: int = 0, norm: Union[str, Mapping[str, str], None] = "Linf") -> None:
        self.steps = check_int("steps", steps)
        self.max_shift_s = _check_scalar("max_shift_s", max_shift_s)
        self.shift_step_s = _check_scalar("shift_step_s", shift_step_s, allow_zero=False)
        self.audio_rate = check_int("audio_rate", audio_rate)
        self.max_shift = int(round(self.max_shift_s * self.audio_rate))
        self.step = max(1, int(round(self.shift_step_s * self.audio_rate)))
        self.grid = shift_grid(self.max_shift, self.step)
        self.last_shifts: Optional[torch.Tensor] = None
        super().__init__(model, eps, alpha=alpha, targeted=targeted, eps_unit=eps_unit, seed=seed, norm=norm)

    @property
    def last_shifts_s(self) -> Optional[torch.Tensor]:
        """The last call's shift of each clip in seconds (positive: the audio ahead of the frames)."""
        return None if self.last_shifts is None else self.last_shifts.double() / self.audio_rate

    def worst_shift(self, context: torch.Tensor, visual: Optional[torch.Tensor], labels: torch.Tensor,
                    length: int) -> torch.Tensor:
        """Per clip the grid shift with the highest attack loss (CE; targeted: -CE), first in grid order on ties."""
        best = torch.zeros(labels.shape[0], dtype=torch.long, device=labels.device)
        best_loss = None
        fixed = None if visual is None else Frozen(visual.detach())
        with torch.no_grad(), model_mode(self.model, training=False):
            for k in self.grid:
                logits = forward(self.model, {"audio": crop_shift(context, self.max_shift, length, k), "visual": fixed})
                loss = F.cross_entropy(logits, labels, reduction="none")
                loss = -loss if self.targeted else loss
                if best_loss is None:
                    best_loss, best = loss, torch.full_like(best, k)
                    continue
                better = loss > best_loss
                best = torch.where(better, torch.full_like(best, k), best)
                best_loss = torch.where(better, loss, best_loss)
        return best

    def __call__(self, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor,
                 audio_context: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """``{"audio": a, "visual": v}, labels[, audio_context=ctx] -> adversarial inputs`` (audio (B, 1, L))."""
        self._check_inputs(inputs, labels)
        audio = inputs.get("audio")
        if self.max_shift == 0:
            shifted, self.last_shifts = audio, torch.zeros(labels.shape[0], dtype=torch.long, device=labels.device)
        else:
            if audio is None:
                raise KeyError("desync shifts the audio: inputs has no 'audio' tensor")
            length, want = audio.shape[-1], audio.shape[-1] + 2 * self.max_shift
            if audio_context is None or tuple(audio_context.shape) != (audio.shape[0], audio.shape[1], want):
                got = None if audio_context is None else tuple(audio_context.shape)
                raise ValueError(f"desync with max_shift_s={self.max_shift_s} needs audio_context of shape "
                                 f"{(audio.shape[0], audio.shape[1], want)} (the window with {self.max_shift} "
                                 f"samples each side; AVDataset.set_audio_context), got {got}")
            context = audio_context.to(audio.dtype)
            if not torch.equal(crop_shift(context, self.max_shift, length, 0), audio):
                raise ValueError("audio_context's centre crop is not the audio: it belongs to another window")
            shifts = self.worst_shift(context, inputs.get("visual"), labels.detach(), length)
            self.last_shifts = shifts.cpu()
            shifted = audio if not bool(shifts.any()) else crop_shift(context, self.max_shift, length, shifts)
        base = dict(inputs)
        if audio is not None:
            base["audio"] = shifted
        return super().__call__(base, labels)  # PGD on the budgeted modalities, around the shifted audio

    def _perturb(self, clean, start, fixed: Dict[str, Optional[torch.Tensor]], labels: torch.Tensor,
                 threats) -> Dict[str, torch.Tensor]:
        adv = dict(start)
        boxes = {m: threats[m].box(clean[m]) for m in adv}  # the ball around the (shifted) clean input
        for _ in range(self.steps):
            grads = self._input_grads(adv, fixed, labels)
            for m in adv:
                adv[m] = threats[m].clip(threats[m].step(adv[m], grads[m]), boxes[m])
        return adv
