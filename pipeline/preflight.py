"""Checks of every file a run will read, before anything is written or computed.

The index lists (exist, parse, classes in --categories, clips long enough for the frame window, each clip's
WAV and frame count on disk), every media file they read (WAV header, JPEG start/end markers), the media
folders, every checkpoint the run loads (architecture, class order, schedule) and the defense's banks or
features (shapes, the checkpoint they came from). Each problem is a ``UsageError`` naming the flag, or a
``MalformedFileError`` naming the file and row; both exit 2. Cheap by design: lists are text, media are
checked without decoding, checkpoints and banks are opened memory-mapped and only their small entries read.
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from dataset import transforms as T
from dataset import windows as W
from dataset.av_dataset import context_room, jpeg_file_problem, read_wav_header, wav_file_problem
from dataset.fingerprint import media_files
from dataset.index import check_clip_lengths, read_index
from dataset.reconcile import check_media, rebuild_command
from pipeline.config import RESUME_SAFE, RunConfig, resume_changes
from utils.checkpoint import check_arch
from utils.errors import UsageError
from utils.fileio import creatable_problem, sha256_file
from utils.rundir import RunDir

log = logging.getLogger(__name__)


def run_dir(cfg: RunConfig) -> RunDir:
    """The run folder ``<ckpt>/<id>``."""
    return RunDir(Path(cfg.ckpt) / cfg.id)


def expected_arch(cfg: RunConfig) -> Dict[str, Any]:
    """What a checkpoint of this run's model records as its architecture (see utils.checkpoint.model_arch)."""
    return {"arch_sound": cfg.arch_sound, "arch_frame": cfg.arch_frame, "arch_classifier": cfg.arch_classifier,
            "num_classes": cfg.cls_num}


def read_checkpoint_meta(path: Path, flag: str) -> Dict[str, Any]:
    """A project checkpoint's dict (memory-mapped: tensors are not read); errors name the flag and the file."""
    if not path.is_file():
        raise UsageError(flag, f"checkpoint {path} does not exist")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # not a zip/pickle checkpoint at all (a CSV, a truncated file, a foreign pickle)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in reason or "Unsupported global" in reason:
            reason = "it holds objects other than tensors and plain data, which this project never writes"
        raise UsageError(flag, f"{path} is not a checkpoint written by this project ({reason[:200]})") from None
    if not isinstance(ck, dict) or "model" not in ck or "arch" not in ck:
        raise UsageError(flag, f"{path} is not a checkpoint written by this project (no 'model'/'arch' entries)")
    return ck


def checkpoint_categories(ck: Dict[str, Any]) -> Optional[List[str]]:
    """The class order a checkpoint was trained with (recorded since it was written, or in its args)."""
    if ck.get("categories") is not None:
        return list(ck["categories"])
    args = ck.get("args") or {}
    cats = args.get("categories")
    return list(cats) if cats else None


def check_checkpoint(ck: Dict[str, Any], cfg: RunConfig, path: Path, flag: str) -> None:
    """Architecture (``utils.checkpoint.check_arch``) and class order of ``ck`` against this run; any
    difference is an error."""
    check_arch(ck, expected_arch(cfg), path, flag)
    cats = checkpoint_categories(ck)
    if cats is None:
        raise UsageError(flag, f"{path} records no class order, so its logits cannot be matched to --categories")
    if cats != list(cfg.categories):
        if sorted(cats) == sorted(cfg.categories):
            i = next(i for i, (a, b) in enumerate(zip(cats, cfg.categories)) if a != b)
            raise UsageError("--categories", f"same classes as {path} but in another order (position {i}: "
                             f"checkpoint {cats[i]!r}, --categories {cfg.categories[i]!r}); logits would be "
                             f"read as the wrong classes. Checkpoint order: {','.join(cats)}")
        raise UsageError("--categories", f"differ from the classes {path} was trained on ({','.join(cats)})")


