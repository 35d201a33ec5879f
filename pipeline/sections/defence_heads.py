"""Study section ``defence_heads``: the CRMT head (Yang, Wei, Liang & Hu, ICLR 2024; models/crmt.py) and the robust
fusion head against single-source adversaries (Yang et al., CVPR 2021; models/robust_fusion.py) next to plain
concat and PGD-AT (issue 20, items 1 and 4).

Per seed where the preset trains its PGD-AT model (``advtrain``; the demo: its first seed):

- ``crmt``: the preset's concat command (same start --init_from the unimodal nets, epochs, learning rates, batch;
  --save_features dropped) with ``--arch_classifier crmt --crmt_step2_epochs 1``: step one with the margin
  regulariser at the flag's rho (2.0, the authors' configuration), then one epoch of step two (our choice: the
  cheapest step two that records the Lipschitz estimates the input-space bound needs).
- ``robust``: the same command with ``--arch_classifier robust_fusion`` and its single-source procedure at the
  training default --train_eps (visual=0.006,audio=0.006, the paper's both-modality budget) and advtrain's
  --train_attack_steps (the same adversary PGD-AT trains against).
- Each evaluated with advtrain's evaluations, copied from the plan (sections may not import the preset's constants):
  its PGD evaluation (kind ``defence_heads``) and its AutoAttack evaluation at the preset's budgets (kind
  ``defence_heads-aa``, where the preset runs one: the demo, full and quick presets; the paper preset's advtrain
  evaluation has AutoAttack inside its PGD one). Both heads are deterministic: no EOT.
- The evaluation of the crmt head also writes CRMT's bound per clip (pipeline/crmt_eval.py): certified accuracy in
  feature space (sound) and, with step two's Lipschitz estimates, in input space (an ESTIMATE, labelled so).

The report: a defence table (clean, PGD and AutoAttack on audio and visual at once, over seeds: mean and range),
CRMT's certified accuracy per perturbed input and radius, and the training cost per epoch relative to plain concat
(the runs' per-epoch seconds; CRMT's step-two epoch counts as an epoch).
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence

from pipeline.sections.training_defences import _epoch_seconds, _job, _main_by_seed, _own_flags
from pipeline.study_sections import Section, SeedPlan, register
from reporting.study_readings import acc_seeds, find_rows, first_row, kind_by_seed
from reporting.study_report import Block
from reporting.tables import Column, Table, fmt_int, fmt_percent
from utils.rundir import eval_file

BASE, AT = "concat", "advtrain"
# the section's models: run id -> (--arch_classifier, its own training flags, the words of the report)
MODELS: Dict[str, Sequence[Any]] = {
    "crmt": ("crmt", ["--crmt_step2_epochs", "1"], "CRMT (rho 2, one step-two epoch)"),
    "robust": ("robust_fusion", [], "robust fusion (single-source training)"),
}
CERT_RADII = ("r=0", "r=0.1", "r=0.5")  # the columns of the report's CRMT table (pipeline/crmt_eval.RADII)


def _eval_flags(sp: SeedPlan, job: Any) -> List[str]:
    """An evaluation job's own flags: without the seed's evaluation flags and --arch_classifier (SeedPlan.evaluate
    adds both)."""
    flags = _own_flags(sp, job.argv, job.model)
    extra = sp.evaluation[len(sp.common):]
    if flags[:len(extra)] == extra:
        flags = flags[len(extra):]
    arch = flags.index("--arch_classifier")
    return flags[:arch] + flags[arch + 2:]


def _strip(flags: Sequence[str], names: Sequence[str]) -> List[str]:
    """``flags`` without each ``--name VALUE`` of ``names``."""
    out, skip = [], False
    for a in flags:
        if skip:
            skip = False
        elif a in names:
            skip = True
        else:
            out.append(a)
    return out


@register("defence_heads")
class DefenceHeads(Section):
    title = "Defence heads: CRMT and robust fusion"
    summary = ("CRMT and the robust fusion head trained as concat is, their PGD and AutoAttack accuracy, CRMT's "
               "certified bound and the cost per epoch")

    def plan(self, sp: SeedPlan) -> None:
        if AT not in sp.trained or BASE not in sp.trained:
            return
        train = _job(sp, sp.trained[BASE])
        flags = _strip([a for a in _own_flags(sp, train.argv, BASE) if a != "--save_features"], ["--arch_classifier"])
        at_flags = _own_flags(sp, _job(sp, sp.trained[AT]).argv, AT)
        steps = at_flags[at_flags.index("--train_attack_steps"):][:2] if "--train_attack_steps" in at_flags else []
        deps = [d for d in train.deps if d not in sp.builder.data_deps]
        evals = {j.eval_kind: j for j in sp.builder.jobs
                 if j.kind == "eval" and j.model == AT and j.seed == sp.seed and j.eval_kind in ("main", "aa")}
        for model, (arch, own, _) in MODELS.items():
            sp.arch_of[model] = arch
            sp.train(model, [*flags, "--arch_classifier", arch, *own, *(steps if arch == "robust_fusion" else [])],
                     deps)
            for kind, job in evals.items():
                verb = "attack" if kind == "main" else "autoattack"
                sp.evaluate(verb, model, _eval_flags(sp, job), self.name if kind == "main" else f"{self.name}-aa")

    def report(self, s: Any) -> List[Block]:
        runs = {"plain (concat)": (BASE, None), "PGD adversarial training": (AT, None),
                **{words: (model, self.name) for model, (_, _, words) in MODELS.items()}}
        body = []
        for words, (run, kind) in runs.items():
            rows = _main_by_seed(s, run) if kind is None else _with_aa(s, run, kind)
            if not rows:
                continue
            line: Dict[str, Any] = {"model": words, "seeds": len(rows),
                                    "clean": acc_seeds(first_row(rows), "clean_acc")}
            for attack in ("pgd", "autoattack"):
                line[attack] = acc_seeds(find_rows(rows, attack, "both"))
            line["certified"] = _crmt_cell(s, run, kind) if run == "crmt" else "not certifiable"
            secs, plain = _epoch_seconds(s, run), _epoch_seconds(s, BASE)
            line["cost"] = round(secs / plain, 2) if secs is not None and plain else None
            body.append(line)
        table = Table([Column("model", "model"), Column("seeds", "seeds", fmt_int, True),
                       Column("clean", "clean", numeric=True),
                       Column("pgd", "PGD on audio and visual", numeric=True),
                       Column("autoattack", "AutoAttack on audio and visual", numeric=True),
                       Column("certified", "certified (feature space, r > 0)"),
                       Column("cost", "training time per epoch / plain concat's", numeric=True)], body)
        blocks = [Block("p", "CRMT and the robust fusion head trained from the same unimodal nets, epochs and "
                             "learning rates as plain concat, evaluated with PGD-AT's attacks and budgets (the "
                             "table above). Accuracy over seeds: mean and range (one seed: its value with the Wilson "
                             "95% interval). Cost: mean seconds per training epoch (each run's metrics) over plain "
                             "concat's."), Block("table", table=table)]
        cert = self._cert_table(s)
        if cert.rows:
            blocks.append(Block("p", "CRMT's certified accuracy: the share of clips whose bound (Yang et al. 2024, "
                                     "Sec. 3) exceeds r, per perturbed input and seed. Feature space: L2 perturbations "
                                     "of the encoders' features, exact constants, a certificate. Input space: L2 "
                                     "perturbations of the inputs with Lipschitz constants ESTIMATED on the training "
                                     "list (largest gradient norm seen): an estimate, not a guarantee."))
            blocks.append(Block("table", table=cert))
        return blocks

    def _cert_table(self, s: Any) -> Table:
        rows = []
        for seed in s.model_seeds("crmt"):
            rec = _crmt_record(s, "crmt", self.name, seed)
            for r in (rec or {}).get("rows", []):
                rows.append({"seed": seed, "space": r["space"] + (" (ESTIMATE)" if r["estimate"] else ""),
                             "perturbed": r["perturbed"], "n": r["n"], **{k: r.get(k) for k in CERT_RADII}})
        return Table([Column("seed", "seed", fmt_int, True), Column("space", "space"),
                      Column("perturbed", "perturbed"), Column("n", "clips", fmt_int, True),
                      *[Column(k, f"L2 {k[2:]}", fmt_percent, True) for k in CERT_RADII]], rows)


def _with_aa(s: Any, run: str, kind: str) -> Dict[int, List[Dict[str, Any]]]:
    """The section's PGD rows of ``run`` per seed with its AutoAttack rows added."""
    rows = kind_by_seed(s, run, kind)
    for k, aa in kind_by_seed(s, run, f"{kind}-aa").items():
        rows[k] = rows.get(k, []) + aa
    return {k: r for k, r in rows.items() if r}


def _crmt_record(s: Any, run: str, kind: str, seed: int) -> Optional[Dict[str, Any]]:
    folder = s.kind_dir(run, kind, seed=seed)
    path = eval_file(folder, "crmt_certified") if folder is not None else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def _crmt_cell(s: Any, run: str, kind: str) -> str:
    """CRMT's feature-space certified accuracy at r > 0 with both inputs perturbed, over seeds."""
    found = {}
    for k in s.model_seeds(run):
        rec = _crmt_record(s, run, kind, k)
        row = next((r for r in (rec or {}).get("rows", []) if r["space"] == "feature" and r["perturbed"] == "both"),
                   None)
        if row is not None:
            found[k] = {"adv_acc": row["r=0"], "n_samples": row["n"]}
    return acc_seeds(found) if found else "—"
