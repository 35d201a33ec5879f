"""Run the whole study and write <out>/report.{md,html}: plan (pipeline/study_plan.py), launch
(pipeline/launchers.py), record (this module) and report (reporting/).

    python scripts/run_study.py --out runs/demo                          # the demo (bash scripts/demo.sh)
    python scripts/run_study.py --out runs/quick --preset quick          # a ~2-minute smoke version
    python scripts/run_study.py --dataset ave --preset paper --seeds 0 1 2 --data_root media/ave --dry_run
    python scripts/run_study.py ... --launcher slurm --slurm_args "--partition gpu --gres gpu:1"

Steps (each reuses finished work, so a killed study resumes): the embedded set's data; the preset's trainings
and evaluations, per seed (pipeline/study_plan.py); the report (tables, tests, surfaces, commands, timings).
Nothing here is tuned to make a finding come out one way: the report states what was measured.

<out>/study.json records the study's settings, its seeds and, per step, the model, the seed, the run folder and
the evaluation folder it ran or reused; the report reads exactly those (never "the newest folder" of a run), and
a later call with other settings is refused (exit 2): run folders are never overwritten, so other settings need
a new --out. Every flag and list is checked before the first step (exit 2, one line, nothing written).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import main_attack
import main_certify
import main_defense
from dataset.batches import default_workers
from dataset.index import read_index
from dataset.specs import CUSTOM, DatasetSpec, get_spec, list_datasets
from pipeline import launchers
from pipeline import study_sections
from pipeline.study_plan import (AA_DEMO, AA_QUICK, PRESETS, SURFACE_EPS, Job, PlanInput, build_plan,
                                 classes_needed, describe_embedded, embedded_data_jobs, render)
from reporting.study_findings import build_report
from reporting.study_report import command_text, write_report
from reporting.study_results import STUDY_FILE, RecordedView
from reporting.study_results import write_results_long
from utils.errors import MalformedFileError, UsageError
from utils.fileio import atomic_write_text, creatable_problem
from utils.rundir import RunDir, eval_file

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("study")

# the mains a study step runs in this process (each prints its "evaluation folder:" line, pipeline/context.py)
IN_PROCESS = {"main_attack.py": main_attack.main, "main_defense.py": main_defense.main,
              "main_certify.py": main_certify.main}
# the report's fusion table, in this order: the heads of the paper (docs/paper.md, Model) plus attention and late,
# each where the study trained it (``Study.fusions``)
STUDY_HEADS = ["concat", "sum", "film_av", "film_va", "gated_av", "gated_va", "attention", "late"]
# The embedded set's size: 100 clips of 2 s per class, split 72/8/20 (train/val/test) so that the test list has
# 160 clips (a standard error of at most 4 points on one accuracy). Chosen with the unimodal and concat
# models' validation accuracy as the only criterion (docs/demo.md); never on any attacked number.
CLIPS_PER_CLASS = 100
TIMINGS_FILE = "timings.json"  # <out>/timings.json: each step's seconds in the call that did its work
# <out>/study.json: the study's settings, seeds and, per step, the run and evaluation folder it ran or reused
# the study's settings (Study.record_settings) and the flags that set them
SETTING_FLAGS = {"preset": "--preset", "dataset": "--dataset", "clips_per_class": "--clips_per_class",
                 "epochs": "--epochs", "epochs_unimodal": "--epochs_unimodal", "seeds": "--seeds",
                 "data_seed": "--data_seed", "media": "--media", "index": "--index"}
# what the mains print for the evaluation folder they wrote or reused (pipeline/context.py)
EVAL_FOLDER = re.compile(r"^evaluation folder: (.+?)(?: \(already finished with this configuration: --reuse_eval\))?$",
                         re.M)
VAL_FRACTION, TEST_FRACTION = 0.08, 0.2  # of each class; at least one clip each (smoke runs with few clips)
EMBEDDED = ("demo", "full", "quick")  # presets on the embedded (synthetic) set, whose media the study makes


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "demo", help="study folder (never deleted)")
    p.add_argument("--dataset", default="synthetic",
                   help=f"one of {', '.join(list_datasets())} (custom: give --categories and the three lists)")
    p.add_argument("--preset", default="demo", help=f"one of {', '.join(PRESETS.names())}")
    p.add_argument("--quick", action="store_true", help="the same as --preset quick")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="seeds of initialisation, data order and attacks; one run folder per model and seed")
    p.add_argument("--data_seed", type=int, default=0, help="seed of the embedded set and its split (fixed)")
    p.add_argument("--data_root", type=Path, default=None, help="media root holding data/audio and data/frames")
    p.add_argument("--media", type=Path, default=None,
                   help="embedded media root (default media/synthetic, media/synthetic_quick with --preset quick)")
    p.add_argument("--index", type=Path, default=None,
                   help="index CSV folder (default data/synthetic, data/synthetic_quick with --preset quick)")
    for split in ("train", "val", "test"):
        p.add_argument(f"--list_{split}", type=Path, default=None, help=f"index CSV of the {split} split")
    p.add_argument("--categories", nargs="+", default=None, help="class names (custom datasets)")
    p.add_argument("--pretrained", default=None, choices=["imagenet"], help="passed to the paper preset's runs")
    p.add_argument("--clips_per_class", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None, help="epochs of the audio-visual models (default 3)")
    p.add_argument("--epochs_unimodal", type=int, default=None, help="epochs of the unimodal models (default 12)")
    p.add_argument("--workers", type=int, default=default_workers(), help="loader workers (default: the training default, dataset/batches.py)")
    p.add_argument("--sections", nargs="+", default=None,
                   help="study sections beyond the paper's grid (pipeline/study_sections.py): names, 'all' or "
                        "'none' (default: the preset's; --dry_run lists the jobs)")
    p.add_argument("--jobs", type=int, default=1,
                   help="--launcher local: jobs run at once in worker processes, each with cores/jobs threads "
                        "(default 1: one after the other in this process)")
    p.add_argument("--launcher", default="local", help=f"one of {', '.join(launchers.LAUNCHERS.names())}")
    p.add_argument("--slurm_args", default="", help='sbatch options passed through, e.g. "--partition gpu"')
    p.add_argument("--dry_run", action="store_true", help="print the plan (jobs and commands), write nothing")
    # one job of the plan (slurm job scripts); given several times: those jobs in order, in one process
    p.add_argument("--job", action="append", default=None, help=argparse.SUPPRESS)
    return p


def _word(value: Any) -> str:
    """A study setting in an error message (lists space-separated)."""
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def _check_choice(flag: str, value: str, names: Sequence[str]) -> None:
    """An unknown name: one line naming the flag and the valid names (no argparse usage block)."""
    if value not in names:
        raise UsageError(flag, f"unknown value {value!r}; valid: {', '.join(names)}")


class Study(RecordedView):
    """Builds the plan from the checked flags, runs its jobs with done-markers (a second call resumes), records
    each step in study.json and serves the report (reporting/study_findings.py's ``StudyLike``)."""

    @property
    def fusions(self) -> List[str]:
        """The fusion heads the plan trains (STUDY_HEADS order): the rows of the report's fusion table."""
        trained = {j.model for j in self.jobs if j.kind == "train"}
        return [h for h in STUDY_HEADS if h in trained]

    def __init__(self, args: argparse.Namespace) -> None:
        if args.quick:
            args.preset = "quick"
        _check_choice("--dataset", args.dataset, list_datasets())
        _check_choice("--preset", args.preset, PRESETS.names())
        _check_choice("--launcher", args.launcher, launchers.LAUNCHERS.names())
        if args.launcher == "slurm" and not args.dry_run and args.job is None and not shutil.which("sbatch"):
            raise UsageError("--launcher", "slurm: sbatch is not on PATH (run on a SLURM login node)")
        try:
            self.sections = study_sections.resolve(args.sections, args.preset)
        except KeyError as err:
            raise UsageError("--sections", str(err.args[0])) from None
        if args.jobs < 1:
            raise UsageError("--jobs", f"must be at least 1, got {args.jobs}")
        if len(set(args.seeds)) != len(args.seeds):
            raise UsageError("--seeds", f"a seed is given twice: {_word(args.seeds)}")
        self.args = args
        self.out: Path = args.out
        self.embedded = args.dataset == "synthetic" and args.preset in EMBEDDED
        q = args.preset == "quick"
        self.clips = args.clips_per_class or (12 if q else CLIPS_PER_CLASS)
        self.epochs_uni = args.epochs_unimodal or (1 if q else 12)  # docs/demo.md: why 12
        self.epochs = args.epochs or (1 if q else 3)
        self.seeds: List[int] = list(args.seeds)
        self.seed = self.seeds[0]
        self.spec, self.inp = self.resolve_inputs(args)
        self.record_settings: Dict[str, Any] = {
            "preset": args.preset, "dataset": args.dataset, "clips_per_class": self.clips, "epochs": self.epochs,
            "epochs_unimodal": self.epochs_uni, "seeds": self.seeds, "data_seed": args.data_seed,
            "media": str(Path(self.media).resolve()), "index": str(Path(self.index).resolve())}
        self.jobs: List[Job] = build_plan(self.inp)
        self.surface_eps = SURFACE_EPS
        self.steps: Dict[str, Dict[str, Any]] = {}
        self.data_commands: Dict[str, str] = {}
        self.timings: Dict[str, float] = {}
        self.reused: Set[str] = set()
        self.recorded: Dict[str, float] = {}
        self.job_mode = False  # one job run by a scheduler: its record goes to <out>/steps/ (launchers.run_one)
        self.argv: List[str] = []  # the study's command line (the slurm launcher passes it into its jobs)
        self.worker_functions = (init_worker, run_in_worker)  # the --jobs pool's (pipeline/launchers.pool)
        aa = AA_QUICK if q else AA_DEMO
        self.n_val, self.n_test = self.split_counts()
        self.settings = describe_embedded(aa, self.clips, (self.n_val, self.n_test), self.seeds, args.data_seed,
                                          full=args.preset != "demo")
        if self.embedded:
            self.settings.update(dataset_title="the embedded dataset",
                                 dataset_text=f"Embedded synthetic dataset ({self.clips} clips per class")
        else:
            lists = ", ".join(f"{s} {self.inp.lists[s]}" for s in ("train", "val", "test"))
            self.settings.update(dataset_title=f"{args.dataset} (preset {args.preset})",
                                 dataset_text=f"Dataset {args.dataset}, preset {args.preset} (lists: {lists};")
        if args.dry_run:
            return
        problem = creatable_problem(self.out)  # before any step: a read-only --out is one line, not a traceback
        if problem is not None:
            raise UsageError("--out", f"cannot create the study folder {self.out}: {problem}")
        self.check_settings()  # before anything is written

    # -- flags and lists, checked before anything is written ---------------------------------------------
    def resolve_inputs(self, args: argparse.Namespace) -> Tuple[DatasetSpec, PlanInput]:
        """The dataset spec and the plan's input from the flags; every list and media folder checked."""
        spec = get_spec(args.dataset)
        given = {s: getattr(args, f"list_{s}") for s in ("train", "val", "test")}
        cats: Tuple[str, ...] = ()
        if args.categories:
            cats = tuple(c for a in args.categories for c in a.split(",") if c)
        if args.dataset == CUSTOM and not cats:
            raise UsageError("--categories", "--dataset custom needs the class names (--categories a b c ...)")
        if args.dataset == CUSTOM and not all(given.values()):
            raise UsageError("--list_train", "--dataset custom needs --list_train, --list_val and --list_test")
        if self.embedded:
            name = "synthetic_quick" if args.preset == "quick" else "synthetic"
            self.media = Path(args.media or REPO / "media" / name)
            self.index = Path(args.index or REPO / "data" / name)
            lists = {s: given[s] or self.index / f"{s}.csv" for s in given}
            audio, frames = self.media / "data" / "audio", self.media / "data" / "frames"
            categories = cats or spec.categories
        else:
            if args.dataset == "synthetic" and args.data_root is None and args.media is not None:
                args.data_root = args.media
            root = Path(args.data_root) if args.data_root else None
            if root is None:
                try:
                    root = spec.root()
                except ValueError as err:
                    raise UsageError("--data_root", str(err)) from None
            self.media, self.index = root, Path(args.index or "")
            audio, frames = root / "data" / "audio", root / "data" / "frames"
            for flag, folder in (("--data_root", audio), ("--data_root", frames)):
                if not folder.is_dir():
                    raise UsageError(flag, f"media folder {folder} not found (prepare the dataset: README, "
                                           "'Real datasets')")
            lists = {}
            for s, path in given.items():
                if path is None:
                    try:
                        path = Path(args.index) / f"{s}.csv" if args.index else spec.list_path(s)
                    except ValueError as err:
                        raise UsageError(f"--list_{s}", str(err)) from None
                lists[s] = Path(path)
            categories = cats or spec.categories
            for s, path in lists.items():
                if not path.is_file():
                    raise UsageError(f"--list_{s}", f"index CSV {path} not found")
                read_index(path, categories)  # a class outside the categories: one line naming the file and row
        if cats and spec.categories and args.dataset != CUSTOM:
            raise UsageError("--categories", f"--dataset {args.dataset} has its own classes; --categories is for "
                                             "--dataset custom")
        need = classes_needed(args.preset)
        n_classes = len(categories) if categories else 8  # the embedded set has 8 classes (dataset/synthetic.py)
        if n_classes < need:
            raise UsageError("--preset", f"--preset {args.preset} runs APGD-T, which needs at least {need} classes; "
                                         f"the data has {n_classes}")
        inp = PlanInput(dataset=args.dataset, spec=spec, preset=args.preset, seeds=tuple(args.seeds), out=self.out,
                        lists=lists, audio_path=audio, frame_path=frames, categories=cats,
                        workers=args.workers, pretrained=args.pretrained, epochs=self.epochs,
                        epochs_unimodal=self.epochs_uni, sections=tuple(self.sections), data_steps=embedded_data_jobs(self.media, self.index, self.clips, self.split_counts(),
                                                      args.data_seed) if self.embedded else [])
        return spec, inp

    def split_counts(self) -> Tuple[int, int]:
        """(val, test) clips per class: the study's fractions, rounded, at least one each."""
        return max(1, round(self.clips * VAL_FRACTION)), max(1, round(self.clips * TEST_FRACTION))

    # -- the study's own record -----------------------------------------------------------------------
    def check_settings(self) -> None:
        """A study folder is only ever continued with the settings it was run with: its run folders are never
        overwritten, so a finished step would be reused under the new value. Another value is refused (exit 2),
        naming the setting, both values and what to do; so is a folder with runs but no record. A multi-seed
        study may be continued with more seeds (finished seeds are reused)."""
        path = self.out / STUDY_FILE
        if path.is_file():
            try:
                recorded = dict(json.loads(path.read_text())["settings"])
            except (ValueError, KeyError, TypeError):
                raise MalformedFileError(path, "not a study record (no 'settings'); use a new --out") from None
            if "seeds" not in recorded and "seed" in recorded:  # a study recorded before --seeds
                recorded["seeds"] = [recorded["seed"]]
                recorded.setdefault("preset", "quick" if recorded.get("quick") else "demo")
                recorded.setdefault("dataset", "synthetic")
                recorded.setdefault("data_seed", recorded["seed"])
            old, new = recorded.get("seeds") or [], self.record_settings["seeds"]
            more_seeds = len(old) > 1 and len(new) > 1 and set(old) <= set(new)
            diffs = [(flag, f"{flag} {_word(self.record_settings[key])} (recorded {_word(recorded.get(key))})")
                     for key, flag in SETTING_FLAGS.items() if recorded.get(key) != self.record_settings[key]
                     and not (key == "seeds" and more_seeds)]
            if diffs:
                raise UsageError(diffs[0][0], f"this study ({path}) was run with other settings: "
                                              f"{', '.join(text for _, text in diffs)}; its runs are never "
                                              "overwritten, so use a new --out for these settings (or the "
                                              "recorded values)")
        elif self.out.is_dir() and any(RunDir(p).args.is_file() for p in self.out.iterdir() if p.is_dir()):
            raise UsageError("--out", f"{self.out} holds runs but no study record ({STUDY_FILE}), so the settings "
                                      "they were run with cannot be checked; use a new --out")

    def open_record(self) -> None:
        """Create the study folder and read the timings of earlier calls (after every check passed)."""
        self.out.mkdir(parents=True, exist_ok=True)
        tf = self.out / TIMINGS_FILE
        self.recorded = json.loads(tf.read_text()) if tf.is_file() else {}
        self.write_record()

    def write_record(self) -> None:
        """<out>/study.json (atomic): the settings, the seeds and every step of this call with its run and
        evaluation."""
        if self.job_mode:
            return
        atomic_write_text(self.out / STUDY_FILE, json.dumps({"settings": self.record_settings, "seeds": self.seeds,
                                                             "steps": self.steps}, indent=1) + "\n")

    # -- running ------------------------------------------------------------------------------------
    def run_job(self, job: Job) -> None:
        """Run one job of the plan (data, train, eval or report) and record it."""
        if job.kind == "report":
            self.report()
        elif job.kind == "data":
            self.step(job.name, list(job.argv))
        elif job.kind == "train":
            rd = RunDir(job.run_root)
            self.step(job.name, [*job.argv, *self.resume_flag(rd)], job, done=rd.done_train)
        else:
            self.step(job.name, list(job.argv), job, evaluation=job.eval_kind)

    def step(self, name: str, argv: Sequence[str], job: Optional[Job] = None, done: Optional[Path] = None,
             evaluation: Optional[str] = None) -> None:
        """Run ``python argv`` unless ``done`` exists; records the step, its wall time and CPU time (this
        process and its children, user + sys). The mains run in this process (no second torch import per
        step); evaluations pass --reuse_eval, so a finished one with the same configuration is not recomputed.
        ``evaluation``: the kind of an evaluation step, whose folder (written or reused) goes into study.json."""
        entry: Dict[str, Any] = {}
        if job is None:
            self.data_commands[name] = command_text(argv, REPO)
        else:
            entry = {"run": job.model, "seed": job.seed, "folder": str(job.run_root.relative_to(self.out))}
        if done is not None and done.exists():
            log.info("[skip] %s (done)", name)
            self.reused.add(name)
            self.steps[name] = entry
            self.write_record()
            return
        log.info("[run] %s", name)
        rd = RunDir(job.run_root) if job is not None else None
        before = set(rd.eval_ids()) if rd is not None and evaluation else set()
        t0, c0 = time.time(), _cpu_seconds()
        did = True
        printed = ""
        if str(argv[0]) in IN_PROCESS:
            printed = self._in_process(argv)
        else:
            env = dict(os.environ, PYTHONPATH=str(REPO))
            proc = subprocess.run([sys.executable, *map(str, argv)], cwd=REPO, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
                raise RuntimeError(f"study step {name!r} failed (exit {proc.returncode}): {self.data_commands[name]}")
            # the generator and the extractors say when every output was already in place
            did = not re.search(r"(^|\s)0 (clip\(s\) written|extracted),", proc.stdout)
        seconds, cpu = time.time() - t0, _cpu_seconds() - c0
        self.timings[name] = seconds
        if evaluation is not None:
            folder = self._eval_folder(name, rd, printed)
            entry.update(kind=evaluation, eval_id=folder.name)
            did = folder.name not in before  # else --reuse_eval reused an earlier one
        if did:
            entry["cpu_s"] = round(cpu, 2)
        self.steps[name] = entry
        self.write_record()
        if (did or name not in self.recorded) and not self.job_mode:
            self.recorded[name] = seconds
            atomic_write_text(self.out / TIMINGS_FILE, json.dumps(self.recorded, indent=1) + "\n")
        if not did:
            self.reused.add(name)

    @staticmethod
    def resume_flag(rd: RunDir) -> List[str]:
        """--resume for a training that was interrupted; none for a finished one (the step skips it, and the
        report's command for it is then the one that trains it from the start)."""
        return ["--resume"] if rd.started() and not rd.done_train.exists() else []

    @staticmethod
    def _in_process(argv: Sequence[str]) -> str:
        """Run a main in this process with its own command line in sys.argv (args.json and eval.json record
        the step's command, not the study's); returns what it printed (also passed on to stdout)."""
        saved, sys.argv = sys.argv, [str(a) for a in argv]
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                IN_PROCESS[str(argv[0])]([str(a) for a in argv[1:]])
        finally:
            sys.argv = saved
            sys.stdout.write(buf.getvalue())
        logging.getLogger().handlers.clear()
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", force=True)
        return buf.getvalue()

    @staticmethod
    def _eval_folder(name: str, rd: RunDir, printed: str) -> Path:
        """The evaluation folder a step wrote or reused, as the main printed it (pipeline/context.py)."""
        found = EVAL_FOLDER.findall(printed)
        if len(found) != 1:
            raise RuntimeError(f"study step {name!r}: expected one 'evaluation folder:' line from the main, got "
                               f"{len(found)}")
        folder = Path(found[0])
        if folder.parent != rd.evals or folder.name not in rd.eval_ids():
            raise RuntimeError(f"study step {name!r}: {folder} is not a finished evaluation of {rd.root}")
        return folder

    def run_dir(self, run_id: str, seed: Optional[int] = None) -> RunDir:
        """The run folder of a model and seed (default: the first seed, the one today's report reads)."""
        seed = self.seeds[0] if seed is None else seed
        return RunDir(self.out / run_id / f"seed{seed}" if len(self.seeds) > 1 else self.out / run_id)

    def run(self) -> Dict[str, Path]:
        """Run the plan with the chosen launcher (pipeline/launchers.py)."""
        t0 = time.time()
        self.open_record()
        out = launchers.LAUNCHERS.get(self.args.launcher)(self)
        self.timings["total"] = time.time() - t0
        return out

    # -- 5. report ------------------------------------------------------------------------------------
    # The report reads exactly the evaluations of the steps in study.json, per model and seed, through
    # reporting/study_results.StudyRecord (never the newest folder of a run), and the settings and commands of
    # the runs' own records (args.json, eval.json).
    @property
    def commands(self) -> List[str]:
        """The command of every step of this call, in order, as the runs recorded them: a training's from its
        args.json, an evaluation's from its eval.json (a reused one: the call that ran it); the data steps'
        as this call ran them. A training resumed after an interruption is listed without --resume (it gives
        the metrics of an uninterrupted run, README)."""
        out = []
        for name, step in self.steps.items():
            if name in self.data_commands:
                out.append(self.data_commands[name])
                continue
            if "eval_id" in step:
                folder = RunDir(self.out / step["folder"]).eval_dir(step["eval_id"])
                argv = json.loads(eval_file(folder, "config").read_text())["command"]
            else:
                args = json.loads(RunDir(self.out / step["folder"]).args.read_text())
                argv = [a for a in args["command"] if a != "--resume"]
            out.append(command_text(argv, REPO))
        return out

    def report(self) -> Dict[str, Path]:
        self._view = None  # study.json as this call's last step left it
        write_results_long(self.out)
        chosen = [study_sections.SECTIONS.get(n)() for n in self.sections]
        blocks = build_report(self, [(sec.title, sec.report) for sec in chosen],
                              [(c.title, c.summary, c.name) for n in study_sections.SECTIONS.names()
                               if n not in self.sections for c in [study_sections.SECTIONS.get(n)]])
        title = "embedded dataset" if self.embedded else f"{self.args.dataset}, preset {self.args.preset}"
        return write_report(blocks, self.out, f"Audio-visual robustness study ({title})")



# -- the worker processes of ``--jobs N`` (pipeline/launchers.pool): one Study per worker, built once -------
_WORKER: Dict[str, Any] = {}


def init_worker(argv: Sequence[str], threads: int) -> None:
    """A pool worker's set-up: its thread count and the study, built from the study's own command line."""
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    study = Study(get_args_parser().parse_args(list(argv)))
    study.argv = list(argv)
    _WORKER["study"] = study


def run_in_worker(name: str) -> int:
    """Run one job of the plan in a pool worker (its record goes to <out>/steps/, as a scheduled job's)."""
    return launchers.run_one(_WORKER["study"], name)


def _cpu_seconds() -> float:
    """CPU seconds (user + sys) of this process and its waited-for children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = get_args_parser().parse_args(argv)
    study = Study(args)
    study.argv = list(sys.argv[1:] if argv is None else argv)
    if args.dry_run:
        print(render(study.jobs))
        return 0
    if args.job is not None:
        return launchers.run_jobs(study, args.job)
    paths = study.run()
    if not paths:  # a scheduler took the jobs
        return 0
    print((study.out / "report.md").read_text().split("## What the numbers say")[0][-6000:])
    print(f"report: {paths['md']}\n        {paths['html']}")
    print(f"study wall time: {study.timings['total']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
