"""Audio networks on the raw waveform, registered by name in ``AUDIO_NETS``.

Every net takes a waveform ``(B, 1, L)`` in [-1, 1] and returns a ``(B, out_dim)`` feature. Each exposes
``out_dim`` and ``min_length`` (the shortest ``L`` it accepts); shorter inputs raise a ``ValueError``.

* ``anet``: the reference raw-waveform VGG-style 1-D CNN (docs/paper.md, Model): 4 blocks of two stride-2
  Conv1d+BN+ReLU followed by MaxPool, channels 64/128/256/512, global max pool -> 512-d.
* ``anet_lite``: the same net with channels 16/32/64/512 (same strides, same 512-d output): the embedded
  dataset's CPU demo net, not a paper setting.
* ``vggish``: a VGGish-style 2-D CNN on a log-mel spectrogram computed *inside* the model (torch.stft and
  a librosa mel filterbank held as a buffer), so attacks and gradients stay on the waveform.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, List, Sequence

import librosa
import torch
from torch import Tensor, nn

from utils.registry import Registry

logger = logging.getLogger(__name__)

AUDIO_NETS: Registry[Callable[..., nn.Module]] = Registry("audio net")


def check_waveform(x: Tensor, min_length: int, name: str) -> None:
    """Raise a ``ValueError`` unless ``x`` is a float ``(B, 1, L)`` waveform with ``L >= min_length``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: audio must be a torch.Tensor (B, 1, L), got {type(x).__name__}")
    if x.dim() != 3 or x.shape[1] != 1:
        raise ValueError(f"{name}: audio must have shape (B, 1, L), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: audio must be a float waveform in [-1, 1], got dtype {x.dtype}")
    if x.shape[-1] < min_length:
        raise ValueError(
            f"{name}: audio length {x.shape[-1]} is shorter than the minimum {min_length} samples this net accepts"
        )


# ---------------------------------------------------------------------------------------------- anet
_ANET_CHANNELS = (64, 128, 256, 512)  # docs/paper.md, Model: channels 64,128,256,512
# anet_lite: the first three blocks at a quarter of the width, the last at 512 so that the feature keeps the
# visual net's 512 dimensions (MinSim compares the two). Not a paper value: a CPU budget for the embedded
# dataset's demo, where the full-width first blocks cost ~6x as much (benchmarks/bench_models.py).
_ANET_LITE_CHANNELS = (16, 32, 64, 512)
_ANET_KERNEL = 3  # VGG-style 3-tap kernels (our choice; the paper only fixes stride 2 and the channels)
_ANET_POOL = 2  # MaxPool1d(2) closing each block (our choice of pool size)


def _anet_out_length(length: int) -> int:
    """Temporal length after the four anet blocks for an input of ``length`` samples (<= 0: too short)."""
    pad = _ANET_KERNEL // 2
    for _ in _ANET_CHANNELS:
        for _ in range(2):  # two stride-2 convs per block
            length = (length + 2 * pad - _ANET_KERNEL) // 2 + 1
            if length <= 0:
                return 0
        length //= _ANET_POOL
    return length


def _min_length(out_length: Callable[[int], int]) -> int:
    """Smallest input length whose output length is >= 1 (output length is monotone in the input)."""
    lo, hi = 1, 1
    while out_length(hi) < 1:
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if out_length(mid) >= 1:
            hi = mid
        else:
            lo = mid + 1
    return lo


