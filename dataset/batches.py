"""Batches for accelerators: uint8 frames and int16 audio through collate, floats made on the device.

With the raw transport (``AVDataset.set_transport(raw=True)``) a sample carries its frames as the uint8 crop
(T, H, W, 3) and its audio as int16 (1, L), a quarter and a half of the float32 bytes that workers, collate
and the pin thread would otherwise copy. ``to_model_floats`` turns a batch into the model's inputs where it
reaches its device, with the same float32 operations, in the same order, as the CPU float path
(``dataset.transforms.frames_to_tensor``, ``read_pcm16``, ``scale_volume``), so the numbers are bitwise
identical (tests/test_dataset.py compares them):

- visual (B, T, H, W, 3) uint8 -> (B, 3, T, H, W) float32, ``x / 255``. On the CPU that is the very
  operation of the float path; on other devices a 256-entry table made by that CPU operation is gathered
  (CUDA's division by a scalar multiplies by the reciprocal, which can differ in the last bit).
- audio (B, 1, L) int16 -> float32 ``x * 2**-15`` (exact); then, in training, ``* audio_gain`` and a clamp
  to [-1, 1], the two float32 operations of ``scale_volume``.

``DeviceLoader`` wraps a DataLoader: each batch reaches the device as those floats (the attacks' contract:
visual in [0, 1], audio in [-1, 1]); on CUDA the next batch is copied and converted on a side stream while
the current one is used. ``default_workers`` sizes the worker pool from the CPU affinity and the local ranks.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Mapping, Optional

import torch
from torch.utils.data import default_collate

PCM16_SCALE = 1.0 / 32768.0  # int16 -> [-1, 1): a power of two, so the product is exact
GAIN_KEY = "audio_gain"  # per-sample training volume factor of the raw transport
CONTEXT_KEY = "audio_context"  # the audio window with context each side (AVDataset.set_audio_context)
_TABLES: Dict[torch.device, torch.Tensor] = {}


def collate(samples: List[Mapping[str, Any]]) -> Dict[str, Any]:
    """``default_collate``, except that a batch mixing int16 and float32 audio (WAVs of other encodings)
    gets float32 audio, the int16 ones scaled exactly as ``to_model_floats`` would."""
    audio = [s.get("audio") for s in samples] if samples and isinstance(samples[0], Mapping) else []
    dtypes = {a.dtype for a in audio if isinstance(a, torch.Tensor)}
    if len(dtypes) > 1:
        samples = [{**s, "audio": _audio_floats(s["audio"])} for s in samples]
    return default_collate(samples)


def _audio_floats(a: torch.Tensor) -> torch.Tensor:
    return a.float().mul_(PCM16_SCALE) if a.dtype == torch.int16 else a


def _unit_table(device: torch.device) -> torch.Tensor:
    """x / 255 for every uint8 x, computed by the CPU float path and kept on ``device``."""
    table = _TABLES.get(device)
    if table is None:
        table = _TABLES[device] = torch.arange(256, dtype=torch.float32).div_(255.0).to(device)
    return table


def frames_to_floats(x: torch.Tensor, use_table: Optional[bool] = None) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 on any device -> contiguous (B, 3, T, H, W) float32 in [0, 1], bitwise equal to
    the CPU float path. ``use_table`` (default: off the CPU) gathers from the 256-entry table instead."""
    if x.dtype != torch.uint8 or x.dim() != 5 or x.shape[-1] != 3:
        raise ValueError(f"expected (B, T, H, W, 3) uint8 frames, got {x.dtype} {tuple(x.shape)}")
    chw = x.permute(0, 4, 1, 2, 3).contiguous()
    if use_table is None:
        use_table = x.device.type != "cpu"
    if use_table:
        return _unit_table(x.device)[chw.int()]
    return chw.float().div_(255.0)


def audio_to_floats(a: torch.Tensor, gain: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, 1, L) int16 (or float32) -> float32 in [-1, 1]; ``gain`` (B,): the training volume, then a clamp."""
    a = a.float().mul_(PCM16_SCALE) if a.dtype == torch.int16 else a.float()
    if gain is not None:
        a = (a * gain.to(a.device, torch.float32).view(-1, *([1] * (a.dim() - 1)))).clamp_(-1.0, 1.0)
    return a


def to_model_floats(batch: Mapping[str, Any], device: torch.device) -> Dict[str, Any]:
    """A copy of ``batch`` whose ``visual`` and ``audio`` are the model's float inputs on ``device`` (already
    float batches are only moved); ``audio_gain`` is applied and dropped; other entries stay as they are."""
    out = {k: v for k, v in batch.items() if k != GAIN_KEY}
    v = batch.get("visual")
    if isinstance(v, torch.Tensor):
        v = v.to(device, non_blocking=True)
        out["visual"] = frames_to_floats(v) if v.dtype == torch.uint8 else v
    a = batch.get("audio")
    if isinstance(a, torch.Tensor):
        a = a.to(device, non_blocking=True)
        gain = batch.get(GAIN_KEY)
        out["audio"] = audio_to_floats(a, gain) if (a.dtype == torch.int16 or gain is not None) else a
    ctx = batch.get(CONTEXT_KEY)  # the desynchronisation attack's wider audio (eval only: no gain)
    if isinstance(ctx, torch.Tensor):
        ctx = ctx.to(device, non_blocking=True)
        out[CONTEXT_KEY] = audio_to_floats(ctx) if ctx.dtype == torch.int16 else ctx
    return out


class DeviceLoader:
    """Iterates ``loader`` and yields its batches as model inputs on ``device`` (``to_model_floats``).

    On CUDA one batch is prefetched: its host-to-device copy (pinned memory, non-blocking) and conversion
    run on a side stream while the caller computes on the current one. Elsewhere there is no stream and
    no prefetch. ``sampler``, ``dataset``, ``batch_size`` and ``len`` are the wrapped loader's.
    """

    def __init__(self, loader: Any, device: torch.device) -> None:
        self.loader, self.device = loader, torch.device(device)
        self.sampler = getattr(loader, "sampler", None)
        self.dataset = getattr(loader, "dataset", None)
        self.batch_size = getattr(loader, "batch_size", None)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        if self.device.type != "cuda":
            for batch in self.loader:
                yield to_model_floats(batch, self.device)
            return
        side = torch.cuda.Stream(device=self.device)

        def stage(batch: Mapping[str, Any]) -> Dict[str, Any]:
            with torch.cuda.stream(side):
                return to_model_floats(batch, self.device)

        it = iter(self.loader)
        nxt: Optional[Dict[str, Any]] = next((stage(b) for b in it), None)
        while nxt is not None:
            main = torch.cuda.current_stream(self.device)
            main.wait_stream(side)
            cur = nxt
            for t in cur.values():
                if isinstance(t, torch.Tensor) and t.device.type == "cuda":
                    t.record_stream(main)  # made on the side stream, used on the main one
            nxt = next((stage(b) for b in it), None)
            yield cur


def default_workers(cores: Optional[int] = None, local_world: Optional[int] = None) -> int:
    """Loader workers per process: the cores this process may run on (``os.sched_getaffinity``) shared by the
    node's ranks (``LOCAL_WORLD_SIZE``, set by torchrun), minus two left to the training process, at most
    16. Two cores give 0 (measured: there any worker slows training down, benchmarks/bench_train.py)."""
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not on Linux
            cores = os.cpu_count() or 1
    if local_world is None:
        try:
            local_world = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        except ValueError:
            local_world = 1
    return min(16, max(0, cores // local_world - 2))
