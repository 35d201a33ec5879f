"""The command line shared by main_attack.py and main_defense.py: every flag, with argparse ``choices`` taken
from the registries. ``pipeline/config.py`` resolves the parsed flags into the frozen ``RunConfig``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

from attacks import list_attacks
from attacks.base import EPS_UNITS
from dataset.specs import list_datasets
from models import list_audio_nets, list_fusions, list_visual_nets
from models.defense import BANK_SELECTORS, GRAD_MODES
from models.visual_net import IMG_POOLS
from pipeline import reference_cli as ref
from pipeline.speed_flags import add_speed_args
from utils.checkpoint import recorded_plugins
from utils.plugins import load_plugins, split_paths
from utils.rundir import FILES, RunDir

# Families of adaptive attacks of main_defense.py --adaptive (pipeline/adaptive.py), besides the paper's PGD.
ADAPTIVE_ATTACKS = ("fgsm", "pgd", "pgd_restarts", "apgd-ce", "apgd-t", "square")
ADAPTIVE_GRAD_MODES = ("unrolled", "bpda")  # an entry "apgd-t:unrolled" keeps that family's runs in one mode


def _csv_list(text: str) -> List[str]:
    return [t for t in (s.strip() for s in text.split(",")) if t]


def _minsim_weight(text: str):
    if text == "spec":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'spec', got {text!r}") from None


class LiveChoices:
    """argparse ``choices`` read from a registry when the command line is parsed, so that the names a
    ``--plugins`` file registers (imported first, by ``preload_plugins``) are valid."""

    def __init__(self, names: Callable[[], List[str]], *extra: str) -> None:
        self.names, self.extra = names, extra

    def __contains__(self, name: object) -> bool:
        return name in self.extra or name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter([*self.extra, *self.names()])


def preload_plugins(argv: Sequence[str]) -> List[str]:
    """Import the ``--plugins`` files of ``argv`` before it is parsed; without the flag, an evaluation (or a
    resume) re-imports the plugin files recorded in the checkpoint it reads (--weights, --base_weights, or
    the run folder of --ckpt/--id). Returns the resolved paths imported."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in ("--plugins", "--mode", "--weights", "--base_weights", "--ckpt", "--id"):
        pre.add_argument(flag, default=None)
    pre.add_argument("--resume", action="store_true")
    ns, _ = pre.parse_known_args(list(argv))
    if ns.plugins is not None:
        return load_plugins(split_paths(ns.plugins))
    ckpt: Optional[Path] = None
    if ns.base_weights:
        ckpt = Path(ns.base_weights)
    elif ns.mode == "eval" and ns.weights:
        ckpt = Path(ns.weights)
    elif ns.id:
        rd = RunDir(Path(ns.ckpt or "runs") / ns.id)
        ckpt = rd.checkpoint_best if ns.mode == "eval" else rd.checkpoint_last if ns.resume else None
    if ckpt is None or not ckpt.is_file():
        return []
    return load_plugins(recorded_plugins(ckpt), flag=f"--plugins (recorded in {ckpt})")


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
    g.add_argument("--categories", type=_csv_list, nargs="+", default=None,
                   help="class names, space- or comma-separated (default: the dataset spec's)")
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
    g.add_argument("--arch_classifier", default="concat", choices=LiveChoices(list_fusions), help="fusion head")
    g.add_argument("--fusion_args", default="",
                   help="the head's own arguments, e.g. 'hidden=256' (checked against its constructor; recorded in "
                   "the checkpoint, which an evaluation rebuilds the head from)")
    g.add_argument("--plugins", type=split_paths, default=[],
                   help="Python files, comma-separated, imported first: heads or attacks they register become valid "
                   "names (README, Extending); recorded, and re-imported by an evaluation of the checkpoint")
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
    g.add_argument("--lr_steps", type=ref.int_list, nargs="+", default=None, help="epochs where lr is x0.1")
    g.add_argument("--beta1", type=float, default=0.9, help="SGD momentum (paper: 0.9)")
    g.add_argument("--weight_decay", type=float, default=1e-4, help="paper: 1e-4")
    g.add_argument("--minsim_weight", type=_minsim_weight, default=0.0,
                   help="weight w of mean cos(f_audio, f_visual) added to the loss (MinSim; paper w=1.0, KS 0.8); "
                   "'spec' takes the dataset spec's paper value")
    g.add_argument("--adv_train", default="", choices=LiveChoices(list_attacks, ""),
                   help="adversarial training (Madry): train on examples of this attack with the --train_eps budget")
    g.add_argument("--train_eps", default="visual=0.006,audio=0.006",
                   help="per-modality budget for --adv_train")
    g.add_argument("--train_attack_steps", type=int, default=5)
    g.add_argument("--save_features", action="store_true",
                   help="after training, write clean eval-mode training features for memory banks")

    g = p.add_argument_group("attack evaluation")
    g.add_argument("--attack_type", default="none",
                   help=f"{', '.join(list_attacks())}, all (every registered attack but autoattack, an ensemble of "
                   "the others), a comma list, or none")
    g.add_argument("--norm", default="Linf", help="threat model: Linf, L2, or per modality like --eps, e.g. "
                   "'visual=L2,audio=snr' (snr: the audio eps is a signal-to-noise ratio in dB)")
    g.add_argument("--apgd_steps", type=int, default=100, help="APGD iterations of apgd-* and autoattack (paper: 100)")
    g.add_argument("--apgd_targets", type=int, default=9,
                   help="target classes of apgd-t and autoattack's apgd-t stage, the top ones of the clean logits "
                   "(AutoAttack standard: 9, i.e. every other class on 10 or fewer)")
    g.add_argument("--square_queries", type=int, default=5000,
                   help="query budget of square and autoattack's square stage (paper: 5000)")
    g.add_argument("--eps", nargs="+", default=None,
                   help='eps grid, e.g. "visual=0,audio=0" "visual=0,audio=0.012" (default: the paper grid); '
                   "modality=none (or leaving it out) leaves it untouched; with --norm audio=snr the audio eps is "
                   "in dB, audio=0 is refused (0 dB is not 'untouched') and --eps is required")
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
    ref.add_reference_args(p)
    return p


def add_defense_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of the memory-bank defense (main_defense.py)."""
    g = p.add_argument_group("defense (paper: lambda 0.1, m 0.5, at most 1024 atoms)")
    g.add_argument("--base_weights", default="", help="checkpoint of the (MinSim-)trained model to defend")
    g.add_argument("--features", default="", help="features file from --save_features (to build banks)")
    g.add_argument("--bank", default="", help="a folder with saved banks bank_audio.pt / bank_visual.pt")
    g.add_argument("--weights_Da", default="", help="audio bank file (or, as the reference, a run folder with it)")
    g.add_argument("--weights_Dv", default="", help="visual bank file (or, as the reference, a run folder with it)")
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
    g.add_argument("--adaptive_attacks", default="all",
                   help="which adaptive attacks to run besides the paper's PGD: 'all' or a comma list of "
                   f"{', '.join(ADAPTIVE_ATTACKS)} (fgsm/pgd: through the other gradient mode; pgd_restarts: PGD "
                   "with random starts in both modes; apgd-*: in both modes; square: black box); NAME:unrolled or "
                   "NAME:bpda keeps only that gradient mode's runs of NAME")
    g.add_argument("--adaptive_eps", nargs="+", default=None,
                   help="eps of the grid to run the adaptive attacks on (default: every nonzero row of --eps)")
    return p
