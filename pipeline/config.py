"""The command line shared by main_attack.py and main_defense.py, resolved into one frozen ``RunConfig``.

Flag names follow the reference code (``--arch_sound``, ``--lr_frame``, ...) so existing command lines keep
working; ``--dataset NAME`` fills every unset value from the dataset spec (dataset/specs.py), and values
given explicitly always win. Without --dataset, --categories picks the spec with exactly those classes, or
``custom`` (a dataset of the user's own: the paper's defaults) when no spec has them. The flags themselves are
declared once, as the fields of ``RunConfig`` (pipeline/flags.py). ``resolve_config`` checks every value before
any work starts (numbers, names, eps strings; the files are pipeline/preflight.py's, next) and raises
``utils.errors.UsageError`` naming the flag; the mains turn that into one line and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from attacks import ATTACKS, default_attacks, list_attacks, parse_attack_args, parse_norm
from attacks.autoattack import check_autoattack_args
from attacks.metrics import PAPER_EPS_GRID, parse_eps
from dataset.specs import DatasetSpec, get_spec
from pipeline import reference_cli as ref
from pipeline.flags import ADAPTIVE_ATTACKS, ADAPTIVE_GRAD_MODES, DERIVED_FIELDS, LIST_VALUED, RESULT_NEUTRAL
from pipeline.config_families import ADDED_AT_DEFAULT, FLAG_DEFAULTS, check_certify, check_missing_flags, corruption_values
from pipeline.flags import SPEC_DEFAULTS, RunConfig, add_certify_args, add_defense_args, get_args_parser, preload_plugins
from models.fusion import FUSIONS, head_args, parse_fusion_text
from utils.errors import UsageError
from utils.plugins import load_plugins, split_paths
from utils.safepath import check_name
from utils.rundir import FILES

__all__ = ["RunConfig", "add_certify_args", "add_defense_args", "get_args_parser", "parse_config", "resolve_config",
           "apply_dataset_defaults", "check_modes", "derive_values",
           "parse_attack_names", "eval_identity", "given_flags", "resume_changes", "RESUME_SAFE"]

LIST_FLAGS = ("list_train", "list_val", "list_test")
# --seed feeds np.random.default_rng (the loader's per-sample generators: no negatives), torch.manual_seed
# (at most 2**64 - 1) and numpy's legacy seed ([0, 2**32 - 1]): numpy's range is the one all accept
SEED_MAX = 2 ** 32 - 1
# 1 px: the training crop's horizontal flip gives a negative-stride array the loader cannot turn into a tensor
# (dataset/transforms.py); torchvision's ResNet forward itself accepts any size >= 1 (every stride-2 layer
# is padded, so a 1x1 map stays 1x1): forward and backward in train mode, batch 2, resnet10/18/34/50, 1..32 px
MIN_IMG_SIZE = 2
# Flags a --resume may change (pipeline/preflight.py): --num_epoch extends the run, the rest change only
# speed or logging (flags.RESULT_NEUTRAL: results unchanged); anything else must match args.json.
RESUME_SAFE = ("resume", "num_epoch", "no_progress", "disp_iter", *RESULT_NEUTRAL)
# Flags that only matter to an evaluation with attacks (given in training, or without --attack_type, they
# would be silently ignored: that is an error instead).
_ATTACK_ONLY = ("eps", "sweep", "save_examples", "adaptive", "adaptive_eps", "norm", "apgd_steps", "apgd_targets",
                "square_queries", "attack_args", "max_shift_s", "shift_step_s", "transfer_from", "eot")


def adaptive_families(spec: str) -> Tuple[Tuple[str, Optional[str]], ...]:
    """--adaptive_attacks as (family, gradient mode or None for both modes): 'all' or a comma list of distinct
    ADAPTIVE_ATTACKS, each optionally ``:unrolled`` or ``:bpda``; anything else is a UsageError."""
    if spec == "all":
        return tuple((a, None) for a in ADAPTIVE_ATTACKS)
    out: list = []
    for entry in spec.split(","):
        family, colon, mode = entry.strip().partition(":")
        item = (family, mode if colon else None)
        if family not in ADAPTIVE_ATTACKS or (colon and mode not in ADAPTIVE_GRAD_MODES) or item in out:
            raise UsageError("--adaptive_attacks", f"expected 'all' or a comma list of distinct names from "
                             f"{', '.join(ADAPTIVE_ATTACKS)}, each optionally with :unrolled or :bpda, got {spec!r}")
        out.append(item)
    return tuple(out)


def parse_attack_names(text: str) -> Tuple[str, ...]:
    """--attack_type: a registered name, a comma list, ``all`` (every registered attack) or ``none``."""
    valid = list_attacks()
    if text == "none":
        return ()
    names = default_attacks() if text == "all" else [t.strip() for t in text.split(",") if t.strip()]
    names = [ref.attack_alias(n, valid) for n in names]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise UsageError("--attack_type", f"unknown attack {', '.join(bad) or repr(text)}; valid: all, none, "
                         f"{', '.join(valid)} or a comma list")
    return tuple(dict.fromkeys(names))


# "none" leaves a modality untouched (as leaving it out does); under --norm audio=snr a number is a budget in
# dB and 0 dB (noise as loud as the signal) is not "untouched", so there it must be spelled out this way
UNTOUCHED = "none"


def _parse_grid(flag: str, values: Sequence[str], snr_audio: bool = False) -> Tuple[Dict[str, float], ...]:
    """Each eps string parsed (``modality=none``: untouched). ``snr_audio`` (audio eps in dB): an explicit
    ``audio=0`` is refused, since the attack contract reads eps 0 as "untouched", not as a 0 dB budget."""
    grid = []
    for s in values:
        items = [part.partition("=") for part in s.split(",")]
        if snr_audio and any(k.strip() == "audio" and _is_zero(v) for k, _, v in items):
            raise UsageError(flag, f"{s!r}: with --norm audio=snr the audio eps is an SNR in dB, and audio=0 would "
                             "be the loudest budget (0 dB, noise as loud as the signal), which the attacks read as "
                             f"'untouched'; write audio={UNTOUCHED} (or leave audio out) for unattacked audio, or "
                             "give a budget > 0 dB (e.g. audio=10)")
        s = ",".join(f"{k}=0" if v.strip().lower() == UNTOUCHED else f"{k}{eq}{v}" for k, eq, v in items)
        try:
            grid.append(parse_eps(s))
        except ValueError as e:
            raise UsageError(flag, f"{s!r}: {e}") from None
    return tuple(grid)


def _is_zero(text: str) -> bool:
    try:
        return float(text) == 0.0
    except ValueError:
        return False


def _check_snr_flags(ns: argparse.Namespace, norms: Mapping[str, str]) -> None:
    """An audio eps in dB has no default grid (the paper grid is in amplitude units: audio=0.012 would read as
    0.012 dB, noise as loud as the signal) and no place on the sweep's shared eps axis."""
    if norms.get("audio") != "snr" or ns.mode != "eval" or ns.attack_type == "none":
        return
    if ns.eps is None:
        raise UsageError("--eps", "is required with --norm audio=snr: the default grid is the paper's amplitude "
                         "budgets (audio=0.012 would be read as 0.012 dB); give budgets in dB, e.g. "
                         f"--eps visual=0,audio=30 visual=0.006,audio={UNTOUCHED}")
    if ns.sweep:
        raise UsageError("--sweep", "plots audio, visual and both on one eps axis (--sweep_eps, amplitude units); "
                         "with --norm audio=snr the audio eps is in dB and cannot share it. Evaluate dB budgets as "
                         "--eps rows (e.g. --eps audio=40 audio=30 audio=20 audio=10), or sweep with an "
                         "amplitude norm")


