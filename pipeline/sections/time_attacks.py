"""Study section "time": the temporal attacks (attacks/sparse_time.py, time_shared.py, temporal_invariance.py)
against PGD at the same budget, on multi-frame clips (issue 19, item 1)."""
from __future__ import annotations

from typing import Any, Dict, List

from pipeline.study_sections import Section, SeedPlan, register
from reporting.stats import fmt_acc_seeds
from reporting.study_readings import find_rows, first_row, kind_by_seed
from reporting.study_report import Block
from reporting.tables import Column, Table

ATTACKS = ("pgd", "sparse_time", "time_shared", "tia")
WORDS = {"pgd": "PGD (every frame and sample)", "sparse_time": "sparse in time, 1 segment per modality",
         "time_shared": "one delta shared by every frame / segment", "tia": "temporal invariance (Zhang et al.)"}
FRAMES = 4  # T: frames per clip at evaluation (the models are trained on 1; the trunk averages over frames)
EPS = "visual=0.006,audio=0.006"  # the paper's both-modalities budget (docs/paper.md, Attacks)
STEPS = {"demo": 5, "quick": 2, "paper": 10}  # paper: PGD-10 (docs/paper.md); demo/quick: time budget
MODELS = ("concat",)  # the headline audio-visual model, in every seed


@register("time")
class TimeSection(Section):
    """PGD, sparse_time (k = 1), time_shared and tia on concat with T = 4 frames, both inputs attacked."""

    title = "Attacks in time"
    summary = (f"PGD, a one-segment sparse attack, a time-shared delta and the temporal invariance attack on concat "
               f"with {FRAMES} frames per clip")

    def plan(self, sp: SeedPlan) -> None:
        for model in MODELS:
            if model in sp.trained:
                sp.evaluate("time attacks", model, ["--num_frames", str(FRAMES), "--attack_type", ",".join(ATTACKS),
                                                    "--attack_steps", str(STEPS[sp.scale]), "--eps", EPS,
                                                    "--attack_args", "sparse_time:frames=1"], self.name)

    def report(self, s: Any) -> List[Block]:
        blocks: List[Block] = [Block("p", f"Each model evaluated on {FRAMES}-frame clips (trained on one frame: the "
                                          "visual trunk averages its frames; the audio window is cut into "
                                          f"{FRAMES} matching segments), {EPS.replace(',', ' and ')} (L-inf), "
                                          "accuracy with its Wilson 95% interval (several seeds: mean, range, "
                                          "each seed's). A temporal attack at least as strong as PGD at equal "
                                          "budget means the model's robustness does not come from spreading "
                                          "the perturbation over time.")]
        for model in MODELS:
            rows = kind_by_seed(s, model, self.name)
            if not rows:
                continue
            body: List[Dict[str, Any]] = [{"attack": "none (clean)", "seeds": len(rows),
                                           "acc": _acc(first_row(rows), "clean_acc")}]
            for a in ATTACKS:
                body.append({"attack": WORDS[a], "seeds": len(rows), "acc": _acc(find_rows(rows, a, "both"))})
            blocks.append(Block("p", f"{model}:"))
            blocks.append(Block("table", table=Table([Column("attack", "attack"), Column("seeds", "seeds"),
                                                      Column("acc", "accuracy (%)", numeric=True)], body)))
        return blocks


def _acc(rows: Dict[int, Any], key: str = "adv_acc") -> str:
    counts = {k: (int(round(float(r[key]) * int(r["n_samples"]))), int(r["n_samples"]))
              for k, r in rows.items() if r is not None and r.get(key) is not None}
    return fmt_acc_seeds(counts)
