"""A study's evaluations as its record names them (``<out>/study.json``), and the tidy results table built from them.

``study.json`` (written by pipeline/study.py) holds the study's ``settings``, its ``seeds`` (absent in a study
recorded before seeds: then the one ``settings["seed"]``) and per step ``{"run": <model>, "seed": k, "kind":
main|aa|surface, "eval_id": <folder>}`` (a training step has no ``kind``/``eval_id``). A model's run folder is
``<out>/<model>/seed<k>/`` when the study has several seeds, else ``<out>/<model>/``. ``StudyRecord`` resolves
those records and reads each evaluation's files; nothing here picks "the newest folder" of a run.

``write_results_long(out_dir)`` writes ``<out>/results_long.csv``: one row per result row of every recorded
evaluation (model, seed, evaluation kind, attack, norm, eps_audio, eps_visual, clean and adversarial accuracy,
n, the eval folder relative to the study folder), rebuilt from the eval folders at each call::

    python -m reporting.study_results runs/demo
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from reporting.per_sample import PerSample, read_per_clip, read_per_sample
from reporting.results import read_results
from utils.errors import MalformedFileError, UsageError, run_cli
from utils.fileio import atomic_write_csv
from utils.rundir import RunDir, eval_file

STUDY_FILE = "study.json"  # <out>/study.json: the study's settings, seeds and steps (pipeline/study.py writes it)
RESULTS_LONG = "results_long.csv"  # <out>/results_long.csv: the tidy table of every recorded evaluation
# evaluation kinds of a step record (pipeline/study.py); a study section's evaluations have the section's name
KINDS = ("main", "aa", "surface")
LONG_COLUMNS = ("model", "seed", "evaluation", "attack", "norm", "eps_audio", "eps_visual", "clean_acc", "adv_acc",
                "n", "eval_folder")


@dataclass(frozen=True)
class RecordedEval:
    """One evaluation a study step ran or reused."""

    step: str
    model: str
    seed: int
    kind: str
    folder: Path


class StudyRecord:
    """The study's record read back: seeds, run folders and the evaluation folder of each (model, seed, kind)."""

    def __init__(self, out_dir: Union[str, Path]) -> None:
        self.out = Path(out_dir)
        self.path = self.out / STUDY_FILE
        if not self.path.is_file():
            raise MalformedFileError(str(self.path), "missing: not a study folder (run scripts/run_study.py first)")
        try:
            data = json.loads(self.path.read_text())
            settings, steps = data["settings"], data["steps"]
            self.seeds: List[int] = [int(k) for k in (data.get("seeds") or [settings["seed"]])]
            self.steps: Dict[str, Dict[str, Any]] = {str(k): dict(v) for k, v in steps.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise MalformedFileError(str(self.path), f"not a study record: {e}") from None
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise MalformedFileError(str(self.path), f"seeds {self.seeds}: need distinct seeds")
        self.multi_seed = len(self.seeds) > 1
        for name, step in self.steps.items():
            if "run" in step and (self.multi_seed and "seed" not in step):
                raise MalformedFileError(str(self.path), f"step {name!r} has no seed in a study of seeds {self.seeds}")

    @staticmethod
    def model_of(run: str) -> str:
        """The model of a step's run ('concat', or 'concat/seed1' when a runner names the seed folder)."""
        return run.split("/", 1)[0]

    def seed_of(self, step: Dict[str, Any]) -> int:
        """A step's seed (a single-seed study's steps may omit it)."""
        return int(step.get("seed", self.seeds[0]))

    def run_folder(self, run: str, seed: int) -> RunDir:
        """``<out>/<run>/seed<k>`` in a study of several seeds, else ``<out>/<run>`` (a run naming its seed
        folder, 'concat/seed1', is taken as it is)."""
        if "/" in run or not self.multi_seed:
            return RunDir(self.out / run)
        return RunDir(self.out / run / f"seed{seed}")

    def evals(self) -> List[RecordedEval]:
        """Every recorded evaluation, in step order."""
        out = []
        for name, step in self.steps.items():
            if "eval_id" in step and "run" in step:
                seed = self.seed_of(step)
                folder = self.run_folder(str(step["run"]), seed).eval_dir(str(step["eval_id"]))
                out.append(RecordedEval(name, self.model_of(str(step["run"])), seed, str(step.get("kind", "main")),
                                        folder))
        return out

    def model_seeds(self, model: str) -> List[int]:
        """The seeds of ``model``'s steps (trainings and evaluations), sorted."""
        return sorted({self.seed_of(st) for st in self.steps.values()
                       if "run" in st and self.model_of(str(st["run"])) == model})

    def eval_dir(self, model: str, kind: str, seed: Optional[int] = None) -> Optional[Path]:
        """The folder of ``model``'s evaluation of ``kind`` in ``seed`` (default: its first seed), or None."""
        seed = self._seed(model, seed)
        return next((e.folder for e in self.evals() if e.model == model and e.kind == kind and e.seed == seed), None)

    def _seed(self, model: str, seed: Optional[int]) -> int:
        if seed is not None:
            return seed
        seeds = self.model_seeds(model)
        return seeds[0] if seeds else self.seeds[0]

    # -- the report's view (reporting/study_findings.StudyView) -------------------------------------------
    def _main_dir(self, model: str, surface: bool, seed: Optional[int]) -> Path:
        found = self.eval_dir(model, "surface" if surface else "main", seed)
        if found is None:
            raise FileNotFoundError(f"no step of this study evaluated {model} (seed {self._seed(model, seed)})"
                                    f"{' (robustness surface)' * surface} ({self.path})")
        return found

    def results(self, run_id: str, name: str = "results", surface: bool = False,
                seed: Optional[int] = None) -> List[Dict[str, Any]]:
        """Rows of the model's recorded evaluation in ``seed`` (``name``: results, robustness, ...); the main
        results also carry the rows of its AutoAttack-only evaluation, if the study ran one."""
        rows = read_results(eval_file(self._main_dir(run_id, surface, seed), name, ".json"))
        extra = None if surface or name != "results" else self.eval_dir(run_id, "aa", seed)
        return rows + (read_results(eval_file(extra, name, ".json")) if extra is not None else [])

    def has_results(self, run_id: str, name: str, surface: bool = False, seed: Optional[int] = None) -> bool:
        found = self.eval_dir(run_id, "surface" if surface else "main", seed)
        return found is not None and eval_file(found, name, ".json").exists()

    def per_sample(self, run_id: str, surface: bool = False, seed: Optional[int] = None) -> PerSample:
        """Per-clip correctness of every row of the model's recorded evaluation in ``seed`` (per_sample.json),
        with the AutoAttack-only evaluation's rows for the main one."""
        out = read_per_sample(eval_file(self._main_dir(run_id, surface, seed), "per_sample"))
        extra = None if surface else self.eval_dir(run_id, "aa", seed)
        if extra is not None:
            out.update(read_per_sample(eval_file(extra, "per_sample")))
        return out

    def eval_path(self, run_id: str, key: str, seed: Optional[int] = None) -> Optional[Path]:
        """A file of the model's recorded (main) evaluation folder by key (utils/rundir.py), or None."""
        found = self.eval_dir(run_id, "main", seed)
        return eval_file(found, key) if found is not None else None

    def kind_results(self, run_id: str, kind: str, seed: Optional[int] = None,
                     name: str = "results") -> List[Dict[str, Any]]:
        """Rows of the model's evaluation of ``kind`` (a study section's name) in ``seed``; [] when the study has
        none (a section that runs on the first seed only, or a model it does not evaluate)."""
        found = self.eval_dir(run_id, kind, seed)
        return [] if found is None else read_results(eval_file(found, name, ".json"))

    def kind_per_sample(self, run_id: str, kind: str, seed: Optional[int] = None) -> PerSample:
        """Per-clip correctness of every row of the model's evaluation of ``kind`` in ``seed``."""
        found = self.eval_dir(run_id, kind, seed)
        if found is None:
            raise FileNotFoundError(f"no {kind} evaluation of {run_id} (seed {self._seed(run_id, seed)}) in "
                                    f"{self.path}")
        return read_per_sample(eval_file(found, "per_sample"))

    def kind_per_clip(self, run_id: str, kind: str, name: str, keys: Sequence[str],
                      seed: Optional[int] = None) -> Dict[Tuple[Any, ...], Dict[int, bool]]:
        """Per-clip correctness of the model's evaluation of ``kind`` in ``seed`` from the per_clip/1 file
        ``name`` (an EVAL_FILES key: missing_per_sample, corruption_per_sample) keyed by ``keys``; {} when the
        study has no such evaluation or the evaluation no such file (written before per-clip files)."""
        found = self.eval_dir(run_id, kind, seed)
        if found is None or not eval_file(found, name).is_file():
            return {}
        return read_per_clip(eval_file(found, name), keys)

    def run_args(self, run_id: str, seed: Optional[int] = None) -> Dict[str, Any]:
        """The run's own record of its training (args.json) in ``seed``."""
        return json.loads(self.run_folder(run_id, self._seed(run_id, seed)).args.read_text())



class RecordedView:
    """The report's view of a study (reporting/study_findings.StudyView) read from its record: a class with an
    ``out`` folder mixes this in (pipeline/study.Study), each call reading study.json as the last step left it
    (``self._view = None`` starts a fresh read)."""

    out: Path
    _view: Optional["StudyRecord"] = None

    def _record(self) -> StudyRecord:
        """study.json as written by the last step (read once per report)."""
        if self._view is None:
            self._view = StudyRecord(self.out)
        return self._view

    def model_seeds(self, run_id: str) -> List[int]:
        return self._record().model_seeds(run_id)

    def results(self, run_id: str, name: str = "results", surface: bool = False,
                seed: Optional[int] = None) -> List[Dict[str, Any]]:
        return self._record().results(run_id, name, surface, seed)

    def has_results(self, run_id: str, name: str, surface: bool = False, seed: Optional[int] = None) -> bool:
        return self._record().has_results(run_id, name, surface, seed)

    def per_sample(self, run_id: str, surface: bool = False, seed: Optional[int] = None) -> PerSample:
        return self._record().per_sample(run_id, surface, seed)

    def eval_path(self, run_id: str, key: str, seed: Optional[int] = None) -> Optional[Path]:
        return self._record().eval_path(run_id, key, seed)

    def kind_dir(self, run_id: str, kind: str, seed: Optional[int] = None) -> Optional[Path]:
        return self._record().eval_dir(run_id, kind, seed)

    def kind_results(self, run_id: str, kind: str, seed: Optional[int] = None,
                     name: str = "results") -> List[Dict[str, Any]]:
        return self._record().kind_results(run_id, kind, seed, name)

    def kind_per_sample(self, run_id: str, kind: str, seed: Optional[int] = None) -> PerSample:
        return self._record().kind_per_sample(run_id, kind, seed)

    def kind_per_clip(self, run_id: str, kind: str, name: str, keys: Sequence[str],
                      seed: Optional[int] = None) -> Dict[Tuple[Any, ...], Dict[int, bool]]:
        return self._record().kind_per_clip(run_id, kind, name, keys, seed)

    def run_folder(self, run: str, seed: int) -> RunDir:
        return self._record().run_folder(run, seed)

    def run_args(self, run_id: str, seed: Optional[int] = None) -> Dict[str, Any]:
        return self._record().run_args(run_id, seed)


def _norm(row: Dict[str, Any]) -> str:
    """The row's norm: one name when both modalities share it, else 'audio=snr,visual=L2'."""
    na, nv = row.get("norm_audio"), row.get("norm_visual")
    if na is None and nv is None:
        return ""  # rows written before norms were recorded (results.json of an older evaluation)
    return str(na) if na == nv else f"audio={na},visual={nv}"


def _unbudgeted(attack: str, acc: float, row: Dict[str, Any]) -> Dict[str, Any]:
    """A tidy row of an evaluation without an attack budget (a missing input, a corruption)."""
    return {"attack": attack, "norm": "", "eps_audio": "", "eps_visual": "", "clean_acc": row["clean_acc"],
            "adv_acc": acc, "n": row["n_samples"]}


# each evaluation file with rows (an EVAL_FILES key) and its rows in the tidy table's terms, in this order
FAMILY_ROWS: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
    "results": lambda r: {"attack": r["attack"], "norm": _norm(r), "eps_audio": r["eps_audio"],
                          "eps_visual": r["eps_visual"], "clean_acc": r["clean_acc"], "adv_acc": r["adv_acc"],
                          "n": r["n_samples"]},
    "missing": lambda r: _unbudgeted(f"missing {r['missing_input']} ({r['missing_fill']})", r["missing_acc"], r),
    "corruptions": lambda r: _unbudgeted(f"corruption {r['corruption']} s{r['severity']}", r["corrupt_acc"], r),
}


