"""Memory banks: the clean-feature atoms of one modality's dictionary, chosen, saved and loaded.

A ``MemoryBank`` holds the atoms (K, d) chosen from a saved features file by a selection registered in
``BANK_SELECTORS`` (``random``, ``kmeans``, ``class_balanced``), tied to the checkpoint that produced the
features by its SHA-256 (docs/paper.md, Defense, item 2: at most 1024 clean training features per
modality). ``build_banks`` builds one bank per modality of a features file.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Dict, Optional, Tuple, Union

import torch

from models.defense.constants import DEFAULT_BANK_SIZE, MODALITIES
from utils.errors import MalformedFileError
from utils.fileio import atomic_torch_save
from utils.registry import Registry

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

# (features (N, d), labels (N,) or None, size, generator) -> (atoms (K, d), atom labels (K,) or None)
Selector = Callable[
    [torch.Tensor, Optional[torch.Tensor], int, torch.Generator], Tuple[torch.Tensor, Optional[torch.Tensor]]
]
BANK_SELECTORS: Registry[Selector] = Registry("memory-bank selection")


@BANK_SELECTORS.register("random")
def select_random(
    feats: torch.Tensor, labels: Optional[torch.Tensor], size: int, gen: torch.Generator
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``size`` distinct training features drawn uniformly at random."""
    idx = torch.randperm(feats.shape[0], generator=gen)[:size]
    return feats[idx], (labels[idx] if labels is not None else None)


@BANK_SELECTORS.register("class_balanced")
def select_class_balanced(
    feats: torch.Tensor, labels: Optional[torch.Tensor], size: int, gen: torch.Generator
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The same number of atoms for every class, drawn at random within each class.

    Per class: min(size // C, the smallest class count), so the bank is exactly balanced.
    """
    if labels is None:
        raise ValueError("memory-bank selection 'class_balanced' needs labels")
    classes = torch.unique(labels)
    if size < len(classes):
        raise ValueError(
            f"memory-bank selection 'class_balanced': size {size} is smaller than the {len(classes)} classes"
        )
    counts = torch.stack([(labels == c).sum() for c in classes])
    per_class = min(size // len(classes), int(counts.min()))
    if per_class * len(classes) < size:
        logger.info(
            "class_balanced bank: %d classes x %d atoms = %d (< size %d; smallest class has %d samples)",
            len(classes), per_class, per_class * len(classes), size, int(counts.min()),
        )
    picks = []
    for c in classes:
        members = torch.nonzero(labels == c).squeeze(1)
        picks.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    idx = torch.cat(picks)
    return feats[idx], labels[idx]


@BANK_SELECTORS.register("kmeans")
def select_kmeans(
    feats: torch.Tensor, labels: Optional[torch.Tensor], size: int, gen: torch.Generator, n_iter: int = 100
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``size`` k-means centroids (k-means++ seeding, then Lloyd iterations); atoms carry no label."""
    x = feats.double()
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=gen))
    centers = [x[first]]
    d2 = (x - x[first]).pow(2).sum(1)
    for _ in range(1, size):
        total = float(d2.sum())
        if total > 0:
            nxt = int(torch.multinomial(d2 / total, 1, generator=gen))
        else:  # every point coincides with a chosen centre: any choice is equally good
            nxt = int(torch.randint(n, (1,), generator=gen))
        centers.append(x[nxt])
        d2 = torch.minimum(d2, (x - x[nxt]).pow(2).sum(1))
    C = torch.stack(centers)
    assign = torch.full((n,), -1, dtype=torch.long, device=x.device)
    for it in range(n_iter):
        new_assign = torch.cdist(x, C).argmin(dim=1)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
        sums = torch.zeros_like(C).index_add_(0, assign, x)
        cnt = torch.bincount(assign, minlength=size).to(x.dtype)
        empty = cnt == 0
        C = torch.where(empty[:, None], C, sums / cnt.clamp(min=1)[:, None])
    logger.debug("kmeans bank: %d centroids after %d Lloyd iterations", size, it + 1)
    return C.to(feats.dtype), None


