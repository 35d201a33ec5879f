"""Audio corruptions of one clip (1, L) in [-1, 1]; every output is clipped back to [-1, 1].

No benchmark fixes audio severities the way ImageNet-C fixes visual ones, so the severities are ours unless a
comment names a source: the noise SNRs follow AVRobustBench (Maharana et al., NeurIPS 2025, arXiv 2506.00358;
its released corruptions: 40/30/20/10/0 dB for its digital noises, 20/15/10/5/0 dB for its environmental
backgrounds). The signal processing is done by libraries the project already depends on (SciPy's Butterworth
filters, librosa's phase vocoder and resampler, libsndfile's MP3 encoder through soundfile); audiomentations
implements the same Gaussian SNR noise, clipping, low-pass, pitch shift and time stretch and is the tests'
peer for them (it works on one numpy clip with numpy's global random state, which is why it is not called
here).
"""
from __future__ import annotations

import io

import numpy as np
import torch

from corruptions.base import register_atom

AVROBUSTBENCH = "AVRobustBench (Maharana et al. 2025, arXiv 2506.00358)"


def _np(x: torch.Tensor) -> np.ndarray:
    """A (1, L) clip as a float64 numpy vector."""
    if x.dim() != 2 or x.shape[0] != 1:
        raise ValueError(f"an audio clip is (1, L), got shape {tuple(x.shape)}")
    return x[0].detach().double().cpu().numpy()