def _check_list(cfg: RunConfig, flag: str) -> int:
    path = Path(getattr(cfg, flag))
    if not path.is_file():
        raise UsageError(f"--{flag}", f"index file {path} does not exist")
    rows = read_index(path, cfg.categories)
    check_clip_lengths(rows, cfg.num_frames, cfg.stride_frames)
    return len(rows)


def lists_read(cfg: RunConfig) -> Tuple[str, ...]:
    """The list flags this run reads."""
    if cfg.mode == "train":
        return tuple(f for f in ("list_train", "list_val", "list_test") if getattr(cfg, f))
    fitted = ("list_train",) if cfg.list_train and fits_on_train_list(cfg) else ()
    return (("list_test",) if cfg.list_test else ("list_val",)) + fitted


def fits_on_train_list(cfg: RunConfig) -> bool:
    """An evaluation with an attack fitted on --list_train first (``fit_data``: the universal perturbation)."""
    from attacks import ATTACKS

    return any(ATTACKS.get(a).takes("fit_data") for a in cfg.attacks)


def check_lists(cfg: RunConfig) -> Dict[str, int]:
    """Every list the run reads: exists, parses, classes known, clips long enough. Returns row counts."""
    counts = {flag: _check_list(cfg, flag) for flag in lists_read(cfg)}
    for flag in ("audio_path", "frame_path"):
        if not Path(getattr(cfg, flag)).is_dir():
            raise UsageError(f"--{flag}", f"folder {getattr(cfg, flag)} does not exist")
    for flag in counts:
        check_list_media(cfg, flag)
        check_media_files(cfg, flag)
    if audio_context(cfg):
        for flag in counts:
            if flag != "list_train":
                check_audio_context(cfg, flag)
    return counts


def audio_context(cfg: RunConfig) -> int:
    """Samples of audio context each side of the eval window the run needs: the desync attack's
    ``round(--max_shift_s * --audRate)`` when it runs, else 0."""
    if cfg.mode != "eval" or "desync" not in cfg.attacks:
        return 0
    return int(round(cfg.max_shift_s * cfg.audRate))


def check_audio_context(cfg: RunConfig, flag: str) -> None:
    """Every clip of an evaluated list has ``audio_context(cfg)`` samples of real audio before and after its
    eval window (WAV headers only): otherwise --max_shift_s is longer than the clip allows, and the line
    names the first such clip and the largest --max_shift_s the whole list allows (clips are never padded)."""
    need, path = audio_context(cfg), getattr(cfg, flag)
    worst: Optional[Tuple[int, str]] = None
    for r in read_index(path, cfg.categories):
        file = f"{str(cfg.audio_path).rstrip('/')}{r.audio}"
        with open(file, "rb") as fh:
            frames = read_wav_header(fh, os.fstat(fh.fileno()).st_size).frames
        centre = T.centre_sample(W.middle_frame(r.num_frames, cfg.num_frames, cfg.stride_frames),
                                 cfg.frameRate, cfg.audRate)
        room = min(context_room(frames, centre, cfg.audLen))
        if worst is None or room < worst[0]:
            worst = (room, f"row {r.line} ({r.clip_id})")
    if worst is not None and worst[0] < need:
        raise UsageError("--max_shift_s", f"{cfg.max_shift_s} s ({need} samples each side of the {cfg.audLen}-sample "
                         f"window) is longer than the clips of {path} allow: {worst[1]} has {worst[0]} samples "
                         f"of audio before or after its window; the largest --max_shift_s for this list is "
                         f"{math.floor(worst[0] / cfg.audRate * 1000) / 1000:g} s (clips are not padded)")