class MemoryBank:
    """The atoms (K, d) of one modality's dictionary plus their provenance.

    Build with ``MemoryBank.build`` (from features) or ``build_banks`` (from a saved features file);
    persist with ``save`` / ``load``. ``dictionary`` is the (d, K) matrix used by ``sparse_code``.
    """

    def __init__(
        self,
        atoms: torch.Tensor,
        checkpoint_sha256: str,
        modality: str = "",
        select: str = "",
        seed: int = 0,
        atom_labels: Optional[torch.Tensor] = None,
    ) -> None:
        if not isinstance(atoms, torch.Tensor) or atoms.dim() != 2:
            raise ValueError(f"MemoryBank: atoms must be a (K, d) tensor, got {getattr(atoms, 'shape', type(atoms))}")
        if atoms.shape[0] == 0 or atoms.shape[1] == 0:
            raise ValueError(f"MemoryBank: empty bank (atoms shape {tuple(atoms.shape)})")
        if not torch.isfinite(atoms).all():
            raise ValueError("MemoryBank: atoms contain NaN or Inf")
        if atom_labels is not None and atom_labels.shape != (atoms.shape[0],):
            raise ValueError(f"MemoryBank: atom_labels must be ({atoms.shape[0]},), got {tuple(atom_labels.shape)}")
        self.atoms = atoms.detach().float().contiguous()
        self.checkpoint_sha256 = str(checkpoint_sha256)
        self.modality = modality
        self.select = select
        self.seed = int(seed)
        self.atom_labels = atom_labels

    @property
    def size(self) -> int:
        """Number of atoms K."""
        return self.atoms.shape[0]

    @property
    def dim(self) -> int:
        """Feature dimension d."""
        return self.atoms.shape[1]

    @property
    def dictionary(self) -> torch.Tensor:
        """The (d, K) dictionary matrix (atoms as columns)."""
        return self.atoms.T

    def __repr__(self) -> str:
        return (f"MemoryBank(modality={self.modality!r}, size={self.size}, dim={self.dim}, "
                f"select={self.select!r}, seed={self.seed}, checkpoint={self.checkpoint_sha256[:12]})")

    @classmethod
    def build(
        cls,
        features: torch.Tensor,
        size: int,
        select: str,
        checkpoint_hash: str,
        labels: Optional[torch.Tensor] = None,
        seed: int = 0,
        modality: str = "",
    ) -> "MemoryBank":
        """Choose up to ``size`` atoms (paper: at most 1024) from ``features`` (N, d) with the registered
        selection ``select``, seeded by ``seed``."""
        selector = BANK_SELECTORS.get(select)
        if not isinstance(features, torch.Tensor) or features.dim() != 2:
            got = getattr(features, "shape", type(features))
            raise ValueError(f"MemoryBank.build: features must be (N, d), got {got}")
        if features.shape[0] == 0:
            raise ValueError(f"MemoryBank.build: no {modality or 'input'} features to build a bank from")
        if size < 1:
            raise ValueError(f"MemoryBank.build: size must be >= 1, got {size}")
        if labels is not None and labels.shape != (features.shape[0],):
            raise ValueError(f"MemoryBank.build: labels must be ({features.shape[0]},), got {tuple(labels.shape)}")
        n = features.shape[0]
        if size > n:
            logger.info("MemoryBank.build: size %d > %d features; the %s bank gets at most %d atoms",
                        size, n, modality or "", n)
            size = n
        gen = torch.Generator().manual_seed(int(seed))
        atoms, atom_labels = selector(features.detach().cpu().float(), labels.cpu() if labels is not None else None,
                                      size, gen)
        bank = cls(atoms, checkpoint_hash, modality=modality, select=select, seed=seed, atom_labels=atom_labels)
        logger.info("built %r", bank)
        return bank

    def save(self, path: PathLike) -> None:
        """Write the bank with its provenance, atomically (a kill never leaves half a file at ``path``)."""
        atomic_torch_save(
            {"atoms": self.atoms, "atom_labels": self.atom_labels, "checkpoint_sha256": self.checkpoint_sha256,
             "modality": self.modality, "select": self.select, "seed": self.seed},
            path,
        )

    @classmethod
    def load(cls, path: PathLike, *, expected_checkpoint_sha256: Optional[str]) -> "MemoryBank":
        """Read a bank written by ``save`` and check it was built from the expected checkpoint.

        ``expected_checkpoint_sha256`` is required; pass None explicitly to skip the check (logged).
        """
        blob = _load_dict(path, "memory bank")
        missing = [k for k in ("atoms", "checkpoint_sha256") if k not in blob]
        if missing:
            raise MalformedFileError(path, f"memory bank file lacks key(s) {missing}")
        stored = blob["checkpoint_sha256"]
        if expected_checkpoint_sha256 is None:
            logger.warning("loading memory bank %s without checking its checkpoint (built from %s)", path, stored)
        elif stored != expected_checkpoint_sha256:
            raise ValueError(
                f"memory bank file {os.fspath(path)!r} was built from checkpoint sha256 {stored}, "
                f"but the model's checkpoint has sha256 {expected_checkpoint_sha256}"
            )
        try:
            return cls(blob["atoms"], stored, modality=blob.get("modality", ""), select=blob.get("select", ""),
                       seed=blob.get("seed", 0), atom_labels=blob.get("atom_labels"))
        except ValueError as e:  # bad atoms or labels: say which file holds them
            raise MalformedFileError(path, f"memory bank file: {e}") from e


