"""The one declaration of every flag of main_attack.py and main_defense.py: a field of the frozen ``RunConfig``
whose metadata (``flag(...)``) holds the flag's group, help, choices and parsing; the parser is generated from
these fields (``get_args_parser``, ``add_defense_args``). ``pipeline/config.py`` resolves the parsed flags into a
``RunConfig``.

A field's flag is ``--<field name>`` (plus any ``aliases``); its argparse type comes from the annotation (``bool``:
a switch; ``Tuple[X, ...]``: one or more values, a tuple in the config) unless ``parse`` names a converter.
``choices`` and ``help`` may be callables, evaluated when the parser is built (registries filled by then).
A default of ``None`` on a field with ``spec=`` means "the dataset spec's value" (pipeline/config.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from attacks import list_attacks
from attacks.base import EPS_UNITS
from corruptions import list_corruptions
from dataset.batches import default_workers
from dataset.specs import list_datasets
from models import list_audio_nets, list_fusions, list_visual_nets
from models.defense import BANK_SELECTORS, GRAD_MODES
from models.mmcert import CERTIFIERS  # imports models.certify: both certifiers registered
from models.missing import MISSING_CHOICES, MISSING_FILLS
from models.visual_net import IMG_POOLS
from pipeline import reference_cli as ref
from pipeline.objectives import SCHEDULES, TRADES_BETA, adv_train_names
from utils.checkpoint import recorded_plugins
from utils.plugins import load_plugins, split_paths
from utils.rundir import FILES, RunDir

# Families of adaptive attacks of main_defense.py --adaptive (pipeline/adaptive.py), besides the paper's PGD.
ADAPTIVE_ATTACKS = ("fgsm", "pgd", "pgd_restarts", "apgd-ce", "apgd-t", "square")
ADAPTIVE_GRAD_MODES = ("unrolled", "bpda")  # an entry "apgd-t:unrolled" keeps that family's runs in one mode

# Parser groups in --help order: key -> title. DEFENSE_GROUPS are added by add_defense_args (main_defense.py).
GROUPS = {
    "run": "run",
    "data": "data",
    "speed": "speed",
    "model": "model",
    "optim": "optimisation (paper: SGD, momentum 0.9, wd 1e-4)",
    "attack": "attack evaluation",
    "reference": "reference-code options (accepted so its scripts run; see each help)",
    "defense": "defense (paper: lambda 0.1, m 0.5, at most 1024 atoms)",
    "certify": "certification (main_certify.py: randomized smoothing, Cohen et al. ICML 2019; MMCert, Wang et al. "
               "CVPR 2024)",
}
DEFENSE_GROUPS = ("defense",)
CERTIFY_GROUPS = ("certify",)  # added by add_certify_args (main_certify.py)
# What --cert_modalities may name: noise (or sub-sampling) on the audio, on the visual input, or on both at once.
CERT_SETTINGS = ("audio", "visual", "both")


def flag(default: Any = None, group: str = "", *, help: Any = None, choices: Any = None,
         parse: Optional[Callable[[str], Any]] = None, spec: str = "", neutral: bool = False,
         aliases: Sequence[str] = (), factory: Optional[Callable[[], Any]] = None) -> Any:
    """A ``RunConfig`` field that is a flag. ``spec``: the DatasetSpec attribute filling a None default;
    ``neutral``: leaves an evaluation's numbers unchanged (out of the --reuse_eval hash, allowed on --resume);
    ``factory``: a default computed when the parser is built (e.g. from the machine)."""
    if group not in GROUPS:
        raise ValueError(f"unknown flag group {group!r}; groups: {', '.join(GROUPS)}")
    meta = {"group": group, "help": help, "choices": choices, "parse": parse, "spec": spec, "neutral": neutral,
            "aliases": tuple(aliases)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"flag": meta})
    return dataclasses.field(default=default, metadata={"flag": meta})


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
    pre.add_argument("--plugins", nargs="+", default=None)
    for name in ("--mode", "--weights", "--base_weights", "--ckpt", "--id"):
        pre.add_argument(name, default=None)
    pre.add_argument("--resume", action="store_true")
    ns, _ = pre.parse_known_args(list(argv))
    if ns.plugins is not None:
        return load_plugins([p for text in ns.plugins for p in split_paths(text)])
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


@dataclass(frozen=True)
class RunConfig:
    """Every resolved and checked option of one run; what the pipeline reads (never ``argparse.Namespace``).

    Field names are the flag names. Derived fields (no flag): ``attacks`` (registered names of --attack_type),
    ``eps_grid`` (parsed --eps, or the paper grid), ``adaptive_grid`` (parsed --adaptive_eps),
    ``train_budget`` (parsed --train_eps), ``train_noise`` (parsed --noise_train), ``corruption_names`` and
    ``severity_levels`` (parsed --corruptions and --severities), ``defense`` (True for main_defense.py), ``certify``
    (True for main_certify.py), ``given`` (the flags
    set on the command line).
    """

    # run
    id: str = flag("", "run", help="run name; the run folder is <ckpt>/<id>/ (default: derived from dataset and "
                   "architecture)")
    ckpt: str = flag("runs", "run", help="folder holding run folders (never deleted)")
    mode: str = flag("train", "run", choices=["train", "eval"])
    seed: int = flag(0, "run")
    device: str = flag("auto", "run", help="auto (cuda if available), cpu, cuda, cuda:N")
    resume: bool = flag(False, "run", help=f"continue from <run>/{FILES['checkpoint_last']}")
    weights: str = flag("", "run", help=f"checkpoint to evaluate (default: <run>/{FILES['checkpoint_best']})")
    disp_iter: int = flag(20, "run", help="log the training loss every N iterations")
    eval_epoch: int = flag(1, "run", help="evaluate on the val list every N epochs")
    # speed: how a run uses the hardware. neutral=True: the evaluation's numbers are unchanged, so the
    # --reuse_eval hash ignores it and --resume may change it: workers, --eval_batch_size (batch-independent by
    # design, tests/test_scale.py), --eval_cache (bitwise the same crops, tests/test_dataset.py), --deterministic
    # and --compile (the same computation; kernel choice or fusion may move the last bits of a float, never an
    # accuracy in the tests). --amp and --channels_last stay in the hash.
    amp: bool = flag(False, "speed", help="bf16 autocast (GPU only; an error on CPU)")
    channels_last: bool = flag(False, "speed", help="channels_last memory format (GPU only)")
    no_progress: bool = flag(False, "run", help="disable tqdm progress bars")
    deterministic: bool = flag(False, "speed", neutral=True,
                               help="deterministic cuDNN/cuBLAS kernels and torch.use_deterministic_algorithms "
                               "(slower on GPU; without it cudnn.benchmark is on)")
    compile: bool = flag(False, "speed", neutral=True,
                         help="torch.compile the audio and visual nets (training, evaluation and attacks); the "
                         "first batches pay the compilation")
    # data
    dataset: str = flag("synthetic", "data", choices=list_datasets, help="dataset spec")
    list_train: str = flag("", "data", help="index CSV (default: data/<dataset>/train.csv when no list flag is "
                           "given)")
    list_val: str = flag("", "data", help="index CSV (default: data/<dataset>/val.csv when no list flag is given); "
                         "--mode eval evaluates it when --list_test is not given, as the reference does")
    list_test: str = flag("", "data", help="index CSV (default: data/<dataset>/test.csv when no list flag is "
                          "given); without it, training ends without a separate test pass")
    audio_path: str = flag("", "data", help="audio root (default: $DATA_ROOT/data/audio)")
    frame_path: str = flag("", "data", help="frame root (default: $DATA_ROOT/data/frames)")
    categories: Tuple[str, ...] = flag(None, "data", parse=_csv_list,
                                       help="class names, space- or comma-separated (default: the dataset spec's)")
    cls_num: int = flag(None, "data", help="number of classes (checked against categories)")
    num_frames: int = flag(1, "data")
    stride_frames: int = flag(1, "data")
    frameRate: int = flag(None, "data", spec="fps")
    audLen: int = flag(None, "data", spec="audio_len", help="audio samples per clip")
    audRate: int = flag(None, "data", spec="audio_rate")
    imgSize: int = flag(None, "data", spec="img_size")
    batch_size_per_gpu: int = flag(12, "data", help="per process (paper: 12 per GPU)")
    eval_batch_size: int = flag(0, "speed", neutral=True,
                                help="batch of evaluation and attacks per process (0: --batch_size_per_gpu); "
                                "results do not depend on it")
    workers: int = flag(group="speed", factory=default_workers, neutral=True,
                        help="DataLoader worker processes per process (default: the CPU affinity's cores / "
                        "LOCAL_WORLD_SIZE - 2, at most 16; 0 on a 2-core machine, where workers compete with the "
                        "training step: see benchmarks/bench_train.py)")
    eval_cache: str = flag("", "speed", neutral=True,
                           help="folder of decoded uint8 eval crops (memmap files keyed by list hash and sizes), "
                           "built on first use; for test sets read many times (adaptive evaluation)")
    # model
    arch_sound: str = flag("anet", "model", choices=list_audio_nets)
    arch_frame: str = flag("resnet18", "model", choices=list_visual_nets)
    arch_classifier: str = flag("concat", "model", choices=lambda: LiveChoices(list_fusions), help="fusion head")
    # --fusion_args is text on the command line; the config holds it parsed and typed (models.fusion.head_args)
    fusion_args: Dict[str, Any] = flag("", "model", parse=str,
                                       help="the head's own arguments, e.g. 'hidden=256' (checked against its "
                                       "constructor; recorded in the checkpoint, which an evaluation rebuilds the "
                                       "head from)")
    plugins: Tuple[str, ...] = flag((), "model",
                                    help="Python files (space- or comma-separated) imported first: heads or attacks "
                                    "they register become valid names (README, Extending); recorded, and "
                                    "re-imported by an evaluation of the checkpoint")
    img_pool: str = flag("avgpool", "model", choices=lambda: list(IMG_POOLS))
    pretrained: Optional[str] = flag(None, "model", choices=[None, "imagenet"],
                                     help="torchvision ImageNet weights for the visual net (needs network or a "
                                     "torch hub cache)")
    weights_frame: str = flag("", "model", help="local state dict for the visual net")
    weights_sound: str = flag("", "model", help="local state dict for the audio net")
    init_from: Tuple[str, ...] = flag((), "model", help="project checkpoints to initialise the audio/visual nets "
                                      "from (e.g. the unimodal models); every net of this model must be found in "
                                      "exactly one of them")
    # optimisation
    lr_frame: float = flag(1e-4, "optim", help="paper: 1e-4 for the visual net")
    lr_sound: float = flag(1e-3, "optim", help="paper: 1e-3 for the audio net")
    lr_classifier: float = flag(1e-3, "optim", help="paper: 1e-3 for the head")
    num_epoch: int = flag(None, "optim", spec="num_epoch")
    lr_steps: Tuple[int, ...] = flag(None, "optim", parse=ref.int_list, spec="lr_steps",
                                     help="epochs where lr is x0.1")
    beta1: float = flag(0.9, "optim", help="SGD momentum (paper: 0.9)")
    weight_decay: float = flag(1e-4, "optim", help="paper: 1e-4")
    minsim_weight: float = flag(0.0, "optim", parse=_minsim_weight,
                                help="weight w of mean cos(f_audio, f_visual) added to the loss (MinSim; paper "
                                "w=1.0, KS 0.8); 'spec' takes the dataset spec's paper value")
    adv_train: str = flag("", "optim", choices=lambda: LiveChoices(adv_train_names, ""),
                          help="adversarial training with the --train_eps budget: trades (CE + beta KL, Zhang et "
                          "al. 2019; --trades_beta), fast (FGSM from a random start, step 1.25 eps; Wong et al. "
                          "2020), or a registered attack (Madry: train on that attack's examples, e.g. pgd)")
    train_eps: str = flag("visual=0.006,audio=0.006", "optim", help="per-modality budget for --adv_train")
    train_attack_steps: int = flag(5, "optim", help="steps of the training adversary (pgd, mim, trades)")
    trades_beta: float = flag(TRADES_BETA, "optim", help="TRADES beta = 1/lambda, weight of the KL term of "
                              "--adv_train trades (the authors' CIFAR-10 setting: 6.0)")
    adv_train_modality: str = flag("both", "optim", choices=list(SCHEDULES),
                                   help="which modalities the training adversary attacks per batch: both, random "
                                   "(one at random, seeded), alternate (audio, visual, audio, ...); needs a model "
                                   "reading both and a budget on both")
    noise_train: str = flag("", "optim", help="Gaussian noise augmentation (randomized smoothing's training, Cohen "
                            "et al. 2019): per-modality sigma in input units, e.g. 'audio=0.05,visual=0.25' (a "
                            "modality left out stays clean); noise is not clipped to the valid range")
    save_features: bool = flag(False, "optim", help="after training, write clean eval-mode training features "
                               "for memory banks")
    # the training procedures a head declares (pipeline/procedures.py); refused with a head that declares none
    crmt_rho: float = flag(2.0, "optim", help="CRMT step one: weight rho of the unimodal margin regulariser "
                           "(--arch_classifier crmt; the CRMT code's 2.0, Yang et al. ICLR 2024 Sec. 4)")
    crmt_step2_epochs: int = flag(0, "optim", help="CRMT step two: epochs after --num_epoch that train only the "
                                  "integration weights to raise the certified bound (the code runs num_epoch // 3 "
                                  "- 1; 0: no step two)")
    crmt_step2_lr: float = flag(3e-5, "optim", help="CRMT step two's SGD learning rate (the code: 0.03 x 1e-3; "
                                "momentum 0.9, weight decay 1e-2)")
    robust_attack: str = flag("pgd", "optim", choices=lambda: LiveChoices(list_attacks),
                              help="robust_fusion head: the single-source adversary of its training (one modality "
                              "per example, --train_eps budget, --train_attack_steps steps; Yang et al. CVPR 2021)")
    robust_odd_weight: float = flag(1.0, "optim", help="robust_fusion head: weight of the odd-one-out "
                                    "cross-entropy added to the loss (our choice 1.0)")
    modality_dropout: float = flag(0.0, "optim", help="modality dropout: with this probability per training sample "
                                   "one of the two inputs (chosen at random) is absent, its feature filled as "
                                   "--missing_fill says (models/missing.py); audio-visual heads only")
    # attack evaluation
    attack_type: str = flag("none", "attack", help=lambda: f"{', '.join(list_attacks())}, all (every registered "
                            "attack but autoattack, an ensemble of the others), a comma list, or none")
    norm: str = flag("Linf", "attack", help="threat model: Linf, L2, or per modality like --eps, e.g. "
                     "'visual=L2,audio=snr' (snr: the audio eps is a signal-to-noise ratio in dB)")
    apgd_steps: int = flag(100, "attack", help="APGD iterations of apgd-* and autoattack (paper: 100)")
    apgd_targets: int = flag(9, "attack", help="target classes of apgd-t and autoattack's apgd-t stage, the top "
                             "ones of the clean logits (AutoAttack standard: 9, i.e. every other class on 10 or "
                             "fewer)")
    square_queries: int = flag(5000, "attack", help="query budget of square and autoattack's square stage "
                               "(paper: 5000)")
    eot: int = flag(1, "attack", help="expectation over transformation (Athalye et al., ICML 2018): every gradient "
                    "of the gradient attacks averaged over N forward/backward passes, for a randomised model "
                    "(AutoAttack's rand version: 20); refused (exit 2) on a deterministic model, and a stochastic "
                    "one is refused without it")
    missing_modality: Tuple[str, ...] = flag((), "attack", choices=MISSING_CHOICES,
                                             help="evaluate with this input absent (one row each; 'none' = both "
                                             "inputs, for reference), written to missing_results.{json,csv,md}")
    missing_fill: str = flag("zeros", "attack", choices=lambda: MISSING_FILLS.names(),
                             help="what replaces an absent input's feature: zeros, or mean (the training set's "
                             "mean feature, from the run's --save_features file); the head must support it")
    attack_args: str = flag("", "attack", help="an attack's own constructor arguments, e.g. "
                            "'pgd:steps=20;square:p_init=0.3,n_queries=100' (over the flags above)")
    eps: Optional[Tuple[str, ...]] = flag(None, "attack", help='eps grid, e.g. "visual=0,audio=0" '
                                          '"visual=0,audio=0.012" (default: the paper grid); modality=none (or '
                                          "leaving it out) leaves it untouched; with --norm audio=snr the audio "
                                          "eps is in dB, audio=0 is refused (0 dB is not 'untouched') and --eps "
                                          "is required")
    eps_unit: str = flag("input", "attack", choices=lambda: list(EPS_UNITS),
                         help="input: visual eps in [0,1] pixel units; normalized: ImageNet-normalised units "
                         "(the reference code's convention)")
    attack_steps: int = flag(10, "attack", help="paper: 10")
    random_start: bool = flag(False, "attack", help="PGD random start (the paper uses none)")
    restarts: int = flag(1, "attack")
    max_shift_s: float = flag(0.0, "attack", help="desync attack: largest shift of the audio against the frames, "
                              "seconds, both directions (the loader reads that much audio context each side of the "
                              "window; a clip without it is refused before any work)")
    shift_step_s: float = flag(0.05, "attack", help="desync attack: spacing of the shift grid, seconds (the ends "
                               "+-max_shift_s are always searched)")
    sweep: bool = flag(False, "attack", help="also evaluate an eps sweep and plot acc vs eps")
    sweep_eps: Tuple[float, ...] = flag((0.001, 0.002, 0.004, 0.006, 0.008, 0.012), "attack",
                                        help="eps values of the sweep (paper Fig. 3 uses units of 1e-3)")
    save_examples: int = flag(0, "attack", help="write an HTML page with N adversarial examples")
    max_eval_batches: int = flag(0, "attack", help="stop evaluation after N batches (0: all)")
    transfer_from: str = flag("", "attack", help="a transfer attack: craft every attack on the model of this run "
                              "folder (its " f"{FILES['checkpoint_best']}; a path, or a run id under --ckpt) and evaluate this "
                              "run's model on those inputs; the source must have the same classes (and order) and "
                              "input sizes (--audLen, --audRate, --imgSize, --num_frames)")
    corruptions: str = flag("", "attack", help=lambda: "test-time corruptions to evaluate clean accuracy under "
                            "(--mode eval): a comma list of " + ", ".join(list_corruptions()) + ", or all (every "
                            "one this model's inputs and --num_frames allow)")
    severities: str = flag("1-5", "attack", help="corruption severities: a range like 1-5, a comma list like "
                           "1,3,5, or one value, each in 1..5 (ImageNet-C's five)")
    reuse_eval: bool = flag(False, "attack", help="if an evaluation with exactly this configuration (checkpoint "
                            "and lists included) already finished in the run folder, print it and exit instead "
                            "of recomputing it")
    # the reference code's options (pipeline/reference_cli.py: honoured or accepted with one warning line)
    dic: Optional[str] = flag(None, "reference", help="reference: learn (train) / fix (defense); here the "
                              "defense's dictionaries are memory banks of training features (main_defense.py): "
                              "ignored with a warning")
    loss: str = flag("ce", "reference", help="ce only (cross-entropy, the paper's loss)")
    num_mix: int = flag(1, "reference", help="1 only (one clip per sample, as the paper)")
    log_freq: Optional[int] = flag(None, "reference", help="reference: log-frequency spectrogram of its separation "
                                   "code; the audio nets here read waveforms: ignored with a warning")
    num_gpus: Optional[int] = flag(None, "reference", help="reference: GPUs of one process; here one process per "
                                   "GPU: launch with NPROC=N ./scripts/... or torchrun --nproc_per_node N (warns "
                                   "when it differs from the processes launched)")
    weights_classifier: str = flag("", "reference", help="local state dict for the fusion head")
    # defense (main_defense.py; these defaults for main_attack.py)
    base_weights: str = flag("", "defense", help="checkpoint of the (MinSim-)trained model to defend")
    features: str = flag("", "defense", help="features file from --save_features (to build banks)")
    bank: str = flag("", "defense", help="a folder with saved banks bank_audio.pt / bank_visual.pt")
    weights_Da: str = flag("", "defense", help="audio bank file (or, as the reference, a run folder with it)")
    weights_Dv: str = flag("", "defense", help="visual bank file (or, as the reference, a run folder with it)")
    bank_size: int = flag(1024, "defense", help="atoms per modality (paper: at most 1024)")
    bank_select: str = flag("random", "defense", choices=BANK_SELECTORS.names)
    lam: float = flag(0.1, "defense", help="sparse-coding lambda (paper: 0.1)")
    mix: Optional[float] = flag(None, "defense", spec="mix", help="m in m*D a + (1-m) x (paper: 0.5; KS 0.6)")
    alpha_a: Optional[float] = flag(None, "defense", spec="alpha_audio",
                                    help="ISTA step for audio (paper, per dataset)")
    alpha_v: Optional[float] = flag(None, "defense", spec="alpha_visual",
                                    help="ISTA step for visual (paper, per dataset)")
    fixed_step: bool = flag(False, "defense", help="use the paper's fixed ISTA steps alpha_a/alpha_v instead of "
                            "1/||D||^2")
    ista_iters: int = flag(2000, "defense", help="paper: at most 2000")
    ista_tol: float = flag(1e-5, "defense", help="certified stop: relative duality gap per sample (the paper "
                           "stopped on a change of 8e-4)")
    defense_grad: str = flag("unrolled", "defense", choices=GRAD_MODES.names)
    unrolled_iters: int = flag(100, "defense", help="solver iterations recorded under autograd (warm-started from "
                               "the converged code) when gradients are unrolled through the solver")
    adaptive: bool = flag(False, "defense", help="also run the adaptive attacks (unrolled, BPDA, PGD with "
                          "restarts)")
    adaptive_eps: Optional[Tuple[str, ...]] = flag(None, "defense", help="eps of the grid to run the adaptive "
                                                   "attacks on (default: every nonzero row of --eps)")
    adaptive_attacks: str = flag("all", "defense", help="which adaptive attacks to run besides the paper's PGD: "
                                 f"'all' or a comma list of {', '.join(ADAPTIVE_ATTACKS)} (fgsm/pgd: through the "
                                 "other gradient mode; pgd_restarts: PGD with random starts in both modes; apgd-*: "
                                 "in both modes; square: black box); NAME:unrolled or NAME:bpda keeps only that "
                                 "gradient mode's runs of NAME")
    # certification (main_certify.py; these defaults for the other mains)
    cert_method: str = flag("smoothing", "certify", choices=lambda: CERTIFIERS.names(),
                            help="smoothing: Gaussian noise per modality, certified L2 radii (Cohen et al.); mmcert: "
                            "random sub-sampling of frames and audio segments, certified numbers of modified ones")
    cert_modalities: Tuple[str, ...] = flag(CERT_SETTINGS, "certify", choices=CERT_SETTINGS,
                                            help="randomise the audio, the visual input, or both (each a "
                                            "certification of its own, with its own radii)")
    sigma_audio: float = flag(0.25, "certify", help="noise std on the waveform in [-1, 1] (Cohen et al. Sec. 4 use "
                              "0.12-1.0 on [0, 1] images)")
    sigma_visual: float = flag(0.25, "certify", help="noise std on the frames in [0, 1] pixel units (Cohen et al. "
                               "Sec. 4, ImageNet: 0.25, 0.5, 1.0)")
    cert_n0: int = flag(100, "certify", help="draws that pick the class (Cohen et al. Sec. 4: n0 = 100)")
    cert_n: int = flag(100000, "certify", help="draws that bound its probability (Cohen et al. Sec. 4: n = 100,000)")
    cert_alpha: float = flag(0.001, "certify", help="failure probability of each certificate (Cohen et al. Sec. 4: "
                             "alpha = 0.001)")
    cert_batch: int = flag(1000, "certify", help="draws per forward pass")
    cert_radii: Tuple[float, ...] = flag((0.0, 0.25, 0.5, 1.0), "certify",
                                         help="smoothing: the L2 radii (input units, per modality) of the report's "
                                         "certified-accuracy table; mmcert reports every count")
    keep_frames: int = flag(1, "certify", help="mmcert: frames kept per draw (of --num_frames)")
    audio_segments: int = flag(16, "certify", help="mmcert: equal segments the waveform is cut into")
    keep_segments: int = flag(4, "certify", help="mmcert: audio segments kept per draw (of --audio_segments)")
    # derived
    defense: bool = False
    certify: bool = False
    attacks: Tuple[str, ...] = ()
    eps_grid: Tuple[Dict[str, float], ...] = ()
    adaptive_grid: Tuple[Dict[str, float], ...] = ()
    train_budget: Optional[Dict[str, float]] = None
    train_noise: Optional[Dict[str, float]] = None
    corruption_names: Tuple[str, ...] = ()
    severity_levels: Tuple[int, ...] = ()
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


DERIVED_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig) if "flag" not in f.metadata)


def flag_fields(cls: type = RunConfig) -> Iterator[dataclasses.Field]:
    """The fields of ``cls`` that are flags, in declaration order."""
    return (f for f in dataclasses.fields(cls) if "flag" in f.metadata)


def _value_type(hint: Any) -> Tuple[Any, bool]:
    """(the type of one value, whether the flag takes one or more) of an annotation: ``Optional[X]`` is X,
    ``Tuple[X, ...]`` is one or more X."""
    if typing.get_origin(hint) is typing.Union:
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    return hint, False


def _arg_spec(f: dataclasses.Field, hint: Any) -> Dict[str, Any]:
    """argparse keyword arguments of field ``f`` (annotation ``hint``)."""
    meta = f.metadata["flag"]
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if isinstance(default, tuple):
        default = list(default)  # argparse's own form of an nargs default (and its --help text)
    help_text = meta["help"]() if callable(meta["help"]) else meta["help"]
    if hint is bool:
        return {"action": "store_true", "help": help_text}
    kw: Dict[str, Any] = {"default": default, "help": help_text}
    value_type, many = _value_type(hint)
    if many:
        kw["nargs"] = "+"
    if meta["parse"] is not None:
        kw["type"] = meta["parse"]
    elif value_type is not str:
        kw["type"] = value_type
    if meta["choices"] is not None:
        kw["choices"] = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
    return kw


def add_flags(p: argparse.ArgumentParser, groups: Sequence[str], cls: type = RunConfig) -> argparse.ArgumentParser:
    """Add to ``p`` the flags of ``cls`` in ``groups`` (one argument group each, in ``GROUPS`` order)."""
    hints = typing.get_type_hints(cls)
    for key in (g for g in GROUPS if g in groups):
        fields = [f for f in flag_fields(cls) if f.metadata["flag"]["group"] == key]
        g = p.add_argument_group(GROUPS[key])
        for f in fields:
            # dest: argparse derives it from --<name> (the field name), as it did for the hand-written parser
            g.add_argument(f"--{f.name}", *f.metadata["flag"]["aliases"], **_arg_spec(f, hints[f.name]))
    return p


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Parser with every flag common to training, evaluation and attack runs (choices from the registries)."""
    # allow_abbrev=False: a prefix such as --eps for --eps_unit must never be taken silently
    p = argparse.ArgumentParser("Audio-visual robustness", add_help=add_help, allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    return add_flags(p, [g for g in GROUPS if g not in DEFENSE_GROUPS + CERTIFY_GROUPS])


def add_defense_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of the memory-bank defense (main_defense.py)."""
    return add_flags(p, DEFENSE_GROUPS)


def add_certify_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of certification (main_certify.py), whose mode is eval."""
    p.set_defaults(mode="eval")
    return add_flags(p, CERTIFY_GROUPS)


# Flags that leave an evaluation's numbers unchanged (neutral=True): out of the --reuse_eval hash, allowed on --resume.
RESULT_NEUTRAL = tuple(f.name for f in flag_fields() if f.metadata["flag"]["neutral"])
# Flags whose default comes from the dataset spec when left unset (None): flag -> DatasetSpec attribute.
SPEC_DEFAULTS = {f.name: f.metadata["flag"]["spec"] for f in flag_fields() if f.metadata["flag"]["spec"]}
# Flags taking one or more values (a tuple in the config).
_HINTS = typing.get_type_hints(RunConfig)
LIST_VALUED = tuple(f.name for f in flag_fields() if _value_type(_HINTS[f.name])[1])
