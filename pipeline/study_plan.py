"""The study as a PLAN: a list of jobs (data, train, eval, report) built from the dataset, the preset and the
seeds, with the dependencies between them. pipeline/launchers.py runs a plan (one job after the other, or as
SLURM jobs); pipeline/study.py records what ran.

Run folders: ``<out>/<model>/`` for a single-seed study (today's layout), ``<out>/<model>/seed<k>/`` when the
study has several seeds (``--ckpt <out>/<model> --id seed<k>``). Each seed sets the initialisation, the data
order and the attacks' randomness (the mains' ``--seed``); the data split is fixed (``--data_seed``).
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from attacks.metrics import PAPER_EPS_GRID, format_eps
from dataset.specs import DatasetSpec, get_spec
from pipeline import sections as _sections  # noqa: F401  (registers the study's sections)
from pipeline.study_sections import SECTIONS, SeedPlan
from utils.registry import Registry
from utils.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]

KINDS = ("data", "train", "eval", "report")
EVAL_BATCH = ["--batch_size_per_gpu", "48"]  # evaluation only: larger batches use the CPU better
DEMO_FUSIONS = ["concat", "sum", "film_av", "gated_av", "attention"]  # the paper's heads + attention (demo)
# every fusion head of the paper (docs/paper.md, Model: sum, concat, FiLM and gated both ways) plus attention
# and late fusion
PAPER_FUSIONS = ["sum", "concat", "film_av", "film_va", "gated_av", "gated_va", "attention", "late"]
SURFACE_EPS = [0.0, 0.003, 0.006, 0.012]  # per modality: the robustness surface is this grid squared (4 x 4)
# AutoAttack at demo scale (AutoAttack standard: 100 steps, 9 target classes, 5000 queries)
AA_DEMO = {"apgd_steps": 10, "apgd_targets": 3, "square_queries": 50}
AA_QUICK = {"apgd_steps": 3, "apgd_targets": 1, "square_queries": 20}  # quick: plumbing only
AA_STANDARD = {"apgd_steps": 100, "apgd_targets": 9, "square_queries": 5000}  # Croce & Hein 2020, standard
# The memory-bank defence at demo scale (paper: at most 2000 ISTA iterations; docs/paper.md, Defense)
DEFENSE_SOLVER_DEMO = ["--ista_iters", "100", "--unrolled_iters", "10"]
ADAPTIVE_DEMO = ["--adaptive_attacks", "fgsm,apgd-t:unrolled,square"]  # docs/demo.md, "Where the ten minutes go"
# demo/quick learning rates for nets from scratch on the embedded set (chosen on the validation list, docs/demo.md)
SCRATCH_LR = ["--lr_frame", "1e-2", "--lr_sound", "3e-3", "--lr_classifier", "3e-3"]
CLIP_SECONDS = "2"  # the embedded set's clips (docs/demo.md)
EXAMPLES = ["--save_examples", "16"]  # two per class of 8: seeded rule of pipeline/attack_eval.py


@dataclass(frozen=True)
class Job:
    """One step of the study: ``python argv`` (or the report), with the jobs it waits for."""

    name: str  # unique in a plan, e.g. "train audio" or "attack concat seed1"
    kind: str  # one of KINDS
    argv: Tuple[str, ...] = ()
    model: str = ""  # the run (model) id; "" for data and report jobs
    seed: Optional[int] = None
    deps: Tuple[str, ...] = ()
    eval_kind: str = ""  # eval jobs: main, aa or surface (the report's kinds of evaluation)
    run_root: Optional[Path] = None  # the run folder a train/eval job writes into

    def command(self) -> str:
        """The job's command relative to the repository (no machine-specific absolute paths)."""
        if self.kind == "report":
            return "(report: reads study.json)"
        return " ".join(shlex.quote(rel(a)) for a in ["python", *self.argv])


