"""The command line shared by main_attack.py and main_defense.py, resolved into one frozen ``RunConfig``.

Flag names follow the reference code (``--arch_sound``, ``--lr_frame``, ...) so existing command lines keep
working; ``--dataset NAME`` fills every unset value from the dataset spec (dataset/specs.py), and values
given explicitly always win. ``resolve_config`` checks every value before any work starts (numbers,
names, eps strings, the index lists and the checkpoints: see pipeline/preflight.py) and raises
``utils.errors.UsageError`` naming the flag; the mains turn that into one line and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from attacks import list_attacks
from attacks.base import EPS_UNITS
from attacks.metrics import PAPER_EPS_GRID, parse_eps
from dataset.specs import DatasetSpec, get_spec, list_datasets
from models import list_audio_nets, list_fusions, list_visual_nets
from models.defense import BANK_SELECTORS, GRAD_MODES
from models.visual_net import IMG_POOLS
from pipeline.speed_flags import RESULT_NEUTRAL, add_speed_args
from utils.errors import UsageError
from utils.rundir import FILES

# Flags whose default comes from the dataset spec when left unset (None) on the command line.
_SPEC_DEFAULTS = {
    "audRate": "audio_rate",
    "audLen": "audio_len",
    "frameRate": "fps",
    "imgSize": "img_size",
    "num_epoch": "num_epoch",
    "lr_steps": "lr_steps",
    "mix": "mix",
    "alpha_a": "alpha_audio",
    "alpha_v": "alpha_visual",
}
LIST_FLAGS = ("list_train", "list_val", "list_test")
# Flags that only matter to an evaluation with attacks (given in training, or without --attack_type, they
# would be silently ignored: that is an error instead).
_ATTACK_ONLY = ("eps", "sweep", "save_examples", "adaptive", "adaptive_eps")


def _csv_list(text: str) -> List[str]:
    return [t for t in (s.strip() for s in text.split(",")) if t]


def _minsim_weight(text: str):
    if text == "spec":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'spec', got {text!r}") from None


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Parser with every flag common to training, evaluation and attack runs (choices from the registries)."""
    # allow_abbrev=False: a prefix such as --eps for --eps_unit must never be taken silently
    p = argparse.ArgumentParser("Audio-visual robustness", add_help=add_help, allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--id", default="", help="run name; the run folder is <ckpt>/<id>/ (default: derived "
                   "from dataset and architecture)")
    g.add_argument("--ckpt", default="runs", help="folder holding run folders (never deleted)")
    g.add_argument("--mode", default="train", choices=["train", "eval"])
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    g.add_argument("--resume", action="store_true", help=f"continue from <run>/{FILES['checkpoint_last']}")
    g.add_argument("--weights", default="", help=f"checkpoint to evaluate (default: <run>/{FILES['checkpoint_best']})")
    g.add_argument("--disp_iter", type=int, default=20, help="log the training loss every N iterations")
    g.add_argument("--eval_epoch", type=int, default=1, help="evaluate on the val list every N epochs")
    g.add_argument("--no_progress", action="store_true", help="disable tqdm progress bars")

    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="synthetic", choices=list_datasets(), help="dataset spec")
    g.add_argument("--list_train", default="", help="index CSV (default: data/<dataset>/train.csv when no "
                   "list flag is given)")
    g.add_argument("--list_val", default="", help="index CSV (default: data/<dataset>/val.csv when no list "
                   "flag is given); --mode eval evaluates it when --list_test is not given, as the reference does")
    g.add_argument("--list_test", default="", help="index CSV (default: data/<dataset>/test.csv when no list "
                   "flag is given); without it, training ends without a separate test pass")
    g.add_argument("--audio_path", default="", help="audio root (default: $DATA_ROOT/data/audio)")
    g.add_argument("--frame_path", default="", help="frame root (default: $DATA_ROOT/data/frames)")
    g.add_argument("--categories", type=_csv_list, default=None,
                   help="comma-separated class names (default: the dataset spec's)")
    g.add_argument("--cls_num", type=int, default=None, help="number of classes (checked against categories)")
    g.add_argument("--num_frames", type=int, default=1)
    g.add_argument("--stride_frames", type=int, default=1)
    g.add_argument("--frameRate", type=int, default=None)
    g.add_argument("--audLen", type=int, default=None, help="audio samples per clip")
    g.add_argument("--audRate", type=int, default=None)
    g.add_argument("--imgSize", type=int, default=None)
    g.add_argument("--batch_size_per_gpu", type=int, default=12, help="per process (paper: 12 per GPU)")

    add_speed_args(p)

    g = p.add_argument_group("model")
    g.add_argument("--arch_sound", default="anet", choices=list_audio_nets())
    g.add_argument("--arch_frame", default="resnet18", choices=list_visual_nets())
    g.add_argument("--arch_classifier", default="concat", choices=list_fusions(), help="fusion head")
    g.add_argument("--img_pool", default="avgpool", choices=list(IMG_POOLS))
    g.add_argument("--pretrained", default=None, choices=[None, "imagenet"],
                   help="torchvision ImageNet weights for the visual net (needs network or a torch hub cache)")
    g.add_argument("--weights_frame", default="", help="local state dict for the visual net")
    g.add_argument("--weights_sound", default="", help="local state dict for the audio net")
    g.add_argument("--init_from", nargs="+", default=[],
                   help="project checkpoints to initialise the audio/visual nets from (e.g. the unimodal models); "
                   "every net of this model must be found in exactly one of them")

    g = p.add_argument_group("optimisation (paper: SGD, momentum 0.9, wd 1e-4)")
    g.add_argument("--lr_frame", type=float, default=1e-4, help="paper: 1e-4 for the visual net")
    g.add_argument("--lr_sound", type=float, default=1e-3, help="paper: 1e-3 for the audio net")
    g.add_argument("--lr_classifier", type=float, default=1e-3, help="paper: 1e-3 for the head")
    g.add_argument("--num_epoch", type=int, default=None)
    g.add_argument("--lr_steps", type=int, nargs="+", default=None, help="epochs where lr is x0.1")
    g.add_argument("--beta1", type=float, default=0.9, help="SGD momentum (paper: 0.9)")
    g.add_argument("--weight_decay", type=float, default=1e-4, help="paper: 1e-4")
    g.add_argument("--minsim_weight", type=_minsim_weight, default=0.0,
                   help="weight w of mean cos(f_audio, f_visual) added to the loss (MinSim; paper w=1.0, KS 0.8); "
                   "'spec' takes the dataset spec's paper value")
    g.add_argument("--adv_train", default="", choices=["", *list_attacks()],
                   help="adversarial training (Madry): train on examples of this attack with the --train_eps budget")
    g.add_argument("--train_eps", default="visual=0.006,audio=0.006",
                   help="per-modality budget for --adv_train")
    g.add_argument("--train_attack_steps", type=int, default=5)
    g.add_argument("--save_features", action="store_true",
                   help="after training, write clean eval-mode training features for memory banks")

    g = p.add_argument_group("attack evaluation")
    g.add_argument("--attack_type", default="none",
                   help=f"{', '.join(list_attacks())}, all (every registered attack), a comma list, or none")
    g.add_argument("--eps", nargs="+", default=None,
                   help='eps grid, e.g. "visual=0,audio=0" "visual=0,audio=0.012" (default: the paper grid)')
    g.add_argument("--eps_unit", default="input", choices=list(EPS_UNITS),
                   help="input: visual eps in [0,1] pixel units; normalized: ImageNet-normalised units "
                   "(the reference code's convention)")
    g.add_argument("--attack_steps", type=int, default=10, help="paper: 10")
    g.add_argument("--random_start", action="store_true", help="PGD random start (the paper uses none)")
    g.add_argument("--restarts", type=int, default=1)
    g.add_argument("--sweep", action="store_true", help="also evaluate an eps sweep and plot acc vs eps")
    g.add_argument("--sweep_eps", type=float, nargs="+", default=[0.001, 0.002, 0.004, 0.006, 0.008, 0.012],
                   help="eps values of the sweep (paper Fig. 3 uses units of 1e-3)")
    g.add_argument("--save_examples", type=int, default=0, help="write an HTML page with N adversarial examples")
    g.add_argument("--max_eval_batches", type=int, default=0, help="stop evaluation after N batches (0: all)")
    g.add_argument("--reuse_eval", action="store_true",
                   help="if an evaluation with exactly this configuration (checkpoint and lists included) "
                   "already finished in the run folder, print it and exit instead of recomputing it")
    return p