def check_media_files(cfg: RunConfig, flag: str) -> None:
    """Every file a list's clips read, cheaply: each WAV's header (mono, --audRate Hz, samples > 0) and the
    first 2 and last 64 bytes of every JPEG (not empty, FF D8 start and FF D9 end: a truncated frame would
    otherwise decode half grey with only a libjpeg warning). No decoding; the cost is logged (README)."""
    path = getattr(cfg, flag)
    t0, n_jpeg, rows = time.perf_counter(), 0, read_index(path, cfg.categories)
    for r in rows:
        for root, rel in media_files([r], cfg.audio_path, cfg.frame_path):
            file = root + rel
            try:
                problem = wav_file_problem(file, cfg.audRate) if rel == r.audio else jpeg_file_problem(file)
            except OSError as e:
                problem = f"unreadable ({e.strerror or e})"
            if problem is not None:
                raise UsageError(f"--{flag}", f"{path} row {r.line} ({r.clip_id}): {file}: {problem}")
        n_jpeg += r.num_frames
    log.info("%s: media checked in %.2f s (%d WAV headers, %d JPEG start/end markers)", path,
             time.perf_counter() - t0, len(rows), n_jpeg)


def check_list_media(cfg: RunConfig, flag: str) -> None:
    """Every clip of the list has its WAV and exactly its listed number of frames on disk (directory listings,
    no decoding): an index made for other media (the reference's frame counts, videos gone) fails here,
    naming the first clips and the command that rebuilds it, instead of at the first sample."""
    path = getattr(cfg, flag)
    problems = check_media(read_index(path, cfg.categories), Path(cfg.audio_path), Path(cfg.frame_path))
    if problems:
        raise UsageError(f"--{flag}", f"{path} does not match the media under --frame_path {cfg.frame_path} / "
                         f"--audio_path {cfg.audio_path}: {'; '.join(problems)}. Rebuild the index from the "
                         f"media: {rebuild_command(path, cfg.frame_path)}")


def resumes_checkpoint(cfg: RunConfig) -> bool:
    """A --resume that continues from checkpoint_last.pth (without one, a killed first epoch, it starts over
    exactly as the original run did: --init_from applies again)."""
    return cfg.mode == "train" and cfg.resume and run_dir(cfg).checkpoint_last.is_file()


def eval_weights(cfg: RunConfig) -> Path:
    """The checkpoint an evaluation loads: --weights, else the run's best checkpoint."""
    return Path(cfg.weights) if cfg.weights else run_dir(cfg).checkpoint_best


def check_checkpoints(cfg: RunConfig) -> None:
    """Every checkpoint the run loads; the refusal of a second training run into a used folder."""
    rd = run_dir(cfg)
    problem = creatable_problem(rd.root)  # a training writes its folder, an evaluation its evals/ folder
    if problem is not None:
        raise UsageError("--ckpt", f"cannot create the run folder {rd.root}: {problem}")
    if cfg.mode == "train":
        check_run_folder(cfg, rd)
        if cfg.init_from and not resumes_checkpoint(cfg):
            for p in cfg.init_from:
                read_checkpoint_meta(Path(p), "--init_from")
    if cfg.defense:
        if not cfg.base_weights:
            raise UsageError("--base_weights", "is required (the checkpoint of the model to defend)")
        check_checkpoint(read_checkpoint_meta(Path(cfg.base_weights), "--base_weights"), cfg,
                         Path(cfg.base_weights), "--base_weights")
    if cfg.mode == "eval":
        path = eval_weights(cfg)
        if path.is_file() or not cfg.defense:
            flag = "--weights" if cfg.weights else "--id"
            if not path.is_file():
                raise UsageError(flag, f"checkpoint {path} does not exist (train first, or pass --weights)")
            check_checkpoint(read_checkpoint_meta(path, flag), cfg, path, flag)
        if cfg.transfer_from:
            check_transfer_source(cfg)


# The source's settings that must equal this run's for its adversarial inputs to be this model's inputs
# (issue 19: "a run of other classes or another input size" is refused).
TRANSFER_SIZES = ("audLen", "audRate", "imgSize", "num_frames")


def transfer_run(cfg: RunConfig) -> RunDir:
    """The run folder of --transfer_from: the path as given when it is a folder, else ``<ckpt>/<RUN>``."""
    given = Path(cfg.transfer_from)
    return RunDir(given if given.is_dir() else Path(cfg.ckpt) / cfg.transfer_from)


