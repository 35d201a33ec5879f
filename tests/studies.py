"""The test suite's long runs of the study (tests/test_scripts.py reads them), started in the background at the
session's first test, each only when a selected test reads it, so that they run side by side with the other
tests: most tests keep one core busy, and CI has two. Each test waits for the run it reads (``Background.wait``);
what a run gives does not depend on what runs beside it (each job has one thread, every seed is fixed).

``quick``: the quick study, one job after the other in one process (the local launcher's default).
``slurm``: the same study with --launcher slurm under a fake scheduler (``FAKE_SBATCH``), on its own media made
by its own data job (the same clips, by seed: the same report).
``own``: a study on a dataset of one's own (--dataset custom, two seeds, every section) in the pool (--jobs 2).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from tests.fake_media import make_fake_media

REPO = Path(__file__).resolve().parents[1]

PY = str(REPO / ".venv" / "bin" / "python")



def study_cmd(root: Path, *extra: str) -> list:
    return [PY, str(REPO / "scripts" / "run_study.py"), "--quick", "--out", str(root / "study"), "--media",
            str(root / "media"), "--index", str(root / "index"), "--clips_per_class", "5", *extra]


def _nice() -> None:
    os.nice(10)


class Background:
    """A command started now, in the background (its output in files under ``folder``), waited for by the test
    that reads it, niced (it takes the cores the tests in the foreground leave)."""

    def __init__(self, cmd: list, folder: Path, env: dict, timeout: float = 900) -> None:
        self.cmd, self.folder, self.deadline = cmd, folder, time.time() + timeout
        with open(folder / "stdout.txt", "w") as out, open(folder / "stderr.txt", "w") as err:
            # its own process group: stopping it stops its workers too
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err, preexec_fn=_nice,
                                         start_new_session=True)

    def wait(self) -> subprocess.CompletedProcess:
        """Its outcome once it has ended (killed, and the test failed, past its time limit)."""
        try:
            code = self.proc.wait(max(0.0, self.deadline - time.time()))
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"still running after its time limit: {self.cmd}")
        return subprocess.CompletedProcess(self.cmd, code, (self.folder / "stdout.txt").read_text(),
                                           (self.folder / "stderr.txt").read_text())

    def stop(self) -> None:
        """End it (and the processes it started) if it still runs (a test failed or was not selected)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def slurm_env(fake: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", FAKE_SLURM=str(fake),
                PATH=f"{fake}:{os.environ['PATH']}")


def slurm_cmd(root: Path) -> list:
    """The quick study with --launcher slurm, in <root>/slurm_study, on its own media (<root>/media, <root>/index)."""
    return [PY, str(REPO / "scripts" / "run_study.py"), "--quick", "--out", str(root / "slurm_study"), "--media",
            str(root / "media"), "--index", str(root / "index"), "--clips_per_class", "5", "--launcher", "slurm",
            "--slurm_args", "--partition debug --time 10"]


FAKE_SBATCH = r'''#!/usr/bin/env python3
"""A fake sbatch: records each submission and returns at once, as SLURM does; a detached runner (fake_runner.py)
starts the job when its afterok dependencies have succeeded (never, if one failed: DependencyNeverSatisfied), its
array tasks side by side, at most two jobs or tasks at a time on the machine (two slots, as two nodes would)."""
import json, os, subprocess, sys
from pathlib import Path
here = Path(os.environ["FAKE_SLURM"])
(here / "jobs").mkdir(exist_ok=True)
args, script = sys.argv[1:-1], sys.argv[-1]
deps = [d for a in args if a.startswith("--dependency=afterok:") for d in a.split(":")[1:]]
indices = [None]
for a in args:
    if a.startswith("--array="):
        lo, hi = a.split("=")[1].split("-")
        indices = list(range(int(lo), int(hi) + 1))
job = str(len(list((here / "jobs").glob("*.json"))) + 1)
(here / "jobs" / f"{job}.json").write_text(json.dumps({"deps": deps, "indices": indices, "script": script}))
with open(here / "submissions.jsonl", "a") as f:
    f.write(json.dumps({"id": job, "args": args, "script": Path(script).read_text()}) + "\n")
log = open(here / "jobs.log", "a")
subprocess.Popen([sys.executable, str(here / "fake_runner.py"), job], stdout=log, stderr=log, start_new_session=True)
print(job)
'''

