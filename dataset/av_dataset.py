"""The audio-visual dataset: one index CSV row -> {audio, visual, label, id, index}.

Layout (docs/paper.md, Preprocessing and layout): ``<audio_path>/<class>/<vid>.wav`` (mono, 16-bit, ``aud_rate`` Hz) and
``<frame_path>/<class>/<vid>.mp4/000001.jpg ...`` (``frame_rate`` fps, numbered from 1). Index rows have no
header: ``/<class>/<vid>.wav,/<class>/<vid>.mp4,<num_frames>``.

Randomness (training only) comes from a generator seeded by (seed, epoch, index), never from global or
per-worker state, so a sample is the same whatever the worker count or order; evaluation has none.
Index rows are read by :func:`dataset.index.read_index` (the one parser; a malformed row or a class not in
``categories`` is a :class:`dataset.errors.IndexFormatError`). Every missing, unreadable or inconsistent
media file raises :class:`dataset.errors.MediaError` naming the path and the index row; nothing is ever
replaced by zeros or silently resampled.
"""
from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from dataset import transforms as T
from dataset import windows as W
from dataset.batches import collate
from dataset.errors import MediaError
from dataset.index import IndexRow, read_index

log = logging.getLogger(__name__)

PathLike = Union[str, Path]


_WAVE_PCM, _WAVE_EXTENSIBLE = 1, 0xFFFE  # WAVE format tags (Microsoft RIFF spec)
_PCM16_SCALE = np.float32(1.0 / 32768.0)  # int16 -> [-1, 1), the same scaling as libsndfile


@dataclass(frozen=True)
class WavInfo:
    """What the RIFF/WAVE header says: rate, channels, bits per sample, integer PCM or not, where the
    sample data start (bytes) and how many frames they hold."""

    rate: int
    channels: int
    bits: int
    pcm: bool
    data_offset: int
    frames: int


