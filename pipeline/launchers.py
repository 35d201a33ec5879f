"""Launchers of a study's plan (pipeline/study_plan.py): ``local`` runs the jobs one after the other in this
process, or with ``--jobs N`` in N worker processes at once (each job when the jobs it needs have finished; each
worker with ``max(1, cores // N)`` threads, so the numbers do not depend on which jobs share the machine);
``slurm`` writes one plain sbatch script per job to ``<out>/slurm/`` and submits it with
``--dependency=afterok`` on the jobs it needs (trainings through ``torchrun --nproc_per_node $NPROC``, the
evaluations that wait for the same trainings as one job array, the report last). No polling: the report job
runs when every evaluation has finished, and a failed job fails its dependants (afterok). Rerunning the study
command submits only the jobs whose outputs are missing.

A scheduled job runs ``scripts/run_study.py <the study's flags> --job NAME`` (``run_one``), which checks the
flags again, runs that one job and writes its record to ``<out>/steps/<job>.json``; the report job gathers
those records into ``study.json`` before it writes the report. The data steps, which run one after the other
anyway, are one scheduled job: one process with ``--job`` given once per step (``run_jobs``), so the study's
start-up (checks, imports: seconds per process) is paid once for them, not once per step.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shlex
import subprocess
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from pipeline.study_plan import Job
from utils.errors import UsageError
from utils.fileio import append_text, atomic_write_text
from utils.registry import Registry
from utils.rundir import RunDir

Study = Any  # pipeline.study.Study (which imports this module)

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = "slurm"  # <out>/slurm/: the job scripts and a submissions log
STEPS_DIR = "steps"  # <out>/steps/<job>.json: the record of a job run by a scheduler
# run_study.py flags that belong to the submitting call only (not passed into the job scripts)
SUBMIT_ONLY = {"--launcher": 1, "--slurm_args": 1, "--dry_run": 0, "--job": 1, "--jobs": 1}

LAUNCHERS: Registry[Callable[[Study], Dict[str, Path]]] = Registry("launcher")


def slug(name: str) -> str:
    """A job name as a file name ("attack concat seed1" -> attack_concat_seed1)."""
    return name.replace(" ", "_")


log = logging.getLogger("study")


@LAUNCHERS.register("local")
def local(study: Study) -> Dict[str, Path]:
    """Every job of the plan on this machine: one after the other in this process (``--jobs 1``), or in a pool
    of ``--jobs`` worker processes (``pool``); returns the report's paths."""
    if getattr(study.args, "jobs", 1) > 1:
        return pool(study, study.args.jobs)
    paths: Dict[str, Path] = {}
    for job in study.jobs:
        if job.kind == "report":
            paths = study.report()
        else:
            study.run_job(job)
    return paths


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def job_threads(n_jobs: int) -> int:
    """Threads of each of ``n_jobs`` concurrent jobs: the cores shared out, at least one."""
    return max(1, cores() // n_jobs)


def ready_order(jobs: Sequence[Job], done: set) -> List[Job]:
    """The jobs whose dependencies have all finished, trainings first (they unlock evaluations), then in plan
    order."""
    ready = [j for j in jobs if all(d in done for d in j.deps)]
    return sorted(ready, key=lambda j: j.kind != "train")


def pool(study: Study, n_jobs: int) -> Dict[str, Path]:
    """Run the plan in ``n_jobs`` worker processes (spawned: each imports torch once and runs one job at a time
    with ``job_threads`` threads, as a scheduled job: ``run_one``, its record in <out>/steps/), then gather the
    records into study.json and write the report. A failed job stops new submissions; the running ones finish,
    and the error names the job (a rerun reuses every finished step)."""
    threads = job_threads(n_jobs)
    init, run = study.worker_functions
    pending = [j for j in study.jobs if j.kind != "report"]
    done: set = set()
    running: Dict[Future, str] = {}
    failed: Optional[Tuple[str, BaseException]] = None
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # the workers' (spawned below; this process's torch is set up)
    log.info("[pool] %d worker(s), %d thread(s) each", n_jobs, threads)
    try:
        with ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn"), initializer=init,
                                 initargs=(study.argv, threads)) as ex:
            while (pending and failed is None) or running:
                for job in ready_order(pending, done) if failed is None else []:
                    if len(running) >= n_jobs:
                        break
                    running[ex.submit(run, job.name)] = job.name
                    pending.remove(job)
                if not running:
                    raise RuntimeError(f"study jobs wait for jobs that never run: {[j.name for j in pending]}")
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    name = running.pop(fut)
                    err = fut.exception()
                    if err is not None and failed is None:
                        failed = (name, err)
                    elif err is None:
                        done.add(name)
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    if failed is not None:
        raise RuntimeError(f"study job {failed[0]!r} failed: {failed[1]}") from failed[1]
    gather(study)
    return study.report()


