"""The reference code's command-line conventions (YapengTian/AV-Robustness-CVPR21, its scripts/*.sh), so its
published option strings run here: space-separated lists, its spelling of FGSM, the dataset recognised
from ``--categories``, and its options without a meaning in this project (``--dic``, ``--loss``,
``--num_mix``, ``--log_freq``, ``--num_gpus``) honoured or accepted with one warning line each saying what
happens instead. Used by pipeline/config.py; the options themselves are declared in pipeline/flags.py.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any, List, Optional, Sequence

from dataset.specs import CUSTOM, get_spec, named_datasets
from utils.errors import UsageError

log = logging.getLogger(__name__)
# RunConfig fields of the reference options, none of which changes an evaluation's numbers
NO_EFFECT = ("dic", "loss", "num_mix", "log_freq", "num_gpus", "weights_classifier")


def int_list(text: str) -> List[int]:
    """One --lr_steps token: ``10`` or ``10,20`` (the reference passes ``--lr_steps 10 20``)."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epoch numbers, got {text!r}") from None


def flatten(groups: Optional[Sequence[Any]]) -> Optional[List[Any]]:
    """``nargs="+"`` of comma lists -> one flat list (``a b,c`` -> ``[a, b, c]``); flat lists pass as they are."""
    if groups is None:
        return None
    return [x for g in groups for x in (g if isinstance(g, (list, tuple)) else [g])]


def dataset_of(categories: Sequence[str]) -> str:
    """Without --dataset, the spec whose class list --categories is (the reference's scripts name the classes,
    never a dataset), else ``custom``: a dataset of the user's own, with the paper's defaults (dataset/specs.py)."""
    for name in named_datasets():
        if list(get_spec(name).categories) == list(categories):
            log.info("--categories are the %s classes: using --dataset %s defaults", name, name)
            return name
    log.info("--categories are in no dataset spec: a dataset of your own (--dataset %s, the paper's defaults)",
             CUSTOM)
    return CUSTOM


def check_reference_options(ns: argparse.Namespace, given: Sequence[str]) -> None:
    """The reference-code options (group "reference" of pipeline/flags.py): honoured values pass, the rest is an error, and the
    ones without a meaning here log one warning line each saying what the project does instead."""
    if getattr(ns, "loss", "ce") != "ce":
        raise UsageError("--loss", f"{ns.loss!r}: only 'ce' (cross-entropy, the paper's classification loss); the "
                         "reference's other losses belong to its source-separation code")
    if getattr(ns, "num_mix", 1) != 1:
        raise UsageError("--num_mix", f"{ns.num_mix}: only 1 (one clip per sample, as in the paper); mixing is "
                         "the reference's source-separation setting")
    if "dic" in given:
        log.warning("--dic %s: ignored; the defense's dictionaries are memory banks of clean training features "
                    "built by main_defense.py (--features, --bank, --weights_Da/--weights_Dv)", ns.dic)
    if "log_freq" in given:
        log.warning("--log_freq %s: ignored; the audio nets read the raw waveform (anet) or compute their own "
                    "log-mel (vggish)", ns.log_freq)
    if "num_gpus" in given:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if ns.num_gpus != world:
            log.warning("--num_gpus %s: this run has %d process(es), one GPU each; for %s GPUs launch "
                        "NPROC=%s ./scripts/<script>.sh or torchrun --nproc_per_node %s main_*.py",
                        ns.num_gpus, world, ns.num_gpus, ns.num_gpus, ns.num_gpus)


# The reference's scripts spell FGSM "fsgm" (its default and eval_attack_Kinetics.sh).
ATTACK_ALIASES = {"fsgm": "fgsm"}


def attack_alias(name: str, valid: Sequence[str]) -> str:
    """``name``, or the registered attack it is the reference's spelling of (with one warning line)."""
    if name in ATTACK_ALIASES and name not in valid:
        log.warning("--attack_type %s: the reference's spelling of %s; running %s", name, ATTACK_ALIASES[name],
                    ATTACK_ALIASES[name])
        return ATTACK_ALIASES[name]
    return name


def apply_reference_conventions(ns: argparse.Namespace, given: Sequence[str]) -> None:
    """In place: flatten --categories/--lr_steps, check the reference options, and without --dataset take
    the spec whose classes --categories are (``custom`` when none has them)."""
    ns.categories, ns.lr_steps = flatten(ns.categories), flatten(ns.lr_steps)
    check_reference_options(ns, given)
    if "dataset" not in given and ns.categories:
        ns.dataset = dataset_of(ns.categories)
