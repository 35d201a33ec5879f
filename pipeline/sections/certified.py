"""Study section ``certified``: certified robustness per modality (issue 20, item 2): randomized smoothing (Cohen,
Rosenfeld & Kolter, ICML 2019) and MMCert sub-sampling (Wang et al., CVPR 2024) of concat, with and without noise
training.

Per seed where the preset trains concat:

- ``concat-noise``: concat trained with exactly the preset's concat command (same start --init_from, epochs,
  learning rates and batch; --save_features dropped, nothing reads it) plus ``--noise_train audio=S,visual=S``
  (SIGMA): the smoothed classifier is only as accurate as its base classifier is under the noise (Cohen et al.
  Sec. 3.3, "Training the base classifier": train with Gaussian data augmentation at the sigma used to certify).
- ``main_certify.py --cert_method smoothing`` on concat-noise and on the plain concat (no noise training, for
  comparison), noise on the audio, on the visual input and on both (--cert_modalities audio visual both), each with
  the sigma it was trained with.
- ``main_certify.py --cert_method mmcert`` on both models: MMCERT_FRAMES frames per clip at evaluation (the preset
  trains on one frame; the visual trunk averages its frames, as the ``time`` section evaluates), KEEP_FRAMES kept
  per draw, the waveform cut into AUDIO_SEGMENTS segments of which KEEP_SEGMENTS are kept. Neither model was trained
  on sub-sampled inputs (MMCert trains its base classifier on them; we did not add that training), so MMCert's
  counts here are those of models not tuned to it.

Sigma (our choice, documented): 0.12 x each input's range, i.e. 0.24 on the waveform in [-1, 1] and 0.12 on the
frames in [0, 1]; 0.12 is the smallest sigma Cohen et al. use on CIFAR-10 (Sec. 4: sigma in {0.12, 0.25, 0.50,
1.00} on pixels in [0, 1]): the least noise, the least loss of clean accuracy for the small nets of the demo.

Draws (BUDGETS): the paper's n0 = 100, n = 100,000, alpha = 0.001 (Cohen et al. Sec. 4) cost n0 + n forward passes
per clip and setting; the demo uses n0 16, n 128. With n draws the largest lower bound on p_A that CERTIFY can give is
alpha^(1/n) (all n draws on one class, one-sided Clopper-Pearson), so the largest certifiable radius is
sigma * Phi^-1(alpha^(1/n)): at n = 128, alpha = 0.001 that is Phi^-1(0.9475) = 1.62 sigma (0.39 on the audio,
0.19 on the frames, 1.62 jointly in sigma units) where n = 100,000 reaches Phi^-1(0.99993) = 3.8 sigma. The report
radii (RADII) are chosen inside the demo's reach. The paper preset uses n = 10,000 (3.2 sigma), our choice for cost.

The report: per method, the certified-accuracy table at the report's radii (per model, seed, randomised input and
whose radius) under a caption with the draws, the confidence level and the clips, and the curves of each model and
seed (reporting/certify.py; drawn into the study folder).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from pipeline.sections.training_defences import _job, _own_flags
from pipeline.study_sections import Section, SeedPlan, register
from reporting.certify import caption, certified_table, plot_certified_accuracy, read_certify
from reporting.study_report import Block, rel
from reporting.tables import Column, Table, fmt_int, fmt_percent
from utils.errors import MalformedFileError

log = logging.getLogger(__name__)

BASE = "concat"  # the preset's plain concat, whose training command the noise-trained model copies
NOISY = "concat-noise"
# 0.12 x the input range (waveform [-1, 1], frames [0, 1]); 0.12: Cohen et al. 2019 Sec. 4, smallest CIFAR-10 sigma
SIGMA = {"audio": 0.24, "visual": 0.12}
# (n0, n, alpha) per scale; paper: Cohen et al. Sec. 4's n0 and alpha, n = 10,000 for cost (module docstring)
BUDGETS: Dict[str, Tuple[int, int, float]] = {"demo": (16, 128, 0.001), "quick": (8, 32, 0.01),
                                              "paper": (100, 10000, 0.001)}
RADII = ("0", "0.05", "0.1", "0.2", "0.3")  # L2 radii of the table: inside the demo's reach (module docstring)
SETTINGS = ("audio", "visual", "both")
MMCERT_FRAMES, KEEP_FRAMES = 4, 1  # frames per clip at evaluation, kept per draw (as the "time" section's T = 4)
AUDIO_SEGMENTS, KEEP_SEGMENTS = 16, 4  # main_certify.py's defaults (pipeline/flags.py)
METHODS = ("smoothing", "mmcert")
WORDS = {BASE: "concat (plain)", NOISY: "concat + noise training"}


def kind_of(method: str) -> str:
    """The study.json kind of a method's evaluations (one evaluation per model, kind and seed)."""
    return "certified" if method == "smoothing" else "certified-mmcert"


def noise_flag() -> str:
    return ",".join(f"{m}={s:g}" for m, s in SIGMA.items())


def certify_flags(method: str, scale: str) -> List[str]:
    """main_certify.py's own flags for ``method`` at ``scale`` (the evaluation flags come from the plan)."""
    n0, n, alpha = BUDGETS[scale]
    draws = ["--cert_n0", str(n0), "--cert_n", str(n), "--cert_alpha", f"{alpha:g}", "--cert_batch", str(n0 + n)]
    if method == "smoothing":
        return ["--cert_method", "smoothing", "--cert_modalities", *SETTINGS, "--sigma_audio", f"{SIGMA['audio']:g}",
                "--sigma_visual", f"{SIGMA['visual']:g}", "--cert_radii", *RADII, *draws]
    return ["--cert_method", "mmcert", "--cert_modalities", *SETTINGS, "--num_frames", str(MMCERT_FRAMES),
            "--keep_frames", str(KEEP_FRAMES), "--audio_segments", str(AUDIO_SEGMENTS), "--keep_segments",
            str(KEEP_SEGMENTS), *draws]