class ANet(nn.Module):
    """Raw-waveform VGG-style 1-D CNN (the reference audio net); ``channels[-1]``-d output (512 for both nets).

    Input ``(B, 1, L)`` in [-1, 1] with ``L >= ANet.min_length`` (2341 samples); the paper feeds 65535
    samples (~5.9 s at 11025 Hz). Each block halves the length three times (two stride-2 convs, a pool),
    so the temporal map has ``~L / 4096`` steps before the global max pool.
    """

    min_length: int = _min_length(_anet_out_length)

    def __init__(self, channels: Sequence[int] = _ANET_CHANNELS) -> None:
        super().__init__()
        if len(channels) != len(_ANET_CHANNELS) or min(channels) < 1:
            raise ValueError(f"anet needs {len(_ANET_CHANNELS)} positive block widths, got {tuple(channels)}")
        self.out_dim = int(channels[-1])
        layers: List[nn.Module] = []
        c_in = 1
        for c_out in channels:
            for _ in range(2):
                layers += [
                    nn.Conv1d(c_in, c_out, _ANET_KERNEL, stride=2, padding=_ANET_KERNEL // 2, bias=False),
                    nn.BatchNorm1d(c_out),
                    nn.ReLU(inplace=True),
                ]
                c_in = c_out
            layers.append(nn.MaxPool1d(_ANET_POOL))
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 1, L)`` waveform -> ``(B, out_dim)`` feature (global max over time)."""
        check_waveform(x, self.min_length, "anet")
        return self.features(x).amax(dim=-1)


# -------------------------------------------------------------------------------------------- vggish
VGGISH_WINDOW_S = 0.025  # VGGish: 25 ms STFT window
VGGISH_HOP_S = 0.010  # VGGish: 10 ms hop
VGGISH_N_MELS = 64  # VGGish: 64 mel bands
VGGISH_FMIN = 125.0  # VGGish: lowest mel edge 125 Hz
VGGISH_FMAX = 7500.0  # VGGish: highest mel edge 7500 Hz (clamped to Nyquist for lower sample rates)
VGGISH_LOG_OFFSET = 0.01  # VGGish: log(mel + 0.01)
_VGGISH_CHANNELS = (64, 128, (256, 256), (512, 512))  # VGGish conv stacks, each closed by a 2x2 max pool


class LogMel(nn.Module):
    """Waveform ``(B, 1, L)`` -> VGGish log-mel ``(B, 1, frames, n_mels)``, differentiable in the input.

    Magnitude STFT (periodic Hann window of ``round(0.025 * rate)`` samples zero-padded to the next power of
    two, hop ``round(0.010 * rate)``, no centring: frames start at sample 0 as in VGGish), an HTK mel
    filterbank from ``librosa.filters.mel`` (buffer ``mel_fb``, shape ``(n_mels, n_fft // 2 + 1)``), then
    ``log(mel + 0.01)``.
    """

    def __init__(self, audio_rate: int) -> None:
        super().__init__()
        if audio_rate <= 0:
            raise ValueError(f"audio_rate must be a positive sample rate in Hz, got {audio_rate}")
        self.audio_rate = int(audio_rate)
        self.win_length = int(round(VGGISH_WINDOW_S * audio_rate))
        self.hop_length = int(round(VGGISH_HOP_S * audio_rate))
        self.n_fft = 2 ** int(math.ceil(math.log2(self.win_length)))
        self.fmax = min(VGGISH_FMAX, audio_rate / 2.0)
        if self.fmax < VGGISH_FMAX:
            logger.warning(
                "vggish: audio_rate %d Hz has Nyquist %.1f Hz < VGGish's 7500 Hz; mel bands span %.0f-%.1f Hz",
                audio_rate, audio_rate / 2.0, VGGISH_FMIN, self.fmax,
            )
        fb = librosa.filters.mel(
            sr=audio_rate, n_fft=self.n_fft, n_mels=VGGISH_N_MELS, fmin=VGGISH_FMIN, fmax=self.fmax, htk=True
        )
        self.register_buffer("mel_fb", torch.from_numpy(fb).float())
        self.register_buffer("window", torch.hann_window(self.win_length, periodic=True))

    def num_frames(self, length: int) -> int:
        """Number of STFT frames for ``length`` samples (0 when shorter than one FFT frame)."""
        return 0 if length < self.n_fft else (length - self.n_fft) // self.hop_length + 1

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 1, L)`` -> ``(B, 1, frames, n_mels)`` log-mel spectrogram."""
        spec = torch.stft(
            x[:, 0], n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
            window=self.window, center=False, return_complex=True,
        ).abs()  # (B, freq, frames)
        mel = torch.matmul(self.mel_fb, spec)  # (B, n_mels, frames)
        return torch.log(mel + VGGISH_LOG_OFFSET).transpose(1, 2).unsqueeze(1)


def _conv_bn(c_in: int, c_out: int) -> List[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class VGGish(nn.Module):
    """VGGish-style 2-D CNN on an in-model log-mel spectrogram, 512-d output (global max pool).

    Conv stacks 64 / 128 / 256x2 / 512x2 of 3x3 convs, each stack closed by a 2x2 max pool, as in VGGish;
    unlike the original we add BatchNorm after each conv and replace its fully connected layers by a
    global max pool. Four pools need at least 16 STFT frames, hence ``min_length`` samples.
    """

    out_dim: int = 512

    def __init__(self, audio_rate: int) -> None:
        super().__init__()
        self.logmel = LogMel(audio_rate)
        layers: List[nn.Module] = []
        c_in = 1
        for stack in _VGGISH_CHANNELS:
            widths: Sequence[int] = stack if isinstance(stack, tuple) else (stack,)
            for c_out in widths:
                layers += _conv_bn(c_in, c_out)
                c_in = c_out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        n_pools = len(_VGGISH_CHANNELS)
        min_frames = 2 ** n_pools
        self.min_length = self.logmel.n_fft + (min_frames - 1) * self.logmel.hop_length

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 1, L)`` waveform -> ``(B, 512)`` feature."""
        check_waveform(x, self.min_length, "vggish")
        return self.features(self.logmel(x)).amax(dim=(-2, -1))


@AUDIO_NETS.register("anet")
def build_anet(audio_rate: int = 11025) -> ANet:
    """The reference raw-waveform 1-D CNN; ``audio_rate`` is accepted for a uniform signature and unused."""
    return ANet()


@AUDIO_NETS.register("anet_lite")
def build_anet_lite(audio_rate: int = 11025) -> ANet:
    """anet with narrow early blocks (16/32/64/512 channels, same strides and 512-d output): the CPU demo's net."""
    return ANet(_ANET_LITE_CHANNELS)


@AUDIO_NETS.register("vggish")
def build_vggish(audio_rate: int = 11025) -> VGGish:
    """VGGish-style CNN whose log-mel front end is built for ``audio_rate`` Hz."""
    return VGGish(audio_rate)


def create_audio_net(name: str, audio_rate: int = 11025) -> nn.Module:
    """Build the audio net registered as ``name``; unknown names raise ``KeyError`` listing valid ones."""
    return AUDIO_NETS.get(name)(audio_rate=audio_rate)