def read_wav_header(fh: BinaryIO, size: int) -> WavInfo:
    """Parse the header of an open WAV file of ``size`` bytes; raises ValueError naming the problem."""
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    fmt: Optional[Tuple[int, int, int, int, int]] = None
    pos = 12
    while pos + 8 <= size:
        fh.seek(pos)
        cid, csize = struct.unpack("<4sI", fh.read(8))
        if cid == b"fmt ":
            body = fh.read(min(csize, 40))
            if len(body) < 16:
                raise ValueError("fmt chunk is too short")
            tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _WAVE_EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]  # first two bytes of the SubFormat GUID
            fmt = (tag, channels, rate, align, bits)
        elif cid == b"data":
            if fmt is None:
                raise ValueError("data chunk before the fmt chunk")
            tag, channels, rate, align, bits = fmt
            avail = size - pos - 8
            if csize == 0xFFFFFFFF:  # written to a pipe: the size was unknown, the data run to the end
                csize = avail
            elif csize > avail:
                raise ValueError(f"truncated: the header promises {csize} data bytes, the file holds {avail}")
            if align < 1:
                raise ValueError("block align is 0")
            return WavInfo(rate, channels, bits, tag == _WAVE_PCM, pos + 8, csize // align)
        pos += 8 + csize + (csize & 1)  # chunks are padded to an even size
    raise ValueError("no data chunk")


def read_pcm16(fh: BinaryIO, info: WavInfo, start: int, count: int, raw: bool = False) -> np.ndarray:
    """``count`` mono 16-bit samples from sample ``start`` as float32 in [-1, 1) (fewer if the file ends);
    ``raw``: the int16 samples themselves (dataset/batches.py scales them by 1/32768 on the device)."""
    fh.seek(info.data_offset + 2 * start)
    buf = fh.read(2 * count)
    ints = np.frombuffer(buf[: len(buf) // 2 * 2], dtype="<i2")
    return ints.astype(np.int16) if raw else ints.astype(np.float32) * _PCM16_SCALE


_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"  # start / end of image markers (ITU-T T.81, Table B.1)


_JPEG_TAIL = 64  # bytes read from a JPEG's end by the pre-flight check (room for zero padding after EOI)


def jpeg_problem(head: bytes, tail: bytes, size: int) -> Optional[str]:
    """Why a JPEG file of ``size`` bytes starting with ``head`` and ending with ``tail`` is not complete, or
    None. libjpeg decodes a truncated file with only a "Premature end of JPEG file" warning on stderr and
    fills the missing rows with grey, so completeness is checked here: the file must start with SOI and end
    with EOI (trailing zero padding allowed)."""
    if size == 0:
        return "empty file (0 bytes)"
    if head[:2] != _JPEG_SOI:
        return "not a JPEG file (no FF D8 start-of-image marker)"
    if tail.rstrip(b"\x00")[-2:] != _JPEG_EOI:
        return f"truncated JPEG ({size} bytes, no FF D9 end-of-image marker)"
    return None


def jpeg_file_problem(path: PathLike) -> Optional[str]:
    """:func:`jpeg_problem` of the file at ``path`` (reads its first 2 and last 64 bytes); OSError if unreadable."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(2)
        fh.seek(max(0, size - _JPEG_TAIL))
        return jpeg_problem(head, fh.read(), size)


def wav_file_problem(path: PathLike, rate: int) -> Optional[str]:
    """Why the WAV at ``path`` cannot be read as mono ``rate`` Hz audio (header only), or None; OSError if
    unreadable."""
    with open(path, "rb") as fh:
        try:
            info = read_wav_header(fh, os.fstat(fh.fileno()).st_size)
        except (ValueError, struct.error) as e:
            return f"unreadable audio ({e})"
    return wav_problem(info, rate)


def wav_problem(info: WavInfo, rate: int) -> Optional[str]:
    """Why a WAV with header ``info`` cannot be read as the loader's mono ``rate`` Hz audio, or None."""
    if info.rate != rate:
        return f"sample rate {info.rate} Hz, expected {rate} Hz (no resampling is done)"
    if info.channels != 1:
        return f"{info.channels} channels, expected mono"
    if info.frames < 1:
        return "no samples"
    return None


def _check_positive(**kwargs: int) -> None:
    for name, value in kwargs.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"AVDataset: {name} must be a positive integer, got {value!r}")


class AVDataset(Dataset):
    """Audio-visual clips from an index CSV; ``ds[i]`` is
    ``{"audio": (1, aud_len) float in [-1, 1], "visual": (3, num_frames, img_size, img_size) float in [0, 1],
    "label": int, "id": "<class>/<vid>", "index": i}``.

    Args:
        list_path: index CSV. audio_path / frame_path: media roots (the row's paths are appended).
        categories: class names; the label is the position in this list.
        split_train: training mode (random centre, crop, flip, volume) if True, else deterministic eval.
        num_frames, stride_frames: frames per sample and their spacing (in frames).
        frame_rate: fps of the extracted frames. aud_len, aud_rate: window length (samples) and WAV rate.
        img_size: output side; frames are resized to 1.1x then cropped.
        seed: base seed of the per-sample generators (with the epoch and the index).
        preload: decode every needed frame (resized, uint8) and waveform once, at construction.
        train_margin: frames kept between a training centre and the clip ends (dataset/windows.py).

    ``set_transport(raw=True)`` (the pipeline's loaders) makes ``ds[i]`` carry ``visual`` as the uint8 crop
    (num_frames, img_size, img_size, 3), ``audio`` as int16 (1, aud_len) (float32 when the WAV is not 16-bit
    PCM) and, in training, ``audio_gain`` (the volume factor, drawn in the same order); dataset/batches.py
    turns them into the float tensors above, bitwise identical, on the device.
    """

    raw: bool = False  # class defaults (see set_transport), so __init__ stays as it is
    crop_cache: Optional[Any] = None  # uint8 eval crops by index (dataset/crop_cache.py), or None
    audio_context: int = 0  # samples of audio context each side of the window (see set_audio_context)

    def __init__(self, list_path: PathLike, audio_path: PathLike, frame_path: PathLike,
                 categories: Sequence[str], split_train: bool, num_frames: int = 1, stride_frames: int = 1,
                 frame_rate: int = 8, aud_len: int = 65535, aud_rate: int = 11025, img_size: int = 224,
                 seed: int = 0, preload: bool = False, train_margin: int = 0) -> None:
        _check_positive(num_frames=num_frames, stride_frames=stride_frames, frame_rate=frame_rate,
                        aud_len=aud_len, aud_rate=aud_rate, img_size=img_size)
        if seed < 0:
            raise ValueError(f"AVDataset: seed must be >= 0, got {seed}")
        self.list_path = str(list_path)
        self.audio_root = str(audio_path).rstrip("/")
        self.frame_root = str(frame_path).rstrip("/")
        self.categories = tuple(categories)
        self.train = bool(split_train)
        self.num_frames, self.stride = int(num_frames), int(stride_frames)
        self.fps, self.aud_len, self.aud_rate = int(frame_rate), int(aud_len), int(aud_rate)
        self.img_size, self.seed = int(img_size), int(seed)
        self.train_margin = max(0, int(train_margin))
        self.short = T.resize_target(self.img_size)
        self.rows: List[IndexRow] = read_index(self.list_path, self.categories)
        position = {c: i for i, c in enumerate(self.categories)}
        self._labels: List[int] = [position[r.label] for r in self.rows]  # categories.index(row.label)
        # shared with DataLoader workers, so set_epoch reaches persistent workers too
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._flags: Dict[int, int] = {}  # row -> cv2 decode flag (from the first frame's header)
        self._frame_cache: Optional[Dict[Tuple[int, int], np.ndarray]] = None
        self._audio_cache: Optional[Dict[int, np.ndarray]] = None
        log.info("%s: %d clips, %s mode, %d frame(s) stride %d, %d px, %d audio samples",
                 self.list_path, len(self.rows), "train" if self.train else "eval", self.num_frames,
                 self.stride, self.img_size, self.aud_len)
        if preload:
            self._preload()

    # ----------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> List[int]:
        """Integer label of every row (its class's position in ``categories``), in order."""
        return list(self._labels)

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations ``__getitem__`` draws (seen by running workers too)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch.fill_(int(epoch))

    def set_transport(self, raw: bool, crop_cache: Optional[Any] = None) -> "AVDataset":
        """``raw``: uint8 frames and int16 audio per sample (see the class docstring); ``crop_cache``: an
        indexable of the eval-mode uint8 crops (dataset/crop_cache.py; read in eval mode only). Returns self."""
        self.raw, self.crop_cache = bool(raw), crop_cache
        return self

    def set_audio_context(self, samples: int) -> "AVDataset":
        """Eval samples also carry ``audio_context``: (1, aud_len + 2 * samples), the audio window widened by
        ``samples`` on each side around the very same window, so ``audio_context[:, samples:samples + aud_len]``
        is ``audio`` bit for bit (the desynchronisation attack, attacks/desync.py, crops shifted windows from
        it). The context must exist in the file: a clip whose window lies closer than ``samples`` to either
        end of its WAV (or whose WAV is shorter than ``aud_len`` and is tiled) raises ``MediaError`` naming
        the clip and what it has; nothing is padded. ``pipeline.preflight`` checks every clip before any work
        (``--max_shift_s``). Training mode refuses it. Returns self."""
        if samples < 0:
            raise ValueError(f"audio context must be >= 0 samples, got {samples}")
        if samples and self.train:
            raise ValueError("audio context is for evaluation datasets (split_train=False) only")
        self.audio_context = int(samples)
        return self

    def sample_rng(self, index: int, epoch: Optional[int] = None) -> np.random.Generator:
        """The generator of sample ``index`` at ``epoch`` (default: the current one)."""
        return np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index])

    def __getitem__(self, index: int) -> Dict[str, object]:
        if not 0 <= index < len(self.rows):
            raise IndexError(f"index {index} out of range for {len(self.rows)} clips ({self.list_path})")
        row = self.rows[index]
        rng = self.sample_rng(index) if self.train else None
        centre = self._choose_centre(row, rng)  # draw order: centre, crop+flip, volume
        visual = self._visual(index, row, centre, rng)
        audio, gain = self._audio(index, row, centre, rng)
        item = {"audio": torch.from_numpy(audio).unsqueeze(0), "visual": visual, "label": self._labels[index],
                "id": row.clip_id, "index": index}
        if gain is not None:  # raw transport in training: the volume is applied on the device
            item["audio_gain"] = torch.tensor(float(gain), dtype=torch.float32)
        if self.audio_context:
            c = T.centre_sample(centre, self.fps, self.aud_rate)
            item["audio_context"] = torch.from_numpy(self._read_context(row, c)).unsqueeze(0)
        return item

    # ---------------------------------------------------------------------------------- frame selection
    def _choose_centre(self, row: IndexRow, rng: Optional[np.random.Generator]) -> int:
        lo, hi = W.centre_range(row.num_frames, self.num_frames, self.stride)
        if lo > hi:
            span = W.frames_needed(self.num_frames, self.stride)
            raise MediaError(f"{self.frame_root}{row.frames}", f"{row.num_frames} frames cannot hold "
                             f"{self.num_frames} frames with stride {self.stride} ({span} needed) [{row.where()}]")
        if rng is None:
            return W.middle_frame(row.num_frames, self.num_frames, self.stride)
        lo, hi = W.train_centre_range(row.num_frames, self.num_frames, self.stride, self.train_margin)
        return int(rng.integers(lo, hi + 1))

    def frame_file(self, row: IndexRow, k: int) -> str:
        """Path of frame ``k`` (from 1) of ``row``."""
        return f"{self.frame_root}{row.frames}/{k:06d}.jpg"

    # ------------------------------------------------------------------------------------------- visual
    def _visual(self, index: int, row: IndexRow, centre: int, rng: Optional[np.random.Generator]) -> torch.Tensor:
        if self.crop_cache is not None and rng is None:
            return self._frames_out(self.crop_cache[index])
        ks = W.frame_indices(centre, self.num_frames, self.stride)
        if self._frame_cache is not None:
            frames = [self._frame_cache[(index, k)] for k in ks]
        else:
            self._check_last_frame(row)
            frames = [self._load_frame(index, row, k) for k in ks]
        h, w = frames[0].shape[:2]
        if any(f.shape[:2] != (h, w) for f in frames):
            raise MediaError(f"{self.frame_root}{row.frames}", f"frames {ks} differ in size [{row.where()}]")
        if rng is None:
            top, left, flip = T.center_crop_params(h, w, self.img_size)
        else:
            top, left, flip = T.random_crop_params(rng, h, w, self.img_size)
        return self._frames_out(T.crop_stack(frames, top, left, self.img_size, flip))

    def _frames_out(self, stack: np.ndarray) -> torch.Tensor:
        """The (T, H, W, 3) uint8 crop as uint8 (raw transport) or as (3, T, H, W) float in [0, 1]."""
        return torch.from_numpy(np.ascontiguousarray(stack)) if self.raw else T.frames_to_tensor(stack)

    def _check_last_frame(self, row: IndexRow) -> None:
        last = self.frame_file(row, row.num_frames)
        if not os.path.isfile(last):
            folder = f"{self.frame_root}{row.frames}"
            on_disk = len([f for f in os.listdir(folder) if f.endswith(".jpg")]) if os.path.isdir(folder) else 0
            raise MediaError(last, f"missing; the index says {row.num_frames} frames, {folder} holds "
                             f"{on_disk} [{row.where()}]")

    def _decode_flag(self, index: int, row: IndexRow, path: str) -> int:
        """Reduced-size JPEG decoding when frames are much larger than needed (decided once per clip from
        the JPEG header, so every call decodes the same way)."""
        flag = self._flags.get(index)
        if flag is None:
            try:
                with Image.open(path) as im:
                    w, h = im.size
            except FileNotFoundError:
                raise MediaError(path, f"missing frame [{row.where()}]") from None
            except (OSError, ValueError) as e:
                raise MediaError(path, f"unreadable image ({e}) [{row.where()}]") from None
            flag = self._flags[index] = T.decode_flag(h, w, self.short)
        return flag

    def _load_frame(self, index: int, row: IndexRow, k: int) -> np.ndarray:
        """Decode frame ``k`` as RGB uint8 and resize its shorter side to 1.1 x img_size."""
        path = self.frame_file(row, k)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise MediaError(path, f"missing frame (frame {k} of {row.num_frames}) [{row.where()}]") from None
        except OSError as e:
            raise MediaError(path, f"unreadable frame ({e.strerror or e}) [{row.where()}]") from None
        problem = jpeg_problem(data[:2], data[-_JPEG_TAIL:], len(data))
        if problem is not None:
            raise MediaError(path, f"unreadable image: {problem} (frame {k} of {row.num_frames}) [{row.where()}]")
        img = cv2.imdecode(np.frombuffer(data, np.uint8), self._decode_flag(index, row, path))
        if img is None:
            raise MediaError(path, f"unreadable image (cv2 could not decode it) (frame {k} of {row.num_frames}) "
                             f"[{row.where()}]")
        return T.resize_short(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), self.short)

    # -------------------------------------------------------------------------------------------- audio
    def _audio(self, index: int, row: IndexRow, centre: int, rng: Optional[np.random.Generator]
               ) -> Tuple[np.ndarray, Optional[np.float32]]:
        """The window as float32 with the volume applied, or (raw transport) as read plus the volume gain."""
        c = T.centre_sample(centre, self.fps, self.aud_rate)
        if self._audio_cache is not None:
            wave = T.take_window(self._audio_cache[index], c, self.aud_len)
        else:
            wave = self._read_audio(row, c, raw=self.raw)
        if self.raw:
            return np.ascontiguousarray(wave), (T.draw_gain(rng) if rng is not None else None)
        if rng is not None:
            wave = T.scale_volume(wave, rng)
        return np.ascontiguousarray(wave, dtype=np.float32), None

    def audio_file(self, row: IndexRow) -> str:
        """Path of the WAV of ``row``."""
        return f"{self.audio_root}{row.audio}"

    def _read_audio(self, row: IndexRow, centre: Optional[int], raw: bool = False) -> np.ndarray:
        """The ``aud_len`` window around sample ``centre`` (tiled if the file is shorter), or the whole
        signal when ``centre`` is None. Only the window's bytes are read from long files. ``raw``: 16-bit
        PCM stays int16 (other encodings are float32 either way)."""
        path = self.audio_file(row)
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            raise MediaError(path, f"missing audio file [{row.where()}]") from None
        except OSError as e:
            raise MediaError(path, f"unreadable audio ({e}) [{row.where()}]") from None
        with fh:
            try:
                info = read_wav_header(fh, os.fstat(fh.fileno()).st_size)
            except (ValueError, struct.error) as e:
                raise MediaError(path, f"unreadable audio ({e}) [{row.where()}]") from None
            self._check_wav(path, row, info)
            window = centre is not None and info.frames >= self.aud_len
            start = T.window_start(info.frames, centre, self.aud_len) if window else 0
            count = self.aud_len if window else info.frames
            if info.pcm and info.bits == 16:
                wave = read_pcm16(fh, info, start, count, raw=raw)
            else:  # other encodings (24-bit, float, ...) through libsndfile
                wave = self._read_soundfile(path, row, start, count)
        if wave.shape[0] != count:
            raise MediaError(path, f"read {wave.shape[0]} samples, the header promised {count} "
                             f"(truncated file?) [{row.where()}]")
        return T.take_window(wave, centre, self.aud_len) if centre is not None and not window else wave

    def _read_context(self, row: IndexRow, centre: int) -> np.ndarray:
        """The window of ``_read_audio(row, centre)`` widened by ``audio_context`` samples each side, read from
        the same file and offsets (so its centre crop is that window bit for bit); MediaError if the file
        lacks the context (see ``set_audio_context``)."""
        path, s = self.audio_file(row), self.audio_context
        try:
            with open(path, "rb") as fh:
                info = read_wav_header(fh, os.fstat(fh.fileno()).st_size)
                self._check_wav(path, row, info)
                before, after = context_room(info.frames, centre, self.aud_len)
                if min(before, after) < s:
                    raise MediaError(path, f"clip {row.clip_id}: the audio shift needs {s} samples of context "
                                     f"each side of its {self.aud_len}-sample window; the file has {before} "
                                     f"before and {after} after it [{row.where()}]")
                start = T.window_start(info.frames, centre, self.aud_len) - s
                if info.pcm and info.bits == 16:
                    wave = read_pcm16(fh, info, start, self.aud_len + 2 * s, raw=self.raw)
                else:
                    wave = self._read_soundfile(path, row, start, self.aud_len + 2 * s)
        except FileNotFoundError:
            raise MediaError(path, f"missing audio file [{row.where()}]") from None
        except (OSError, ValueError, struct.error) as e:
            raise MediaError(path, f"unreadable audio ({e}) [{row.where()}]") from None
        if wave.shape[0] != self.aud_len + 2 * s:
            raise MediaError(path, f"read {wave.shape[0]} samples of context, expected {self.aud_len + 2 * s} "
                             f"[{row.where()}]")
        return np.ascontiguousarray(wave if self.raw else wave.astype(np.float32, copy=False))

    def _check_wav(self, path: str, row: IndexRow, info: "WavInfo") -> None:
        problem = wav_problem(info, self.aud_rate)
        if problem:
            raise MediaError(path, f"{problem} [{row.where()}]")

    @staticmethod
    def _read_soundfile(path: str, row: IndexRow, start: int, count: int) -> np.ndarray:
        import soundfile as sf  # only for WAVs that are not 16-bit PCM (GPU hosts may lack libsndfile)

        try:
            return sf.read(path, start=start, frames=count, dtype="float32", always_2d=False)[0]
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            raise MediaError(path, f"unreadable audio ({e}) [{row.where()}]") from None

    # ------------------------------------------------------------------------------------------ preload
    def _preload(self) -> None:
        """Decode once: every frame a sample can use (all frames in train mode, the eval window otherwise),
        resized to 1.1 x img_size as uint8, and every waveform as float32."""
        frames: Dict[Tuple[int, int], np.ndarray] = {}
        audio: Dict[int, np.ndarray] = {}
        for i, row in enumerate(tqdm(self.rows, desc="preload", leave=False, disable=None)):
            centre = self._choose_centre(row, None)  # also checks the clip is long enough
            if self.train:
                ks = range(1, row.num_frames + 1)
            else:
                ks = W.frame_indices(centre, self.num_frames, self.stride)
            self._check_last_frame(row)
            for k in ks:
                frames[(i, k)] = self._load_frame(i, row, k)
            audio[i] = self._read_audio(row, None)
        self._frame_cache, self._audio_cache = frames, audio
        mb = (sum(a.nbytes for a in frames.values()) + sum(a.nbytes for a in audio.values())) / 2 ** 20
        log.info("%s: preloaded %d frames and %d waveforms (%.1f MiB)", self.list_path, len(frames), len(audio), mb)


