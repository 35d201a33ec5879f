"""Names from files and flags that become paths, checked so that they cannot leave their folder.

A *name* is one path component taken from user input: a run ``--id``, an AVE VideoID, a MUSIC or
Kinetics-Sounds class or YouTube id, an ingested clip's name. It must be non-empty, not ``.`` or ``..``,
not hidden (a leading ``.``: the extractors and index builders skip hidden names, so the clip would vanish
silently), and free of ``/``, ``\\``, NUL and other control characters (a newline would split a clip list's
row). So ``root / name`` is always directly inside ``root``.

Symlinks: reading through a symlink is allowed (datasets are often linked in from another disk). Writing
is not: :func:`safe_join` with ``write=True`` refuses a destination whose folder resolves outside the
resolved root (a symlinked class folder pointing elsewhere). The destination itself may be a symlink: the
project's writers replace it by a rename (``os.replace``), never write through it.

Every refusal is an :class:`UnsafePathError` (a :class:`utils.errors.UsageError`) naming where the name
came from (``--id``, ``Annotations.txt, row 3``) and the reason; entry points turn it into one line, exit 2.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from utils.errors import UsageError

PathLike = Union[str, "os.PathLike[str]"]
_SEPARATORS = ("/", "\\")  # POSIX separator, and Windows' (a name with it is a path on Windows)


class UnsafePathError(UsageError):
    """A name or path from ``where`` (a flag, or ``file, row N``) that would leave its folder."""


def name_problem(name: object) -> Optional[str]:
    """Why ``name`` cannot be one path component (None when it can)."""
    if not isinstance(name, str):
        return f"{name!r} is not a text name"
    if name == "":
        return "empty name"
    if "\x00" in name:
        return f"{name!r} contains a NUL byte"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"{name!r} contains a control character"
    if name.startswith("/") or os.path.isabs(name):
        return f"{name!r} is an absolute path"
    if any(s in name for s in _SEPARATORS):
        return f"{name!r} contains a path separator"
    if name in (".", ".."):
        return f"{name!r} is not a name (it names a folder relative to another)"
    if name.startswith("."):
        return f"{name!r} is a hidden name (the extractors and the index builder skip hidden names)"
    return None


def check_name(name: object, where: str, what: str = "name") -> str:
    """``name`` unchanged when it is one safe path component; else :class:`UnsafePathError` naming ``where``
    (``--id``, ``<file>, row N``) and ``what`` it is (``VideoID``)."""
    reason = name_problem(name)
    if reason is not None:
        raise UnsafePathError(where, f"{what} {reason}; it must be one file name inside its folder")
    return name  # type: ignore[return-value]


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def safe_join(root: PathLike, *names: str, where: str, what: str = "name", write: bool = False) -> Path:
    """``root / names[0] / names[1] ...`` after :func:`check_name` on each name. With ``write``, also refuse
    when the destination's folder (following symlinks) resolves outside ``root`` (resolved), so nothing is
    written through a symlink that leads out of ``root``."""
    root = Path(root)
    for name in names:
        check_name(name, where, what)
    path = root.joinpath(*names)
    if write:
        real_root = root.resolve()
        real_parent = path.parent.resolve()
        if not _inside(real_parent, real_root):
            raise UnsafePathError(where, f"{what} {'/'.join(names)!r}: {path.parent} resolves to {real_parent}, "
                                         f"outside {real_root} (a symlink leads out); refusing to write there")
    return path
