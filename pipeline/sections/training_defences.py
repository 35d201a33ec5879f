"""Study section ``training_defences``: TRADES and fast adversarial training next to PGD-AT (issue 20, item 1).

Per seed where the preset trains its PGD adversarially trained model (``advtrain``), two more concat models are
trained with exactly advtrain's command but for the objective (``--adv_train trades`` and ``--adv_train fast``;
same start, epochs, learning rates, budget --train_eps and adversary steps), and each is evaluated with advtrain's
PGD evaluation (the same flags). The report gives clean and PGD accuracy of plain concat, PGD-AT, TRADES and fast
AT over seeds, and each training's cost: the mean seconds per epoch (metrics.jsonl) relative to plain concat's.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence

from pipeline.study_sections import Section, SeedPlan, register
from reporting.study_findings import accuracy_table
from reporting.study_readings import kind_by_seed
from reporting.study_report import Block
from reporting.tables import Column, Table

# the section's models: run id -> (its --adv_train, the words of the report)
MODELS: Dict[str, Sequence[str]] = {"trades": ("trades", "TRADES (beta 6)"), "fastat": ("fast", "fast AT (FGSM-RS)")}
BASE = "advtrain"  # the preset's PGD-AT model, whose commands these mirror


def _job(sp: SeedPlan, name: str) -> Any:
    return next(j for j in sp.builder.jobs if j.name == name)


def _own_flags(sp: SeedPlan, argv: Sequence[str], model: str) -> List[str]:
    """A job's flags without the main, the seed's common flags (SeedPlan adds them again), --ckpt/--id and
    --mode/--reuse_eval; checked, so a change of the plan's command layout fails loudly rather than silently."""
    args = list(argv[1:])
    if args[:len(sp.common)] != sp.common:
        raise ValueError(f"training_defences: {model}'s command does not start with the seed's common flags")
    args = args[len(sp.common):]
    out, skip = [], 0
    for a in args:
        if skip:
            skip -= 1
        elif a in ("--ckpt", "--id", "--mode"):
            skip = 1
        elif a != "--reuse_eval":
            out.append(a)
    return out


@register("training_defences")
class TrainingDefences(Section):
    title = "Training defences: TRADES and fast adversarial training"
    summary = "concat trained with TRADES and with fast AT as PGD-AT is, their PGD accuracy and cost per epoch"

    def plan(self, sp: SeedPlan) -> None:
        if BASE not in sp.trained:  # a seed where the preset trains no PGD-AT model (the demo's later seeds)
            return
        train = _job(sp, sp.trained[BASE])
        flags = _own_flags(sp, train.argv, BASE)
        at = flags.index("--adv_train")
        deps = [d for d in train.deps if d not in sp.builder.data_deps]
        base_eval = next(j for j in sp.builder.jobs if j.kind == "eval" and j.model == BASE and j.seed == sp.seed
                         and j.eval_kind == "main")
        eval_flags = _own_flags(sp, base_eval.argv, BASE)
        if eval_flags[:len(sp.evaluation) - len(sp.common)] == sp.evaluation[len(sp.common):]:
            eval_flags = eval_flags[len(sp.evaluation) - len(sp.common):]  # SeedPlan.evaluate adds them
        arch = eval_flags.index("--arch_classifier")
        eval_flags = eval_flags[:arch] + eval_flags[arch + 2:]  # SeedPlan.evaluate adds the model's own
        for model, (objective, _) in MODELS.items():
            sp.arch_of[model] = "concat"
            sp.train(model, [*flags[:at], "--adv_train", objective, *flags[at + 2:]], deps)
            sp.evaluate("attack", model, eval_flags, self.name)

    def report(self, s: Any) -> List[Block]:
        rows = {"plain (concat)": _main_by_seed(s, "concat"), "PGD adversarial training": _main_by_seed(s, BASE)}
        rows.update({words: kind_by_seed(s, model, self.name) for model, (_, words) in MODELS.items()})
        rows = {k: v for k, v in rows.items() if v}
        blocks = [Block("p", "Concat trained as PGD-AT is (same start, epochs, budget and adversary steps) but for "
                             "the objective: TRADES (CE + 6 KL, Zhang et al. 2019) and fast AT (one FGSM step of 1.25 "
                             "eps from a random start, Wong et al. 2020); PGD as in the table above.")]
        if rows:
            blocks.append(Block("table", "", table=accuracy_table(rows, "pgd")))
        blocks.append(Block("table", "", table=self._cost_table(s)))
        return blocks

    def _cost_table(self, s: Any) -> Table:
        """Mean seconds per training epoch (metrics.jsonl, every seed's run) and the ratio to plain concat's."""
        runs = {"plain (concat)": "concat", "PGD adversarial training": BASE,
                **{words: model for model, (_, words) in MODELS.items()}}
        secs = {words: _epoch_seconds(s, run) for words, run in runs.items()}
        plain = secs.get("plain (concat)")
        body = [{"model": w, "seconds": v, "relative": (v / plain if v is not None and plain else None)}
                for w, v in secs.items()]
        return Table([Column("model", "model"), Column("seconds", "seconds per epoch (mean)", numeric=True),
                      Column("relative", "relative to plain concat", numeric=True)], body)


def _main_by_seed(s: Any, run: str) -> Dict[int, List[Dict[str, Any]]]:
    found = {k: s.results(run, seed=k) for k in s.model_seeds(run)}
    return {k: r for k, r in found.items() if r}


def _epoch_seconds(s: Any, run: str) -> Optional[float]:
    """Mean ``seconds`` of the run's per-epoch train rows over its seeds (None when no run has them)."""
    values: List[float] = []
    for k in s.model_seeds(run):
        path = s.run_folder(run, k).metrics  # reporting/study_results.StudyRecord
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            values += [float(r["seconds"]) for r in rows if r.get("tag") == "train" and "seconds" in r]
    return round(sum(values) / len(values), 3) if values else None
