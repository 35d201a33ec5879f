"""Run the whole study on the embedded dataset and write runs/<name>/report.{md,html}.

    python scripts/run_study.py --out runs/demo            # the demo (bash scripts/demo.sh)
    python scripts/run_study.py --out runs/quick --quick   # a ~2-minute smoke version

The report's tables and readings are reporting/study_findings.py's; this module only runs the steps.

Steps (each reuses what a previous run already finished, so a killed study resumes):
  1. generate the synthetic videos, extract 8 fps frames and 11025 Hz audio, build the index CSVs;
  2. train unimodal audio/visual models and the fusion heads (concat, sum, film_av, gated_av, attention),
     a MinSim model and a PGD adversarially trained model;
  3. attack: FGSM/PGD/MIM and AutoAttack (demo scale) on audio, visual and both for audio, visual and concat;
     PGD for every head; AutoAttack also for MinSim and adversarial training; the robustness surface (FGSM over
     eps_audio x eps_visual) of audio, visual and concat; examples pages (seeded choice, every class);
  4. defend: memory banks on the plain and on the MinSim model (fine-tuned with the banks fixed), attacked
     as the paper did and adaptively;
  5. write the report: every table with 95% intervals, paired tests behind the reading, surface heat maps,
     example pages, provenance, the commands and the timings.
Nothing here is tuned to make a finding come out one way: the report states what was measured.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import main_attack
import main_defense
from dataset.batches import default_workers
from reporting.per_sample import PerSample, read_per_sample
from reporting.results import read_results
from reporting.study_findings import build_report
from reporting.study_report import write_report
from utils.rundir import RunDir, eval_file

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("study")

IN_PROCESS = {"main_attack.py": main_attack.main, "main_defense.py": main_defense.main}
EVAL_BATCH = ["--batch_size_per_gpu", "48"]  # evaluation only: larger batches use the CPU better
SWEEP_EPS = ["0.003", "0.012"]  # plus the grid's 0.006/0.012 points: paper Fig. 3 range (1e-3 units)
FUSIONS = ["concat", "sum", "film_av", "gated_av", "attention"]  # the paper's heads + attention
UNIMODAL = ["audio", "visual"]
SURFACE_EPS = [0.0, 0.003, 0.006, 0.012]  # per modality: the robustness surface is this grid squared (4 x 4)
SURFACE_ATTACK = ["--attack_type", "fgsm"]  # see Study.settings["surface"] for why
AA = ["--apgd_steps", "20", "--square_queries", "100"]  # AutoAttack at demo scale (paper: 100 steps, 5000 queries)
AA_QUICK = ["--apgd_steps", "3", "--square_queries", "20"]  # --quick: a smoke test of the plumbing only


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "demo", help="study folder (never deleted)")
    p.add_argument("--media", type=Path, default=None,
                   help="synthetic media root (default media/synthetic, media/synthetic_quick with --quick)")
    p.add_argument("--index", type=Path, default=None,
                   help="index CSV folder (default data/synthetic, data/synthetic_quick with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke version: fewer clips, 1 epoch, fewer attacks")
    p.add_argument("--clips_per_class", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None, help="epochs of the audio-visual models (default 3)")
    p.add_argument("--epochs_unimodal", type=int, default=None, help="epochs of the unimodal models (default 16)")
    p.add_argument("--workers", type=int, default=default_workers(), help="loader workers (default: the training default, dataset/batches.py)")
    p.add_argument("--seed", type=int, default=0)
    return p


class Study:
    """Runs steps with done-markers so that a second call resumes and skips finished work."""

    fusions = FUSIONS

    def __init__(self, args: argparse.Namespace) -> None:
        name = "synthetic_quick" if args.quick else "synthetic"
        args.media = args.media or REPO / "media" / name
        args.index = args.index or REPO / "data" / name
        self.args = args
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.commands: List[str] = []
        self.timings: Dict[str, float] = {}
        q = args.quick
        self.clips = args.clips_per_class or (12 if q else 40)
        self.epochs_uni = args.epochs_unimodal or (1 if q else 16)
        self.epochs = args.epochs or (1 if q else 3)
        self.tune_epochs = 1  # defended models: fine-tuning epochs with the banks fixed
        self.common = ["--dataset", "synthetic", "--list_train", str(args.index / "train.csv"),
                       "--list_val", str(args.index / "val.csv"), "--list_test", str(args.index / "test.csv"),
                       "--audio_path", str(args.media / "data" / "audio"),
                       "--frame_path", str(args.media / "data" / "frames"),
                       "--arch_frame", "resnet10", "--workers", str(args.workers), "--ckpt", str(self.out),
                       "--seed", str(args.seed), "--no_progress", "--disp_iter", "0",
                       "--batch_size_per_gpu", "16"]
        # Learning rates for training from scratch on the small set (the paper's 1e-4 visual rate assumes an
        # ImageNet-pretrained ResNet, which cannot be fetched here). Chosen once on the validation list by the
        # unimodal models' accuracy (audio: 1e-2 diverged, 3e-3 learned; visual: 1e-2), never on test results.
        self.train_flags = ["--lr_frame", "1e-2", "--lr_sound", "3e-3", "--lr_classifier", "3e-3"]
        self.seed = args.seed
        self.surface_eps = SURFACE_EPS
        self.aa = AA_QUICK if q else AA
        self.settings: Dict[str, str] = {
            "surface": (f"Accuracy of each model over the budget grid eps_audio x eps_visual in "
                        f"{{{', '.join(f'{e:g}' for e in SURFACE_EPS)}}}^2 under {SURFACE_ATTACK[1].upper()} (one "
                        "step of size eps). Chosen for the demo's 10-minute budget on 2 cores: the 15 attacked points "
                        "of the concat model cost 15 gradient passes per clip with FGSM against 150 with PGD-10, "
                        "about as much as the rest of the concat evaluation. FGSM is a weaker attack than PGD, so "
                        "the surface is an upper bound on robust accuracy; the paper-grid tables above give PGD-10 "
                        "and AutoAttack at their points. The unimodal models are evaluated on their own axis only "
                        "(4 points): they do not read the other input."),
            "autoattack": (f"AutoAttack at demo scale: APGD-CE and APGD-T (up to 9 target classes) with {self.aa[1]} "
                           f"iterations, Square with {self.aa[3]} queries (paper: 100 iterations, 5000 queries), each "
                           "stage on the clips still classified correctly, L-inf budget of the paper grid. With "
                           "reduced budgets it is an upper bound on robust accuracy. On the defended models "
                           "the adaptive worst case stands in for it: it runs APGD-CE, APGD-T and Square (plus PGD "
                           "variants) on every clip and keeps the per-clip worst case."),
        }

    @staticmethod
    def epoch_flags(n: int) -> List[str]:
        """n epochs, lr x0.1 for the last one (none for runs of 1-2 epochs)."""
        return ["--num_epoch", str(n), "--lr_steps", str(n if n > 2 else n + 1)]

    # -- running ------------------------------------------------------------------------------------
    def step(self, name: str, argv: Sequence[str], done: Optional[Path] = None) -> None:
        """Run ``python argv`` unless ``done`` exists; records the command and its wall time. The mains run in
        this process (no second torch import per step); evaluations pass --reuse_eval, so a finished one
        with the same configuration is not recomputed."""
        cmd = [sys.executable, *argv]
        self.commands.append(" ".join(shlex.quote(str(c)) for c in ["python", *argv]))
        if done is not None and done.exists():
            log.info("[skip] %s (done)", name)
            return
        log.info("[run] %s", name)
        t0 = time.time()
        if str(argv[0]) in IN_PROCESS:
            IN_PROCESS[str(argv[0])]([str(a) for a in argv[1:]])
            logging.getLogger().handlers.clear()
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", force=True)
        else:
            env = dict(os.environ, PYTHONPATH=str(REPO))
            proc = subprocess.run([str(c) for c in cmd], cwd=REPO, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
                raise RuntimeError(f"study step {name!r} failed (exit {proc.returncode}): {self.commands[-1]}")
        self.timings[name] = time.time() - t0

    def run_dir(self, run_id: str) -> RunDir:
        return RunDir(self.out / run_id)

    # -- 1. data --------------------------------------------------------------------------------------
    def data(self) -> None:
        a = self.args
        w = str(max(os.cpu_count() or 1, 1))  # ffmpeg/generation processes: every core
        self.step("generate", ["scripts/make_synthetic_dataset.py", "--out", str(a.media), "--clips-per-class",
                               str(self.clips), "--seed", str(a.seed), "--workers", w])
        self.step("frames", ["scripts/extract_frames.py", "--video_path", str(a.media / "videos"),
                             "--out_dir", str(a.media / "data" / "frames"), "--workers", w])
        self.step("audio", ["scripts/extract_audio.py", "--video_path", str(a.media / "videos"),
                            "--out_dir", str(a.media / "data" / "audio"), "--workers", w])
        self.step("index", ["scripts/make_index.py", "--root", str(a.media), "--out", str(a.index),
                            "--dataset", "synthetic", "--seed", str(a.seed)])

    # -- 2. training ----------------------------------------------------------------------------------
    def train(self, run_id: str, head: str, *extra: str) -> None:
        rd = self.run_dir(run_id)
        resume = ["--resume"] if rd.checkpoint_last.exists() else []
        self.step(f"train {run_id}", ["main_attack.py", *self.common, *self.train_flags, "--id", run_id,
                                      "--arch_classifier", head, "--mode", "train", *extra, *resume],
                  rd.done_train)

    def evaluate(self, run_id: str, head: str, attacks: str, *extra: str) -> None:
        self.step(f"attack {run_id}", ["main_attack.py", *self.common, *EVAL_BATCH, "--id", run_id,
                                       "--arch_classifier", head, "--mode", "eval", "--attack_type", attacks,
                                       "--reuse_eval", *extra])

    def surface(self, run_id: str) -> None:
        """The robustness surface of one model (an evaluation with an explicit --eps grid)."""
        reads = {"audio": ("audio",), "visual": ("visual",)}.get(run_id, ("audio", "visual"))
        grid = [f"audio={a:g},visual={v:g}" for a in SURFACE_EPS for v in SURFACE_EPS
                if (a == 0 or "audio" in reads) and (v == 0 or "visual" in reads)]
        self.step(f"surface {run_id}", ["main_attack.py", *self.common, *EVAL_BATCH, "--id", run_id,
                                        "--arch_classifier", run_id, "--mode", "eval", *SURFACE_ATTACK,
                                        "--eps", *grid, "--reuse_eval"])

    def defend(self, run_id: str, base_id: str, *extra: str, adaptive: bool = False) -> None:
        base = self.run_dir(base_id)
        rd = self.run_dir(run_id)
        flags = [*self.common, "--id", run_id, "--arch_classifier", "concat",
                 "--base_weights", str(base.checkpoint_best)]
        resume = ["--resume"] if rd.checkpoint_last.exists() else []
        tune_epochs = str(self.tune_epochs)
        self.step(f"defense train {run_id}", ["main_defense.py", *flags, "--features", str(base.features),
                                              "--mode", "train", "--num_epoch", tune_epochs, "--lr_steps", "99",
                                              "--lr_frame", "1e-3", "--lr_sound", "1e-3", "--lr_classifier", "1e-3",
                                              *resume, *extra],
                  rd.done_train)
        # the paper's attack on the whole grid; adaptive attacks on the both-modalities row (CPU budget)
        # (APGD and Square at demo scale: 20 iterations, 500 queries)
        # quick: a smoke test of the plumbing, at a few APGD steps and Square queries (CPU budget)
        budget = ["--apgd_steps", "3", "--square_queries", "20"] if self.args.quick else \
            ["--apgd_steps", "20", "--square_queries", "500"]
        adapt = ["--adaptive", "--adaptive_eps", "visual=0.006,audio=0.006", *budget] if adaptive else []
        self.step(f"defense attack {run_id}", ["main_defense.py", *flags, *EVAL_BATCH, "--mode", "eval", "--attack_type", "pgd",
                                               "--reuse_eval", *adapt, *extra])

    def run(self) -> Dict[str, Path]:
        t0 = time.time()
        self.data()
        q = self.args.quick
        examples = ["--save_examples", "16"]  # two per class of 8: seeded rule of pipeline/attack_eval.py
        # Unimodal models from scratch; every audio-visual model starts from their nets (the paper starts its
        # visual net from ImageNet weights, which cannot be fetched here) and is trained end to end.
        self.train("audio", "audio", *self.epoch_flags(self.epochs_uni))
        self.train("visual", "visual", *self.epoch_flags(self.epochs_uni))
        init = ["--init_from", str(self.run_dir("audio").checkpoint_best),
                str(self.run_dir("visual").checkpoint_best), *self.epoch_flags(self.epochs)]
        self.train("concat", "concat", *init, "--save_features")
        for head in FUSIONS[1:]:
            self.train(head, head, *init)
        self.train("minsim", "concat", *init, "--minsim_weight", "1.0", "--save_features")  # paper w = 1.0
        self.train("advtrain", "concat", *init, "--adv_train", "pgd", "--train_attack_steps", "3")
        # the paper's attacks plus AutoAttack at demo scale ('all' now includes apgd-* and square)
        full = "fgsm,pgd,autoattack" if q else "fgsm,pgd,mim,autoattack"
        self.evaluate("audio", "audio", full, *self.aa)
        self.evaluate("visual", "visual", full, *self.aa)
        self.evaluate("concat", "concat", full, *self.aa, *examples, *([] if q else ["--sweep", "--sweep_eps", *SWEEP_EPS]))
        for head in FUSIONS[1:]:
            self.evaluate(head, head, "pgd", *(examples if head == "attention" else []))
        self.evaluate("minsim", "concat", "pgd,autoattack", *self.aa)
        self.evaluate("advtrain", "concat", "pgd,autoattack", *self.aa)
        for model in ("audio", "visual", "concat"):
            self.surface(model)
        self.defend("banks", "concat")
        self.defend("minsim-banks", "minsim", adaptive=True)
        self.timings["total"] = time.time() - t0
        return self.report()

    # -- 5. report ------------------------------------------------------------------------------------
    def _latest(self, run_id: str, surface: bool = False) -> Optional[Path]:
        """The run's newest finished evaluation of one kind: the surface (an explicit --eps grid) or the main
        one (the paper grid), so a surface evaluation never hides the main results."""
        rd = self.run_dir(run_id)
        for eid in reversed(rd.eval_ids()):
            cfg = json.loads(eval_file(rd.eval_dir(eid), "config").read_text()).get("config", {})
            if (cfg.get("eps") is not None) == surface:
                return rd.eval_dir(eid)
        return None

    def _eval_dir(self, run_id: str, surface: bool = False) -> Path:
        latest = self._latest(run_id, surface)
        if latest is None:
            raise FileNotFoundError(f"{self.run_dir(run_id).root} has no finished {'surface ' * surface}evaluation")
        return latest

    def results(self, run_id: str, name: str = "results", surface: bool = False) -> List[Dict[str, Any]]:
        """Rows of the run's newest evaluation (``name``: results, sweep, robustness, ...)."""
        return read_results(eval_file(self._eval_dir(run_id, surface), name, ".json"))

    def has_results(self, run_id: str, name: str, surface: bool = False) -> bool:
        latest = self._latest(run_id, surface)
        return latest is not None and eval_file(latest, name, ".json").exists()

    def per_sample(self, run_id: str, surface: bool = False) -> PerSample:
        """Per-clip correctness of every row of the run's newest evaluation (per_sample.json)."""
        return read_per_sample(eval_file(self._eval_dir(run_id, surface), "per_sample"))

    def eval_path(self, run_id: str, key: str) -> Optional[Path]:
        """A file of the run's newest (main) evaluation folder by key (utils/rundir.py), or None."""
        latest = self._latest(run_id)
        return eval_file(latest, key) if latest is not None else None

    def report(self) -> Dict[str, Path]:
        blocks = build_report(self)
        return write_report(blocks, self.out, "Audio-visual robustness study (embedded dataset)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = get_args_parser().parse_args(argv)
    study = Study(args)
    paths = study.run()
    print((study.out / "report.md").read_text().split("## What the numbers say")[0][-6000:])
    print(f"report: {paths['md']}\n        {paths['html']}")
    print(f"study wall time: {study.timings['total']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