def add_defense_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of the memory-bank defense (main_defense.py)."""
    g = p.add_argument_group("defense (paper: lambda 0.1, m 0.5, at most 1024 atoms)")
    g.add_argument("--base_weights", default="", help="checkpoint of the (MinSim-)trained model to defend")
    g.add_argument("--features", default="", help="features file from --save_features (to build banks)")
    g.add_argument("--bank", default="", help="a folder with saved banks bank_audio.pt / bank_visual.pt")
    g.add_argument("--weights_Da", default="", help="audio bank file (reference flag name)")
    g.add_argument("--weights_Dv", default="", help="visual bank file (reference flag name)")
    g.add_argument("--bank_size", type=int, default=1024, help="atoms per modality (paper: at most 1024)")
    g.add_argument("--bank_select", default="random", choices=BANK_SELECTORS.names())
    g.add_argument("--lam", type=float, default=0.1, help="sparse-coding lambda (paper: 0.1)")
    g.add_argument("--mix", type=float, default=None, help="m in m*D a + (1-m) x (paper: 0.5; KS 0.6)")
    g.add_argument("--alpha_a", type=float, default=None, help="ISTA step for audio (paper, per dataset)")
    g.add_argument("--alpha_v", type=float, default=None, help="ISTA step for visual (paper, per dataset)")
    g.add_argument("--fixed_step", action="store_true",
                   help="use the paper's fixed ISTA steps alpha_a/alpha_v instead of 1/||D||^2")
    g.add_argument("--ista_iters", type=int, default=2000, help="paper: at most 2000")
    g.add_argument("--ista_tol", type=float, default=1e-5,
                   help="certified stop: relative duality gap per sample (the paper stopped on a change of 8e-4)")
    g.add_argument("--defense_grad", default="unrolled", choices=GRAD_MODES.names())
    g.add_argument("--unrolled_iters", type=int, default=100,
                   help="solver iterations recorded under autograd (warm-started from the converged code) "
                   "when gradients are unrolled through the solver")
    g.add_argument("--adaptive", action="store_true",
                   help="also run the adaptive attacks (unrolled, BPDA, PGD with restarts)")
    g.add_argument("--adaptive_eps", nargs="+", default=None,
                   help="eps of the grid to run the adaptive attacks on (default: every nonzero row of --eps)")
    return p


@dataclass(frozen=True)
class RunConfig:
    """Every resolved and checked option of one run; what the pipeline reads (never ``argparse.Namespace``).

    Field names are the flag names. Derived fields: ``attacks`` (registered names of --attack_type),
    ``eps_grid`` (parsed --eps, or the paper grid), ``adaptive_grid`` (parsed --adaptive_eps),
    ``train_budget`` (parsed --train_eps), ``defense`` (True for main_defense.py), ``given`` (the flags
    set on the command line).
    """

    # run
    id: str
    ckpt: str
    mode: str
    seed: int
    device: str
    resume: bool
    weights: str
    disp_iter: int
    eval_epoch: int
    amp: bool
    channels_last: bool
    no_progress: bool
    deterministic: bool
    compile: bool
    # data
    dataset: str
    list_train: str
    list_val: str
    list_test: str
    audio_path: str
    frame_path: str
    categories: Tuple[str, ...]
    cls_num: int
    num_frames: int
    stride_frames: int
    frameRate: int
    audLen: int
    audRate: int
    imgSize: int
    batch_size_per_gpu: int
    eval_batch_size: int
    workers: int
    eval_cache: str
    # model
    arch_sound: str
    arch_frame: str
    arch_classifier: str
    img_pool: str
    pretrained: Optional[str]
    weights_frame: str
    weights_sound: str
    init_from: Tuple[str, ...]
    # optimisation
    lr_frame: float
    lr_sound: float
    lr_classifier: float
    num_epoch: int
    lr_steps: Tuple[int, ...]
    beta1: float
    weight_decay: float
    minsim_weight: float
    adv_train: str
    train_eps: str
    train_attack_steps: int
    save_features: bool
    # attack evaluation
    attack_type: str
    eps: Optional[Tuple[str, ...]]
    eps_unit: str
    attack_steps: int
    random_start: bool
    restarts: int
    sweep: bool
    sweep_eps: Tuple[float, ...]
    save_examples: int
    max_eval_batches: int
    reuse_eval: bool
    # defense (main_defense.py; None / defaults for main_attack.py)
    base_weights: str = ""
    features: str = ""
    bank: str = ""
    weights_Da: str = ""
    weights_Dv: str = ""
    bank_size: int = 1024
    bank_select: str = "random"
    lam: float = 0.1
    mix: Optional[float] = None
    alpha_a: Optional[float] = None
    alpha_v: Optional[float] = None
    fixed_step: bool = False
    ista_iters: int = 2000
    ista_tol: float = 1e-5
    defense_grad: str = "unrolled"
    unrolled_iters: int = 100
    adaptive: bool = False
    adaptive_eps: Optional[Tuple[str, ...]] = None
    # derived
    defense: bool = False
    attacks: Tuple[str, ...] = ()
    eps_grid: Tuple[Dict[str, float], ...] = ()
    adaptive_grid: Tuple[Dict[str, float], ...] = ()
    train_budget: Optional[Dict[str, float]] = None
    given: Tuple[str, ...] = ()

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes`` (the config itself never changes)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> Dict[str, Any]:
        """Plain-JSON view (args.json, checkpoints loaded with weights_only=True)."""
        out = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}

    @property
    def eval_list(self) -> str:
        """The list an evaluation reads: --list_test, else --list_val (the reference's eval scripts pass their
        test list as --list_val)."""
        return self.list_test or self.list_val


DERIVED_FIELDS = ("defense", "attacks", "eps_grid", "adaptive_grid", "train_budget", "given")


def parse_attack_names(text: str) -> Tuple[str, ...]:
    """--attack_type: a registered name, a comma list, ``all`` (every registered attack) or ``none``."""
    valid = list_attacks()
    if text == "none":
        return ()
    names = valid if text == "all" else [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise UsageError("--attack_type", f"unknown attack {', '.join(bad) or repr(text)}; valid: all, none, "
                         f"{', '.join(valid)} or a comma list")
    return tuple(dict.fromkeys(names))


def _parse_grid(flag: str, values: Sequence[str]) -> Tuple[Dict[str, float], ...]:
    grid = []
    for s in values:
        try:
            grid.append(parse_eps(s))
        except ValueError as e:
            raise UsageError(flag, f"{s!r}: {e}") from None
    return tuple(grid)


def _check_numbers(ns: argparse.Namespace) -> None:
    def finite(flag: str, lo: float = 0.0, hi: float = math.inf, lo_open: bool = False) -> None:
        v = getattr(ns, flag)
        if v is None:
            return
        if not math.isfinite(v) or v < lo or (lo_open and v == lo) or v > hi:
            rng = f"{'>' if lo_open else '>='} {lo:g}" + (f" and <= {hi:g}" if hi != math.inf else "")
            raise UsageError(f"--{flag}", f"must be a finite number {rng}, got {v}")

    for flag in ("lr_frame", "lr_sound", "lr_classifier", "weight_decay", "minsim_weight"):
        finite(flag)
    finite("beta1", hi=1.0)
    for flag in ("batch_size_per_gpu", "num_epoch", "num_frames", "stride_frames", "audLen", "imgSize",
                 "frameRate", "audRate", "eval_epoch", "attack_steps", "restarts", "train_attack_steps"):
        if getattr(ns, flag) < 1:
            raise UsageError(f"--{flag}", f"must be >= 1, got {getattr(ns, flag)}")
    for flag in ("workers", "disp_iter", "save_examples", "max_eval_batches", "eval_batch_size"):
        if getattr(ns, flag) < 0:
            raise UsageError(f"--{flag}", f"must be >= 0, got {getattr(ns, flag)}")
    if any(s < 1 for s in ns.lr_steps):
        raise UsageError("--lr_steps", f"epochs must be >= 1, got {' '.join(map(str, ns.lr_steps))}")
    for e in ns.sweep_eps:
        if not math.isfinite(e) or e < 0:
            raise UsageError("--sweep_eps", f"must be finite numbers >= 0, got {e}")
    if hasattr(ns, "lam"):
        finite("lam", lo_open=True)
        finite("ista_tol", lo_open=True)
        finite("mix", hi=1.0)
        finite("alpha_a", lo_open=True)
        finite("alpha_v", lo_open=True)
        for flag in ("bank_size", "ista_iters", "unrolled_iters"):
            if getattr(ns, flag) < 1:
                raise UsageError(f"--{flag}", f"must be >= 1, got {getattr(ns, flag)}")


def _resolve_lists(ns: argparse.Namespace, spec: DatasetSpec) -> None:
    """A list the user did not give is taken from the dataset's own defaults only when no list flag was given
    at all; then every list is the dataset's own (never another dataset's)."""
    if not any(getattr(ns, f) for f in LIST_FLAGS):
        for split, flag in zip(("train", "val", "test"), LIST_FLAGS):
            setattr(ns, flag, str(spec.list_path(split)))


def _check_attack_flags(ns: argparse.Namespace, given: Sequence[str]) -> None:
    attack_given = "attack_type" in given and ns.attack_type != "none"
    stray = [f for f in _ATTACK_ONLY if f in given and hasattr(ns, f) and getattr(ns, f) not in (None, False, 0)]
    if ns.mode == "train":
        if attack_given:
            raise UsageError("--attack_type", "attacks run in --mode eval; training would ignore it")
        if stray:
            raise UsageError(f"--{stray[0]}", "is an attack-evaluation option (--mode eval --attack_type ...); "
                             "training would ignore it")
    elif not attack_given and stray:
        raise UsageError(f"--{stray[0]}", "needs --attack_type (e.g. --attack_type pgd); without it no attack runs")


def resolve_config(ns: argparse.Namespace, given: Sequence[str] = (), defense: bool = False) -> RunConfig:
    """Fill unset values from the dataset spec and check every flag; raises ``UsageError`` naming the flag.

    ``given`` lists the dest names set on the command line (see ``given_flags``). File checks (lists,
    media folders, checkpoints) are pipeline/preflight.py's and run next, still before any work.
    """
    ns = argparse.Namespace(**vars(ns))
    spec = get_spec(ns.dataset)
    for flag, field in _SPEC_DEFAULTS.items():
        if hasattr(ns, flag) and getattr(ns, flag) is None:
            value = getattr(spec, field)
            setattr(ns, flag, list(value) if isinstance(value, tuple) else value)
    if ns.minsim_weight == "spec":
        ns.minsim_weight = spec.minsim_weight
    if ns.categories is None:
        ns.categories = list(spec.categories)
    if not ns.categories:
        raise UsageError("--categories", "is empty")
    if len(set(ns.categories)) != len(ns.categories):
        raise UsageError("--categories", "has duplicate names")
    if ns.cls_num is None:
        ns.cls_num = len(ns.categories)
    elif ns.cls_num != len(ns.categories):
        raise UsageError("--cls_num", f"{ns.cls_num} disagrees with the {len(ns.categories)} categories "
                         f"({', '.join(ns.categories)})")
    _resolve_lists(ns, spec)
    if not ns.audio_path:
        ns.audio_path = str(spec.audio_path())
    if not ns.frame_path:
        ns.frame_path = str(spec.frame_path())
    if not ns.id:
        ns.id = f"{spec.name}-{ns.arch_sound}-{ns.arch_frame}-{ns.arch_classifier}"
    _check_numbers(ns)
    _check_attack_flags(ns, given)
    attacks = parse_attack_names(ns.attack_type) if ns.mode == "eval" else ()
    eps_grid = _parse_grid("--eps", ns.eps) if ns.eps is not None else tuple(dict(e) for e in PAPER_EPS_GRID)
    if ns.save_examples and not any(v > 0 for e in eps_grid for v in e.values()):
        raise UsageError("--save_examples", "needs an attacked row (every --eps is 0)")
    adaptive_grid: Tuple[Dict[str, float], ...] = ()
    if getattr(ns, "adaptive", False):
        if not attacks:
            raise UsageError("--adaptive", "needs --attack_type (the paper's attack is pgd)")
        adaptive_grid = (_parse_grid("--adaptive_eps", ns.adaptive_eps) if ns.adaptive_eps
                         else tuple(e for e in eps_grid if any(v > 0 for v in e.values())))
    train_budget = None
    if ns.adv_train:
        (train_budget,) = _parse_grid("--train_eps", [ns.train_eps])
    if ns.mode == "train" and ns.max_eval_batches:
        raise UsageError("--max_eval_batches", "applies to --mode eval only")
    if not ns.list_train and ns.mode == "train":
        raise UsageError("--list_train", "is required for training when other list flags are given")
    if ns.mode == "train" and not ns.list_val:
        raise UsageError("--list_val", "is required for training (the best checkpoint is chosen on it)")
    if ns.mode == "eval" and not (ns.list_test or ns.list_val):
        raise UsageError("--list_test", "give --list_test (or --list_val, which eval uses when no test list is given)")
    if ns.save_features and ns.mode != "train":
        raise UsageError("--save_features", "is written at the end of training (--mode train)")
    values = dict(vars(ns))
    for k in ("categories", "init_from", "lr_steps", "sweep_eps", "eps", "adaptive_eps"):
        if values.get(k) is not None:
            values[k] = tuple(values[k])
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = set(values) - fields
    if unknown:  # a parser flag without a config field is a programming error, caught by the tests
        raise TypeError(f"flags without a RunConfig field: {sorted(unknown)}")
    return RunConfig(**values, defense=defense, attacks=attacks, eps_grid=eps_grid, adaptive_grid=adaptive_grid,
                     train_budget=train_budget, given=tuple(sorted(given)))


def given_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> Tuple[str, ...]:
    """The dest names of the options that appear in ``argv`` (prefixes resolved as argparse does)."""
    found = []
    for action in parser._actions:  # argparse exposes no public API for this
        for opt in action.option_strings:
            if any(a == opt or a.startswith(opt + "=") for a in argv):
                found.append(action.dest)
                break
    return tuple(sorted(set(found)))


def parse_config(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]], defense: bool = False
                 ) -> RunConfig:
    """Parse ``argv`` with ``parser`` (argparse errors exit 2 as usual) and resolve it."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    ns = parser.parse_args(argv)
    return resolve_config(ns, given_flags(parser, argv), defense=defense)


def eval_identity(cfg: RunConfig) -> Mapping[str, Any]:
    """The configuration that determines an evaluation's numbers (for eval.json and --reuse_eval)."""
    skip = {"id", "ckpt", "device", "no_progress", "disp_iter", "reuse_eval", "given", "resume", *RESULT_NEUTRAL,
            "eval_epoch", "num_epoch", "lr_steps", "lr_frame", "lr_sound", "lr_classifier", "beta1",
            "weight_decay", "save_features", "init_from", "list_train", "features"}
    return {k: v for k, v in cfg.as_dict().items() if k not in skip}