def check_transfer_source(cfg: RunConfig) -> Dict[str, Any]:
    """--transfer_from: the run folder exists and holds a project checkpoint trained on exactly this run's
    classes (same order) with the same input sizes (``TRANSFER_SIZES``, from the args it records). Returns the
    checkpoint's meta (memory-mapped). Any problem is a UsageError of --transfer_from."""
    flag = "--transfer_from"
    rd = transfer_run(cfg)
    if not rd.root.is_dir():
        raise UsageError(flag, f"no run folder {cfg.transfer_from} (nor {Path(cfg.ckpt) / cfg.transfer_from})")
    path = rd.checkpoint_best
    if not path.is_file():
        raise UsageError(flag, f"{rd.root} holds no checkpoint ({path.name} is missing: train it first)")
    ck = read_checkpoint_meta(path, flag)
    cats = checkpoint_categories(ck)
    if cats != list(cfg.categories):
        same = cats is not None and sorted(cats) == sorted(cfg.categories)
        raise UsageError(flag, f"{path} was trained on {'the same classes in another order' if same else 'other classes'}"
                         f" ({','.join(cats or ['<not recorded>'])}; this run: {','.join(cfg.categories)}): its "
                         "attacks would target the wrong labels")
    args = ck.get("args") or {}
    diffs = [f"--{k} {args.get(k, '<not recorded>')} (this run {getattr(cfg, k)})" for k in TRANSFER_SIZES
             if args.get(k) != getattr(cfg, k)]
    if diffs:
        raise UsageError(flag, f"{path} takes other inputs than this run's model: {'; '.join(diffs)}")
    arch = ck.get("arch") or {}
    if arch.get("num_classes") not in (None, cfg.cls_num):
        raise UsageError(flag, f"{path} has {arch.get('num_classes')} outputs, this run {cfg.cls_num} classes")
    return ck


def check_run_folder(cfg: RunConfig, rd: RunDir) -> None:
    """A training run's folder: creatable; a started run (any of ``RUN_RECORDS``) only with --resume, which
    must find an unfinished run with the same settings (``RESUME_SAFE`` excepted) and a matching checkpoint."""
    started = rd.started()
    if not cfg.resume:
        if started:
            raise UsageError("--id", f"{rd.root} already holds a started training run ({', '.join(started)}); pass "
                             "--resume to continue it or choose another --id (run folders are never overwritten)")
        return
    if not started:
        raise UsageError("--resume", f"{rd.root} holds no started training run: nothing to resume (drop --resume)")
    recorded = rd.recorded_args()
    if recorded is None:
        raise UsageError("--resume", f"{rd.root} has no {rd.args.name}, so its settings cannot be checked; start a "
                         "new --id")
    _, refused = resume_changes(recorded, cfg)
    finished = rd.done_train.is_file()
    if refused:
        changes = "; ".join(f"{f} {old!r} -> {new!r}" for f, (old, new) in refused.items())
        raise UsageError("--resume", f"changes the settings of {rd.root}{' (a finished run)' if finished else ''}: "
                         f"{changes}. A resume may change only {', '.join('--' + k for k in RESUME_SAFE[1:])} "
                         "(--num_epoch to extend); start a new --id for other settings")
    if finished:
        raise UsageError("--resume", f"{rd.root} is a finished training run ({rd.done_train.name}): nothing to "
                         f"resume; evaluate it with --mode eval, or train longer under a new --id with --init_from "
                         f"{rd.checkpoint_last}")
    if not rd.checkpoint_last.is_file():  # killed before its first checkpoint: the resume starts at epoch 1
        return
    ck = read_checkpoint_meta(rd.checkpoint_last, "--resume")
    check_checkpoint(ck, cfg, rd.checkpoint_last, "--resume")
    saved = list((ck.get("scheduler") or {}).get("lr_steps", []))
    if saved != list(cfg.lr_steps):
        raise UsageError("--lr_steps", f"{' '.join(map(str, cfg.lr_steps))} differs from the schedule of "
                         f"{rd.checkpoint_last} ({' '.join(map(str, saved))}); resume with the same "
                         "--lr_steps, or start a new --id")
    if int(ck["epoch"]) > cfg.num_epoch + cfg.crmt_step2_epochs:  # CRMT's step two counts on after --num_epoch
        raise UsageError("--num_epoch", f"{cfg.num_epoch} is below the {int(ck['epoch'])} epochs "
                         f"{rd.checkpoint_last} already holds")


