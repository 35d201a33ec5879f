"""The checks of the evaluation families' flags that pipeline/config.py calls before any work: main_certify.py's
(``check_certify``), --corruptions/--severities (``corruption_values``) and the missing-input flags
(``check_missing_flags``); and the flags' defaults as args.json
holds them (a run recorded before a flag existed resumes when the flag is at its default)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from typing import Any, Dict, Sequence, Tuple

from corruptions import parse_corruption_names, parse_severities
from models.certify import min_certify_samples
from models.fusion import FUSIONS
from pipeline.flags import CERTIFY_GROUPS, flag_fields
from utils.errors import UsageError

CERTIFY_FIELDS = tuple(f.name for f in flag_fields() if f.metadata["flag"]["group"] in CERTIFY_GROUPS)


def _json_default(f: dataclasses.Field) -> Any:
    """A flag's default in the form args.json holds it."""
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return json.loads(json.dumps(list(value) if isinstance(value, tuple) else value, default=str))


FLAG_DEFAULTS = {f.name: _json_default(f) for f in flag_fields()}


def check_certify(ns: argparse.Namespace, given: Sequence[str]) -> None:
    """main_certify.py's flags: eval mode, no attacks, sigmas > 0, enough draws to certify at --cert_alpha, the
    sub-sampling sizes possible, and each --cert_modalities setting read by the model."""
    if ns.mode != "eval":
        raise UsageError("--mode", "main_certify.py certifies a trained model: --mode eval (its default)")
    if "attack_type" in given and ns.attack_type != "none":
        raise UsageError("--attack_type", "main_certify.py runs no attacks (main_attack.py --mode eval does)")
    if not (math.isfinite(ns.cert_alpha) and 0 < ns.cert_alpha < 1):
        raise UsageError("--cert_alpha", f"must be in (0, 1), got {ns.cert_alpha}")
    for flag in ("cert_n0", "cert_batch", "audio_segments", "keep_frames", "keep_segments"):
        if getattr(ns, flag) < 1:
            raise UsageError(f"--{flag}", f"must be >= 1, got {getattr(ns, flag)}")
    need = min_certify_samples(ns.cert_alpha)
    if ns.cert_n < need:
        raise UsageError("--cert_n", f"{ns.cert_n} draws cannot certify anything at --cert_alpha {ns.cert_alpha:g}: "
                         f"even {ns.cert_n} of {ns.cert_n} draws of one class give a lower bound alpha^(1/n) = "
                         f"{ns.cert_alpha ** (1 / ns.cert_n):.3f} <= 1/2; give --cert_n >= {need}")
    if any(not math.isfinite(r) or r < 0 for r in ns.cert_radii):
        raise UsageError("--cert_radii", f"must be finite numbers >= 0, got {' '.join(map(str, ns.cert_radii))}")
    used = FUSIONS.get(ns.arch_classifier).modalities
    settings = tuple(dict.fromkeys(ns.cert_modalities))
    for setting in settings:
        needs = ("audio", "visual") if setting == "both" else (setting,)
        if any(m not in used for m in needs):
            raise UsageError("--cert_modalities", f"{setting}: the model ({ns.arch_classifier}) reads only "
                             f"{', '.join(used)}; randomising an input it does not read certifies nothing")
    randomised = {m for s in settings for m in (("audio", "visual") if s == "both" else (s,))}
    if ns.cert_method == "smoothing":
        for m in sorted(randomised):
            sigma = getattr(ns, f"sigma_{m}")
            if not (math.isfinite(sigma) and sigma > 0):
                raise UsageError(f"--sigma_{m}", f"must be a finite number > 0, got {sigma}")
    else:
        if "visual" in randomised and not ns.keep_frames < ns.num_frames:
            raise UsageError("--keep_frames", f"keeps {ns.keep_frames} of --num_frames {ns.num_frames}: sub-sampling "
                             "frames needs more frames than are kept (raise --num_frames), else every draw sees "
                             "every frame and no frame is certified")
        if "audio" in randomised and not ns.keep_segments < ns.audio_segments:
            raise UsageError("--keep_segments", f"keeps {ns.keep_segments} of --audio_segments {ns.audio_segments}: "
                             "every draw would hear every segment; keep fewer than there are")
        if "audio" in randomised and ns.audio_segments > ns.audLen:
            raise UsageError("--audio_segments", f"{ns.audio_segments} segments of {ns.audLen} samples (--audLen)")