def _check_numbers(ns: argparse.Namespace) -> None:
    def finite(flag: str, lo: float = 0.0, hi: float = math.inf, lo_open: bool = False) -> None:
        v = getattr(ns, flag)
        if v is None:
            return
        if not math.isfinite(v) or v < lo or (lo_open and v == lo) or v > hi:
            rng = f"{'>' if lo_open else '>='} {lo:g}" + (f" and <= {hi:g}" if hi != math.inf else "")
            raise UsageError(f"--{flag}", f"must be a finite number {rng}, got {v}")

    for flag in ("lr_frame", "lr_sound", "lr_classifier", "weight_decay", "minsim_weight", "max_shift_s",
                 "trades_beta", "crmt_rho", "crmt_step2_lr", "robust_odd_weight"):
        finite(flag)
    finite("shift_step_s", lo_open=True)
    finite("beta1", hi=1.0)
    for flag in ("batch_size_per_gpu", "num_epoch", "num_frames", "stride_frames", "audLen", "imgSize",
                 "frameRate", "audRate", "eval_epoch", "attack_steps", "restarts", "train_attack_steps",
                 "apgd_steps", "apgd_targets", "square_queries", "eot"):
        if getattr(ns, flag) < 1:
            raise UsageError(f"--{flag}", f"must be >= 1, got {getattr(ns, flag)}")
    for flag in ("workers", "disp_iter", "save_examples", "max_eval_batches", "eval_batch_size", "crmt_step2_epochs"):
        if getattr(ns, flag) < 0:
            raise UsageError(f"--{flag}", f"must be >= 0, got {getattr(ns, flag)}")
    if not 0 <= ns.seed <= SEED_MAX:
        raise UsageError("--seed", f"must be in [0, {SEED_MAX}] (numpy's seed range), got {ns.seed}")
    if ns.imgSize < MIN_IMG_SIZE:
        raise UsageError("--imgSize", f"must be >= {MIN_IMG_SIZE} pixels (the training crop and its flip need 2), "
                         f"got {ns.imgSize}")
    if any(s < 1 for s in ns.lr_steps):
        raise UsageError("--lr_steps", f"epochs must be >= 1, got {' '.join(map(str, ns.lr_steps))}")
    for e in ns.sweep_eps:
        if not math.isfinite(e) or e < 0:
            raise UsageError("--sweep_eps", f"must be finite numbers >= 0, got {e}")
    if hasattr(ns, "lam"):
        finite("lam", lo_open=True)
        finite("ista_tol", lo_open=True)
        finite("mix", hi=1.0)
        finite("alpha_a", lo_open=True)
        finite("alpha_v", lo_open=True)
        for flag in ("bank_size", "ista_iters", "unrolled_iters"):
            if getattr(ns, flag) < 1:
                raise UsageError(f"--{flag}", f"must be >= 1, got {getattr(ns, flag)}")


