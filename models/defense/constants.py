"""The defense's settings: the paper's reference values (docs/paper.md, Defense) and a few tuning constants."""
from __future__ import annotations

from typing import Dict

# Paper constants (docs/paper.md, Defense, item 2).
DEFAULT_LAM = 0.1  # lambda of the L1 term, Tian & Xu 2021
PAPER_TOL = 8e-4  # ISTA tolerance of Tian & Xu 2021 (a threshold on the change of the iterate)
# Ours, not the paper's: relative duality gap per sample (a certified bound on the objective error).
DEFAULT_TOL = 1e-5
DEFAULT_MAX_ITER = 2000  # at most 2000 ISTA iterations, Tian & Xu 2021
DEFAULT_MIX = 0.5  # m = 0.5 in the paper; 0.6 noted for Kinetics-Sounds
DEFAULT_BANK_SIZE = 1024  # at most 1024 atoms per modality, Tian & Xu 2021
# Not a paper constant: iterations unrolled under autograd after the no-grad solve (see DefendedModel).
DEFAULT_GRAD_MAX_ITER = 100
# Paper's fixed ISTA steps per dataset (alpha_audio, alpha_visual), docs/paper.md, Defense;
# pass as DefendedModel(steps=).
PAPER_STEPS: Dict[str, Dict[str, float]] = {
    "music": {"audio": 1e-6, "visual": 6e-6},
    "ave": {"audio": 7e-7, "visual": 2e-6},
    "kinetics_sounds": {"audio": 5.8e-7, "visual": 2e-6},
}
MODALITIES = ("audio", "visual")
