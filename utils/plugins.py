"""User plugin files (``--plugins a.py,b.py``): Python files imported once by path, before the parser reads
the registries, so that a head or an attack they register (``@register_fusion``, ``@ATTACKS.register``) is
a valid name everywhere. A missing file or one that fails to import is a ``UsageError`` naming the file.
The pipeline records their paths (args.json, the checkpoint's architecture record) for evaluations.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
import traceback
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from utils.errors import UsageError

log = logging.getLogger(__name__)

_LOADED: Dict[str, str] = {}  # resolved path -> module name (a file is imported once per process)


def split_paths(text: str) -> List[str]:
    """``a.py,b.py`` -> ``["a.py", "b.py"]`` (blanks dropped)."""
    return [t for t in (s.strip() for s in text.split(",")) if t]


def load_plugins(paths: Sequence[str], flag: str = "--plugins") -> List[str]:
    """Import each plugin file (once per process); returns their resolved paths. Errors name ``flag``
    and the file: not a ``.py`` file, missing, or an exception while importing (its last line)."""
    out = []
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        key = str(path)
        out.append(key)
        if key in _LOADED:
            continue
        if path.suffix != ".py":
            raise UsageError(flag, f"{raw}: a plugin is a Python file ending in .py")
        if not path.is_file():
            raise UsageError(flag, f"{raw}: no such file")
        name = f"av_plugin_{path.stem}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # any error of user code: one line naming the file
            del sys.modules[name]
            where = traceback.extract_tb(e.__traceback__)[-1]
            raise UsageError(flag, f"{raw} failed to import: {type(e).__name__}: {e} (line {where.lineno} of "
                             f"{where.filename})") from None
        _LOADED[key] = name
        log.info("plugin %s imported", key)
    return out


def plugin_file(obj: object) -> Optional[str]:
    """The plugin file that defines class or function ``obj``, or None when it is the project's own."""
    module = getattr(obj, "__module__", "")
    for path, name in _LOADED.items():
        if name == module:
            return path
    return None


def loaded_plugins() -> List[str]:
    """Resolved paths of the plugin files imported so far, in import order."""
    return list(_LOADED)