def bank_paths(cfg: RunConfig, modalities: Sequence[str]) -> Dict[str, Path]:
    """Where the defense's memory banks come from, checked; empty when they are to be built from --features.

    --weights_Da/--weights_Dv name files; --bank names a folder holding bank_<modality>.pt; with none of
    these nor --features, the banks this run folder saved earlier (main_defense.py --mode train).
    """
    rd = run_dir(cfg)
    explicit = {"audio": cfg.weights_Da, "visual": cfg.weights_Dv}
    # the reference passes a run folder to --weights_Da/--weights_Dv: its bank file of that modality is meant
    explicit = {m: str(RunDir(Path(p)).bank(m)) if p and Path(p).is_dir() else p for m, p in explicit.items()}
    if cfg.bank:
        folder = Path(cfg.bank)
        if not folder.is_dir():
            raise UsageError("--bank", f"folder {folder} does not exist")
        source = RunDir(folder)
        paths = {m: Path(explicit[m]) if explicit[m] else source.bank(m) for m in modalities}
    elif any(explicit.values()):
        paths = {m: Path(explicit[m]) for m in modalities if explicit[m]}
        missing = [m for m in modalities if m not in paths]
        if missing:
            flag = {"audio": "--weights_Da", "visual": "--weights_Dv"}[missing[0]]
            raise UsageError(flag, f"the model reads {missing[0]} too: give its bank file as well")
    elif cfg.features:
        if not Path(cfg.features).is_file():
            raise UsageError("--features", f"features file {cfg.features} does not exist")
        return {}
    else:
        paths = {m: rd.bank(m) for m in modalities}
        if not all(p.is_file() for p in paths.values()):
            raise UsageError("--features", f"no memory banks in {rd.root} yet: give --features (from main_attack.py "
                             "--save_features) to build them, or --bank / --weights_Da --weights_Dv")
    for m, p in paths.items():
        if not p.is_file():
            flag = {"audio": "--weights_Da", "visual": "--weights_Dv"}[m] if explicit[m] else "--bank"
            raise UsageError(flag, f"no {m} memory bank at {p}")
    return paths


def _read_torch_dict(path: Path, flag: str, what: str) -> Dict[str, Any]:
    """A torch file holding a dict, memory-mapped (tensors not read); anything else names the flag and file."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # truncated zip, foreign pickle, permissions: torch.load raises many types
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(flag, f"{path} cannot be read as a {what} file ({reason[:200]})") from None
    if not isinstance(blob, dict):
        raise UsageError(flag, f"{path} is not a {what} file (holds a {type(blob).__name__}, not a dict)")
    return blob


def _matrix_problem(x: Any, rows: Optional[int] = None) -> Optional[str]:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or 0 in x.shape:
        return f"expected a non-empty (N, d) tensor, got {getattr(x, 'shape', type(x).__name__)}"
    if rows is not None and x.shape[0] != rows:
        return f"{x.shape[0]} rows for {rows} labels"
    return None


def check_defense_inputs(cfg: RunConfig, paths: Dict[str, Path], modalities: Sequence[str]) -> None:
    """The banks ``paths`` (from ``bank_paths``), or --features when they are to be built: readable, (K, d)
    atoms / (N, d) features of every modality the model reads, and made from --base_weights (the SHA-256 they
    record). Runs before anything is written; another checkpoint's banks or features are a UsageError."""
    base = Path(cfg.base_weights)
    base_hash = sha256_file(base)
    for m, p in paths.items():
        flag = ({"audio": "--weights_Da", "visual": "--weights_Dv"}[m] if {"audio": cfg.weights_Da,
                "visual": cfg.weights_Dv}[m] else "--bank" if cfg.bank else "--id")
        blob = _read_torch_dict(p, flag, "memory bank")
        problem = _matrix_problem(blob.get("atoms"))
        if problem or "checkpoint_sha256" not in blob:
            raise UsageError(flag, f"{p} is not a memory bank file ({problem or 'no checkpoint_sha256 entry'})")
        if blob.get("modality") not in ("", None, m):
            raise UsageError(flag, f"{p} is a {blob['modality']} bank, given for {m}")
        if blob["checkpoint_sha256"] != base_hash:
            raise UsageError(flag, f"{p} was built from checkpoint sha256 {blob['checkpoint_sha256']}, but "
                             f"--base_weights {base} has sha256 {base_hash}; build banks from this checkpoint's "
                             "features (--features)")
    if paths or not cfg.features:
        return
    feats = Path(cfg.features)
    blob = _read_torch_dict(feats, "--features", "features")
    labels = blob.get("labels")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or "checkpoint_sha256" not in blob:
        raise UsageError("--features", f"{feats} is not a features file (needs 1-D 'labels' and "
                         "'checkpoint_sha256'; written by main_attack.py --save_features)")
    for m in modalities:
        problem = "missing" if m not in blob else _matrix_problem(blob[m], labels.shape[0])
        if problem:
            raise UsageError("--features", f"{feats}: {m} features {problem}")
    if blob["checkpoint_sha256"] != base_hash:
        raise UsageError("--features", f"{feats} came from a checkpoint with sha256 {blob['checkpoint_sha256']}, "
                         f"but --base_weights {base} has {base_hash}")