def _resolve_lists(ns: argparse.Namespace, spec: DatasetSpec) -> None:
    """A list the user did not give is taken from the dataset's own defaults only when no list flag was given
    at all; then every list is the dataset's own (never another dataset's)."""
    if not any(getattr(ns, f) for f in LIST_FLAGS):
        for split, flag in zip(("train", "val", "test"), LIST_FLAGS):
            try:
                setattr(ns, flag, str(spec.list_path(split)))
            except ValueError as e:  # a dataset of the user's own ships no lists
                raise UsageError(f"--{flag}", str(e)) from None


def _resolve_media(ns: argparse.Namespace, spec: DatasetSpec) -> None:
    """--audio_path/--frame_path not given: the dataset's media root ($DATA_ROOT or its default); a dataset of
    the user's own has no default, so one of the two is then required."""
    for flag, path in (("audio_path", spec.audio_path), ("frame_path", spec.frame_path)):
        if not getattr(ns, flag):
            try:
                setattr(ns, flag, str(path()))
            except ValueError as e:
                raise UsageError(f"--{flag}", str(e)) from None


def _check_attack_flags(ns: argparse.Namespace, given: Sequence[str]) -> None:
    attack_given = "attack_type" in given and ns.attack_type != "none"
    stray = [f for f in _ATTACK_ONLY if f in given and hasattr(ns, f) and getattr(ns, f) not in (None, False, 0)]
    if ns.mode == "train":
        if attack_given:
            raise UsageError("--attack_type", "attacks run in --mode eval; training would ignore it")
        if stray:
            raise UsageError(f"--{stray[0]}", "is an attack-evaluation option (--mode eval --attack_type ...); "
                             "training would ignore it")
    elif not attack_given and stray:
        raise UsageError(f"--{stray[0]}", "needs --attack_type (e.g. --attack_type pgd); without it no attack runs")
    names = [t.strip() for t in str(ns.attack_type).split(",")]
    for flag in ("max_shift_s", "shift_step_s"):
        if flag in given and "desync" not in names:
            raise UsageError(f"--{flag}", "is an option of --attack_type desync; the attacks given would ignore it")


