"""Checkpoints: one dict that resumes a run, written atomically and loaded with weights_only=True.

Layout: ``{model, optimizer, scheduler, epoch, best_acc, args, rng_state, arch}``. ``arch`` names the
three networks and the number of classes; loading into a model built differently is an error that says
which part differs.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Dict

import torch

log = logging.getLogger(__name__)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, then rename: a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
    diffs = [f"{k}: checkpoint {have.get(k)!r} vs model {v!r}" for k, v in expected.items() if have.get(k) != v]
    if diffs:
        raise RuntimeError(f"checkpoint {path} is for a different model ({'; '.join(diffs)})")


def load_model_weights(model: torch.nn.Module, path: Path, expected_arch: Dict[str, Any]) -> Dict[str, Any]:
    """Load the model state of a project checkpoint into ``model`` after checking its architecture."""
    ckpt = load_checkpoint(path)
    check_arch(ckpt, expected_arch, path)
    model.load_state_dict(ckpt["model"])
    return ckpt


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (ties memory banks and features to the checkpoint they came from)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
