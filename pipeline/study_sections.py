"""Study sections: the families of evaluations beyond the paper's grid (attacks in time, misalignment, transfer,
universal perturbations, corruptions, missing inputs, certification, other defences), one class each, picked
by name with ``scripts/run_study.py --sections NAME ...``.

A section does two things:

- ``plan(sp)``: for one seed of the study, add its jobs through ``sp`` (a ``SeedPlan``: ``sp.evaluate(...)``
  for an evaluation of a model the preset trained, ``sp.train(...)`` for a model of its own). Every evaluation
  it adds is recorded in ``study.json`` under the section's ``name`` as its kind, so the report finds exactly
  those folders. ``sp.scale`` says which budgets to use ("demo", "quick" or "paper"); ``sp.first`` whether this
  is the study's first seed (a section that runs on the first seed only says so in its report).
- ``report(s)``: the report's blocks for the section (reporting/study_report.Block), read through the study
  view ``s`` (reporting/study_findings.StudyView: ``s.model_seeds``, ``s.kind_results(model, kind, seed)``,
  ``s.kind_per_sample(...)``, ``s.kind_dir(...)``; reporting/study_readings.kind_by_seed gives {seed: rows}).
  Accuracies over seeds: reporting/study_readings (acc_seeds, find_rows, first_row) and reporting/stats (mean,
  range, Wilson interval, per-seed McNemar); reporting/study_findings.accuracy_table for a table of models.

To add one: a file in pipeline/sections/ with a ``Section`` subclass registered in ``SECTIONS``, imported by
pipeline/sections/__init__.py, listed in docs/ARCHITECTURE.md. Nothing else changes: the flag, the plan, the
report and the list of sections not run come from the registry.

Section modules import this module, never pipeline/study_plan.py (which imports them): ``SeedPlan`` hands them
what they need of the plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Type

from utils.registry import Registry

SCALES = ("demo", "quick", "paper")  # the budgets a section runs at (the preset's; the full preset's: demo)


@dataclass
class SeedPlan:
    """One seed of the study's plan, as a section sees it.

    ``common``: the flags every command of this seed carries (dataset, lists, media, architecture, seed);
    ``evaluation``: ``common`` plus the evaluation batch; ``trained``: model -> the name of its training job in
    this seed (the models the preset trained); ``builder``: the plan builder (pipeline/study_plan.PlanBuilder)."""

    builder: Any
    seed: int
    first: bool
    scale: str
    common: List[str]
    evaluation: List[str]
    trained: Dict[str, str] = field(default_factory=dict)
    arch_of: Dict[str, str] = field(default_factory=dict)  # model -> its --arch_classifier (minsim: concat)

    def checkpoint(self, model: str) -> str:
        """The best checkpoint of ``model`` in this seed (a path the commands can name)."""
        return self.builder.checkpoint(model, self.seed)

    def run_folder(self, model: str) -> str:
        """The run folder of ``model`` in this seed."""
        return str(self.builder.run_root(model, self.seed))

    def evaluate(self, verb: str, model: str, flags: Sequence[str], kind: str, main: str = "main_attack.py",
                 deps: Sequence[str] = ()) -> str:
        """An evaluation of a trained ``model`` (its run folder, --arch_classifier and the evaluation flags are
        added), recorded under ``kind``; waits for the model's training and ``deps``. Returns the job's name."""
        if model not in self.trained:
            raise KeyError(f"section evaluation {verb!r}: model {model!r} was not trained in seed {self.seed} "
                           f"(trained: {', '.join(sorted(self.trained))})")
        arch = ["--arch_classifier", self.arch_of.get(model, model)]
        return self.builder.evaluate(verb, model, self.seed, main, [*self.evaluation, *arch, *flags], kind,
                                     [self.trained[model], *deps])

    def train(self, model: str, flags: Sequence[str], deps: Sequence[str] = (), main: str = "main_attack.py") -> str:
        """A training of a section's own ``model`` (its run folder and the common flags are added); the new model
        can then be evaluated with ``evaluate``."""
        name = self.builder.train(model, self.seed, main, [*self.common, *flags], deps)
        self.trained[model] = name
        return name


class Section:
    """A family of evaluations: its jobs per seed and its part of the report (module docstring)."""

    name: str = ""  # the flag's name and the kind of its evaluations in study.json
    title: str = ""  # the report's heading
    summary: str = ""  # one line: what it runs (the report lists it when the section was not run)

    def plan(self, sp: SeedPlan) -> None:
        raise NotImplementedError

    def report(self, s: Any) -> List[Any]:
        raise NotImplementedError


SECTIONS: Registry[Type[Section]] = Registry("study section")
# The sections a preset runs when --sections is not given: the demo those that fit its time budget (docs/demo.md),
# the full preset every one (ALL_BY_DEFAULT); quick (plumbing) and paper (the paper's grid) none unless asked
DEFAULT_SECTIONS: Dict[str, List[str]] = {}
ALL_BY_DEFAULT = ("full",)


def register(name: str, defaults: Sequence[str] = ()) -> Callable[[Type[Section]], Type[Section]]:
    """Class decorator: register a section as ``name``; ``defaults``: the presets that run it by default."""

    def deco(cls: Type[Section]) -> Type[Section]:
        cls.name = name
        SECTIONS.register(name)(cls)
        for preset in defaults:
            DEFAULT_SECTIONS.setdefault(preset, []).append(name)
        return cls

    return deco


def resolve(given: Optional[Sequence[str]], preset: str) -> List[str]:
    """The sections to run: ``given`` (``all``, ``none`` or names; unknown names raise listing the valid ones),
    else the preset's defaults, in registry order."""
    if given is None:
        names = SECTIONS.names() if preset in ALL_BY_DEFAULT else DEFAULT_SECTIONS.get(preset, [])
    elif list(given) == ["all"]:
        names = SECTIONS.names()
    elif list(given) == ["none"]:
        names = []
    else:
        names = [n for g in given for n in g.split(",") if n]
        for n in names:
            SECTIONS.get(n)
    return [n for n in SECTIONS.names() if n in names]
