"""Checkpoint reading: one dict that resumes a run, loaded with weights_only=True, and its architecture check.

Layout: ``{model, optimizer, scheduler, epoch, best_acc, args, rng_state, arch, categories}`` (written by
pipeline/train.py through utils.fileio.atomic_torch_save). ``arch`` names the
three networks, the head's ``fusion_args``, the number of classes and, for a head from a plugin file,
``plugins`` (that file, re-imported by an evaluation); loading into a model built differently is an error
that says which part differs.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List

import torch

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


def check_arch(ckpt: Dict[str, Any], expected: Dict[str, Any], path: Path) -> None:
    """Raise if the checkpoint was trained for another architecture or class count."""
    have = ckpt.get("arch")
    if have is None:
        raise RuntimeError(f"checkpoint {path} has no 'arch' entry: not written by this project")
    diffs = [f"{k}: checkpoint {have.get(k)!r} vs model {v!r}" for k, v in expected.items()
             if have.get(k) != v and not (k in ARCH_SINCE_I18 and k not in have)]
    if diffs:
        raise RuntimeError(f"checkpoint {path} is for a different model ({'; '.join(diffs)})")


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
