"""Checkpoint reading: one dict that resumes a run, loaded with weights_only=True, and its architecture check.

Layout: ``{model, optimizer, scheduler, epoch, best_acc, args, rng_state, arch, categories}`` (written by
pipeline/train.py through utils.fileio.atomic_torch_save). ``arch`` names the
three networks, the head's ``fusion_args``, the number of classes and, for a head from a plugin file,
``plugins`` (that file, re-imported by an evaluation); loading into a model built differently is an error
that says which part differs (``check_arch``, also preflight's). ``load_weights`` is the one loader of weights
into a model or a part of it (checkpoints, --init_from, --weights_classifier, --weights_sound).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
import torch.nn as nn

from utils.errors import UsageError

log = logging.getLogger(__name__)

# arch entries recorded since issue 18: a checkpoint written before holds a built-in head with its
# default arguments (which the model was rebuilt with), so a missing entry is not a difference
ARCH_SINCE_I18 = ("fusion_args", "plugins")


def rng_state() -> Dict[str, Any]:
    state: Dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def model_arch(model: torch.nn.Module, num_classes: int) -> Dict[str, Any]:
    """What must match between a checkpoint and the model it is loaded into."""
    arch = dict(getattr(model, "arch", {}))
    arch["num_classes"] = int(num_classes)
    return arch


def load_checkpoint(path: Path, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load a checkpoint dict safely (weights_only=True); a missing file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise RuntimeError(f"cannot read checkpoint {path}: {e}") from e


def check_arch(ckpt: Dict[str, Any], expected: Dict[str, Any], path: Path, flag: Optional[str] = None) -> None:
    """The one architecture check: raise if the checkpoint was trained for another architecture or class
    count. ``flag``: a ``UsageError`` of that flag (preflight), else a ``RuntimeError``."""
    have = ckpt.get("arch")
    problem = None
    if have is None:
        problem = f"checkpoint {path} has no 'arch' entry: not written by this project"
    else:
        diffs = [f"{k}: checkpoint {have.get(k)!r} vs this run {v!r}" for k, v in expected.items()
                 if have.get(k) != v and not (k in ARCH_SINCE_I18 and k not in have)]
        if diffs:
            problem = f"checkpoint {path} is for a different model ({'; '.join(diffs)})"
    if problem is not None:
        raise UsageError(flag, problem) if flag else RuntimeError(problem)


def recorded_arch(path: Path) -> Dict[str, Any]:
    """The ``arch`` record of a checkpoint, read memory-mapped (tensors are not loaded); {} when ``path``
    is not a readable project checkpoint (the caller's own checks report that, naming its flag)."""
    try:
        ck = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - reported by the preflight of the run that reads it
        return {}
    arch = ck.get("arch") if isinstance(ck, dict) else None
    return dict(arch) if isinstance(arch, dict) else {}


def recorded_plugins(path: Path) -> List[str]:
    """The plugin files a checkpoint's head came from (``arch["plugins"]``), [] for a built-in head."""
    return [str(p) for p in recorded_arch(path).get("plugins", [])]

def read_state_file(path: Union[str, Path], what: str, flag: Optional[str] = None) -> Dict[str, Any]:
    """A file holding a state dict (weights_only); a missing or foreign file is an error naming ``what``."""
    fail = (lambda msg: UsageError(flag, msg)) if flag else FileNotFoundError
    if not Path(path).is_file():
        raise fail(f"{what}: no such file {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a tensor file
        raise (UsageError(flag, f"{what}: {path} is not a state dict ({type(e).__name__})") if flag
               else RuntimeError(f"{what}: cannot read {path}: {e}")) from None
    if not isinstance(state, dict):
        raise (UsageError(flag, f"{what}: {path} is not a state dict") if flag
               else ValueError(f"{what} {str(path)!r}: expected a state dict, got {type(state).__name__}"))
    return state


def load_weights(target: nn.Module, state: Mapping[str, torch.Tensor], what: str, prefix: str = "",
                 flag: Optional[str] = None) -> None:
    """The one weight loader: copy ``state`` into ``target``'s state entries whose names start with ``prefix``
    ("" = all of them; ``state``'s other keys are left out). Keys and shapes must match exactly, else nothing
    is copied and the error names ``what`` (a ``UsageError`` of ``flag`` when given, else a ``RuntimeError``)."""
    want = {k: v for k, v in target.state_dict().items() if k.startswith(prefix)}
    have = {k: v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    problem = None
    if missing or unexpected:
        problem = (f"{what} does not match this model's {prefix.rstrip('.') or 'weights'}: {len(missing)} missing "
                   f"keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}")
    else:
        bad = [k for k in want if getattr(have[k], "shape", None) != want[k].shape]
        if bad:
            problem = (f"{what}: {bad[0]} has shape {tuple(getattr(have[bad[0]], 'shape', ()))}, this model needs "
                       f"{tuple(want[bad[0]].shape)}")
    if problem is not None:
        raise UsageError(flag, problem) if flag else RuntimeError(problem)
    if prefix:
        with torch.no_grad():
            for k, v in want.items():
                v.copy_(have[k])
    else:
        target.load_state_dict(dict(have), strict=True)
