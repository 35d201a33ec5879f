"""The study sections of the temporal attacks ("time") and of a missing input ("missing"): the jobs each adds
per seed (dry run of the quick preset) and the report's table read from a study view."""
from __future__ import annotations

from typing import Any, Dict, List

from pipeline.sections.missing_input import MissingSection
from pipeline.sections.time_attacks import TimeSection
from tests.test_study_plan import _dry_run, _list_flags, _media


def test_sections_add_their_evaluations_per_seed(tmp_path, capsys):
    m = _media(tmp_path / "own", ["a", "b", "c", "d", "e"])
    base = ["--dataset", "custom", "--categories", "a", "b", "c", "d", "e", "--data_root", str(m["root"]),
            *_list_flags(m), "--preset", "quick", "--seeds", "0", "1", "--out", str(tmp_path / "s"), "--dry_run"]
    without, _ = _dry_run(capsys, [*base, "--sections", "none"])
    jobs, _ = _dry_run(capsys, [*base, "--sections", "time", "missing"])
    added = [j for j in jobs if j not in without]
    time_jobs = [j for j in added if j[1].startswith("time attacks")]
    assert [j[1] for j in time_jobs] == ["time attacks concat seed0", "time attacks concat seed1"]
    for _, _, cmd in time_jobs:
        assert "--num_frames 4" in cmd and "--attack_type pgd,sparse_time,time_shared,tia" in cmd
        assert "--attack_args sparse_time:frames=1" in cmd and "--attack_steps 2" in cmd  # quick scale
    missing = [j for j in added if j[1].startswith("missing input")]
    names = [j[1] for j in missing]
    # seed 0 trains every head of the preset; seed 1 the headline concat only; unimodal models are left out
    assert "missing input concat seed0" in names and "missing input concat seed1" in names
    assert not any(" audio seed" in n or " visual seed" in n for n in names)
    for _, name, cmd in missing:
        assert "--missing_modality none audio visual" in cmd and "--missing_fill" in cmd
    assert sum("--missing_fill mean" in cmd for _, _, cmd in missing if " concat " in f" {cmd} ") >= 2


class View:
    """A study view with given rows per (model, kind, seed, file)."""

    def __init__(self, rows: Dict[tuple, List[Dict[str, Any]]]) -> None:
        self.rows = rows

    def model_seeds(self, model: str) -> List[int]:
        return sorted({k[2] for k in self.rows if k[0] == model})

    def kind_results(self, model: str, kind: str, seed=None, name: str = "results") -> List[Dict[str, Any]]:
        return self.rows.get((model, kind, seed, name), [])

    def kind_per_clip(self, model: str, kind: str, name: str, keys, seed=None) -> Dict[tuple, Dict[int, bool]]:
        return {}  # evaluations without per-clip files


def _missing_rows(acc_a: float, acc_v: float) -> List[Dict[str, Any]]:
    return [{"missing_input": m, "missing_fill": f, "clean_acc": 0.75, "missing_acc": a, "n_samples": 80}
            for m, f, a in (("none", "-", 0.75), ("audio", "zeros", acc_a), ("visual", "zeros", acc_v))]


def test_missing_report_gives_each_input_over_seeds():
    view = View({("concat", "missing", 0, "missing"): _missing_rows(0.5, 0.25),
                 ("concat", "missing", 1, "missing"): _missing_rows(0.25, 0.25)})
    blocks = MissingSection().report(view)
    table = blocks[1].table
    assert "No per-clip correctness" in blocks[-1].text  # no missing_per_sample.json: no paired test
    (line,) = table.rows
    assert line["model"] == "concat" and line["seeds"] == 2 and line["fill"] == "zeros"
    assert line["audio"].startswith("37.5%") and line["audio"].endswith(": 50.0, 25.0)")  # mean, range, each seed in order
    assert line["visual"].startswith("25.0%") and line["none"].startswith("75.0%")


def test_time_report_rows_per_attack():
    def row(attack: str, acc: float) -> Dict[str, Any]:
        return {"attack": attack, "eps_audio": 0.006, "eps_visual": 0.006, "clean_acc": 0.8, "adv_acc": acc,
                "n_samples": 100}
    view = View({("concat", "time", 0, "results"): [row("pgd", 0.1), row("sparse_time", 0.4),
                                                    row("time_shared", 0.3), row("tia", 0.05)]})
    table = TimeSection().report(view)[-1].table
    got = {r["attack"].split(" ")[0]: r["acc"].split("%")[0] for r in table.rows}
    assert got == {"none": "80.0", "PGD": "10.0", "sparse": "40.0", "one": "30.0", "temporal": "5.0"}
