"""Each flag is declared once: a ``RunConfig`` field whose metadata generates its argparse argument
(pipeline/flags.py); no other module adds arguments to the run's parser."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import pytest

from dataset.specs import get_spec, list_datasets
from pipeline import flags
from pipeline.config import RunConfig, add_certify_args, add_defense_args, get_args_parser, parse_config
from utils.registry import Registry

REPO = Path(__file__).resolve().parents[1]


def _actions(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def test_every_field_is_one_flag_and_every_flag_one_field():
    full = add_certify_args(add_defense_args(get_args_parser()))
    dests = Counter(a.dest for a in _actions(full))
    fields = [f.name for f in dataclasses.fields(RunConfig)]
    derived = set(flags.DERIVED_FIELDS)
    assert derived == {"defense", "certify", "attacks", "eps_grid", "adaptive_grid", "train_budget", "train_noise",
                       "given", "corruption_names", "severity_levels"}
    assert {f: dests[f] for f in fields if f not in derived and dests[f] != 1} == {}  # each field: one argument
    assert set(dests) == set(fields) - derived  # each argument: a field; no derived field is a flag
    options = Counter(o for a in _actions(full) for o in a.option_strings)
    assert [o for o, n in options.items() if n > 1] == []
    assert all(f"--{a.dest}" in a.option_strings for a in _actions(full))
    # main_attack.py's parser: every flag but the defense group's (whose fields keep their defaults)
    attack = {a.dest for a in _actions(get_args_parser())}
    defense = {f.name for f in flags.flag_fields()
               if f.metadata["flag"]["group"] in flags.DEFENSE_GROUPS + flags.CERTIFY_GROUPS}
    assert attack == set(dests) - defense and defense


def test_only_the_declaration_adds_run_flags(monkeypatch):
    callers = Counter()
    original = argparse._ActionsContainer.add_argument

    def recording(self, *args, **kwargs):
        if args and args[0] not in ("-h", "--help"):
            callers[sys._getframe(1).f_globals["__name__"]] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(argparse._ActionsContainer, "add_argument", recording)
    add_certify_args(add_defense_args(get_args_parser()))
    assert set(callers) == {"pipeline.flags"}, callers
    # nor in the source: the mains and pipeline/ build no arguments (pipeline/study.py has its own command line)
    sources = [REPO / "main_attack.py", REPO / "main_defense.py", REPO / "main_certify.py", *sorted((REPO / "pipeline").glob("*.py"))]
    builders = [p.name for p in sources if p.name not in ("flags.py", "study.py")
                and ("add_argument" in p.read_text() or "ArgumentParser(" in p.read_text())]
    assert builders == []


def test_a_declared_field_is_a_flag_with_its_type_default_choices_and_aliases():
    extras = Registry("test extras")

    @dataclass(frozen=True)
    class _Toy:
        """A configuration declared as RunConfig is: the parser is generated from it alone."""

        size: int = flags.flag(3, "model", help="a size", aliases=("--toy_size",))
        names: Tuple[str, ...] = flags.flag(None, "data", parse=lambda s: s.upper(), help="some names")
        rate: Optional[float] = flags.flag(None, "optim")
        pick: str = flags.flag("a", "model", choices=lambda: ["a", *extras.names()])
        on: bool = flags.flag(False, "run", help="a switch")
        derived: int = 0

    extras.register("late")(object)  # registered after the declaration, before the parser is built
    parser = flags.add_flags(argparse.ArgumentParser(add_help=False, allow_abbrev=False), list(flags.GROUPS),
                             cls=_Toy)
    ns = parser.parse_args(["--toy_size", "5", "--names", "x", "y", "--rate", "0.5", "--pick", "late", "--on"])
    assert vars(ns) == {"size": 5, "names": ["X", "Y"], "rate": 0.5, "pick": "late", "on": True}
    assert vars(parser.parse_args([])) == {"size": 3, "names": None, "rate": None, "pick": "a", "on": False}
    with pytest.raises(SystemExit):
        parser.parse_args(["--derived", "1"])  # a field without flag metadata is no flag
    titles = [g.title for g in parser._action_groups if g._group_actions]
    assert titles == [flags.GROUPS[k] for k in ("run", "data", "model", "optim")]  # GROUPS order
    with pytest.raises(ValueError, match="unknown flag group"):
        flags.flag(1, "nonsense")


def test_declared_spec_defaults_are_dataset_spec_attributes_and_fill_unset_flags():
    spec = get_spec("ave")
    assert set(flags.SPEC_DEFAULTS) >= {"audLen", "imgSize", "num_epoch", "lr_steps", "mix"}
    full = add_defense_args(get_args_parser())
    assert all(full.get_default(flag) is None for flag in flags.SPEC_DEFAULTS)
    cfg = parse_config(full, ["--dataset", "ave", "--mode", "eval"], defense=True)
    for flag, attr in flags.SPEC_DEFAULTS.items():
        value = getattr(spec, attr)
        assert getattr(cfg, flag) == (tuple(value) if isinstance(value, (list, tuple)) else value), flag
    assert all(isinstance(getattr(cfg, k), tuple) for k in flags.LIST_VALUED if getattr(cfg, k) is not None)
    assert "ave" in list_datasets()
