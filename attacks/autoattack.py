"""AutoAttack (Croce & Hein, ICML 2020): the ensemble's versions over dicts of modalities, with its flags."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

from attacks.apgd import APGDT
from attacks.base import ATTACKS, Attack, check_int, forward
from attacks.sanity import check_flags, merge_checks, model_checks, require_eot
from utils.modes import model_mode

logger = logging.getLogger(__name__)

# fra31/auto-attack, autoattack.py ``set_version`` for Linf/L2 (and the attacks it builds in ``__init__``:
# APGD 100 iterations, Square p_init 0.8 with resc_schedule=False, FAB 100 iterations): per version the
# attacks in the order they run, each with its own settings.
VERSIONS: Dict[str, Tuple[Tuple[str, Dict[str, Any]], ...]] = {
    "standard": (("apgd-ce", {"restarts": 1}),
                 ("apgd-t", {"restarts": 1, "n_target_classes": 9}),
                 ("fab-t", {"restarts": 1, "n_target_classes": 9}),
                 ("square", {"n_queries": 5000})),
    "plus": (("apgd-ce", {"restarts": 5}),
             ("apgd-dlr", {"restarts": 5}),
             ("fab", {"restarts": 5}),
             ("square", {"n_queries": 5000}),
             ("apgd-t", {"restarts": 1, "n_target_classes": 9}),
             ("fab-t", {"restarts": 1, "n_target_classes": 9})),
    # for randomised defences: APGD with the gradient averaged over 20 draws (EOT), 1 restart
    "rand": (("apgd-ce", {"restarts": 1, "eot_iter": 20}),
             ("apgd-dlr", {"restarts": 1, "eot_iter": 20})),
}
# What the command line may scale down for every stage that takes it (the demo runs AutoAttack at demo scale).
_SCALED = {"steps": ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t"), "n_target_classes": ("apgd-t", "fab-t"),
           "n_queries": ("square",), "p_init": ("square",)}


def parse_leave_out(version: str, text: str) -> List[str]:
    """The stage names of ``leave_out`` ("fab-t+square"): each a stage of ``version``, not all of them."""
    names = [n.strip() for n in (text or "").split("+") if n.strip()]
    stages = [n for n, _ in VERSIONS[version]]
    unknown = [n for n in names if n not in stages]
    if unknown:
        raise ValueError(f"autoattack leave_out: {', '.join(unknown)} not a stage of version {version!r} "
                         f"(its stages: {', '.join(stages)})")
    if set(names) >= set(stages):
        raise ValueError(f"autoattack leave_out={text!r} leaves out every stage of version {version!r}")
    return names


def check_autoattack_args(options: Mapping[str, Any]) -> List[str]:
    """The version and the stages left out, checked (``--attack_args autoattack:...`` before any work, and the
    constructor): the names left out; ValueError naming the valid ones."""
    version = options.get("version", "standard")
    if version not in VERSIONS:
        raise ValueError(f"autoattack: unknown version {version!r}; valid: {', '.join(VERSIONS)}")
    return parse_leave_out(version, options.get("leave_out", ""))


@ATTACKS.register("autoattack")
class AutoAttack(Attack):
    """AutoAttack, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
    attacks" (Croce & Hein, ICML 2020, arXiv 2003.01690): the attacks of a version run in turn, each on the
    samples still classified correctly; per sample the first adversarial example found is kept (the
    per-sample worst case). The versions are fra31/auto-attack's (``VERSIONS``):

    * ``standard``: apgd-ce (1 restart), apgd-t (9 targets, 1 restart each), fab-t (9 targets), square
      (5000 queries, p schedule not rescaled);
    * ``plus``: apgd-ce (5 restarts), apgd-dlr (5 restarts), fab (5 restarts), square, apgd-t, fab-t;
    * ``rand``: apgd-ce and apgd-dlr, 1 restart, each gradient averaged over 20 draws (EOT).

    An attack of a version that is not registered is not run: a warning is logged and ``.report["missing"]``
    names it, so every result says which part of the ensemble it lacks (every attack of the three versions is
    implemented: fab and fab-t in ``attacks/fab.py``).

    Randomised models (EOT, Athalye et al., ICML 2018): ``eot_iter`` N > 1 averages every gradient of the
    gradient stages over N passes (``Attack._eot_grads``); the "rand" version uses 20 (fra31's
    ``set_version('rand')``: ``apgd.eot_iter = 20``) unless a larger N is given. A model whose two forward
    passes on the same input differ (``attacks.sanity.is_stochastic``) is refused without EOT: the call raises
    ``UsageError`` naming ``--eot`` (the randomness check asks for EOT instead of only flagging it).

    Threat model: per modality ``Linf``, ``L2`` or (audio) ``snr``; the budget of every stage is the same
    product of per-modality balls intersected with the valid ranges.

    After one or more calls, ``.report`` is a dict over every sample attacked so far: ``robust_acc``,
    ``clean_acc``, ``per_attack`` (robust accuracy after each stage), ``n``, ``square_queries`` (mean, None
    without square), ``missing`` (the version's attacks not run) and ``flags`` (list of strings): zero input
    gradient per modality, randomness, probabilities as outputs (``attacks.sanity``), and the black box
    (square) succeeding where the white-box attacks before it failed.

    Arguments (``attacks.create_attack("autoattack", model, eps=..., ...)``):
        eps (dict), norm (str | dict): as for every attack ("Linf" default).
        version (str): "standard", "plus" or "rand".
        steps (int): 100 iterations of every apgd/fab stage; n_queries (int): 5000; p_init (float): 0.8;
        n_target_classes (int): 9 (apgd-t, fab-t): the version's values, given smaller to scale it down;
        seed (int): 0; eps_unit (str): "input" or "normalized".
        eot_iter (int): 1 (standard, plus), 20 (rand): gradients averaged over that many passes (EOT).
        leave_out (str): stages of the version not to run, joined by "+" (e.g. "fab-t"; on the command line
            ``--attack_args autoattack:leave_out=fab-t``): a cheaper, weaker ensemble, named in
            ``.report["missing"]`` as "NAME (left out)" so no result passes for the whole version.

    Example::

        >>> aa = create_attack("autoattack", model, eps={"visual": 8 / 255, "audio": 0.006})
        >>> adv = aa({"audio": a, "visual": v}, labels)
        >>> aa.report["robust_acc"], aa.report["flags"], aa.report["missing"]
    """

    name = "autoattack"
    in_all = False
    min_classes = APGDT.min_classes  # apgd-t's targeted DLR loss (standard, plus); rand's apgd-dlr needs fewer
    flag_args = {"steps": "apgd_steps", "n_target_classes": "apgd_targets", "n_queries": "square_queries",
                 "eot_iter": "eot"}
    batch_dependent = "its apgd stages start at noise drawn for the whole batch, and square draws per batch"

    def __init__(self, model: nn.Module, eps: Mapping[str, float], version: str = "standard", steps: int = 100,
                 n_queries: int = 5000, p_init: float = 0.8, n_target_classes: int = 9, seed: int = 0,
                 eps_unit: str = "input", norm: Union[str, Mapping[str, str], None] = "Linf",
                 eot_iter: int = 1, leave_out: str = "") -> None:
        self.steps = check_int("steps", steps)
        super().__init__(model, eps, seed=seed, eps_unit=eps_unit, norm=norm, eot_iter=eot_iter)
        left_out = check_autoattack_args({"version": version, "leave_out": leave_out})
        self.version = version
        scaled = {"steps": steps, "n_target_classes": n_target_classes, "n_queries": n_queries, "p_init": p_init}
        common = dict(seed=seed, eps_unit=eps_unit, norm=norm)
        self.stages: List[Attack] = []
        self.missing: List[str] = []
        absent: List[str] = []  # the version's attacks not implemented here
        for name, options in VERSIONS[version]:
            if name in left_out:
                self.missing.append(f"{name} (left out)")
                continue
            if name not in ATTACKS:
                absent.append(name)
                self.missing.append(name)
                continue
            opts = {**options, **{k: v for k, v in scaled.items() if name in _SCALED[k]}, **common}
            if ATTACKS.get(name).takes("eot_iter"):  # the version's EOT (rand: 20) or the caller's, the larger
                opts["eot_iter"] = max(options.get("eot_iter", 1), eot_iter)
            self.stages.append(ATTACKS.get(name)(model, eps, **opts))
        if left_out:
            logger.info("autoattack %s without %s (leave_out): the result is that smaller ensemble's",
                        version, " and ".join(left_out))
        if absent:
            logger.warning("autoattack %s: %s not implemented here, so not run; the result is the ensemble "
                           "without %s (report['missing'])", version, ", ".join(absent), " and ".join(absent))
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
        names = [s.name for s in self.stages]
        if self._square_wins:
            before = names[:names.index("square")]
            flags.append(f"black box beats white box: square fooled {self._square_wins} samples that "
                         f"{' and '.join(before)} did not (gradient masking likely)")
        sq = next((s.query_stats for s in self.stages if s.name == "square"), [0.0, 0])
        return {"robust_acc": self._robust[names[-1]] / n, "clean_acc": self._clean / n,
                "per_attack": {"clean": self._clean / n, **{k: v / n for k, v in self._robust.items()}},
                "n": self._n, "square_queries": sq[0] / sq[1] if sq[1] else None,
                "missing": list(self.missing), "flags": flags}

    def take_queries(self) -> Optional[torch.Tensor]:
        """The last stage's queries (square's in the standard version), for the grid's queries column."""
        return self.stages[-1].take_queries() if self.stages else None

    @property
    def stage_eot(self) -> int:
        """The fewest EOT passes of a gradient stage (1 without EOT; every stage gradient-free: 0)."""
        return min((s.eot_iter for s in self.stages if s.gradient_loss is not None), default=0)

    def _run_restarts(self, clean, fixed, labels, threats) -> Dict[str, torch.Tensor]:
        inputs = {**fixed, **clean}
        checks = model_checks(self.model, inputs, labels, self.attacked)
        if checks["random"] and self.stage_eot == 1:
            require_eot(f"autoattack {self.version}")
        merge_checks(self._checks, checks)
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
                if stage.name == "square" and stage is not self.stages[0]:
                    self._square_wins += int(fooled.sum())
                logger.info("autoattack %s: %d/%d fooled", stage.name, int(fooled.sum()), todo.numel())
            self._robust[stage.name] += int(robust.sum())
        return best
