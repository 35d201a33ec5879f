"""Study sections (pipeline/study_sections.py): a registered section adds its evaluations to every seed's plan
under its own kind, --sections picks them (all, none, names; unknown names exit 2), and the report places each
section's blocks under its heading and names the sections not run."""
from __future__ import annotations

from typing import Any, List

import pytest

from pipeline import study, study_sections
from pipeline.study_sections import SECTIONS, Section, SeedPlan, resolve
from reporting.study_findings import section_blocks
from reporting.study_report import Block
from tests.test_study_plan import _dry_run, _list_flags, _media
from utils.errors import run_cli


class _Probe(Section):
    """A section that evaluates concat with FGSM in every seed, and audio too in the first one."""

    title = "Probe section"
    summary = "FGSM on concat"

    def plan(self, sp: SeedPlan) -> None:
        sp.evaluate("probe", "concat", ["--attack_type", "fgsm"], self.name)
        if sp.first:
            sp.evaluate("probe", "audio", ["--attack_type", "fgsm", "--probe_scale", sp.scale], self.name)

    def report(self, s: Any) -> List[Block]:
        return [Block("p", f"probe rows: {len(s.kind_results('concat', self.name))}")]


@pytest.fixture
def probe():
    study_sections.register("zz_probe")(_Probe)
    yield "zz_probe"
    SECTIONS._items.pop("zz_probe")  # noqa: SLF001  (the registry has no public removal: tests only)


def test_a_section_adds_its_evaluations_to_every_seed(tmp_path, capsys, probe):
    m = _media(tmp_path / "own", ["a", "b", "c", "d", "e"])
    base = ["--dataset", "custom", "--categories", "a", "b", "c", "d", "e", "--data_root", str(m["root"]),
            *_list_flags(m), "--preset", "quick", "--seeds", "0", "1", "--out", str(tmp_path / "s"), "--dry_run"]
    without, _ = _dry_run(capsys, [*base, "--sections", "none"])
    jobs, text = _dry_run(capsys, [*base, "--sections", probe])
    added = [j for j in jobs if j not in without]
    assert [name for _, name, _ in added] == ["probe concat seed0", "probe audio seed0", "probe concat seed1"]
    for kind, name, cmd in added:
        assert kind == "eval" and "--attack_type fgsm" in cmd and "--mode eval --reuse_eval" in cmd
        seed = name[-1]
        assert f"--seed {seed}" in cmd and f"--id seed{seed}" in cmd
    assert "--arch_classifier audio" in added[1][2] and "--probe_scale quick" in added[1][2]
    assert jobs[-1][0] == "report"  # the report still comes last, after the sections' evaluations


def test_the_section_runs_after_the_models_it_evaluates(tmp_path, probe):
    m = _media(tmp_path / "own", ["a", "b", "c", "d", "e"])
    args = study.get_args_parser().parse_args(
        ["--dataset", "custom", "--categories", "a", "b", "c", "d", "e", "--data_root", str(m["root"]),
         *_list_flags(m), "--preset", "quick", "--sections", probe, "--out", str(tmp_path / "s"), "--dry_run"])
    jobs = {j.name: j for j in study.Study(args).jobs}
    assert jobs["probe concat"].deps == ("train concat",) and jobs["probe concat"].eval_kind == probe
    assert "probe concat" in jobs["report"].deps


def test_sections_flag_checks(tmp_path, capsys, probe):
    assert resolve(["none"], "demo") == [] and probe in resolve(["all"], "demo")
    assert resolve([f"{probe}"], "quick") == [probe]
    with pytest.raises(KeyError, match="valid study section names"):
        resolve(["no_such_section"], "demo")
    out = tmp_path / "s"
    assert run_cli(study.main, ["--sections", "no_such_section", "--out", str(out), "--dry_run"]) == 2
    err = capsys.readouterr().err
    assert "--sections" in err and "no_such_section" in err and not out.exists()


def test_an_evaluation_of_a_model_the_seed_did_not_train_is_refused():
    sp = SeedPlan(builder=None, seed=1, first=False, scale="demo", common=[], evaluation=[],
                  trained={"concat": "train concat seed1"})
    with pytest.raises(KeyError, match="'sum' was not trained in seed 1"):
        sp.evaluate("probe", "sum", [], "zz")


def test_report_places_sections_and_names_those_not_run():
    blocks = section_blocks(object(), [("Probe section", lambda s: [Block("p", "inside")])],
                            [("Other section", "what it runs", "other")])
    assert [(b.kind, b.text) for b in blocks[:2]] == [("h2", "Probe section"), ("p", "inside")]
    assert "Other section (what it runs; --sections other)" in blocks[2].text
    assert section_blocks(object(), [], []) == []