def corruption_values(ns: argparse.Namespace) -> Tuple[Tuple[str, ...], Tuple[int, ...]]:
    """--corruptions and --severities parsed (eval only): ``all`` is every corruption the head's inputs and
    --num_frames allow; a named one they do not allow, an unknown name or a severity outside 1-5 is refused."""
    try:
        severities = parse_severities(ns.severities)
    except ValueError as e:
        raise UsageError("--severities", str(e)) from None
    if not ns.corruptions:
        if ns.severities != "1-5":
            raise UsageError("--severities", "needs --corruptions (without it no corruption is evaluated)")
        return (), ()
    if ns.mode != "eval":
        raise UsageError("--corruptions", "corruptions are evaluated in --mode eval; training would ignore it")
    modalities = FUSIONS.get(ns.arch_classifier).modalities
    try:
        names, _ = parse_corruption_names(ns.corruptions, modalities, ns.num_frames)
    except ValueError as e:
        raise UsageError("--corruptions", f"{e} (--arch_classifier {ns.arch_classifier})") from None
    if not names:
        raise UsageError("--corruptions", "'all' leaves nothing this model can be evaluated under")
    return tuple(names), severities



def check_missing_flags(ns: argparse.Namespace, given: Sequence[str]) -> None:
    """--missing_modality, --missing_fill and --modality_dropout: the mode, the range, what the head supports."""
    head = FUSIONS.get(ns.arch_classifier)
    p = ns.modality_dropout
    if not (math.isfinite(p) and 0.0 <= p < 1.0):
        raise UsageError("--modality_dropout", f"must be a probability in [0, 1), got {p}")
    if p > 0 and ns.mode != "train":
        raise UsageError("--modality_dropout", "applies to training (--mode train)")
    if p > 0 and len(head.modalities) < 2:
        raise UsageError("--modality_dropout", f"drops one of two inputs, but head {ns.arch_classifier!r} reads only "
                         f"{', '.join(head.modalities)}")
    missing = tuple(ns.missing_modality or ())
    if missing and ns.mode != "eval":
        raise UsageError("--missing_modality", "is evaluated with --mode eval")
    if missing and hasattr(ns, "lam"):  # main_defense.py (its flags include --lam, as _check_numbers reads)
        raise UsageError("--missing_modality", "is evaluated by main_attack.py (the defended model has no "
                         "missing-input path)")
    if len(set(missing)) != len(missing):
        raise UsageError("--missing_modality", f"lists a value twice: {' '.join(missing)}")
    if "missing_fill" in given and not (missing or p > 0):
        raise UsageError("--missing_fill", "needs --missing_modality or --modality_dropout (nothing is filled)")
    if (missing or p > 0) and ns.missing_fill not in head.missing_fills:
        raise UsageError("--missing_fill", f"head {ns.arch_classifier!r} supports "
                         f"{', '.join(head.missing_fills) or 'no fill'}, not {ns.missing_fill!r}")


# The flags of RunConfig before the evaluation families of issues 19 and 20 (commit 258d766). A flag added since,
# at its default, is left out of an evaluation's hash (pipeline/config.eval_identity), so the evaluations recorded
# before it keep being found by --reuse_eval; so are the derived values added with them.
FLAGS_BEFORE_FAMILIES = frozenset("""
adaptive adaptive_attacks adaptive_eps adv_train alpha_a alpha_v amp apgd_steps apgd_targets arch_classifier
arch_frame arch_sound attack_args attack_steps attack_type audLen audRate audio_path bank bank_select bank_size
base_weights batch_size_per_gpu beta1 categories channels_last ckpt cls_num compile dataset defense_grad
deterministic device dic disp_iter eps eps_unit eval_batch_size eval_cache eval_epoch features fixed_step frameRate
frame_path fusion_args id imgSize img_pool init_from ista_iters ista_tol lam list_test list_train list_val log_freq
loss lr_classifier lr_frame lr_sound lr_steps max_eval_batches minsim_weight mix mode no_progress norm num_epoch
num_frames num_gpus num_mix plugins pretrained random_start restarts resume reuse_eval save_examples save_features
seed square_queries stride_frames sweep sweep_eps train_attack_steps train_eps unrolled_iters weight_decay weights
weights_Da weights_Dv weights_classifier weights_frame weights_sound workers""".split())
ADDED_AT_DEFAULT: Dict[str, Any] = {
    **{k: v for k, v in FLAG_DEFAULTS.items() if k not in FLAGS_BEFORE_FAMILIES},
    "certify": False, "train_noise": None, "corruption_names": [], "severity_levels": []}