def noise_training_flags(sp: SeedPlan) -> Tuple[List[str], List[str]]:
    """The preset's concat training flags (without the common ones and --save_features) plus --noise_train, and
    the jobs it waits for (the unimodal nets it starts from)."""
    train = _job(sp, sp.trained[BASE])
    flags = [a for a in _own_flags(sp, train.argv, BASE) if a != "--save_features"]
    if "--adv_train" in flags or "--noise_train" in flags:
        raise ValueError(f"certified: the preset's {BASE} already trains with an objective ({' '.join(flags)})")
    deps = [d for d in train.deps if d not in sp.builder.data_deps]
    return [*flags, "--noise_train", noise_flag()], deps


@register("certified")
class Certified(Section):
    title = "Certified robustness per modality: randomized smoothing and MMCert"
    summary = ("concat trained with Gaussian noise, certified by smoothing (audio, visual, both) and MMCert "
               "sub-sampling, next to the plain concat")

    def plan(self, sp: SeedPlan) -> None:
        if BASE not in sp.trained:
            return
        flags, deps = noise_training_flags(sp)
        sp.arch_of[NOISY] = "concat"
        sp.train(NOISY, flags, deps)
        for model in (BASE, NOISY):
            for method in METHODS:
                sp.evaluate(f"certify {method}", model, certify_flags(method, sp.scale), kind_of(method),
                            main="main_certify.py")

    def report(self, s: Any) -> List[Block]:
        blocks = [Block("p", f"Concat trained as the preset's concat plus Gaussian noise (--noise_train {noise_flag()}: "
                             "0.12 of each input's range, Cohen et al. 2019's smallest CIFAR-10 sigma), and the plain "
                             "concat for comparison. Certified accuracy at radius r: the share of clips whose smoothed "
                             "(or sub-sampled) prediction is certified, correct, and holds within r (smoothing: L2 "
                             "radius in input units, one input randomised and perturbed while the other is fixed; "
                             "'joint': both at once, in sigma-normalised units; MMCert: modified frames / audio "
                             "segments). A certificate fails with probability at most alpha; with n draws no radius "
                             "above sigma Phi^-1(alpha^(1/n)) can be certified, so small n caps the curves.")]
        for method in METHODS:
            found = _records(s, kind_of(method))
            if not found:
                continue
            blocks.append(Block("p", f"{'Randomized smoothing' if method == 'smoothing' else 'MMCert sub-sampling'}: "
                                     + " ".join(dict.fromkeys(caption(r) for r in found.values()))))
            blocks.append(Block("table", table=certified_table_by_seed(found)))
            for (model, seed), record in found.items():
                png = s.out / f"certified_{method}_{model}{_seed_tag(s, model, seed)}.png"
                try:
                    plot_certified_accuracy(record, png, f"{WORDS.get(model, model)}, seed {seed}: {method}")
                except (OSError, RuntimeError, ValueError) as e:  # a figure that fails leaves the table standing
                    log.warning("certified: no plot for %s seed %d (%s): %s", model, seed, method, e)
                    continue
                blocks.append(Block("img", f"{WORDS.get(model, model)}, seed {seed}: certified accuracy vs radius "
                                           f"({method})", path=rel(png, s.out)))
        if len(blocks) == 1:
            blocks.append(Block("p", "No certification of this section was recorded."))
        return blocks


def _seed_tag(s: Any, model: str, seed: int) -> str:
    return f"_seed{seed}" if len(getattr(s, "seeds", [seed])) > 1 else ""


def _records(s: Any, kind: str) -> Dict[Tuple[str, int], Dict[str, Any]]:
    """(model, seed) -> its certify record, for the section's models and every seed that has one."""
    out: Dict[Tuple[str, int], Dict[str, Any]] = {}
    for model in (BASE, NOISY):
        for seed in s.model_seeds(model):
            folder: Optional[Path] = s.kind_dir(model, kind, seed=seed)
            if folder is None:
                continue
            try:
                out[(model, seed)] = read_certify(folder)
            except MalformedFileError as e:
                log.warning("certified: %s", e)
    return out


def certified_table_by_seed(found: Dict[Tuple[str, int], Dict[str, Any]]) -> Table:
    """One table of certified accuracy at the records' radii: a row per model, seed, randomised input and whose
    radius (reporting/certify.certified_table's rows with the model and the seed)."""
    rows: List[Dict[str, Any]] = []
    radii: List[str] = []
    for (model, seed), record in found.items():
        _, part = certified_table(record)
        for r in part:
            radii += [k for k in r if k.startswith("r=") and k not in radii]
            rows.append({"model": WORDS.get(model, model), "seed": seed, **r})
    unit = "L2" if next(iter(found.values()))["method"] == "smoothing" else "modified"
    cols = [Column("model", "model"), Column("seed", "seed", fmt_int, True), Column("setting", "randomised"),
            Column("modality", "radius of"), Column("n", "clips", fmt_int, True)]
    cols += [Column(k, f"{unit} {k[2:]}", fmt_percent, True) for k in radii]
    return Table(cols, rows)