# -- one job, run by a scheduler ------------------------------------------------------------------------
def step_file(out: Path, name: str) -> Path:
    return out / STEPS_DIR / f"{slug(name)}.json"


def run_one(study: Study, name: str) -> int:
    """Run the job ``name`` of the study's plan and write its record (``--job``; the report job gathers the
    records into study.json first)."""
    jobs = {j.name: j for j in study.jobs}
    if name not in jobs:
        raise UsageError("--job", f"no job {name!r} in this study's plan (see --dry_run)")
    job = jobs[name]
    study.out.mkdir(parents=True, exist_ok=True)
    if job.kind == "report":
        gather(study)
        study.report()
        return 0
    study.job_mode = True  # no writes to the shared study.json / timings.json from concurrent jobs
    study.run_job(job)
    record = dict(study.steps[name], seconds=round(study.timings.get(name, 0.0), 3))
    if name in study.data_commands:
        record["command"] = study.data_commands[name]
    atomic_write_text(step_file(study.out, name), json.dumps(record, indent=1) + "\n")
    return 0


def run_jobs(study: Study, names: Sequence[str]) -> int:
    """Run the jobs ``names`` of the study's plan one after the other in this process (``--job`` given several
    times), each as ``run_one``; every name is checked before the first job runs."""
    plan = {j.name for j in study.jobs}
    for name in names:
        if name not in plan:
            raise UsageError("--job", f"no job {name!r} in this study's plan (see --dry_run)")
    for name in names:
        run_one(study, name)
    return 0


def gather(study: Study) -> None:
    """study.json's steps from the jobs' records, in plan order (a training's record from its run folder)."""
    study.open_record()
    for job in study.jobs:
        path = step_file(study.out, job.name)
        if path.is_file():
            record = json.loads(path.read_text())
            seconds = record.pop("seconds", None)
            command = record.pop("command", None)
            if command is not None:
                study.data_commands[job.name] = command
            if seconds is not None:
                study.recorded.setdefault(job.name, seconds)
            study.steps[job.name] = record
        elif job.kind == "train" and RunDir(job.run_root).done_train.exists():
            study.steps[job.name] = {"run": job.model, "seed": job.seed,
                                     "folder": str(job.run_root.relative_to(study.out))}
        elif job.kind in ("eval", "data"):
            raise RuntimeError(f"study job {job.name!r} has no record ({path}): it did not finish")
    study.write_record()
    atomic_write_text(study.out / "timings.json", json.dumps(study.recorded, indent=1) + "\n")


# -- SLURM ------------------------------------------------------------------------------------------------
def job_done(study: Study, job: Job) -> bool:
    """Whether a job's outputs are already there (rerunning submits only the others)."""
    if job.kind == "train":
        return RunDir(job.run_root).done_train.exists()
    if job.kind in ("eval", "data"):
        path = step_file(study.out, job.name)
        if not path.is_file():
            return False
        eval_id = json.loads(path.read_text()).get("eval_id")
        return eval_id is None or RunDir(job.run_root).eval_dir(eval_id).is_dir()
    return False


def study_flags(argv: Sequence[str]) -> List[str]:
    """The study's own flags (without the submitting call's --launcher, --slurm_args, --dry_run, --job)."""
    out, skip = [], 0
    for a in argv:
        if skip:
            skip -= 1
            continue
        key = a.split("=", 1)[0]
        if key in SUBMIT_ONLY:
            skip = SUBMIT_ONLY[key] if "=" not in a else 0
            continue
        out.append(a)
    return out