def _back(y: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A numpy vector back to a (1, L) clip shaped and typed like ``like``, clipped to [-1, 1]."""
    return torch.from_numpy(np.clip(np.asarray(y, dtype=np.float64), -1, 1)).to(like.device, like.dtype)[None]


def rms(y: np.ndarray) -> float:
    """Root mean square of a vector."""
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))


@register_atom("audio_gaussian_noise", "audio", AVROBUSTBENCH)
def audio_gaussian_noise(x: torch.Tensor, severity: int, rng: np.random.RandomState, sample_rate: int
                         ) -> torch.Tensor:
    """White Gaussian noise at an SNR of 40, 30, 20, 10, 0 dB to the clip's RMS (a silent clip stays silent)."""
    snr = [40, 30, 20, 10, 0][severity - 1]  # AVRobustBench NOISE_SNRS (its gaussian/impulse/shot/speckle audio)
    y = _np(x)
    noise = rng.normal(0.0, rms(y) / 10 ** (snr / 20), size=y.shape)
    return _back(y + noise, x)


def brown_noise(n: int, rng: np.random.RandomState) -> np.ndarray:
    """Brown (1/f^2, "rumble" or wind-like) noise of unit RMS: integrated white noise with its mean and linear
    trend removed, so that it has no DC offset or drift."""
    walk = np.cumsum(rng.normal(size=n))
    t = np.arange(n)
    walk -= np.polyval(np.polyfit(t, walk, 1), t) if n > 1 else walk
    r = rms(walk)
    return walk / r if r > 0 else walk


@register_atom("background_noise", "audio", AVROBUSTBENCH)
def background_noise(x: torch.Tensor, severity: int, rng: np.random.RandomState, sample_rate: int) -> torch.Tensor:
    """Brown background noise mixed at an SNR of 20, 15, 10, 5, 0 dB (AVRobustBench's environmental SNRs). It
    mixes recorded wind, rain or crowd sounds; no recordings ship with this project, so ours is synthetic
    brown noise, whose spectrum falls like wind or traffic rumble."""
    snr = [20, 15, 10, 5, 0][severity - 1]  # AVRobustBench add_env_noise SNRs
    y = _np(x)
    return _back(y + brown_noise(y.shape[0], rng) * rms(y) / 10 ** (snr / 20), x)


@register_atom("clipping", "audio", "ours (audiomentations ClippingDistortion's definition)")
def clipping(x: torch.Tensor, severity: int, rng: np.random.RandomState, sample_rate: int) -> torch.Tensor:
    """Hard clipping of p = 10, 20, 40, 60, 80 % of the samples: everything below the (p/2)-th or above the
    (100 - p/2)-th percentile of the clip is set to that percentile (an overdriven recorder)."""
    p = [10, 20, 40, 60, 80][severity - 1]  # ours
    y = _np(x)
    lo, hi = np.percentile(y, [p // 2, 100 - p // 2])
    return _back(np.clip(y, lo, hi), x)


LOWPASS_ORDER = 2  # Butterworth order, run forwards and backwards (zero phase): 24 dB/octave overall


@register_atom("low_pass", "audio", "ours (cutoffs); AVRobustBench's compression audio is a low-pass too")
def low_pass(x: torch.Tensor, severity: int, rng: np.random.RandomState, sample_rate: int) -> torch.Tensor:
    """Zero-phase Butterworth low-pass at 4000, 3000, 2000, 1000, 500 Hz (a muffled microphone or a cheap
    codec's band limit). AVRobustBench low-passes at 8000..1000 Hz for 16 kHz audio; at the paper's 11025 Hz
    its first two cutoffs are above Nyquist, so ours are lower."""
    from scipy.signal import butter, sosfiltfilt

    cutoff = [4000, 3000, 2000, 1000, 500][severity - 1]  # ours, see the docstring
    if cutoff >= sample_rate / 2:
        raise ValueError(f"low_pass severity {severity}: cutoff {cutoff} Hz is not below Nyquist "
                         f"({sample_rate / 2:g} Hz at {sample_rate} Hz)")
    sos = butter(LOWPASS_ORDER, cutoff, btype="lowpass", fs=sample_rate, output="sos")
    return _back(sosfiltfilt(sos, _np(x)), x)


@register_atom("mp3", "audio", "ours (levels); libsndfile's LAME encoder")
def mp3(x: torch.Tensor, severity: int, rng: np.random.RandomState, sample_rate: int) -> torch.Tensor:
    """MP3 round trip at a constant bit rate through libsndfile (soundfile): compression level 0.2, 0.4, 0.6,
    0.7, 0.95, which at 11025 Hz are 61, 51, 40, 29 and 10 kbit/s (measured). The decoder's output may start
    with the codec's delay (1105 samples at the low rates): it is removed by aligning the decoded signal
    with the input (the lag of least squared error), then the clip's length is kept."""
    import soundfile as sf
    from scipy.signal import correlate

    level = [0.2, 0.4, 0.6, 0.7, 0.95][severity - 1]  # ours, see the docstring
    y = _np(x)
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), sample_rate, format="MP3", compression_level=level,
             bitrate_mode="CONSTANT")
    buf.seek(0)
    dec, _ = sf.read(buf, dtype="float64")
    n = y.shape[0]
    if dec.shape[0] < n:
        dec = np.concatenate([dec, np.zeros(n - dec.shape[0])])
    if dec.shape[0] > n:  # squared error of each lag: sum(dec[l:l+n]^2) - 2 <dec[l:l+n], y> (+ const)
        energy = np.convolve(dec ** 2, np.ones(n), mode="valid")
        lag = int(np.argmin(energy - 2 * correlate(dec, y, mode="valid", method="fft")))
        dec = dec[lag:lag + n]
    return _back(dec, x)


@register_atom("pitch_shift", "audio", "ours (semitones); librosa's pitch_shift")
def pitch_shift(x: torch.Tensor, severity: int, rng: np.random.RandomState, sample_rate: int) -> torch.Tensor:
    """Pitch shifted by 1, 2, 3, 4, 6 semitones, up or down (drawn once per clip), duration kept (librosa: phase
    vocoder time stretch, then soxr_hq resampling)."""
    import librosa

    steps = [1, 2, 3, 4, 6][severity - 1]  # ours
    sign = 1 if rng.uniform() < 0.5 else -1
    y = librosa.effects.pitch_shift(_np(x).astype(np.float32), sr=sample_rate, n_steps=sign * steps,
                                    res_type="soxr_hq")
    return _back(y, x)


@register_atom("time_stretch", "audio", "ours (rates); librosa's time_stretch")
def time_stretch(x: torch.Tensor, severity: int, rng: np.random.RandomState, sample_rate: int) -> torch.Tensor:
    """Slowed down to rate 0.95, 0.9, 0.8, 0.7, 0.5 of its speed (pitch kept, librosa's phase vocoder), then cut
    to the clip's length from its start (the slowed clip is longer, so nothing is padded)."""
    import librosa

    rate = [0.95, 0.9, 0.8, 0.7, 0.5][severity - 1]  # ours
    y = _np(x)
    out = librosa.effects.time_stretch(y.astype(np.float32), rate=rate)[:y.shape[0]]
    if out.shape[0] < y.shape[0]:  # never for rate < 1 beyond librosa's rounding of the last frame
        out = np.concatenate([out, np.zeros(y.shape[0] - out.shape[0], dtype=out.dtype)])
    return _back(out, x)