def apply_dataset_defaults(ns: argparse.Namespace, given: Sequence[str]) -> None:
    """In place: the reference's conventions, then every value left unset filled from the dataset spec
    (``spec=`` fields, categories, lists, media roots, the run name), checked as it is filled."""
    ref.apply_reference_conventions(ns, given)
    spec = get_spec(ns.dataset)
    for flag, field in SPEC_DEFAULTS.items():
        if hasattr(ns, flag) and getattr(ns, flag) is None:
            value = getattr(spec, field)
            setattr(ns, flag, list(value) if isinstance(value, tuple) else value)
    if ns.minsim_weight == "spec":
        ns.minsim_weight = spec.minsim_weight
    if ns.categories is None:
        if not spec.categories:
            raise UsageError("--categories", f"--dataset {spec.name} is a dataset of your own: give its class names")
        ns.categories = list(spec.categories)
    if not ns.categories:
        raise UsageError("--categories", "is empty")
    if len(set(ns.categories)) != len(ns.categories):
        raise UsageError("--categories", "has duplicate names")
    if ns.cls_num is None:
        ns.cls_num = len(ns.categories)
    elif ns.cls_num != len(ns.categories):
        raise UsageError("--cls_num", f"{ns.cls_num} disagrees with the {len(ns.categories)} categories "
                         f"({', '.join(ns.categories)})")
    _resolve_lists(ns, spec)
    _resolve_media(ns, spec)
    if not ns.id:
        ns.id = f"{spec.name}-{ns.arch_sound}-{ns.arch_frame}-{ns.arch_classifier}"
    check_name(ns.id, "--id", "run name")  # the run folder <ckpt>/<id> must stay inside --ckpt


def check_modes(ns: argparse.Namespace, given: Sequence[str]) -> None:
    """Numbers in range, and no flag given that this run's mode (train / eval, attacks, --adaptive) would
    ignore or cannot honour."""
    _check_numbers(ns)
    _check_attack_flags(ns, given)
    ns.plugins = load_plugins([p for t in ns.plugins or () for p in split_paths(t)])  # imported once (parse_config did it first); resolved paths recorded
    ns.fusion_args = {k: head_args(ns.arch_classifier, ns.fusion_args)[k] for k in parse_fusion_text(ns.fusion_args)}
    for flag in ("adaptive_eps", "adaptive_attacks"):
        if flag in given and not getattr(ns, "adaptive", False):
            raise UsageError(f"--{flag}", "needs --adaptive (without it no adaptive attack runs)")
    if getattr(ns, "transfer_from", "") and getattr(ns, "adaptive", False):
        raise UsageError("--transfer_from", "the adaptive attacks of --adaptive are white-box attacks on the defended "
                         "model itself; evaluate a transfer attack without --adaptive")
    if ns.mode == "train" and "weights" in given:
        # --weights names the checkpoint an evaluation loads; training never read it. Refused rather than
        # guessed: continuing this run (--resume) and starting from other weights (--init_from) differ.
        raise UsageError("--weights", "is the checkpoint --mode eval evaluates; training does not read it: use "
                         f"--resume to continue this run from its {FILES['checkpoint_last']}, or --init_from PATH to "
                         "initialise the audio/visual nets from a checkpoint")
    if ns.mode == "train" and ns.max_eval_batches:
        raise UsageError("--max_eval_batches", "applies to --mode eval only")
    if not ns.list_train and ns.mode == "train":
        raise UsageError("--list_train", "is required for training when other list flags are given")
    if ns.mode == "train" and not ns.list_val:
        raise UsageError("--list_val", "is required for training (the best checkpoint is chosen on it)")
    if ns.mode == "eval" and not (ns.list_test or ns.list_val):
        raise UsageError("--list_test", "give --list_test (or --list_val, which eval uses when no test list is given)")
    if ns.save_features and ns.mode != "train":
        raise UsageError("--save_features", "is written at the end of training (--mode train)")
    _check_training_objective(ns, given)
    _check_procedure_flags(ns, given)
    check_missing_flags(ns, given)


# Flags of the training objective (pipeline/objectives.py) that only a training run reads.
_TRAINING_ONLY = ("trades_beta", "adv_train_modality", "noise_train")