def _load_dict(path: PathLike, what: str) -> dict:
    """``torch.load`` (weights only, to CPU) of a file that must hold a dict; every failure names the path.

    Missing path: ``FileNotFoundError``; unreadable (permissions): the ``OSError`` with the path; not a torch
    file or not a dict: ``MalformedFileError``.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise FileNotFoundError(f"{what} file {name!r} does not exist")
    if not os.path.isfile(name):
        raise MalformedFileError(name, f"{what} file is not a regular file")
    try:
        blob = torch.load(name, map_location="cpu", weights_only=True)
    except OSError as e:  # OSError(errno, msg) picks the matching subclass (PermissionError, ...)
        msg = f"cannot read {what} file {name!r}: {e.strerror or e}"
        raise (OSError(e.errno, msg) if e.errno is not None else OSError(msg)) from e
    except Exception as e:  # torch.load raises many types (UnpicklingError, RuntimeError, EOFError, ...)
        raise MalformedFileError(name, f"cannot be read as a {what} file ({type(e).__name__}: {e})") from e
    if not isinstance(blob, dict):
        raise MalformedFileError(name, f"{what} file: expected a dict, got {type(blob).__name__}")
    return blob


def build_banks(features_path: PathLike, size: int = DEFAULT_BANK_SIZE, select: str = "random",
                seed: int = 0) -> Dict[str, MemoryBank]:
    """Memory banks for every modality in a features file written by training's ``--save_features``.

    File format: ``{"audio": (N, Da), "visual": (N, Dv), "labels": (N,), "ids": list[str],
    "checkpoint_sha256": str}``; a unimodal file may hold only one of the modality keys.
    """
    name = os.fspath(features_path)
    blob = _load_dict(name, "features")
    for key in ("labels", "checkpoint_sha256"):
        if key not in blob:
            raise MalformedFileError(name, f"features file lacks key {key!r}")
    present = [m for m in MODALITIES if m in blob]
    if not present:
        raise MalformedFileError(name, f"features file holds none of the modality keys {MODALITIES}")
    labels = blob["labels"]
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
        raise MalformedFileError(name, "features file: 'labels' must be a 1-D tensor")
    banks = {}
    for m in present:
        feats = blob[m]
        if not isinstance(feats, torch.Tensor) or feats.dim() != 2 or feats.shape[0] != labels.shape[0]:
            raise MalformedFileError(
                name, f"features file: {m!r} must be (N, d) with N = {labels.shape[0]} labels, "
                f"got {getattr(feats, 'shape', type(feats))}"
            )
        banks[m] = MemoryBank.build(feats, size, select, blob["checkpoint_sha256"], labels=labels, seed=seed,
                                    modality=m)
    return banks