FAKE_RUNNER = r'''import fcntl, json, os, subprocess, sys, time
from pathlib import Path
here = Path(os.environ["FAKE_SLURM"])
job = sys.argv[1]
spec = json.loads((here / "jobs" / f"{job}.json").read_text())


def status(j):
    p = here / "jobs" / f"{j}.status"
    return p.read_text() if p.is_file() else None


def try_slot():  # one of two slot files, locked while a task runs (released when the file closes)
    for k in range(2):
        f = open(here / f"slot{k}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except OSError:
            f.close()
    return None


while any(status(d) is None for d in spec["deps"]):
    time.sleep(0.1)
result = "ok" if all(status(d) == "ok" for d in spec["deps"]) else "never"
running = []


def reap():  # finished tasks give their slot back at once (a job never holds a slot it does not use)
    global result
    for proc, lock in list(running):
        if proc.poll() is not None:
            result = "failed" if proc.returncode else result
            lock.close()
            running.remove((proc, lock))


for i in spec["indices"] if result == "ok" else []:
    lock = None
    while lock is None:
        reap()
        lock = try_slot()
        if lock is None:
            time.sleep(0.1)
    env = dict(os.environ, SLURM_JOB_ID=job, **({} if i is None else {"SLURM_ARRAY_TASK_ID": str(i)}))
    running.append((subprocess.Popen(["bash", spec["script"]], env=env), lock))
while running:
    reap()
    time.sleep(0.1)
(here / "jobs" / f"{job}.status").write_text(result)
'''


OWN_CATS = ["alpha", "beta", "gamma", "delta"]  # 4 classes: the quick preset's APGD-T needs them


def own_study_cmd(media: Dict[str, Path], out: Path, cats: List[str]) -> List[str]:
    """The custom-dataset study over ``media`` (make_fake_media's paths) with the classes ``cats``."""
    return [PY, str(REPO / "scripts" / "run_study.py"), "--dataset", "custom", "--categories", *cats,
            "--data_root", str(media["root"]), "--preset", "quick", "--seeds", "0", "1", "--out", str(out),
            "--sections", "all", "--jobs", "2", "--list_train", str(media["train"]), "--list_val",
            str(media["val"]), "--list_test", str(media["test"])]


def own_media(root: Path) -> Dict[str, Path]:
    """Videos' media of one's own: 4 classes of 4 clips."""
    return make_fake_media(root / "own", OWN_CATS, clips_per_class=4, num_frames=16, seconds=2.0, img_hw=(40, 40),
                           seed=0)


def local_env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def start(wanted: set, tmp_path_factory) -> Dict[str, Tuple[Path, "Background"]]:
    """Start the runs that a selected test reads (``wanted``: the fixture names of the selected tests):
    {name: (its folder, its run)}."""
    runs: Dict[str, Tuple[Path, Background]] = {}
    if "quick_study" in wanted:
        root = tmp_path_factory.mktemp("quick_study")
        runs["quick"] = (root, Background(study_cmd(root), root, local_env()))
    if "slurm_study" in wanted:
        root = tmp_path_factory.mktemp("slurm_study")
        fake = root / "fake"
        fake.mkdir()
        (fake / "sbatch").write_text(FAKE_SBATCH)
        (fake / "sbatch").chmod(0o755)
        (fake / "fake_runner.py").write_text(FAKE_RUNNER)
        runs["slurm"] = (root, Background(slurm_cmd(root), root, slurm_env(fake)))
    if "own_study" in wanted:
        root = tmp_path_factory.mktemp("own_study")
        runs["own"] = (root, Background(own_study_cmd(own_media(root), root / "study", OWN_CATS), root, local_env()))
    return runs
