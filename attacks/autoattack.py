"""AutoAttack (Croce & Hein, ICML 2020): the standard ensemble over dicts of modalities, with its flags."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
import torch.nn as nn

from attacks.apgd import APGDCE, APGDT
from attacks.base import ATTACKS, Attack, forward
from attacks.sanity import check_flags, merge_checks, model_checks
from attacks.square import Square
from utils.modes import model_mode

logger = logging.getLogger(__name__)

VERSIONS = ("standard", "plus")


@ATTACKS.register("autoattack")
class AutoAttack(Attack):
    """AutoAttack, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
    attacks" (Croce & Hein, ICML 2020, arXiv 2003.01690): apgd-ce, then apgd-t, then square, each on the
    samples still classified correctly; per sample the first adversarial example found is kept (the
    per-sample worst case). fab-t is not part of this ensemble (not implemented here).

    Threat model: per modality ``Linf``, ``L2`` or (audio) ``snr``; the budget of every stage is the same
    product of per-modality balls intersected with the valid ranges.

    After one or more calls, ``.report`` is a dict over every sample attacked so far: ``robust_acc``,
    ``clean_acc``, ``per_attack`` (robust accuracy after each stage), ``n``, ``square_queries`` (mean) and
    ``flags`` (list of strings): zero input gradient per modality, randomness, probabilities as outputs
    (``attacks.sanity``), and the black box (square) succeeding where both white-box attacks failed.

    Arguments (``attacks.create_attack("autoattack", model, eps=..., ...)``):
        eps (dict), norm (str | dict): as for every attack ("Linf" default).
        version (str): "standard" (apgd 1 restart, apgd-t 9 targets, square 5000 queries) or "plus"
            (apgd-ce and apgd-t with 5 restarts).
        steps (int): 100 APGD iterations; n_queries (int): 5000; p_init (float): 0.8;
        n_target_classes (int): 9; restarts (int | None): None = the version's; seed (int): 0;
        eps_unit (str): "input" or "normalized".

    Example::

        >>> aa = create_attack("autoattack", model, eps={"visual": 8 / 255, "audio": 0.006})
        >>> adv = aa({"audio": a, "visual": v}, labels)
        >>> aa.report["robust_acc"], aa.report["flags"]
    """

    name = "autoattack"
    in_all = False
    min_classes = APGDT.min_classes  # its second stage
    grid_options = False

    def __init__(self, model: nn.Module, eps: Mapping[str, float], version: str = "standard", steps: int = 100,
                 n_queries: int = 5000, p_init: float = 0.8, n_target_classes: int = 9,
                 restarts: Optional[int] = None, seed: int = 0, eps_unit: str = "input",
                 norm: Union[str, Mapping[str, str], None] = "Linf") -> None:
        super().__init__(model, eps, steps=steps, seed=seed, eps_unit=eps_unit, norm=norm)
        if version not in VERSIONS:
            raise ValueError(f"unknown version {version!r}; valid: {', '.join(VERSIONS)}")
        self.version = version
        r = restarts if restarts is not None else (5 if version == "plus" else 1)
        common = dict(seed=seed, eps_unit=eps_unit, norm=norm)
        self.stages: List[Attack] = [
            APGDCE(model, eps, steps=steps, restarts=r, **common),
            APGDT(model, eps, steps=steps, restarts=r, n_target_classes=n_target_classes, **common),
            Square(model, eps, n_queries=n_queries, p_init=p_init, **common),
        ]
        self.reset_report()

    def reset_report(self) -> None:
        """Forget the counts of earlier calls."""
        self._n = 0
        self._clean = 0
        self._robust = {s.name: 0 for s in self.stages}
        self._square_wins = 0
        self._checks: Dict[str, Any] = {}

    @property
    def report(self) -> Dict[str, Any]:
        n = max(self._n, 1)
        flags = check_flags(self._checks)
        if self._square_wins:
            flags.append(f"black box beats white box: square fooled {self._square_wins} samples that apgd-ce and "
                         "apgd-t did not (gradient masking likely)")
        sq = self.stages[-1].query_stats
        return {"robust_acc": self._robust[self.stages[-1].name] / n, "clean_acc": self._clean / n,
                "per_attack": {"clean": self._clean / n, **{k: v / n for k, v in self._robust.items()}},
                "n": self._n, "square_queries": sq[0] / sq[1] if sq[1] else None, "flags": flags}

    def _run_restarts(self, clean, fixed, labels, threats) -> Dict[str, torch.Tensor]:
        inputs = {**fixed, **clean}
        merge_checks(self._checks, model_checks(self.model, inputs, labels, self.attacked))
        with torch.no_grad():
            robust = forward(self.model, inputs).argmax(dim=1) == labels
        self._n += labels.numel()
        self._clean += int(robust.sum())
        best = {m: x.clone() for m, x in clean.items()}
        for stage in self.stages:
            todo = robust.nonzero().flatten()
            if todo.numel():
                sub = {m: (x[todo] if x is not None else None) for m, x in inputs.items()}
                with model_mode(self.model, training=False):
                    adv = stage(sub, labels[todo])
                with torch.no_grad():
                    fooled = forward(self.model, adv).argmax(dim=1) != labels[todo]
                idx = todo[fooled]
                for m in best:  # the first stage's points everywhere (robust ones too), later ones where they fool
                    if stage is self.stages[0]:
                        best[m][todo] = adv[m]
                    else:
                        best[m][idx] = adv[m][fooled]
                robust[idx] = False
                if stage is self.stages[-1]:
                    self._square_wins += int(fooled.sum())
                logger.info("autoattack %s: %d/%d fooled", stage.name, int(fooled.sum()), todo.numel())
            self._robust[stage.name] += int(robust.sum())
        return best