def _check_training_objective(ns: argparse.Namespace, given: Sequence[str]) -> None:
    """--adv_train, --trades_beta, --adv_train_modality, --train_eps and --noise_train together: a flag the
    objective would ignore, a budget or noise on a modality the head does not read, a modality schedule that
    cannot alternate (a unimodal head, or a budget on one modality only) and noise with an adversary are refused."""
    if ns.mode != "train":
        for flag in _TRAINING_ONLY:
            if flag in given:
                raise UsageError(f"--{flag}", "is a training option (--mode train); an evaluation would ignore it")
        return
    reads = tuple(FUSIONS.get(ns.arch_classifier).modalities)
    head = f"--arch_classifier {ns.arch_classifier} reads {' and '.join(reads)} only"
    if "trades_beta" in given and ns.adv_train != "trades":
        raise UsageError("--trades_beta", "weights the KL term of --adv_train trades; without it nothing reads it")
    if "adv_train_modality" in given and not ns.adv_train:
        raise UsageError("--adv_train_modality", "says which modalities the --adv_train adversary attacks; give "
                         "--adv_train (e.g. pgd, trades, fast)")
    if ns.adv_train:
        (budget,) = _parse_grid("--train_eps", [ns.train_eps])
        attacked = [m for m, e in budget.items() if e > 0]
        if not attacked:
            raise UsageError("--train_eps", f"every budget is 0, so --adv_train {ns.adv_train} would attack nothing")
        unread = [m for m in attacked if m not in reads]
        if unread:
            raise UsageError("--train_eps", f"puts a budget on {', '.join(unread)} but {head}; set "
                             f"{unread[0]}=0 (e.g. --train_eps {reads[0]}={budget[reads[0]] or 0.006})")
        if ns.adv_train_modality != "both":
            if len(reads) < 2:
                raise UsageError("--adv_train_modality", f"{ns.adv_train_modality} picks one modality per batch, but "
                                 f"{head}: every batch would attack it, which is 'both'")
            if len(attacked) < 2:
                raise UsageError("--adv_train_modality", f"{ns.adv_train_modality} takes turns between modalities, "
                                 f"but --train_eps gives a budget to {attacked[0]} only: half the batches would be "
                                 "clean; give both a budget or use 'both'")
    if ns.noise_train:
        sigma = _parse_noise(ns.noise_train)
        unread = [m for m in sigma if m not in reads]
        if unread:
            raise UsageError("--noise_train", f"puts noise on {', '.join(unread)} but {head}")
        if ns.adv_train:
            raise UsageError("--noise_train", f"with --adv_train {ns.adv_train}: noise and an adversary together "
                             "(SmoothAdv, Salman et al. 2019) are not implemented; give one of the two")


def _parse_noise(text: str) -> Dict[str, float]:
    """--noise_train 'audio=S,visual=S' -> {modality: sigma} for the modalities named; each sigma must be > 0 (a
    modality left out stays clean: 0 is refused rather than read as 'no noise')."""
    try:
        parsed = parse_eps(text)
    except ValueError as e:
        raise UsageError("--noise_train", str(e).replace("eps", "sigma")) from None
    named = [part.partition("=")[0].strip() for part in text.split(",")]
    zero = [m for m in named if parsed[m] <= 0]
    if zero:
        raise UsageError("--noise_train", f"sigma must be > 0, got {zero[0]}={parsed[zero[0]]:g} (leave a modality "
                         "out to keep it clean)")
    return {m: parsed[m] for m in named}


# flags of the training procedure a head declares (head.procedure, pipeline/procedures.py)
PROCEDURE_FLAGS = {"crmt": ("crmt_rho", "crmt_step2_epochs", "crmt_step2_lr"),
                   "single_source": ("robust_attack", "robust_odd_weight")}


def _check_procedure_flags(ns: argparse.Namespace, given: Sequence[str]) -> None:
    """A procedure's flag only with a head that declares that procedure, and only in training."""
    procedure = getattr(FUSIONS.get(ns.arch_classifier), "procedure", "")
    for kind, flags in PROCEDURE_FLAGS.items():
        for flag in (f for f in flags if f in given):
            if kind != procedure:
                heads = [n for n in FUSIONS.names() if getattr(FUSIONS.get(n), "procedure", "") == kind]
                raise UsageError(f"--{flag}", f"belongs to the {kind} training procedure of the heads "
                                 f"{', '.join(heads)}; --arch_classifier {ns.arch_classifier} would ignore it")
            if ns.mode != "train":
                raise UsageError(f"--{flag}", "is a training option (--mode train)")
    if procedure == "single_source" and ns.mode == "train":
        if ns.adv_train:
            raise UsageError("--adv_train", f"head {ns.arch_classifier} trains against its own single-source "
                             "adversary (--robust_attack, --train_eps); training on both would mix two adversaries")
    if procedure and ns.mode == "train" and ns.adv_train == "trades":
        raise UsageError("--adv_train", f"head {ns.arch_classifier}'s {procedure} procedure reads the head's outputs "
                         "of one forward pass; TRADES makes two (clean and adversarial): use pgd or fast")
    if procedure == "single_source" and ns.mode == "train":
        if ATTACKS.get(ns.robust_attack).min_classes > ns.cls_num:
            raise UsageError("--robust_attack", f"{ns.robust_attack} needs at least "
                             f"{ATTACKS.get(ns.robust_attack).min_classes} classes, this run has {ns.cls_num}")