def preflight(cfg: RunConfig) -> Dict[str, int]:
    """All file checks of a run, in the order a user fixes them. Returns the row count of each list."""
    check_checkpoints(cfg)
    check_missing_fill(cfg)
    counts = check_lists(cfg)
    if cfg.mode == "train":
        check_last_batch(counts["list_train"], cfg.batch_size_per_gpu)
    if cfg.mode == "train" and not cfg.list_test:
        log.info("no --list_test: training ends after the val list, without a separate test pass")
    return counts


def check_missing_fill(cfg: RunConfig) -> None:
    """--missing_modality with --missing_fill mean: the run's training features (--save_features) exist, hold
    a matrix per modality and come from the checkpoint evaluated (models/missing.py)."""
    if not cfg.missing_modality or cfg.missing_fill != "mean" or cfg.missing_modality == ("none",):
        return
    feats, weights = run_dir(cfg).features, eval_weights(cfg)
    if not feats.is_file():
        raise UsageError("--missing_fill", f"'mean' fills an absent input with the training mean feature from "
                         f"{feats}, which does not exist: train with --save_features, or use --missing_fill zeros")
    blob = _read_torch_dict(feats, "--missing_fill", "features")
    for m in ("audio", "visual"):
        if m in blob and _matrix_problem(blob[m]):
            raise UsageError("--missing_fill", f"{feats}: {m} features {_matrix_problem(blob[m])}")
    if weights.is_file() and blob.get("checkpoint_sha256") != sha256_file(weights):
        raise UsageError("--missing_fill", f"{feats} holds the features of another checkpoint than {weights} "
                         "(its checkpoint_sha256 differs): the training mean would be another model's")


def check_last_batch(n_train: int, batch: int) -> None:
    """A last training batch of one clip crashes BatchNorm in train mode hours into a run: refuse it now.
    (DistributedSampler pads every process to ceil(n / world) clips.)"""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_process = math.ceil(n_train / world)
    if per_process % batch == 1:
        raise UsageError("--batch_size_per_gpu", f"{batch} leaves a last training batch of 1 clip ({per_process} "
                         "clips per process), which BatchNorm cannot train on; choose another batch size")


def check_model(cfg: RunConfig, model: nn.Module) -> None:
    """What only the built model knows: the shortest audio window its audio net accepts."""
    audio_net = getattr(model, "audio_net", None)
    need = getattr(audio_net, "min_length", 0)
    if audio_net is not None and cfg.audLen < need:
        raise UsageError("--audLen", f"{cfg.audLen} samples is shorter than the {need} that --arch_sound "
                         f"{cfg.arch_sound} accepts")
