"""Test-time corruptions of the model's inputs (visual frames, audio waveforms, or both), seeded per clip.

``corrupt(name, inputs, severity, seed, indices, sample_rate)`` applies one registered corruption to a batch;
``list_corruptions()`` names them. The package sits beside ``dataset/`` and imports only ``utils/``.
"""
from corruptions.base import (CORRUPTIONS, SEVERITIES, Corruption, check_severity, clip_rng, corrupt,
                              list_corruptions, parse_corruption_names, parse_severities, unusable)
from corruptions import visual, audio, bimodal  # noqa: F401,E402  (registration)

__all__ = ["CORRUPTIONS", "SEVERITIES", "Corruption", "check_severity", "clip_rng", "corrupt", "list_corruptions",
           "parse_corruption_names", "parse_severities", "unusable"]