def derive_values(ns: argparse.Namespace) -> Dict[str, Any]:
    """The derived fields parsed from the flags: ``attacks``, ``eps_grid``, ``adaptive_grid``, ``train_budget``,
    ``train_noise`` (each refused with the flag named when it cannot be run)."""
    attacks = parse_attack_names(ns.attack_type) if ns.mode == "eval" else ()
    # an attack asked for by name on fewer classes than it needs (apgd-t's targeted DLR loss: 4) stops now;
    # with --adaptive_attacks all, pipeline/adaptive.py leaves such attacks out and says so
    spec = getattr(ns, "adaptive_attacks", "all")
    families = [f for f, _ in adaptive_families(spec)] if spec != "all" else []
    for flag, names in (("--attack_type", attacks), ("--adaptive_attacks", families)):
        bad = [a for a in names if a in list_attacks() and ATTACKS.get(a).min_classes > ns.cls_num]
        if bad:
            raise UsageError(flag, f"{bad[0]} needs at least {ATTACKS.get(bad[0]).min_classes} classes, this run "
                                   f"has {ns.cls_num}; use apgd-ce")
    fitted = [a for a in attacks if ATTACKS.get(a).takes("fit_data")]
    if fitted and not ns.list_train:
        raise UsageError("--list_train", f"{fitted[0]} is fitted on the training list: give --list_train (the "
                         "evaluation itself reads --list_test)")
    try:
        check_autoattack_args(parse_attack_args(getattr(ns, "attack_args", "")).get("autoattack", {}))
    except ValueError as e:
        raise UsageError("--attack_args", str(e)) from None
    try:
        norms = parse_norm(ns.norm)
    except ValueError as e:
        raise UsageError("--norm", str(e)) from None
    _check_snr_flags(ns, norms)
    snr_audio = norms.get("audio") == "snr"
    eps_grid = (_parse_grid("--eps", ns.eps, snr_audio) if ns.eps is not None
                else tuple(dict(e) for e in PAPER_EPS_GRID))
    if ns.save_examples and not any(v > 0 for e in eps_grid for v in e.values()):
        raise UsageError("--save_examples", "needs an attacked row (every --eps is 0)")
    adaptive_grid: Tuple[Dict[str, float], ...] = ()
    if getattr(ns, "adaptive", False):
        if not attacks:
            raise UsageError("--adaptive", "needs --attack_type (the paper's attack is pgd)")
        adaptive_grid = (_parse_grid("--adaptive_eps", ns.adaptive_eps, snr_audio) if ns.adaptive_eps
                         else tuple(e for e in eps_grid if any(v > 0 for v in e.values())))
        if not any(v > 0 for e in adaptive_grid for v in e.values()):  # pipeline/adaptive.py skips eps 0 rows
            flag = "--adaptive_eps" if ns.adaptive_eps else "--eps"
            raise UsageError(flag, "every eps is 0 for every modality, so --adaptive would attack nothing; give a "
                             "nonzero eps (e.g. --adaptive_eps visual=0.006,audio=0.006)")
    train_budget = None
    if ns.adv_train or (ns.mode == "train" and getattr(FUSIONS.get(ns.arch_classifier), "procedure", "")
                        == "single_source"):
        (train_budget,) = _parse_grid("--train_eps", [ns.train_eps])
        if not ns.adv_train and not all(train_budget.get(m, 0) > 0 for m in ("audio", "visual")):
            raise UsageError("--train_eps", f"head {ns.arch_classifier}'s single-source adversary perturbs each "
                             f"modality in turn: give both a budget > 0, got {ns.train_eps!r}")
    names, severities = corruption_values(ns)
    train_noise = _parse_noise(ns.noise_train) if ns.noise_train and ns.mode == "train" else None
    return {"attacks": attacks, "eps_grid": eps_grid, "adaptive_grid": adaptive_grid, "train_budget": train_budget,
            "train_noise": train_noise, "corruption_names": names, "severity_levels": severities}