def _header(name: str, log: str) -> List[str]:
    return ["#!/bin/bash", f"#SBATCH --job-name=study-{slug(name)}", f"#SBATCH --output={log}",
            "set -euo pipefail", f"cd {shlex.quote(str(REPO))}", f"export PYTHONPATH={shlex.quote(str(REPO))}",
            f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH"]


def _study_call(study: Study, *names: str) -> str:
    """The command line of a scheduled job running the jobs ``names`` in one process (``run_jobs``)."""
    argv = [sys.executable, "scripts/run_study.py", *study_flags(study.argv), *[a for n in names for a in ("--job", n)]]
    return " ".join(shlex.quote(str(a)) for a in argv)


def write_scripts(study: Study) -> List[Tuple[str, Path, List[str], List[str]]]:
    """The sbatch scripts of the jobs still to run: (key, script, job names it runs, names it waits for)."""
    folder = study.out / SLURM_DIR
    folder.mkdir(parents=True, exist_ok=True)
    todo = [j for j in study.jobs if not job_done(study, j)]
    units: List[Tuple[str, Path, List[str], List[str]]] = []
    data = [j for j in todo if j.kind == "data"]
    if data:
        path = folder / "data.sh"
        lines = _header("data", str(folder / "data-%j.log")) + [_study_call(study, *[j.name for j in data])]
        atomic_write_text(path, "\n".join(lines) + "\n")
        units.append(("data", path, [j.name for j in data], []))
    for j in todo:
        if j.kind != "train":
            continue
        path = folder / f"{slug(j.name)}.sh"
        argv = [*j.argv, *study.resume_flag(RunDir(j.run_root))]
        cmd = " ".join(shlex.quote(str(a)) for a in argv)
        lines = _header(j.name, str(folder / f"{slug(j.name)}-%j.log")) + [
            'NPROC="${NPROC:-1}"  # processes (GPUs) per training',
            f'torchrun --standalone --nproc_per_node "$NPROC" {cmd}']
        atomic_write_text(path, "\n".join(lines) + "\n")
        units.append((j.name, path, [j.name], list(j.deps)))
    groups: Dict[Tuple[str, ...], List[Job]] = {}
    for j in todo:
        if j.kind == "eval":
            groups.setdefault(j.deps, []).append(j)
    for deps, jobs in groups.items():
        key = f"evals after {' + '.join(deps)}"
        path = folder / f"{slug(key)}.sh"  # the file is named as the job
        cases = [f"  {i}) {_study_call(study, j.name)} ;;" for i, j in enumerate(jobs)]
        lines = _header(key, str(folder / f"{slug(key)}-%A_%a.log")) + [
            'case "$SLURM_ARRAY_TASK_ID" in', *cases,
            '  *) echo "no job for array index $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac"]
        atomic_write_text(path, "\n".join(lines) + "\n")
        units.append((key, path, [j.name for j in jobs], list(deps)))
    path = folder / "report.sh"
    atomic_write_text(path, "\n".join(_header("report", str(folder / "report-%j.log"))
                                      + [_study_call(study, "report")]) + "\n")
    units.append(("report", path, ["report"], [j.name for j in todo if j.kind != "report"]))
    return units


@LAUNCHERS.register("slurm")
def slurm(study: Study) -> Dict[str, Path]:
    """Submit the jobs still to run with sbatch (dependencies afterok); returns {} (the report job writes the
    report when its dependencies finish)."""
    ids: Dict[str, str] = {}  # job name -> SLURM job id
    submitted = []
    for key, script, names, deps in write_scripts(study):
        after = sorted({ids[d] for d in deps if d in ids}, key=int)
        cmd = ["sbatch", "--parsable", *shlex.split(study.args.slurm_args)]
        if after:
            cmd.append("--dependency=afterok:" + ":".join(after))
        if key.startswith("evals after"):
            cmd.append(f"--array=0-{len(names) - 1}")
        cmd.append(str(script))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch failed (exit {proc.returncode}) for {script}: {proc.stderr.strip()}")
        job_id = proc.stdout.strip().split(";")[0]
        for n in names:
            ids[n] = job_id
        submitted.append({"job": key, "script": str(script), "slurm_id": job_id, "command": cmd})
        print(f"submitted {key}: job {job_id}" + (f" (after {', '.join(after)})" if after else ""))
    log = study.out / SLURM_DIR / "submissions.jsonl"
    append_text(log, "".join(json.dumps(s) + "\n" for s in submitted))  # the history of each call's submissions
    return {}
