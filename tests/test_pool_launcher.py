"""The local launcher's pool (run_study.py --jobs N, pipeline/launchers.pool): jobs start when their
dependencies have finished, trainings first; a failed job stops new submissions and the error names it.
(The pool's end-to-end run is the quick study of tests/test_scripts.py.)"""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline import launchers
from pipeline.study_plan import Job

_MARKS = {"dir": ""}


def _init(argv, threads):  # a worker's set-up: where to leave its marks (argv[0]) and its thread count
    _MARKS["dir"] = argv[0]
    Path(argv[0], f"threads-{os.getpid()}").write_text(f"{threads} {os.environ.get('OMP_NUM_THREADS')}")


def _run(name):
    if name == "train bad":
        raise ValueError("boom")
    Path(_MARKS["dir"], name).write_text("ran")
    return 0


def _study(tmp_path, jobs):
    return SimpleNamespace(args=SimpleNamespace(jobs=2), jobs=jobs, argv=[str(tmp_path)],
                           worker_functions=(_init, _run))


def test_ready_order_trainings_first_and_only_when_dependencies_finished():
    jobs = [Job("attack a", "eval", deps=("train a",)), Job("train b", "train"), Job("train a", "train"),
            Job("attack b", "eval", deps=("train b",))]
    assert [j.name for j in launchers.ready_order(jobs, set())] == ["train b", "train a"]
    assert [j.name for j in launchers.ready_order(jobs, {"train a"})] == ["train b", "train a", "attack a"]


def test_a_failed_job_stops_new_submissions_and_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(launchers, "cores", lambda: 2)
    jobs = [Job("train bad", "train"), Job("attack bad", "eval", deps=("train bad",)),
            Job("report", "report", deps=("attack bad",))]
    with pytest.raises(RuntimeError, match="study job 'train bad' failed: boom"):
        launchers.pool(_study(tmp_path, jobs), 2)
    assert not (tmp_path / "attack bad").exists()  # its dependant never ran
    threads = {p.read_text() for p in tmp_path.glob("threads-*")}
    assert threads == {"1 1"}  # 2 cores / 2 jobs: one thread each, in torch's settings and the environment
    assert os.environ.get("OMP_NUM_THREADS") != "1" or "OMP_NUM_THREADS" in os.environ  # restored, not leaked


def test_jobs_waiting_for_a_job_outside_the_plan_are_an_error(tmp_path):
    jobs = [Job("attack x", "eval", deps=("train nowhere",))]
    with pytest.raises(RuntimeError, match="wait for jobs that never run"):
        launchers.pool(_study(tmp_path, jobs), 2)


def test_several_jobs_in_one_process_are_checked_before_the_first_runs(tmp_path, monkeypatch):
    """run_jobs (``--job`` given several times, the slurm data job): every name is checked first, then each
    runs with run_one, in the order given."""
    ran = []
    monkeypatch.setattr(launchers, "run_one", lambda study, name: ran.append(name) or 0)
    study = SimpleNamespace(jobs=[Job("generate", "data"), Job("frames", "data", deps=("generate",))])
    with pytest.raises(launchers.UsageError, match="--job: no job 'bogus'"):
        launchers.run_jobs(study, ["generate", "bogus"])
    assert ran == []
    assert launchers.run_jobs(study, ["generate", "frames"]) == 0 and ran == ["generate", "frames"]