def resolve_config(ns: argparse.Namespace, given: Sequence[str] = (), defense: bool = False,
                   certify: bool = False) -> RunConfig:
    """The parsed flags as a ``RunConfig``: dataset defaults, mode checks, derived values; raises ``UsageError``
    naming the flag.

    ``given`` lists the dest names set on the command line (see ``given_flags``). File checks (lists,
    media folders, checkpoints) are pipeline/preflight.py's and run next, still before any work.
    """
    ns = argparse.Namespace(**vars(ns))
    apply_dataset_defaults(ns, given)
    check_modes(ns, given)
    if certify:
        check_certify(ns, given)
    derived = derive_values(ns)
    values = dict(vars(ns))
    for k in LIST_VALUED:
        if values.get(k) is not None:
            values[k] = tuple(values[k])
    fields = set(RunConfig.__dataclass_fields__) - set(DERIVED_FIELDS)
    unknown = set(values) - fields
    if unknown:  # a parser flag without a config field is a programming error, caught by the tests
        raise TypeError(f"flags without a RunConfig field: {sorted(unknown)}")
    return RunConfig(**values, **derived, defense=defense, certify=certify, given=tuple(sorted(given)))


def resume_changes(recorded: Mapping[str, Any], cfg: RunConfig) -> Tuple[Dict[str, Tuple[Any, Any]],
                                                                       Dict[str, Tuple[Any, Any]]]:
    """The settings of ``cfg`` that differ from a run's recorded args.json: (allowed, refused), each
    ``{"--flag": (old, new)}``; allowed are ``RESUME_SAFE`` (with --num_epoch only upwards or equal)."""
    import json

    now = json.loads(json.dumps(cfg.as_dict(), default=str))  # the form args.json holds
    allowed: Dict[str, Tuple[Any, Any]] = {}
    refused: Dict[str, Tuple[Any, Any]] = {}
    for key, new in now.items():
        old = recorded.get(key, "<not recorded>")
        if key == "given" or old == new or (key in ("fusion_args", "plugins") and key not in recorded and not new):
            continue  # a run recorded before these two flags (issue 18) had neither
        if key not in recorded and key in FLAG_DEFAULTS and new == FLAG_DEFAULTS[key]:
            continue  # a flag added after the run was recorded, left at its default (e.g. the certify group)
        safe = key in RESUME_SAFE and not (key == "num_epoch" and isinstance(old, int) and new < old)
        (allowed if safe else refused)[f"--{key}"] = (old, new)
    return allowed, refused


def given_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> Tuple[str, ...]:
    """The dest names of the options that appear in ``argv`` (prefixes resolved as argparse does)."""
    found = []
    for action in parser._actions:  # argparse exposes no public API for this
        for opt in action.option_strings:
            if any(a == opt or a.startswith(opt + "=") for a in argv):
                found.append(action.dest)
                break
    return tuple(sorted(set(found)))


def parse_config(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]], defense: bool = False,
                 certify: bool = False) -> RunConfig:
    """Parse ``argv`` with ``parser`` (argparse errors exit 2 as usual) and resolve it."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    plugins = preload_plugins(argv)  # before parsing: the heads/attacks they register are valid choices
    ns = parser.parse_args(argv)
    ns.plugins = plugins
    return resolve_config(ns, given_flags(parser, argv), defense=defense, certify=certify)


def eval_identity(cfg: RunConfig) -> Mapping[str, Any]:
    """The configuration that determines an evaluation's numbers (for eval.json and --reuse_eval)."""
    skip = {"id", "ckpt", "device", "no_progress", "disp_iter", "reuse_eval", "given", "resume", *RESULT_NEUTRAL,
            "eval_epoch", "num_epoch", "lr_steps", "lr_frame", "lr_sound", "lr_classifier", "beta1",
            "weight_decay", "save_features", "init_from", "modality_dropout", "list_train", "features", *ref.NO_EFFECT}
    # a flag added after evaluations were recorded (issues 19, 20), at its default, leaves their hash unchanged
    at_default = {k for k, d in ADDED_AT_DEFAULT.items() if json.loads(json.dumps(getattr(cfg, k), default=str)) == d}
    return {k: v for k, v in cfg.as_dict().items() if k not in skip and k not in at_default}
