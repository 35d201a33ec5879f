"""utils/safepath.py: the one check that names from files and flags stay inside their folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from utils.errors import UsageError
from utils.safepath import UnsafePathError, check_name, name_problem, safe_join

BAD = {"": "empty", "..": "not a name", ".": "not a name", "../x": "separator", "a/b": "separator",
       "/etc/passwd": "absolute", "a\\b": "separator", "a\x00b": "NUL", "a\nb": "control", ".hidden": "hidden"}


@pytest.mark.parametrize("name,reason", sorted(BAD.items()))
def test_bad_names_are_refused_naming_where_and_why(name: str, reason: str) -> None:
    assert reason in name_problem(name)
    with pytest.raises(UnsafePathError, match=rf"^Annotations.txt, row 3: VideoID .*{reason}") as info:
        check_name(name, "Annotations.txt, row 3", "VideoID")
    assert isinstance(info.value, UsageError)  # run_cli turns it into one line and exit 2


@pytest.mark.parametrize("name", ["abc", "-x_y-12345", "50%done", "Church_bell", "a b", "x.mp4", "a..b"])
def test_plain_names_pass(name: str, tmp_path: Path) -> None:
    assert name_problem(name) is None and check_name(name, "--id") == name
    assert safe_join(tmp_path, name, where="--id", write=True) == tmp_path / name


def test_safe_join_checks_every_component(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "cls", "vid.mp4", where="f") == tmp_path / "cls" / "vid.mp4"
    with pytest.raises(UnsafePathError, match="separator"):
        safe_join(tmp_path, "cls", "../../x.mp4", where="f")


def test_writing_through_a_symlink_that_leads_out_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "cls")  # a class folder linked elsewhere
    assert safe_join(root, "cls", "a.mp4", where="f") == root / "cls" / "a.mp4"  # reading through it: fine
    with pytest.raises(UnsafePathError, match="outside"):
        safe_join(root, "cls", "a.mp4", where="f", write=True)
    os.symlink(root / "inner", root / "link")  # a link that stays inside: fine for writing
    (root / "inner").mkdir()
    assert safe_join(root, "link", "a.mp4", where="f", write=True) == root / "link" / "a.mp4"


def test_a_symlinked_root_is_fine(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "alias")
    assert safe_join(tmp_path / "alias", "cls", "a", where="f", write=True) == tmp_path / "alias" / "cls" / "a"


@pytest.mark.parametrize("run_id", ["../../escaped", "/abs/run", "a/b", ".."])
def test_run_id_cannot_leave_ckpt(tmp_path: Path, run_id: str, capsys) -> None:
    """--id ../../escaped (or an absolute --id) made the run folder outside --ckpt; now refused before any work."""
    import main_attack
    from pipeline.config import get_args_parser, parse_config
    from utils.errors import run_cli

    ckpt = tmp_path / "a" / "b" / "ckpt"
    argv = ["--dataset", "synthetic", "--ckpt", str(ckpt), "--id", run_id, "--mode", "train"]
    with pytest.raises(UnsafePathError, match=r"^--id: run name"):
        parse_config(get_args_parser(), argv)
    before = sorted(tmp_path.rglob("*"))
    assert run_cli(main_attack.main, argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: --id:")
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, inside --ckpt or out of it
