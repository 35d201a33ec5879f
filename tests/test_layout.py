"""The shape of the code: no import cycles (function-level imports count), layers import only downward,
docs/ARCHITECTURE.md lists every module, no module over 500 lines, no SystemExit in library code, and no
citation of a file outside the repository."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("utils", "dataset", "corruptions", "models", "attacks", "reporting", "pipeline")
ENTRY_DIRS = ("scripts", "benchmarks")
# Which project layers each layer may import (docs/ARCHITECTURE.md, "Layers").
ALLOWED = {
    "utils": {"utils"},
    "dataset": {"utils", "dataset"},
    "corruptions": {"utils", "corruptions"},
    "models": {"utils", "models"},
    "attacks": {"utils", "attacks", "models"},
    "reporting": {"utils", "reporting", "attacks"},
    "pipeline": {"utils", "dataset", "corruptions", "models", "attacks", "reporting", "pipeline", "main_attack", "main_defense",
                 "main_certify"},
}


def project_files() -> List[Path]:
    files = [REPO / "main_attack.py", REPO / "main_defense.py", REPO / "main_certify.py"]
    for d in PACKAGES + ENTRY_DIRS:
        files += sorted((REPO / d).rglob("*.py"))
    return [f for f in files if "__pycache__" not in f.parts]


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    p = REPO.joinpath(*dotted.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def imports_of(path: Path) -> Set[str]:
    """Project modules imported anywhere in ``path`` (top level or inside functions)."""
    tops = set(PACKAGES) | {"main_attack", "main_defense", "main_certify", "tests"}
    out: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in tops:
                    out.add(a.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in tops:
                continue
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if _is_module(sub) else node.module)
    return out


def graph() -> Dict[str, Set[str]]:
    return {module_name(f): imports_of(f) for f in project_files()}


def test_import_graph_has_no_cycles():
    g = graph()
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if m in g and state.get(m) is None:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if state.get(n) is None:
            visit(n)


def test_layers_import_only_downward():
    bad = []
    for mod, deps in graph().items():
        layer = mod.split(".")[0]
        if layer not in ALLOWED:
            continue
        for d in deps:
            if d.split(".")[0] not in ALLOWED[layer]:
                bad.append(f"{mod} imports {d}")
    assert not bad, bad
    # utils/ leaf modules: nothing from models, dataset, attacks (nor the layers above)
    for f in (REPO / "utils").glob("*.py"):
        assert all(d.split(".")[0] == "utils" for d in imports_of(f)), f


def test_architecture_page_lists_every_module():
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    listed = {m for m in re.findall(r"`([\w/]+\.py)`", doc) if not m.startswith("tests/")}
    # shorthand "`attacks/pgd.py`" etc.; every module file but package __init__ files and tests
    tree = {str(f.relative_to(REPO)) for f in project_files() if f.name != "__init__.py"}
    assert tree - listed == set(), f"modules missing from docs/ARCHITECTURE.md: {sorted(tree - listed)}"
    assert listed - tree == set(), f"docs/ARCHITECTURE.md names modules that do not exist: {sorted(listed - tree)}"


def test_no_module_over_500_lines():
    long = [f"{f.relative_to(REPO)}: {n}" for f in project_files()
            if (n := len(f.read_text().splitlines())) > 500]
    assert not long, long


def test_no_system_exit_in_library_code():
    offenders = []
    for f in project_files():
        if f.parts[len(REPO.parts)] in PACKAGES and "SystemExit" in f.read_text():
            offenders.append(str(f.relative_to(REPO)))
    assert not offenders, offenders


def test_nothing_cites_files_outside_the_repository():
    offenders = []
    for f in project_files() + sorted(REPO.glob("scripts/**/*.sh")) + sorted(REPO.glob("docs/*.md")) + [REPO / "README.md"]:
        text = f.read_text()
        if "PAPER.md" in text or "../shared" in text:
            offenders.append(str(f.relative_to(REPO)))
    assert not offenders, offenders


def _code_strings(path: Path) -> List[str]:
    """String literals of a module that are not docstrings."""
    tree = ast.parse(path.read_text())
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_run_folder_names_are_not_spelled_outside_rundir():
    from utils.rundir import EVAL_FILES, FILES

    names = [v for k, v in FILES.items() if "." in v] + ["results.json", "robustness.json", "args_eval.json"]
    offenders = []
    for f in project_files():
        if f.name == "rundir.py":
            continue
        offenders += [f"{f.relative_to(REPO)}: {n}" for s in _code_strings(f) for n in names if n in s]
    for f in sorted(REPO.glob("scripts/**/*.sh")):
        code = "\n".join(l for l in f.read_text().splitlines() if not l.lstrip().startswith("#"))
        offenders += [f"{f.relative_to(REPO)}: {n}" for n in names if n in code]
    assert not offenders, offenders
    assert EVAL_FILES["results"] == "results"