def context_room(total: int, centre: int, length: int) -> Tuple[int, int]:
    """Samples of a ``total``-sample file before and after the ``length`` window the loader reads around
    sample ``centre`` (``transforms.window_start``); (0, 0) for a file shorter than the window (it is
    tiled: there is no real context)."""
    if total < length:
        return 0, 0
    start = T.window_start(total, centre, length)
    return start, total - start - length


def worker_init(worker_id: int) -> None:
    """DataLoader worker set-up: one thread per worker for cv2 and torch (workers are the parallelism)."""
    cv2.setNumThreads(0)
    torch.set_num_threads(1)


def build_loader(dataset: Dataset, batch_size: int, workers: int, shuffle: bool,
                 sampler: Optional[Sampler] = None, seed: int = 0, drop_last: bool = False) -> DataLoader:
    """DataLoader over ``dataset``: persistent workers (so caches and decode flags survive epochs), a seeded
    shuffle generator, pinned memory when CUDA is available, ``dataset.batches.collate`` (raw transport: int16
    and float32 audio in one batch). ``shuffle`` and ``sampler`` are exclusive."""
    if shuffle and sampler is not None:
        raise ValueError("build_loader: give either shuffle=True or a sampler, not both")
    if batch_size < 1 or workers < 0:
        raise ValueError(f"build_loader: batch_size must be >= 1 and workers >= 0, got {batch_size}, {workers}")
    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=workers,
                      worker_init_fn=worker_init if workers > 0 else None, persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available(), drop_last=drop_last, generator=gen,
                      collate_fn=collate)
