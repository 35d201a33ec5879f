"""Building what a run needs from its ``RunConfig``: datasets, loaders, the model, the optimiser, and the
training options of the engine."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.utils.data import DistributedSampler

from dataset.av_dataset import AVDataset
from dataset.av_dataset import build_loader as _dataset_loader
from dataset.specs import get_spec
from dataset.batches import DeviceLoader
from dataset.crop_cache import open_crop_cache
from models import create_model
from models.fusion import head_args
from pipeline.config import RunConfig
from pipeline.engine import TrainConfig
from pipeline.objectives import attack_adversary, objective_for
from pipeline.context import RunContext, finished_eval, setup, start
from pipeline.preflight import audio_context, check_model, eval_weights, preflight, resumes_checkpoint, run_dir
from pipeline.procedures import build_procedure
from utils import distributed as du
from utils.checkpoint import load_checkpoint, load_weights, read_state_file, recorded_arch
from utils.errors import UsageError

log = logging.getLogger(__name__)


def build_dataset(cfg: RunConfig, list_path: str, train_mode: bool) -> AVDataset:
    """AVDataset over ``list_path`` with the raw transport (uint8 frames, int16 audio; ``build_loader``
    makes the floats on the device); ``train_mode`` turns augmentation on. Eval datasets read their crops
    from --eval_cache when it is given (built there on first use)."""
    ds = AVDataset(
        list_path=list_path, audio_path=cfg.audio_path, frame_path=cfg.frame_path,
        categories=list(cfg.categories), split_train=train_mode, num_frames=cfg.num_frames,
        stride_frames=cfg.stride_frames, frame_rate=cfg.frameRate, aud_len=cfg.audLen,
        aud_rate=cfg.audRate, img_size=cfg.imgSize, seed=cfg.seed,
        train_margin=round(get_spec(cfg.dataset).train_margin_s * cfg.frameRate))
    cache = open_crop_cache(ds, cfg.eval_cache, workers=cfg.workers) if cfg.eval_cache and not train_mode else None
    if not train_mode:  # the desync attack's audio context (0 unless it runs; pipeline/preflight.py checked it)
        ds.set_audio_context(audio_context(cfg))
    return ds.set_transport(raw=True, crop_cache=cache)


def device_loader(loader, device: Optional[torch.device]) -> DeviceLoader:
    """``loader``'s batches as the model's float inputs on ``device`` (default CPU), prefetched on CUDA."""
    return DeviceLoader(loader, device if device is not None else torch.device("cpu"))


def build_loader(ds: AVDataset, cfg: RunConfig, train: bool, device: Optional[torch.device] = None,
                 whole: bool = False) -> DeviceLoader:
    """The pipeline's one loader builder. Train: a seeded shuffling DistributedSampler (also with one process,
    so a resumed run sees the same order); eval: ShardSampler (no padding, exact counts under DDP), batches
    of --eval_batch_size; ``whole``: every sample in order in this process (rank 0's training features),
    batches of --batch_size_per_gpu. Batches arrive on ``device`` as float model inputs (dataset/batches.py)."""
    if whole:
        sampler = None
    elif train:
        sampler = DistributedSampler(ds, num_replicas=du.world_size(), rank=du.rank(), shuffle=True,
                                     seed=cfg.seed, drop_last=False)
    else:
        sampler = du.ShardSampler(len(ds))
    batch = cfg.batch_size_per_gpu if train or whole or not cfg.eval_batch_size else cfg.eval_batch_size
    return device_loader(_dataset_loader(ds, batch_size=batch, workers=cfg.workers, shuffle=False,
                                         sampler=sampler, seed=cfg.seed, drop_last=False), device)


def loaded_checkpoint(cfg: RunConfig) -> Optional[Tuple[Path, str]]:
    """The checkpoint whose weights the run's model receives (and the flag naming it), or None: the
    defense's --base_weights, an evaluation's --weights (or best checkpoint), a resume's last checkpoint."""
    if cfg.defense:
        return Path(cfg.base_weights), "--base_weights"
    if cfg.mode == "eval":
        return eval_weights(cfg), "--weights" if cfg.weights else "--id"
    if resumes_checkpoint(cfg):
        return run_dir(cfg).checkpoint_last, "--resume"
    return None


def fusion_args(cfg: RunConfig) -> Dict[str, Any]:
    """The head's arguments: those recorded in the checkpoint the run loads (so an evaluation rebuilds the
    trained head without repeating --fusion_args; a checkpoint from before the record: the defaults), else
    --fusion_args. An explicit --fusion_args that builds another head than the checkpoint's is refused."""
    loaded = loaded_checkpoint(cfg)
    if loaded is None or not loaded[0].is_file():  # preflight requires the files a run loads
        return dict(cfg.fusion_args)
    path, flag = loaded
    recorded = recorded_arch(path).get("fusion_args", {})
    if "fusion_args" in cfg.given and head_args(cfg.arch_classifier, cfg.fusion_args) != head_args(
            cfg.arch_classifier, recorded):
        raise UsageError("--fusion_args", f"{cfg.fusion_args} differs from the arguments {recorded} that {path} "
                         f"({flag}) was trained with; leave --fusion_args out to use the checkpoint's")
    return dict(recorded)


def build_model(cfg: RunConfig) -> nn.Module:
    """The model named by --arch_sound/--arch_frame/--arch_classifier with its head's arguments (``fusion_args``),
    initialised from --init_from."""
    model = create_model(arch_sound=cfg.arch_sound, arch_frame=cfg.arch_frame,
                         arch_classifier=cfg.arch_classifier, num_classes=cfg.cls_num,
                         img_pool=cfg.img_pool, pretrained=cfg.pretrained,
                         weights_frame=cfg.weights_frame or None, weights_sound=cfg.weights_sound or None,
                         audio_rate=cfg.audRate, fusion_args=fusion_args(cfg))
    if cfg.weights_classifier:
        load_head_weights(model, cfg.weights_classifier)
    if cfg.init_from and cfg.mode == "train" and not resumes_checkpoint(cfg):
        init_nets_from(model, cfg.init_from)
    if cfg.compile:
        compile_nets(model)
    return model


def place_model(model: nn.Module, cfg: RunConfig, device: torch.device) -> nn.Module:
    """Put the run's model on its device, once (with --channels_last, every path: training, evaluation,
    attacks); everything after works on it in place. Returns ``model``."""
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def compile_nets(model: nn.Module) -> nn.Module:
    """--compile: ``torch.compile`` the audio and visual nets in place (``nn.Module.compile``: the state dict
    and the checkpoints keep their keys). Every path runs through them: training, clean evaluation,
    attacks and the defense's features. Returns ``model``."""
    for name in ("audio_net", "visual_net"):
        net = getattr(model, name, None)
        if net is not None:
            net.compile()
    return model


def load_head_weights(model: nn.Module, path: str) -> None:
    """--weights_classifier: a state dict of this model's fusion head, all keys and shapes matching."""
    state = read_state_file(path, str(path), flag="--weights_classifier")
    load_weights(model.head, state, f"{path} (the {type(model.head).__name__} head of --arch_classifier)",
                 flag="--weights_classifier")


def init_nets_from(model: nn.Module, paths: Sequence[str]) -> None:
    """Copy the ``audio_net``/``visual_net`` weights of project checkpoints into ``model``.

    Each net of ``model`` must be found in exactly one checkpoint with identical keys and shapes; anything
    else is an error naming the checkpoint and the net (no partial, silent initialisation).
    """
    nets = [n for n in ("audio_net", "visual_net") if getattr(model, n, None) is not None]
    found: Dict[str, str] = {}
    for path in paths:
        ck = load_checkpoint(Path(path))["model"]
        for net in nets:
            if not any(k.startswith(net + ".") for k in ck):
                continue
            if net in found:
                raise RuntimeError(f"--init_from: {net} is in both {found[net]} and {path}")
            load_weights(model, ck, f"--init_from {path}", prefix=net + ".")
            found[net] = path
    missing = [n for n in nets if n not in found]
    if missing:
        raise RuntimeError(f"--init_from {' '.join(paths)}: no checkpoint holds this model's {', '.join(missing)}")
    log.info("initialised %s", ", ".join(f"{n} from {p}" for n, p in found.items()))


def make_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.SGD:
    """SGD with the paper's per-module learning rates (docs/paper.md, Model: visual 1e-4, audio and head 1e-3)."""
    groups: Dict[str, List[nn.Parameter]] = {"visual": [], "audio": [], "classifier": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        parts = name.split(".")
        if "visual_net" in parts:
            groups["visual"].append(p)
        elif "audio_net" in parts:
            groups["audio"].append(p)
        else:
            groups["classifier"].append(p)
    lrs = {"visual": cfg.lr_frame, "audio": cfg.lr_sound, "classifier": cfg.lr_classifier}
    params = [{"params": ps, "lr": lrs[k], "initial_lr": lrs[k], "name": k} for k, ps in groups.items() if ps]
    return torch.optim.SGD(params, lr=cfg.lr_classifier, momentum=cfg.beta1, weight_decay=cfg.weight_decay)


def set_epoch_lr(optimizer: torch.optim.Optimizer, lr_steps: Sequence[int], epoch: int) -> float:
    """x0.1 at every step epoch already reached (docs/paper.md, Model: factor 0.1). Returns the factor."""
    factor = 0.1 ** sum(1 for s in lr_steps if epoch >= s)
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * factor
    return factor


def train_options(cfg: RunConfig, model: nn.Module) -> TrainConfig:
    """The engine's training options: the objective of --adv_train / --noise_train (pipeline/objectives.py) and
    the training procedure the head declares (pipeline/procedures.py: CRMT, robust fusion), or None."""
    return TrainConfig(minsim_weight=cfg.minsim_weight, amp=cfg.amp, channels_last=cfg.channels_last,
                       disp_iter=cfg.disp_iter, progress=not cfg.no_progress, objective=objective_for(cfg, model),
                       procedure=build_procedure(cfg, model), modality_dropout=cfg.modality_dropout,
                       missing_fill=cfg.missing_fill, seed=cfg.seed)


def training_adversary(cfg: RunConfig, model: nn.Module):
    """The attack of --adv_train ATTACK with the whole --train_eps budget: Madry's PGD setting (--train_attack_steps
    steps from a random start) for the options the attack's constructor takes; FGSM, which takes neither, is plain
    FGSM (``pipeline.objectives.attack_adversary``)."""
    return attack_adversary(cfg.adv_train, model, cfg.train_budget, cfg.train_attack_steps, cfg.eps_unit, cfg.seed)


def prepared(cfg: RunConfig) -> Optional[Tuple[nn.Module, RunContext]]:
    """The set-up main_attack.py and main_certify.py share: the pre-flight checks, then, unless an evaluation of
    this configuration already finished (``--reuse_eval``: None), the device, the model built, checked and placed,
    and the run context that records the work."""
    preflight(cfg)
    if finished_eval(cfg) is not None:
        return None
    device = start(cfg)
    model = build_model(cfg)
    check_model(cfg, model)
    ctx = setup(cfg, device)
    with ctx.abort_on_error():
        place_model(model, cfg, device)
    return model, ctx
