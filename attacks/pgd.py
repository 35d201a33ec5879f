"""PGD: projected gradient descent on the L-infinity ball (Madry et al., ICLR 2018)."""
from __future__ import annotations

from attacks.base import ATTACKS, Attack


@ATTACKS.register("pgd")
class PGD(Attack):
    """Projected Gradient Descent, "Towards Deep Learning Models Resistant to Adversarial Attacks"
    (Madry, Makelov, Schmidt, Tsipras, Vladu, ICLR 2018, arXiv 1706.06083), with per-modality budgets as
    in Tian & Xu (CVPR 2021).

    Threat model: L-infinity, untargeted cross-entropy (targeted with ``targeted=True``). Each step
    ``x_m <- x_m + alpha_m * sign(grad_m)`` is followed by projection onto the eps-ball around the CLEAN
    input (never the current iterate) and onto the valid range (audio [-1, 1], visual [0, 1]).

    Arguments (through ``attacks.create_attack("pgd", model, ...)``):
        eps (dict): per-modality budget, e.g. ``{"audio": 0.006, "visual": 0.006}``; 0/absent = untouched.
        steps (int): 10 (paper).
        alpha (None | float | dict): step size; None (default) = eps/8 per modality (paper).
        random_start (bool): False (paper: no random start); True = uniform start in the eps-ball.
        restarts (int): 1; with random_start, per sample the first successful (else highest-loss)
            restart is kept, and only still-robust samples are attacked again.
        targeted (bool): False; eps_unit (str): "input" or "normalized"; seed (int): 0 (random starts).

    Example::

        >>> attack = create_attack("pgd", model, eps={"audio": 0.006, "visual": 0.006}, steps=10)
        >>> adv = attack({"audio": a, "visual": v}, labels)
    """

    name = "pgd"
    supports_random_start = True
