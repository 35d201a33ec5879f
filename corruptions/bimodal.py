"""Bimodal corruptions: one visual and one audio corruption of the same clip at the same severity, as
AVRobustBench (Maharana et al., NeurIPS 2025, arXiv 2506.00358, Section 3) builds its co-occurring,
correlated corruptions. The pairs follow those of its 15 whose parts exist here:

- ``av_gaussian_noise``: its "Gaussian" (ImageNet-C Gaussian noise on frames, Gaussian noise on audio at an SNR
  of 40..0 dB);
- ``av_compression``: its "compression" (ImageNet-C JPEG on frames, a low-pass on audio; our cutoffs, see
  ``low_pass``);
- ``av_wind``: its "wind" (ImageNet-C motion blur on frames, wind noise on audio at 20..0 dB; ours is synthetic
  brown noise, see ``background_noise``: no recordings ship with the project).

``av_codec`` (JPEG frames with MP3 audio: a badly streamed video) is ours. Its environmental pairs that need
recorded sounds or textures (snow, frost, rain, spatter, underwater, concert, crowd, interference) are not
reproduced.
"""
from __future__ import annotations

from corruptions.base import register_pair

AVRB = "AVRobustBench (Maharana et al. 2025), Section 3"

register_pair("av_gaussian_noise", "gaussian_noise", "audio_gaussian_noise", AVRB + ": gaussian")
register_pair("av_compression", "jpeg", "low_pass", AVRB + ": compression")
register_pair("av_wind", "motion_blur", "background_noise", AVRB + ": wind (synthetic wind noise)")
register_pair("av_codec", "jpeg", "mp3", "ours")
