"""The checks of the evaluation families' flags that pipeline/config.py calls before any work: main_certify.py's
(``check_certify``) and --corruptions/--severities (``corruption_values``); and the flags' defaults as args.json
holds them (a run recorded before a flag existed resumes when the flag is at its default)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from typing import Any, Sequence, Tuple

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