def rel(arg: str) -> str:
    """A path under the repository as a relative path (the rest unchanged)."""
    text = str(arg)
    root = str(REPO) + os.sep
    return text[len(root):] if text.startswith(root) else text


@dataclass
class PlanInput:
    """What a plan is built from (pipeline/study.py fills it from the flags, after checking them)."""

    dataset: str
    spec: DatasetSpec
    preset: str
    seeds: Tuple[int, ...]
    out: Path
    lists: Dict[str, Path]  # train/val/test
    audio_path: Path
    frame_path: Path
    categories: Tuple[str, ...] = ()  # given with --categories (custom datasets), else ()
    workers: int = 0
    pretrained: Optional[str] = None
    epochs: int = 3
    epochs_unimodal: int = 24
    data_steps: List[Job] = field(default_factory=list)  # synthetic media: generate/extract/index
    sections: Tuple[str, ...] = ()  # the study sections to run (pipeline/study_sections.py), in order

    @property
    def multi(self) -> bool:
        return len(self.seeds) > 1


class PlanBuilder:
    """Emits the jobs of one preset: trainings, evaluations and their dependencies, per seed."""

    def __init__(self, inp: PlanInput) -> None:
        self.inp = inp
        self.jobs: List[Job] = list(inp.data_steps)
        self.data_deps = tuple(j.name for j in inp.data_steps)
        self.seed_plans: List[SeedPlan] = []  # each seed's view for the sections (``seed_plan``)

    # -- names and folders ----------------------------------------------------------------------------
    def name(self, verb: str, model: str, seed: int) -> str:
        return f"{verb} {model}" + (f" seed{seed}" if self.inp.multi else "")

    def run_root(self, model: str, seed: int) -> Path:
        return self.inp.out / model / f"seed{seed}" if self.inp.multi else self.inp.out / model

    def where(self, model: str, seed: int) -> List[str]:
        """--ckpt and --id of a run (the layout in the module docstring)."""
        if self.inp.multi:
            return ["--ckpt", str(self.inp.out / model), "--id", f"seed{seed}"]
        return ["--ckpt", str(self.inp.out), "--id", model]

    def common(self, seed: int, arch: Sequence[str], extra: Sequence[str] = ()) -> List[str]:
        i = self.inp
        cats = ["--categories", *i.categories] if i.categories else []
        return ["--dataset", i.dataset, "--list_train", str(i.lists["train"]), "--list_val", str(i.lists["val"]),
                "--list_test", str(i.lists["test"]), "--audio_path", str(i.audio_path),
                "--frame_path", str(i.frame_path), *cats, *arch, "--workers", str(i.workers),
                "--seed", str(seed), "--no_progress", "--disp_iter", "0", *extra]

    # -- jobs ---------------------------------------------------------------------------------------------
    def train(self, model: str, seed: int, main: str, flags: Sequence[str], deps: Sequence[str] = ()) -> str:
        name = self.name("train", model, seed)
        argv = (main, *flags, *self.where(model, seed), "--mode", "train")
        self.jobs.append(Job(name, "train", argv, model, seed, (*self.data_deps, *deps),
                             run_root=self.run_root(model, seed)))
        return name

    def evaluate(self, verb: str, model: str, seed: int, main: str, flags: Sequence[str], kind: str,
                 deps: Sequence[str]) -> str:
        name = self.name(verb, model, seed)
        argv = (main, *flags, *self.where(model, seed), "--mode", "eval", "--reuse_eval")
        self.jobs.append(Job(name, "eval", argv, model, seed, tuple(deps), eval_kind=kind,
                             run_root=self.run_root(model, seed)))
        return name

    def checkpoint(self, model: str, seed: int) -> str:
        return str(RunDir(self.run_root(model, seed)).checkpoint_best)

    def features(self, model: str, seed: int) -> str:
        return str(RunDir(self.run_root(model, seed)).features)

    def seed_plan(self, seed: int, scale: str, common: Sequence[str], evaluation: Sequence[str],
                  trained: Dict[str, str], arch_of: Optional[Dict[str, str]] = None) -> None:
        """Hand one seed's trained models (``trained``: model -> training job, the dict the preset fills) and
        flags to the study's sections (run in ``finish``)."""
        self.seed_plans.append(SeedPlan(self, seed, seed == self.inp.seeds[0], scale, list(common),
                                        list(evaluation), trained, dict(arch_of or {})))

    def finish(self) -> List[Job]:
        """The sections' jobs (each seed, each section in order), then the report after every evaluation."""
        for name in self.inp.sections:
            section = SECTIONS.get(name)()
            for sp in self.seed_plans:
                section.plan(sp)
        names = [j.name for j in self.jobs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:  # study.json records steps by name: a second job of one name would overwrite the first's record
            raise ValueError(f"study plan: job name(s) used twice: {', '.join(twice)}")
        evals = tuple(j.name for j in self.jobs if j.kind == "eval")
        self.jobs.append(Job("report", "report", deps=evals))
        return self.jobs


def epoch_flags(n: int) -> List[str]:
    """n epochs, lr x0.1 for the last max(1, n // 6) of them (none for runs of 1-2 epochs)."""
    return ["--num_epoch", str(n), "--lr_steps", str(n - max(1, n // 6) + 1 if n > 2 else n + 1)]


def aa_flags(aa: Dict[str, int]) -> List[str]:
    return [x for k, v in aa.items() for x in (f"--{k}", str(v))]


def surface_grid(model: str) -> List[str]:
    """--eps of a robustness surface; the unimodal models on their own axis only (they read one input)."""
    reads = {"audio": ("audio",), "visual": ("visual",)}.get(model, ("audio", "visual"))
    return [f"audio={a:g},visual={v:g}" for a in SURFACE_EPS for v in SURFACE_EPS
            if (a == 0 or "audio" in reads) and (v == 0 or "visual" in reads)]


def embedded_data_jobs(media: Path, index: Path, clips: int, split: Tuple[int, int], data_seed: int) -> List[Job]:
    """The embedded set: generate, extract frames and audio, index (scripts/; each skips finished work)."""
    w = str(max(os.cpu_count() or 1, 1))  # ffmpeg/generation processes: every core
    m, x = media, index
    n_val, n_test = split
    steps = [("generate", ["scripts/make_synthetic_dataset.py", "--out", str(m), "--clips-per-class",
                           str(clips), "--seconds", CLIP_SECONDS, "--seed", str(data_seed), "--workers", w]),
             ("frames", ["scripts/extract_frames.py", "--video_path", str(m / "videos"),
                         "--out_dir", str(m / "data" / "frames"), "--workers", w]),
             ("audio", ["scripts/extract_audio.py", "--video_path", str(m / "videos"),
                        "--out_dir", str(m / "data" / "audio"), "--workers", w]),
             ("index", ["scripts/make_index.py", "--root", str(m), "--out", str(x), "--dataset", "synthetic",
                        "--seed", str(data_seed), "--val", f"{n_val / clips:.6f}",
                        "--test", f"{n_test / clips:.6f}"])]
    return [Job(name, "data", tuple(argv), deps=(steps[i - 1][0],) if i else ())
            for i, (name, argv) in enumerate(steps)]


# What the demo leaves to the full preset (the report names it; docs/demo.md gives each one's cost)
DEMO_LEAVES_OUT = ("FAB-T in AutoAttack; AutoAttack at the paper grid's single-modality points (audio only, visual "
                   "only) and on MinSim; the fusion heads other than concat (sum, FiLM, gated, attention) and PGD "
                   "adversarial training; PGD on MinSim and MinSim + banks at the grid's single-modality points; "
                   "the robustness surfaces; the memory-bank defence's adaptive attacks; every row but the headline "
                   "ones (audio, visual, concat) on seeds after the first; the study sections other than the "
                   "missing-input one and the defence table")
# the demo's AutoAttack: the standard ensemble without FAB-T (docs/demo.md: what FAB-T found and cost in a 3-seed run)
DEMO_AA_ARGS = ["--attack_args", "autoattack:leave_out=fab-t"]


def describe_embedded(aa: Dict[str, int], clips: int, split: Tuple[int, int], seeds: Sequence[int],
                      data_seed: int, full: bool = True) -> Dict[str, str]:
    """What the study chose and why, for the report (embedded presets; the paper preset runs the paper's
    settings, which the commands show)."""
    return {
        **({} if not full else {"surface": (
                    f"Accuracy of each model over the budget grid eps_audio x eps_visual in "
                    f"{{{', '.join(f'{e:g}' for e in SURFACE_EPS)}}}^2 under FGSM (one "
                    "step of size eps). Chosen at demo scale for 2 cores: the 15 attacked points "
                    "of the concat model cost 15 gradient passes per clip with FGSM against 150 with PGD-10, "
                    "about as much as the rest of the concat evaluation. FGSM is a weaker attack than PGD, so "
                    "the surface is an upper bound on robust accuracy; the paper-grid tables above give PGD-10 "
                    "and AutoAttack at their points. The unimodal models are evaluated on their own axis only "
                    "(4 points): they do not read the other input.")}),  # the demo runs no surface
        "autoattack": (f"AutoAttack at demo scale: APGD-CE, APGD-T ({aa['apgd_targets']} target classes)"
                       + (f" and FAB-T ({aa['apgd_targets']} targets)" if full else "")
                       + f" with {aa['apgd_steps']} iterations each, Square with "
                       f"{aa['square_queries']} queries (AutoAttack standard: 100 iterations, 9 target classes, 5000 "
                       "queries), each stage on the clips still classified correctly, L-inf budget of the paper grid"
                       + ("" if full else " at its both-inputs point (audio 0.006 and visual 0.006; the full preset "
                                          "also runs its single-modality points, and FAB-T, which the demo leaves "
                                          "out for time: docs/demo.md gives what it found and cost in a 3-seed "
                                          "run)")
                       + ". With reduced budgets it is an upper bound on robust accuracy. On the defended model the "
                       "adaptive worst case stands in for it: the attacks named under the defence table, each "
                       "on every clip, and the per-clip worst case."),
        "defense": ("Memory-bank defence at demo scale: banks of the clean features of every training clip "
                    "(up to 1024 per modality, paper), FISTA capped at 100 iterations and 10 iterations "
                    "unrolled for gradients (paper: up to 2000 ISTA iterations). The caps bound the solver's "
                    "cost on 2 cores; they can leave the sparse code short of the optimum, so the defence is "
                    "evaluated as run. Adaptive attacks: "
                    "the paper's PGD, FGSM through BPDA, APGD-T through the unrolled solver, Square (APGD-T "
                    "through BPDA, APGD-CE, PGD through BPDA and random-start PGD left out for time). The "
                    "banks-only ablation (banks on the plain concat model) is left out for time as well."),
        "data": (f"Embedded set: {clips} clips of {CLIP_SECONDS} s per class, split "
                 f"{split[0]}/{split[1]} clips of each class for val/test; the nets from scratch (CPU "
                 "budget; their sizes are in the report's first paragraph, from each run's own record)."),
        "seeds": (f"seeds {' '.join(map(str, seeds))}: each seed sets initialisation, data order and attack "
                  "randomness; "
                  f"the data split is fixed (data seed {data_seed})."),
        **({} if full else {"demo_leaves_out": "Only in the full preset (scripts/run_study.py --preset full; several "
                                               "times the demo's time), for the demo's time budget: "
                                               + DEMO_LEAVES_OUT + " (docs/demo.md gives each one's cost)."}),
    }


PRESETS: Registry[Callable[[PlanInput], List[Job]]] = Registry("preset")
# the classes a preset's attacks need: APGD-T's target classes + the true one
PRESET_AA: Dict[str, Dict[str, int]] = {"demo": AA_DEMO, "full": AA_DEMO, "quick": AA_QUICK, "paper": AA_STANDARD}


def classes_needed(preset: str) -> int:
    """APGD-T attacks the top ``apgd_targets`` other classes: the data needs one more class than that."""
    return PRESET_AA[preset]["apgd_targets"] + 1


HEADLINE = ("audio", "visual", "concat")  # the headline comparison: unimodal vs audio-visual (concat)


def _embedded(inp: PlanInput, aa: Dict[str, int], full: bool, tune_epochs: int = 1) -> List[Job]:
    """The demo's grid (docs/demo.md): nets from scratch; every audio-visual model starts from the unimodal
    nets of its seed; the paper's attacks and AutoAttack at demo scale; the defence with adaptive attacks.

    ``full`` False (the demo, within its time budget): the headline models (HEADLINE) on every seed, with FGSM and
    PGD on the paper grid and AutoAttack without FAB-T at the grid's both-inputs point; MinSim and MinSim + banks
    under PGD at that point on the first seed only; what only the full preset runs is DEMO_LEAVES_OUT. ``full``
    True (the full and quick presets): every row on every seed, AutoAttack on every grid point and on MinSim and
    PGD-AT, the surfaces, the defence's adaptive attacks."""
    b = PlanBuilder(inp)
    arch = ["--arch_sound", "anet_lite", "--arch_frame", "resnet10"]
    if inp.dataset != "synthetic":  # another dataset at the demo's CPU sizes (its spec has the paper's)
        cpu = get_spec("synthetic")
        arch += ["--audLen", str(cpu.audio_len), "--imgSize", str(cpu.img_size)]
    aaf = aa_flags(aa) + ([] if full else DEMO_AA_ARGS)
    both = ["--eps", "audio=0.006,visual=0.006"]  # the paper grid's both-inputs point
    for seed in inp.seeds:
        first = seed == inp.seeds[0]
        c = b.common(seed, arch)
        e = [*c, *EVAL_BATCH]
        tc = [*c, "--batch_size_per_gpu", "16"]  # training batch (evaluations: EVAL_BATCH)
        t = {m: b.train(m, seed, "main_attack.py", [*tc, *SCRATCH_LR, "--arch_classifier", m,
                                                     *epoch_flags(inp.epochs_unimodal)]) for m in ("audio", "visual")}
        init = ["--init_from", b.checkpoint("audio", seed), b.checkpoint("visual", seed), *epoch_flags(inp.epochs)]
        uni = (t["audio"], t["visual"])
        heads = DEMO_FUSIONS if full else ["concat"]
        for head in heads:
            t[head] = b.train(head, seed, "main_attack.py", [*tc, *SCRATCH_LR, "--arch_classifier", head, *init,
                                                              *(["--save_features"] if head == "concat" else [])], uni)
        scale = "quick" if aa is AA_QUICK else "demo"
        # the sections see this seed's models (the dict fills as the loop trains them; later seeds: HEADLINE)
        b.seed_plan(seed, scale, c, [*c, *EVAL_BATCH], t, {"minsim": "concat", "advtrain": "concat"})
        for m in HEADLINE:  # the paper's MIM is left out for time (docs/demo.md)
            ex = EXAMPLES if m == "concat" and first else []
            if full:
                b.evaluate("attack", m, seed, "main_attack.py", [*e, "--arch_classifier", m, "--attack_type",
                                                                  "fgsm,pgd,autoattack", *aaf, *ex], "main", [t[m]])
            else:
                b.evaluate("attack", m, seed, "main_attack.py", [*e, "--arch_classifier", m, "--attack_type",
                                                                  "fgsm,pgd", *ex], "main", [t[m]])
                b.evaluate("autoattack", m, seed, "main_attack.py", [*e, "--arch_classifier", m, "--attack_type",
                                                                      "autoattack", *both, *aaf], "aa", [t[m]])
        if not (full or first):  # a later seed of the demo: the headline rows only
            continue
        t["minsim"] = b.train("minsim", seed, "main_attack.py", [*tc, *SCRATCH_LR, "--arch_classifier", "concat", *init,
                                                                   "--minsim_weight", "1.0", "--save_features"], uni)  # paper w = 1.0
        if full:  # PGD adversarial training and the other fusion heads: the full preset only (DEMO_LEAVES_OUT)
            t["advtrain"] = b.train("advtrain", seed, "main_attack.py", [*tc, *SCRATCH_LR, "--arch_classifier",
                                                                           "concat", *init, "--adv_train", "pgd",
                                                                           "--train_attack_steps", "3"], uni)
        for head in heads[1:]:
            b.evaluate("attack", head, seed, "main_attack.py", [*e, "--arch_classifier", head, "--attack_type", "pgd",
                                                                 *(EXAMPLES if head == "attention" else [])],
                       "main", [t[head]])
        point = [] if full else both  # the demo: the defences at the grid's both-inputs point only (its budget)
        for m in ("minsim", "advtrain") if full else ("minsim",):
            b.evaluate("attack", m, seed, "main_attack.py", [*e, "--arch_classifier", "concat", "--attack_type", "pgd",
                                                              *point], "main", [t[m]])
            if full:
                b.evaluate("autoattack", m, seed, "main_attack.py",
                           [*e, "--arch_classifier", "concat", "--attack_type", "autoattack", *both, *aaf], "aa", [t[m]])
        for m in ("audio", "visual", "concat") if full else ():  # the surfaces: the full preset only
            b.evaluate("surface", m, seed, "main_attack.py", [*e, "--arch_classifier", m, "--attack_type", "fgsm",
                                                               "--eps", *surface_grid(m)], "surface", [t[m]])
        d = [*c, "--arch_classifier", "concat", "--base_weights", b.checkpoint("minsim", seed), *DEFENSE_SOLVER_DEMO]
        tb = b.train("minsim-banks", seed, "main_defense.py",
                     [*d, "--batch_size_per_gpu", "16", "--features", b.features("minsim", seed), "--num_epoch",
                      str(tune_epochs), "--lr_steps", "99", "--lr_frame", "1e-3", "--lr_sound", "1e-3",
                      "--lr_classifier", "1e-3"], [t["minsim"]])
        adaptive = ["--adaptive", "--adaptive_eps", "visual=0.006,audio=0.006", *aaf, *ADAPTIVE_DEMO] if full else []
        b.evaluate("defense attack", "minsim-banks", seed, "main_defense.py",
                   [*d, *EVAL_BATCH, "--attack_type", "pgd", *point, *adaptive], "main", [tb])
    return b.finish()


@PRESETS.register("demo")
def demo_plan(inp: PlanInput) -> List[Job]:
    """The demo on the embedded set (docs/demo.md)."""
    return _embedded(inp, AA_DEMO, full=False)


@PRESETS.register("full")
def full_plan(inp: PlanInput) -> List[Job]:
    """The demo's grid on every seed (every row, not only the headline ones) and, unless --sections says
    otherwise, every study section at demo budgets: what the demo leaves out for its time budget."""
    return _embedded(inp, AA_DEMO, full=True)


@PRESETS.register("quick")
def quick_plan(inp: PlanInput) -> List[Job]:
    """The demo's grid at plumbing scale (1 epoch, AutoAttack at a few steps)."""
    return _embedded(inp, AA_QUICK, full=True)


@PRESETS.register("paper")
def paper_plan(inp: PlanInput) -> List[Job]:
    """The paper's grid at the paper's settings (docs/paper.md, Model, Attacks, Defense; dataset/specs.py):
    anet + resnet18 at 65535 samples and 224 px, the spec's epochs and lr steps, every model trained from the
    same start (ImageNet weights where --pretrained imagenet is given); FGSM, PGD, MIM and AutoAttack standard
    on the paper grid in the reference's (normalised) eps units; MinSim + memory banks with the adaptive
    evaluation; PGD adversarial training; the robustness surface with PGD of audio, visual and concat."""
    b = PlanBuilder(inp)
    s = inp.spec
    arch = ["--arch_sound", "anet", "--arch_frame", "resnet18", "--audLen", str(s.audio_len),
            "--imgSize", str(s.img_size), *(["--pretrained", inp.pretrained] if inp.pretrained else [])]
    schedule = ["--num_epoch", str(s.num_epoch), "--lr_steps", *map(str, s.lr_steps)]
    grid = [format_eps(e) for e in PAPER_EPS_GRID]
    unit = ["--eps_unit", "normalized"]  # the reference code's units (docs/paper.md, Attacks)
    for seed in inp.seeds:
        c = b.common(seed, arch)
        t = {}
        b.seed_plan(seed, "paper", c, c, t, {"minsim": "concat", "advtrain": "concat"})
        for m in ["audio", "visual", *PAPER_FUSIONS]:
            t[m] = b.train(m, seed, "main_attack.py", [*c, *schedule, "--arch_classifier", m,
                                                        *(["--save_features"] if m == "concat" else [])])
        t["minsim"] = b.train("minsim", seed, "main_attack.py", [*c, *schedule, "--arch_classifier", "concat",
                                                                   "--minsim_weight", f"{s.minsim_weight:g}",
                                                                   "--save_features"])
        t["advtrain"] = b.train("advtrain", seed, "main_attack.py", [*c, *schedule, "--arch_classifier", "concat",
                                                                       "--adv_train", "pgd"])
        attacks = ["--attack_type", "fgsm,pgd,mim,autoattack", *aa_flags(AA_STANDARD), *unit, "--eps", *grid]
        for m in ["audio", "visual", *PAPER_FUSIONS]:
            b.evaluate("attack", m, seed, "main_attack.py", [*c, "--arch_classifier", m, *attacks], "main", [t[m]])
        for m in ("minsim", "advtrain"):
            b.evaluate("attack", m, seed, "main_attack.py", [*c, "--arch_classifier", "concat", *attacks], "main",
                       [t[m]])
        for m in ("audio", "visual", "concat"):
            b.evaluate("surface", m, seed, "main_attack.py", [*c, "--arch_classifier", m, "--attack_type", "pgd",
                                                               *unit, "--eps", *surface_grid(m)], "surface", [t[m]])
        d = [*c, "--arch_classifier", "concat", "--base_weights", b.checkpoint("minsim", seed)]
        tb = b.train("minsim-banks", seed, "main_defense.py", [*d, *schedule, "--features", b.features("minsim", seed)],
                     [t["minsim"]])
        b.evaluate("defense attack", "minsim-banks", seed, "main_defense.py",
                   [*d, "--attack_type", "fgsm,pgd", "--adaptive", *aa_flags(AA_STANDARD), *unit, "--eps", *grid],
                   "main", [tb])
    return b.finish()


def build_plan(inp: PlanInput) -> List[Job]:
    """The jobs of ``inp.preset`` (unknown presets list the valid ones)."""
    return PRESETS.get(inp.preset)(inp)


def render(jobs: Sequence[Job]) -> str:
    """The plan as text (--dry_run): each job with its kind, dependencies and command."""
    lines = []
    for j in jobs:
        after = f"  [after: {', '.join(j.deps)}]" if j.deps and j.kind != "report" else \
            ("  [after: every evaluation]" if j.kind == "report" else "")
        lines.append(f"{j.kind:6s} {j.name}{after}\n       {j.command()}")
    counts = {k: sum(j.kind == k for j in jobs) for k in KINDS}
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items()))
    return "\n".join(lines)