def _family_rows(folder: Path) -> Optional[List[Dict[str, Any]]]:
    """An evaluation's rows in the tidy table's terms (FAMILY_ROWS: its attack rows, then its missing-input and
    corruption rows); [] for a certification (certify.json: radii, not accuracies under one attack); None when the
    folder has none of these files."""
    paths = {key: eval_file(folder, key, ".json") for key in FAMILY_ROWS}
    present = {key: p for key, p in paths.items() if p.is_file()}
    if not present and not eval_file(folder, "certify").is_file():
        return None
    return [FAMILY_ROWS[key](r) for key, p in present.items() for r in read_results(p)]


def long_rows(record: StudyRecord) -> List[Dict[str, Any]]:
    """The rows of ``results_long.csv``: every result row of every recorded evaluation, in step order (attack rows,
    then missing-input and corruption rows; certifications have none)."""
    out: List[Dict[str, Any]] = []
    for ev in record.evals():
        rows = _family_rows(ev.folder)
        if rows is None:
            raise MalformedFileError(str(eval_file(ev.folder, "results", ".json")),
                                     f"missing: study step {ev.step!r} names this evaluation")
        for r in rows:
            out.append({"model": ev.model, "seed": ev.seed, "evaluation": ev.kind, **r,
                        "eval_folder": ev.folder.relative_to(record.out).as_posix()})
    return out


def write_results_long(out_dir: Union[str, Path]) -> Path:
    """Rebuild ``<out>/results_long.csv`` from the evaluation folders named in ``<out>/study.json``."""
    record = StudyRecord(out_dir)
    rows = long_rows(record)
    return atomic_write_csv(record.out / RESULTS_LONG, LONG_COLUMNS, ([r[c] for c in LONG_COLUMNS] for r in rows))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m reporting.study_results OUT``: rebuild OUT/results_long.csv."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise UsageError("OUT", "give one study folder: python -m reporting.study_results runs/demo")
    print(write_results_long(args[0]))
    return 0


__all__ = ["STUDY_FILE", "RESULTS_LONG", "LONG_COLUMNS", "RecordedEval", "StudyRecord", "long_rows",
           "write_results_long"]


if __name__ == "__main__":
    sys.exit(run_cli(main))
